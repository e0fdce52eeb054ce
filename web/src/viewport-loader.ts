// Loading the annotations of the view: after the view has been still for `debounceMs`, the visible level-0
// rectangle is queried (`viewQuery`); a newer load aborts the one still running. No DOM and no
// OpenSeadragon: the view is reached through `LoaderView`.

import { listAnnotations, type BBox } from "./api";
import { messageOf } from "./edit-sync";
import { isTruncated, viewQuery, type Page } from "./viewport-cache";

export const DEBOUNCE_MS = 200;

/** The last answered query, as the page's test hook shows it. */
export interface ViewportQuery {
  bbox: BBox;
  simplify: number;
  limit: number;
  count: number;
  truncated: boolean;
}

export interface LoaderView {
  /** The visible level-0 rectangle, clamped to the image (null: the view is off the image). */
  visibleRect(): BBox | null;
  /** Screen pixels per level-0 pixel now (null: unknown). */
  scale(): number | null;
  /** Whether the overlay is shown (a hidden one loads nothing). */
  shown(): boolean;
  /** An answer for the view arrived. */
  apply(page: Page): void;
  /** The view is off the image: nothing can be in view. */
  offImage(): void;
  showMessage(text: string): void;
  /** A load finished, or was not needed. */
  done(): void;
}

function isAbort(err: unknown): boolean {
  return err instanceof DOMException && err.name === "AbortError";
}

export class ViewportLoader {
  private timer: ReturnType<typeof setTimeout> | null = null;
  private abort: AbortController | null = null;
  private loading = false;
  private stopped = false;
  private answered = 0;
  private last: ViewportQuery | null = null;

  constructor(
    private readonly imageId: string,
    private readonly view: LoaderView,
    private readonly debounceMs: number = DEBOUNCE_MS,
  ) {}

  /** Loads answered. */
  get loads(): number {
    return this.answered;
  }

  get lastQuery(): ViewportQuery | null {
    return this.last;
  }

  /** The view moved: load it once it has been still for `debounceMs`. */
  schedule(): void {
    if (this.stopped) return;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.load();
    }, this.debounceMs);
  }

  /** Nothing scheduled or running, and the last answer covers the visible rectangle (when shown). */
  settled(): boolean {
    if (this.timer !== null || this.loading) return false;
    const rect = this.view.visibleRect();
    if (!this.view.shown() || !rect) return true;
    const q = this.last;
    return q !== null && q.bbox.every((v, i) => Math.abs(v - (rect[i] ?? NaN)) <= 1);
  }

  /** Cancels what is scheduled or running; nothing is loaded after this. */
  stop(): void {
    this.stopped = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.abort?.abort();
  }

  private async load(): Promise<void> {
    this.abort?.abort();
    const rect = this.view.visibleRect();
    if (!this.view.shown() || !rect) {
      this.abort = null;
      this.loading = false;
      if (rect === null) {
        this.view.offImage();
        this.last = null;
      }
      this.view.done();
      return;
    }
    const query = viewQuery(rect, this.view.scale());
    const abort = new AbortController();
    this.abort = abort;
    this.loading = true;
    const startedAt = performance.now();
    try {
      const records = await listAnnotations(this.imageId, query, abort.signal);
      if (abort.signal.aborted || this.stopped) return;
      const page: Page = { ...query, records, startedAt };
      this.view.apply(page);
      this.last = { ...query, count: records.length, truncated: isTruncated(page) };
      this.answered += 1;
    } catch (err) {
      if (isAbort(err) || this.stopped) return;
      this.view.showMessage(`Could not load annotations: ${messageOf(err)}`);
    } finally {
      if (this.abort === abort) {
        this.abort = null;
        this.loading = false;
        if (!this.stopped) this.view.done();
      }
    }
  }
}
