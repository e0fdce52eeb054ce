// The overlay's cache of loaded annotations, without DOM or OpenSeadragon: what to ask the server for a
// view, how an answer is merged into what is held, and what is dropped to keep memory bounded.
//
// Entries are keyed by annotation id: a newer version replaces an older one, a finer polygon
// simplification a coarser one. Annotations more than one view away from the visible rectangle are
// dropped, then the farthest beyond `maxCached`, so memory stays bounded however far one pans. Busy
// annotations (selected, or with an edit in flight) are never replaced or dropped under the user.

import type { AnnotationRecord, BBox } from "./api";
import { originOf, type Origin } from "./overlay-batch";

/** Most annotations one viewport query returns. */
export const VIEWPORT_LIMIT = 2000;
/** Most annotations held in memory (the visible ones are never dropped). */
export const MAX_CACHED = 4 * VIEWPORT_LIMIT;

export interface Entry {
  record: AnnotationRecord;
  /** Id of the shape in Annotorious (`a{id}` when loaded, a random id when drawn here). */
  annoId: string;
  /** Simplification tolerance the geometry was loaded with (0: exact). */
  tolerance: number;
  /** Radius of a point's disc, level-0 px. */
  radius: number;
  /** When this page last created, changed or reloaded it (performance.now()). */
  changedAt: number;
}

/** The query for one view: the visible rectangle and a polygon simplification of one screen pixel; with
 * `only`, what the overlay's filters show (the server then spends a crowded view's sample on it). */
export interface ViewQuery {
  bbox: BBox;
  simplify: number;
  limit: number;
  only?: QueryFilter;
}

/** What a query is limited to; each part absent: all. */
export interface QueryFilter {
  /** Labels left out (the legend's switched-off classes). */
  hiddenLabels?: string[];
  statuses?: string[];
  /** Model proposals (`source` model:*) and/or human labels (any other source). */
  origins?: Origin[];
}

/** Whether a record is one a query with `only` can return. */
export function matchesFilter(record: AnnotationRecord, only: QueryFilter | undefined): boolean {
  if (only?.hiddenLabels?.includes(record.label)) return false;
  if (only?.statuses && !only.statuses.includes(record.status)) return false;
  if (only?.origins && !only.origins.includes(originOf(record.source))) return false;
  return true;
}

/** The server's `source` patterns for the origins shown (absent or both: none; neither: `!*`, nothing). */
export function sourcePatterns(origins: readonly Origin[] | undefined): string[] {
  if (!origins) return [];
  const model = origins.includes("model");
  const human = origins.includes("human");
  if (model && human) return [];
  if (model) return ["model:*"];
  return human ? ["!model:*"] : ["!*"];
}

/** A filter as text: two queries whose keys are equal ask for the same records. */
export function filterKey(only: QueryFilter | undefined): string {
  const sorted = (values: readonly string[] | undefined): string[] | null => (values ? [...values].sort() : null);
  return JSON.stringify([sorted(only?.hiddenLabels), sorted(only?.statuses), sorted(only?.origins)]);
}

/** One answered query, as the cache merges it. */
export interface Page extends ViewQuery {
  records: AnnotationRecord[];
  /** How many overlap the rectangle in all (the server's count when it sampled; absent: not known). */
  total?: number | null;
  /** How many overlap the rectangle per label, every label (hidden ones too), of the origins and statuses
   * shown: the server's exact count, whatever the sample (absent: not known). */
  labelCounts?: Record<string, number> | null;
  /** performance.now() when the query was sent: edits made here after it win over its answer. */
  startedAt: number;
}

/** Whether two level-0 boxes overlap (edges included). */
export function intersects(a: BBox, b: BBox): boolean {
  return a[0] <= b[2] && a[2] >= b[0] && a[1] <= b[3] && a[3] >= b[1];
}

/**
 * What to ask for a visible level-0 rectangle shown at `screenPerImagePixel` screen pixels per level-0
 * pixel (null: unknown): the rectangle rounded to 1/100 px, polygons simplified to one screen pixel
 * (exact once a screen pixel covers less than a level-0 pixel), at most `VIEWPORT_LIMIT` records.
 */
export function viewQuery(rect: BBox, screenPerImagePixel: number | null): ViewQuery {
  const tolerance = screenPerImagePixel ? 1 / screenPerImagePixel : 0;
  const simplify = tolerance < 1 ? 0 : Number(tolerance.toPrecision(3));
  const bbox = rect.map((v) => Math.round(v * 100) / 100) as BBox;
  return { bbox, simplify, limit: VIEWPORT_LIMIT };
}

/** Whether more annotations are in view than came back: the server's count says so, or (without one) the
 * answer filled its limit. The server then sent a sample spread over every label and the view. */
export function isTruncated(page: Pick<Page, "records" | "limit" | "total">): boolean {
  if (typeof page.total === "number") return page.total > page.records.length;
  return page.records.length >= page.limit;
}

/**
 * The legend's counts per label: the loaded records' counts in view (`loaded`, which include the edits made
 * here since), except where they are not all of the view's, which the last answer's exact counts replace:
 * every label when it was a sample, the labels it left out (hidden) otherwise.
 */
export function legendCounts(
  loaded: ReadonlyMap<string, number>,
  page: Pick<Page, "records" | "limit" | "total" | "labelCounts" | "only"> | null,
): Map<string, number> {
  const counts = new Map(loaded);
  if (!page?.labelCounts) return counts;
  const sampled = isTruncated(page);
  for (const [label, n] of Object.entries(page.labelCounts)) {
    if (sampled || page.only?.hiddenLabels?.includes(label)) counts.set(label, n);
  }
  return counts;
}

