// Saving the overlay's edits: create (POST), reshape and change (PATCH with the version the edit is based
// on), delete (DELETE with version), and fetching an annotation's exact geometry. Edits of one annotation
// run one after the other (a PATCH waits for the POST that created it). A 409 means someone else changed
// it: the annotation is reloaded and the message says the edit was not saved; a 404 means it was deleted.
// No DOM and no Annotorious here: what the user sees is reached through `SyncView`.

import {
  ApiError,
  createAnnotations,
  deleteAnnotation,
  getAnnotation,
  updateAnnotation,
  type AnnotationRecord,
  type NewAnnotation,
} from "./api";
import type { Entry, ViewportCache } from "./viewport-cache";

export type MessageKind = "error" | "conflict" | "info";
export type Changes = Parameters<typeof updateAnnotation>[2];

/** What the sync queue needs from the page. */
export interface SyncView {
  /** Draws these entries as they are now. */
  draw(entries: Entry[]): void;
  /** Removes the shapes of these dropped entries. */
  undraw(entries: Entry[]): void;
  /** Removes a drawn shape that was never saved. */
  removeShape(annoId: string): void;
  /** A shape drawn here was saved as `entry` (version 1). */
  saved(entry: Entry): void;
  showMessage(text: string, kind?: MessageKind): void;
  /** Disc radius of points loaded now, level-0 px. */
  pointRadius(): number;
  /** One edit finished (saved, refused or failed). */
  editDone(): void;
}

export function messageOf(err: unknown): string {
  if (err instanceof ApiError) return err.message;
  return err instanceof Error ? err.message : String(err);
}

export class EditSync {
  private readonly queues = new Map<string, Promise<void>>();
  private running = 0;
  private stopped = false;

  constructor(
    /** The image new annotations are stored on. */
    private readonly imageId: string,
    private readonly cache: ViewportCache,
    private readonly view: SyncView,
    /** Recorded as `source` of new annotations and as the actor of every edit. */
    private readonly actor: string,
    private readonly signal?: AbortSignal,
  ) {}

  /** Edits queued or running. */
  get inFlight(): number {
    return this.running;
  }

  /** Whether edits of this shape are queued or running. */
  has(annoId: string): boolean {
    return this.queues.has(annoId);
  }

  /** No message, redraw nor reload after this (the page is gone); requests already sent still finish. */
  stop(): void {
    this.stopped = true;
  }

  /** Runs `task` after the edits of `annoId` queued before it. */
  enqueue(annoId: string, task: () => Promise<void>): void {
    this.running += 1;
    const previous = this.queues.get(annoId) ?? Promise.resolve();
    const next = previous
      .then(task)
      .catch((err: unknown) => {
        if (!this.stopped) this.view.showMessage(messageOf(err));
      })
      .finally(() => {
        this.running -= 1;
        if (this.queues.get(annoId) === next) this.queues.delete(annoId);
        if (!this.stopped) this.view.editDone();
      });
    this.queues.set(annoId, next);
  }

  /** Stores a shape drawn here as `payload` (whose level-0 box is `bbox`); the shape is removed if that fails. */
  create(annoId: string, payload: NewAnnotation, bbox: AnnotationRecord["bbox"]): void {
    this.enqueue(annoId, async () => {
      let ids: number[];
      try {
        ids = await createAnnotations(this.imageId, [payload], this.actor);
      } catch (err) {
        if (!this.stopped) this.view.removeShape(annoId);
        throw err;
      }
      const id = ids[0];
      if (id === undefined || this.stopped) return;
      const record: AnnotationRecord = {
        id,
        version: 1,
        kind: payload.kind,
        label: payload.label,
        bbox,
        geometry: payload.geometry ?? null,
        mask: null,
        score: null,
        source: this.actor,
        status: "proposed",
        attributes: {},
      };
      const entry: Entry = { record, annoId, tolerance: 0, radius: this.view.pointRadius(), changedAt: now() };
      this.cache.add(entry);
      this.view.saved(entry);
    });
  }

