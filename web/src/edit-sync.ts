// Saving the overlay's edits: create (POST), reshape and change (PATCH with the version the edit is based
// on), delete (DELETE with version), and fetching an annotation's exact geometry. Edits of one annotation
// run one after the other (a PATCH waits for the POST that created it). A 409 means someone else changed
// it: the annotation is reloaded and the message says the edit was not saved; a 404 means it was deleted.
// No DOM and no Annotorious here: what the user sees is reached through `SyncView`.
//
// Every write the user makes is also a step of `history` (undo.ts): undo and redo are one write each, based on
// the version of this page's last write to the annotation, so an undo across someone else's edit is a 409 and
// is refused with their version shown. Copies (paste) and points are created here like drawn shapes.

import {
  ApiError,
  createAnnotations,
  deleteAnnotation,
  getAnnotation,
  updateAnnotation,
  type AnnotationKind,
  type AnnotationRecord,
  type NewAnnotation,
} from "./api";
import { restoreChanges, stepId, UndoStack, type Step } from "./undo";
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

/** The page's edit queue (one overlay per page): for the tools that are not part of the overlay (annotate.ts). */
let current: EditSync | null = null;

export function currentSync(): EditSync | null {
  return current;
}

export class EditSync {
  private readonly queues = new Map<string, Promise<void>>();
  private running = 0;
  private stopped = false;
  /** The user's writes, for undo and redo. */
  readonly history = new UndoStack();
  /** Version of each annotation after this page's last write to it: what an undo or redo is based on. */
  private readonly ours = new Map<number, number>();
  private readonly listeners = new Set<() => void>();
  private created = 0;
  /** Called before a drawn shape is stored (e.g. to add a typed label to an empty schema); may throw. */
  adoptLabel: ((label: string, kind: AnnotationKind) => Promise<void>) | null = null;
  /** Attributes every new annotation gets, read when it is created (a volume's plane and slice: volume.ts). */
  stamp: (() => Record<string, unknown>) | null = null;

  constructor(
    /** The image new annotations are stored on. */
    private readonly imageId: string,
    private readonly cache: ViewportCache,
    private readonly view: SyncView,
    /** Recorded as `source` of new annotations and as the actor of every edit. */
    private readonly actor: string,
    private readonly signal?: AbortSignal,
  ) {
    current = this; // eslint-disable-line @typescript-eslint/no-this-alias
  }