export type IsBusy = (annoId: string) => boolean;

export class ViewportCache {
  private readonly entries = new Map<number, Entry>();
  private readonly byAnno = new Map<string, number>();

  constructor(readonly maxCached: number = MAX_CACHED) {}

  get size(): number {
    return this.entries.size;
  }

  ids(): number[] {
    return [...this.entries.keys()];
  }

  get(id: number): Entry | undefined {
    return this.entries.get(id);
  }

  /** The server id of an Annotorious shape, if it was saved. */
  idOf(annoId: string): number | undefined {
    return this.byAnno.get(annoId);
  }

  /** The entry of an Annotorious shape, if it was saved. */
  entryOf(annoId: string): Entry | undefined {
    const id = this.byAnno.get(annoId);
    return id === undefined ? undefined : this.entries.get(id);
  }

  /** Holds an annotation saved here. */
  add(entry: Entry): void {
    this.entries.set(entry.record.id, entry);
    this.byAnno.set(entry.annoId, entry.record.id);
  }

  /** Drops annotations by id; returns the entries that were held. */
  forget(ids: Iterable<number>): Entry[] {
    const dropped: Entry[] = [];
    for (const id of ids) {
      const entry = this.entries.get(id);
      if (!entry) continue;
      this.entries.delete(id);
      this.byAnno.delete(entry.annoId);
      dropped.push(entry);
    }
    return dropped;
  }

  /**
   * Merges an answer: new annotations are added, newer versions (and finer simplifications, and points
   * loaded at a zoom where their disc size `radius` is off by more than 1.5×) replace what is held.
   * When the answer is complete, what is held in its rectangle and did not come back was deleted
   * elsewhere and is dropped. Returns the entries to draw anew and those dropped.
   */
  merge(page: Page, radius: number, isBusy: IsBusy): { changed: Entry[]; dropped: Entry[] } {
    const { records, bbox, simplify, startedAt, only } = page;
    const changed: Entry[] = [];
    const returned = new Set<number>();
    // The server simplifies polygons only: everything else is exact whatever the zoom.
    const toleranceOf = (record: AnnotationRecord): number => (record.kind === "polygon" ? simplify : 0);
    for (const record of records) {
      if (record.kind === "tag") continue;
      returned.add(record.id);
      const known = this.entries.get(record.id);
      if (!known) {
        const entry: Entry = { record, annoId: `a${record.id}`, tolerance: toleranceOf(record), radius, changedAt: 0 };
        this.add(entry);
        changed.push(entry);
        continue;
      }
      // Being edited here, or changed here after this query was sent: never overwritten by it.
      if (isBusy(known.annoId) || known.changedAt > startedAt) continue;
      const newer = record.version > known.record.version;
      const finer =
        record.version === known.record.version && record.kind === "polygon" && simplify < known.tolerance / 2;
      const resized = record.kind === "point" && Math.abs(Math.log(radius / known.radius)) > Math.log(1.5);
      if (newer || finer || resized) {
        known.record = record;
        known.tolerance = toleranceOf(record);
        known.radius = radius;
        changed.push(known);
      }
    }
    if (isTruncated(page)) return { changed, dropped: [] };
    // Everything in this rectangle (that the query's filter lets through) came back: what we hold there and
    // did not get was deleted elsewhere.
    const gone = [...this.entries.values()]
      .filter(
        (e) =>
          e.record.bbox &&
          intersects(e.record.bbox, bbox) &&
          matchesFilter(e.record, only) &&
          !returned.has(e.record.id) &&
          !isBusy(e.annoId) &&
          e.changedAt < startedAt,
      )
      .map((e) => e.record.id);
    return { changed, dropped: this.forget(gone) };
  }

  /**
   * Drops what is more than one view away from `view` (everything when null: the view is off the image),
   * then the farthest from its centre beyond `maxCached` (never what is in view). Returns the dropped.
   */
  evict(view: BBox | null, isBusy: IsBusy): Entry[] {
    const candidates = [...this.entries.values()].filter((e) => !isBusy(e.annoId));
    if (view === null) return this.forget(candidates.map((e) => e.record.id));
    const [x0, y0, x1, y1] = view;
    const w = x1 - x0;
    const h = y1 - y0;
    const keep: BBox = [x0 - w, y0 - h, x1 + w, y1 + h];
    const far = candidates.filter((e) => !e.record.bbox || !intersects(e.record.bbox, keep));
    const dropped = this.forget(far.map((e) => e.record.id));
    if (this.entries.size > this.maxCached) {
      const cx = (x0 + x1) / 2;
      const cy = (y0 + y1) / 2;
      const distance = (e: Entry): number => {
        const b = e.record.bbox ?? [cx, cy, cx, cy];
        return Math.hypot((b[0] + b[2]) / 2 - cx, (b[1] + b[3]) / 2 - cy);
      };
      const movable = [...this.entries.values()]
        .filter((e) => !isBusy(e.annoId) && !(e.record.bbox && intersects(e.record.bbox, view)))
        .sort((a, b) => distance(b) - distance(a));
      dropped.push(...this.forget(movable.slice(0, this.entries.size - this.maxCached).map((e) => e.record.id)));
    }
    return dropped;
  }
}