  /**
   * Saves a reshaped annotation: `changesOf` reads the shape when the edit's turn comes (null: nothing
   * storable); nothing is sent when the geometry is what the server has.
   */
  reshape(annoId: string, changesOf: (entry: Entry) => Changes | null): void {
    this.enqueue(annoId, async () => {
      const entry = this.cache.entryOf(annoId);
      if (!entry) return; // not saved (creation failed) or deleted since
      const changes = changesOf(entry);
      if (!changes) return;
      if ("bbox" in changes && JSON.stringify(changes.bbox) === JSON.stringify(entry.record.bbox)) return;
      if ("geometry" in changes && JSON.stringify(changes.geometry) === JSON.stringify(entry.record.geometry)) return;
      await this.patchEntry(entry, changes, true);
    });
  }

  /** Changes label, status or attributes of a saved annotation. */
  patch(annoId: string, changes: Changes): void {
    this.enqueue(annoId, async () => {
      const entry = this.cache.entryOf(annoId);
      if (entry) await this.patchEntry(entry, changes, false);
    });
  }

  /** Deletes the annotation of a shape (or just the shape, when it was never saved). */
  destroy(annoId: string): void {
    this.enqueue(annoId, async () => {
      const entry = this.cache.entryOf(annoId);
      if (!entry) {
        this.view.removeShape(annoId);
        return;
      }
      const { id, version } = entry.record;
      try {
        await deleteAnnotation(id, version, this.actor);
        if (this.stopped) return;
        this.view.undraw(this.cache.forget([id]));
      } catch (err) {
        await this.refused(id, err);
      }
    });
  }

  /** Fetches the exact geometry of an annotation loaded simplified; `then` runs if it is still there. */
  fetchExact(annoId: string, then: () => void): void {
    const id = this.cache.idOf(annoId);
    if (id === undefined) return;
    this.enqueue(annoId, async () => {
      if (await this.reload(id)) then();
    });
  }

  private async patchEntry(entry: Entry, changes: Changes, exact: boolean): Promise<void> {
    const { id, version } = entry.record;
    try {
      entry.record = await updateAnnotation(id, version, changes, this.actor);
      if (this.stopped) return;
      if (exact) entry.tolerance = 0;
      entry.changedAt = now();
      this.view.draw([entry]);
    } catch (err) {
      await this.refused(id, err);
    }
  }

  /** After a 409 (or to get exact geometry): the annotation as stored now, or null when it is gone. */
  private async reload(id: number): Promise<Entry | null> {
    try {
      const record = await getAnnotation(id, this.signal);
      const entry = this.cache.get(id);
      if (!entry || this.stopped) return null;
      entry.record = record;
      entry.tolerance = 0;
      entry.radius = this.view.pointRadius();
      entry.changedAt = now();
      this.view.draw([entry]);
      return entry;
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) {
        if (!this.stopped) this.view.undraw(this.cache.forget([id]));
        return null;
      }
      throw err;
    }
  }

  /** What to do with an edit the server refused. */
  private async refused(id: number, err: unknown): Promise<void> {
    if (this.stopped) return;
    if (err instanceof ApiError && err.status === 409) {
      const entry = await this.reload(id);
      if (this.stopped) return;
      this.view.showMessage(
        entry
          ? `Annotation ${id} was changed by someone else — reloaded. Your edit was not saved; ` +
              "apply it again if it is still needed."
          : `Annotation ${id} was deleted by someone else.`,
        "conflict",
      );
      return;
    }
    if (err instanceof ApiError && err.status === 404) {
      this.view.undraw(this.cache.forget([id]));
      this.view.showMessage(`Annotation ${id} was deleted by someone else.`, "conflict");
      return;
    }
    const entry = this.cache.get(id);
    if (entry) this.view.draw([entry]); // back to what the server has
    this.view.showMessage(messageOf(err));
  }
}

function now(): number {
  return performance.now();
}