  /** Calls `listener` after every finished edit (saved, refused or failed); returns how to stop. */
  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** The annotation held for a shape, as the server last answered. */
  recordOf(annoId: string): AnnotationRecord | null {
    return this.cache.entryOf(annoId)?.record ?? null;
  }

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
    this.listeners.clear();
    if (current === this) current = null;
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
        if (this.stopped) return;
        this.view.editDone();
        for (const listener of this.listeners) listener();
      });
    this.queues.set(annoId, next);
  }

  /** Stores a shape drawn here as `payload` (whose level-0 box is `bbox`); the shape is removed if that fails. */
  create(annoId: string, drawn: NewAnnotation, bbox: AnnotationRecord["bbox"]): void {
    const payload = this.stamp ? { ...drawn, attributes: { ...drawn.attributes, ...this.stamp() } } : drawn;
    this.enqueue(annoId, async () => {
      let ids: number[];
      try {
        if (this.adoptLabel) await this.adoptLabel(payload.label, payload.kind);
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
        mask: payload.mask ?? null,
        score: null,
        source: payload.source === "web" ? this.actor : payload.source,
        status: payload.status ?? "proposed",
        attributes: payload.attributes ?? {},
      };
      const entry: Entry = { record, annoId, tolerance: 0, radius: this.view.pointRadius(), changedAt: now() };
      this.cache.add(entry);
      this.ours.set(id, 1);
      this.history.record({ now: record, then: null });
      this.view.draw([entry]);
      this.view.saved(entry);
    });
  }

  /** Stores a new annotation that has no drawn shape yet (a point, a pasted copy); it is drawn once saved. */
  add(payload: NewAnnotation, bbox: AnnotationRecord["bbox"]): string {
    this.created += 1;
    const annoId = `new-${this.created}-${Date.now().toString(36)}`;
    this.create(annoId, payload, bbox);
    return annoId;
  }

  /** Undoes the user's last write (one request) once the edits queued before it are saved (an edit still
   * being saved is the last write); false when there is nothing to undo. */
  async undo(): Promise<boolean> {
    await this.pending();
    const step = this.history.takeUndo();
    if (!step) return false;
    this.enqueue(this.annoIdOf(stepId(step)), () => this.apply(step, "undo"));
    return true;
  }

  /** Redoes the last undone write (one request); false when there is nothing to redo. */
  async redo(): Promise<boolean> {
    await this.pending();
    const step = this.history.takeRedo();
    if (!step) return false;
    this.enqueue(this.annoIdOf(stepId(step)), () => this.apply(step, "redo"));
    return true;
  }

  /** Resolves when every edit queued now has finished (their promises never reject). */
  private async pending(): Promise<void> {
    while (this.queues.size > 0) await Promise.all(this.queues.values());
  }

  private annoIdOf(id: number): string {
    return this.cache.get(id)?.annoId ?? `restored-${id}`;
  }

  /** Writes `step.then` back over `step.now`: PATCH, DELETE (undo a creation) or POST (undo a deletion). */
  private async apply(step: Step, direction: "undo" | "redo"): Promise<void> {
    const { now: stored, then } = step;
    let answer: AnnotationRecord | null = null;
    try {
      if (stored && then) {
        const version = this.ours.get(stored.id) ?? stored.version;
        answer = await updateAnnotation(stored.id, version, restoreChanges(then), this.actor);
        this.show(answer);
      } else if (stored) {
        await deleteAnnotation(stored.id, this.ours.get(stored.id) ?? stored.version, this.actor);
        this.ours.delete(stored.id);
        if (!this.stopped) this.view.undraw(this.cache.forget([stored.id]));
      } else if (then) {
        const { kind, label, bbox, geometry, mask, source, status, attributes } = then;
        const payload: NewAnnotation = { kind, label, source, status, attributes };
        if (bbox && kind !== "polygon" && kind !== "point") payload.bbox = bbox;
        if (geometry) payload.geometry = geometry;
        if (mask) payload.mask = mask;
        const [id] = await createAnnotations(this.imageId, [payload], this.actor);
        if (id === undefined) return;
        answer = { ...then, id, version: 1 };
        this.history.remap(then.id, id);
        this.show(answer);
      }
    } catch (err) {
      if (err instanceof ApiError && (err.status === 409 || err.status === 404) && stored) {
        await this.undoRefused(stored.id, direction, err.status);
        return;
      }
      if (direction === "undo") this.history.redid({ now: step.then, then: step.now }, step.now);
      throw err;
    }
    if (answer) this.ours.set(answer.id, answer.version);
    if (direction === "undo") this.history.undid(step, answer);
    else this.history.redid(step, answer);
  }

  /** Holds and draws `record` as the server answered it. */
  private show(record: AnnotationRecord): void {
    if (this.stopped) return;
    let entry = this.cache.get(record.id);
    if (entry) {
      entry.record = record;
      entry.tolerance = 0;
      entry.changedAt = now();
    } else {
      entry = { record, annoId: `restored-${record.id}`, tolerance: 0, radius: this.view.pointRadius(), changedAt: now() };
      this.cache.add(entry);
    }
    this.view.draw([entry]);
  }

  /** Someone else changed (409) or deleted (404) the annotation since this page's write: nothing is written,
   * their version is shown, and the steps about it are dropped. */
  private async undoRefused(id: number, direction: "undo" | "redo", status: number): Promise<void> {
    this.history.drop(id);
    this.ours.delete(id);
    const entry = status === 409 ? await this.reload(id) : null;
    if (this.stopped) return;
    if (status === 404 || !entry) {
      this.view.undraw(this.cache.forget([id]));
      this.view.showMessage(`Cannot ${direction}: annotation ${id} was deleted by someone else.`, "conflict");
      return;
    }
    const r = entry.record;
    this.view.showMessage(
      `Cannot ${direction}: annotation ${id} was changed by someone else since your edit. Their version is shown ` +
        `(version ${r.version}, ${r.label}, ${r.status}); nothing was overwritten.`,
      "conflict",
    );
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
      if ("mask" in changes) {
        if (JSON.stringify(changes.mask) === JSON.stringify(entry.record.mask)) return; // a mask's pixels changed
      } else if ("bbox" in changes && JSON.stringify(changes.bbox) === JSON.stringify(entry.record.bbox)) return;
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
      const before = entry.record;
      try {
        await deleteAnnotation(id, version, this.actor);
        this.ours.delete(id);
        this.history.record({ now: null, then: before });
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
    const before = entry.record;
    try {
      entry.record = await updateAnnotation(id, version, changes, this.actor);
      this.ours.set(id, entry.record.version);
      this.history.record({ now: entry.record, then: before });
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
