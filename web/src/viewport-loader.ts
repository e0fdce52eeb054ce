// Loading the annotations of the view: after the view has been still for `debounceMs`, the visible level-0
// rectangle is queried (`viewQuery`, with `sample=true`: when more are in view than `limit`, the server
// answers a sample spread over every label and the view, and how many there are in all, per label); the
// overlay's filters go with it, so that the sample is drawn from what is shown. A newer load aborts the one
// still running. No DOM and no OpenSeadragon: the view is reached through `LoaderView`.

import { apiFetch, ApiError, isImageId, type AnnotationRecord, type BBox } from "./api";
import { messageOf } from "./edit-sync";
import {
  filterKey,
  isTruncated,
  sourcePatterns,
  viewQuery,
  type Page,
  type QueryFilter,
  type ViewQuery,
} from "./viewport-cache";

export const DEBOUNCE_MS = 200;

/** The last answered query, as the page's test hook shows it. */
export interface ViewportQuery {
  bbox: BBox;
  simplify: number;
  limit: number;
  only?: QueryFilter;
  count: number;
  /** In the rectangle in all (null: not known). */
  total: number | null;
  /** In the rectangle per label, every label (null: not known). */
  labelCounts: Record<string, number> | null;
  truncated: boolean;
}

export interface LoaderView {
  /** The visible level-0 rectangle, clamped to the image (null: the view is off the image). */
  visibleRect(): BBox | null;
  /** Screen pixels per level-0 pixel now (null: unknown). */
  scale(): number | null;
  /** Whether the overlay is shown (a hidden one loads nothing). */
  shown(): boolean;
  /** What the overlay's filters show (absent: everything). */
  only?(): QueryFilter | undefined;
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

/** The query string of a view's query: its filters as the server reads them (hidden labels as
 * `exclude_label`, origins as `source` patterns; no status or no origin shown: `source=!*`, nothing). */
export function viewParams(query: ViewQuery): URLSearchParams {
  const params = new URLSearchParams({
    bbox: query.bbox.map((v) => String(Math.round(v * 100) / 100)).join(","),
    limit: String(query.limit),
    total: "false", // counted only when the server samples (it has the count then for free)
    sample: "true",
    counts: "true", // per label, exact: the legend's counts (free with the sample's scan)
  });
  if (query.simplify > 0) params.set("simplify", String(query.simplify));
  const only = query.only;
  for (const label of only?.hiddenLabels ?? []) params.append("exclude_label", label);
  const nothing = only?.statuses?.length === 0 || only?.origins?.length === 0;
  for (const status of nothing ? [] : (only?.statuses ?? [])) params.append("status", status);
  for (const source of nothing ? ["!*"] : sourcePatterns(only?.origins)) params.append("source", source);
  return params;
}

/** The annotations of a view: a sample when more than `limit` are in it, with their count (`total`) and
 * their exact counts per label (`labelCounts`). */
export async function fetchView(
  imageId: string,
  query: ViewQuery,
  signal?: AbortSignal,
): Promise<{ records: AnnotationRecord[]; total: number | null; labelCounts: Record<string, number> | null }> {
  if (!isImageId(imageId)) throw new ApiError(404, "not_found", "No such image.");
  const params = viewParams(query);
  const response = await apiFetch(`/api/v1/images/${imageId}/annotations?${params.toString()}`, {
    headers: { Accept: "application/json" },
    signal: signal ?? null,
  });
  if (!response.ok) {
    const body = (await response.json().catch(() => null)) as { error?: { code?: string; message?: string } } | null;
    const message = body?.error?.message ?? `${response.status} ${response.statusText}`.trim();
    throw new ApiError(response.status, body?.error?.code ?? "http_error", message);
  }
  const page = (await response.json()) as {
    items: AnnotationRecord[];
    total: number | null;
    label_counts?: Record<string, number> | null;
  };
  const counts = page.label_counts;
  return {
    records: page.items,
    total: typeof page.total === "number" ? page.total : null,
    labelCounts: counts && typeof counts === "object" ? counts : null,
  };
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

  /** Nothing scheduled or running, and the last answer covers the visible rectangle (when shown) with the
   * filters shown now. */
  settled(): boolean {
    if (this.timer !== null || this.loading) return false;
    const rect = this.view.visibleRect();
    if (!this.view.shown() || !rect) return true;
    const q = this.last;
    return (
      q !== null &&
      q.bbox.every((v, i) => Math.abs(v - (rect[i] ?? NaN)) <= 1) &&
      filterKey(q.only) === filterKey(this.view.only?.())
    );
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
    const only = this.view.only?.();
    const query: ViewQuery = only ? { ...viewQuery(rect, this.view.scale()), only } : viewQuery(rect, this.view.scale());
    const abort = new AbortController();
    this.abort = abort;
    this.loading = true;
    const startedAt = performance.now();
    try {
      const { records, total, labelCounts } = await fetchView(this.imageId, query, abort.signal);
      if (abort.signal.aborted || this.stopped) return;
      const page: Page = { ...query, records, total, labelCounts, startedAt };
      this.view.apply(page);
      this.last = { ...query, count: records.length, total, labelCounts, truncated: isTruncated(page) };
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
