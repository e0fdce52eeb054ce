import { describe, expect, it } from "vitest";

import type { AnnotationRecord, BBox } from "../src/api";
import {
  filterKey,
  intersects,
  isTruncated,
  legendCounts,
  matchesFilter,
  MAX_CACHED,
  sourcePatterns,
  viewQuery,
  VIEWPORT_LIMIT,
  ViewportCache,
  type Page,
} from "../src/viewport-cache";
import { boxRecord } from "./records";

const box = boxRecord;

function polygon(id: number, bbox: BBox, version = 1): AnnotationRecord {
  const [x0, y0, x1, y1] = bbox;
  const ring: [number, number][] = [
    [x0, y0],
    [x1, y0],
    [x1, y1],
    [x0, y0],
  ];
  return { ...box(id, bbox, version), kind: "polygon", geometry: { type: "Polygon", coordinates: [ring] } };
}

function page(records: AnnotationRecord[], bbox: BBox = [0, 0, 1000, 1000], extra: Partial<Page> = {}): Page {
  return { records, bbox, simplify: 0, limit: VIEWPORT_LIMIT, startedAt: 100, ...extra };
}

const idle = (): boolean => false;
const RADIUS = 4;

describe("viewQuery", () => {
  it("rounds the visible rectangle and simplifies polygons to one screen pixel", () => {
    expect(viewQuery([0.123, 10.005, 4000.4567, 3000], 0.125)).toEqual({
      bbox: [0.12, 10.01, 4000.46, 3000],
      simplify: 8,
      limit: VIEWPORT_LIMIT,
    });
    expect(viewQuery([0, 0, 10, 10], 1 / 3).simplify).toBe(3);
    expect(viewQuery([0, 0, 10, 10], 1 / 1234.5678).simplify).toBe(1230);
  });

  it("asks for exact geometry when a level-0 pixel covers more than a screen pixel, or the zoom is unknown", () => {
    expect(viewQuery([0, 0, 10, 10], 1).simplify).toBe(1);
    expect(viewQuery([0, 0, 10, 10], 1.01).simplify).toBe(0);
    expect(viewQuery([0, 0, 10, 10], 4).simplify).toBe(0);
    expect(viewQuery([0, 0, 10, 10], null).simplify).toBe(0);
  });
});

describe("isTruncated / intersects", () => {
  it("calls a full page truncated", () => {
    expect(isTruncated({ records: [box(1, [0, 0, 1, 1])], limit: 1 })).toBe(true);
    expect(isTruncated({ records: [], limit: 1 })).toBe(false);
    // A sampled answer: the server's count decides (a full page of exactly everything is complete).
    expect(isTruncated({ records: [box(1, [0, 0, 1, 1])], limit: 1, total: 1 })).toBe(false);
    expect(isTruncated({ records: [box(1, [0, 0, 1, 1])], limit: 1, total: 7 })).toBe(true);
  });

  it("counts touching edges as overlap", () => {
    expect(intersects([0, 0, 10, 10], [10, 10, 20, 20])).toBe(true);
    expect(intersects([0, 0, 10, 10], [10.01, 0, 20, 10])).toBe(false);
  });
});

describe("ViewportCache.merge", () => {
  it("adds new annotations under Annotorious ids and skips tags", () => {
    const cache = new ViewportCache();
    const tag: AnnotationRecord = { ...box(3, [0, 0, 1, 1]), kind: "tag", bbox: null };
    const { changed, dropped } = cache.merge(page([box(1, [0, 0, 10, 10]), tag, box(2, [5, 5, 9, 9])]), RADIUS, idle);
    expect(changed.map((e) => e.annoId)).toEqual(["a1", "a2"]);
    expect(dropped).toEqual([]);
    expect(cache.ids()).toEqual([1, 2]);
    expect(cache.idOf("a2")).toBe(2);
    expect(cache.entryOf("a1")?.radius).toBe(RADIUS);
  });

  it("drops only what a filtered answer could have returned (hidden classes stay held)", () => {
    const cache = new ViewportCache();
    const mitosis = { ...box(2, [0, 0, 10, 10]), label: "mitosis" };
    const rejected = { ...box(3, [0, 0, 10, 10]), status: "rejected" as const };
    cache.merge(page([box(1, [0, 0, 10, 10]), mitosis, rejected, box(4, [5, 5, 9, 9])]), RADIUS, idle);
    // Only cells that are not rejected were asked for: 1 came back, 4 did not (deleted elsewhere).
    const only = { hiddenLabels: ["mitosis"], statuses: ["proposed", "accepted"] };
    const { dropped } = cache.merge(page([box(1, [0, 0, 10, 10])], undefined, { only }), RADIUS, idle);
    expect(dropped.map((e) => e.record.id)).toEqual([4]);
    expect(cache.ids().sort()).toEqual([1, 2, 3]);
    expect(matchesFilter(mitosis, only)).toBe(false);
    expect(matchesFilter(mitosis, undefined)).toBe(true);
  });

  it("replaces an annotation by a newer version only", () => {
    const cache = new ViewportCache();
    cache.merge(page([box(1, [0, 0, 10, 10], 2)]), RADIUS, idle);
    expect(cache.merge(page([box(1, [0, 0, 50, 50], 1)]), RADIUS, idle).changed).toEqual([]);
    expect(cache.get(1)?.record.bbox).toEqual([0, 0, 10, 10]);
    expect(cache.merge(page([box(1, [0, 0, 50, 50], 3)]), RADIUS, idle).changed).toHaveLength(1);
    expect(cache.get(1)?.record.bbox).toEqual([0, 0, 50, 50]);
  });

  it("replaces a simplified polygon by one at least twice finer, and records the tolerance", () => {
    const cache = new ViewportCache();
    const at = (simplify: number): Page => page([polygon(1, [0, 0, 10, 10])], undefined, { simplify });
    cache.merge(at(8), RADIUS, idle);
    expect(cache.get(1)?.tolerance).toBe(8);
    expect(cache.merge(at(5), RADIUS, idle).changed).toEqual([]);
    expect(cache.merge(at(2), RADIUS, idle).changed).toHaveLength(1);
    expect(cache.get(1)?.tolerance).toBe(2);
    // Boxes are exact whatever the zoom.
    cache.merge(page([box(2, [0, 0, 10, 10])], undefined, { simplify: 8 }), RADIUS, idle);
    expect(cache.get(2)?.tolerance).toBe(0);
  });

  it("redraws points when their disc size is off by more than 1.5×", () => {
    const cache = new ViewportCache();
    const point: AnnotationRecord = {
      ...box(1, [5, 5, 5, 5]),
      kind: "point",
      geometry: { type: "Point", coordinates: [5, 5] },
    };
    cache.merge(page([point]), 4, idle);
    expect(cache.merge(page([point]), 5, idle).changed).toEqual([]);
    expect(cache.merge(page([point]), 7, idle).changed).toHaveLength(1);
    expect(cache.get(1)?.radius).toBe(7);
  });

  it("never overwrites a busy annotation or one changed here after the query was sent", () => {
    const cache = new ViewportCache();
    cache.merge(page([box(1, [0, 0, 10, 10]), box(2, [0, 0, 10, 10])]), RADIUS, idle);
    const edited = cache.get(2);
    if (!edited) throw new Error("not cached");
    edited.changedAt = 500;
    const busy = (annoId: string): boolean => annoId === "a1";
    const answer = page([box(1, [1, 1, 9, 9], 5), box(2, [1, 1, 9, 9], 5)], undefined, { startedAt: 400 });
    expect(cache.merge(answer, RADIUS, busy).changed).toEqual([]);
    expect(cache.get(1)?.record.version).toBe(1);
    expect(cache.get(2)?.record.version).toBe(1);
  });

  it("drops what a complete answer left out inside its rectangle (deleted elsewhere)", () => {
    const cache = new ViewportCache();
    cache.merge(page([box(1, [0, 0, 10, 10]), box(2, [20, 20, 30, 30]), box(3, [500, 500, 510, 510])]), RADIUS, idle);
    const { dropped } = cache.merge(page([box(1, [0, 0, 10, 10])], [0, 0, 100, 100]), RADIUS, idle);
    expect(dropped.map((e) => e.record.id)).toEqual([2]);
    expect(cache.ids()).toEqual([1, 3]); // 3 lies outside the answered rectangle
  });

  it("keeps what a truncated answer left out, and what is busy or newer than the query", () => {
    const cache = new ViewportCache();
    cache.merge(page([box(1, [0, 0, 10, 10]), box(2, [20, 20, 30, 30]), box(3, [40, 40, 50, 50])]), RADIUS, idle);
    const newer = cache.get(3);
    if (newer) newer.changedAt = 1000;
    const full = page([box(1, [0, 0, 10, 10])], [0, 0, 100, 100], { limit: 1 });
    expect(cache.merge(full, RADIUS, idle).dropped).toEqual([]);
    const complete = page([box(1, [0, 0, 10, 10])], [0, 0, 100, 100], { startedAt: 900 });
    expect(cache.merge(complete, RADIUS, (annoId) => annoId === "a2").dropped).toEqual([]);
    expect(cache.ids()).toEqual([1, 2, 3]);
  });
});

describe("the overlay's filters as a query", () => {
  it("matches records by origin, and names the origins as the server's source patterns", () => {
    const human = { ...box(1, [0, 0, 1, 1]), source: "user:ana" };
    const model = { ...box(2, [0, 0, 1, 1]), source: "model:det-3" };
    expect(matchesFilter(model, { origins: ["model"] })).toBe(true);
    expect(matchesFilter(human, { origins: ["model"] })).toBe(false);
    expect(matchesFilter(human, { origins: ["human"] })).toBe(true);
    expect(sourcePatterns(undefined)).toEqual([]);
    expect(sourcePatterns(["model", "human"])).toEqual([]);
    expect(sourcePatterns(["model"])).toEqual(["model:*"]);
    expect(sourcePatterns(["human"])).toEqual(["!model:*"]);
    expect(sourcePatterns([])).toEqual(["!*"]);
  });

  it("keys a filter by what it asks for, whatever the order", () => {
    expect(filterKey({ hiddenLabels: ["b", "a"] })).toBe(filterKey({ hiddenLabels: ["a", "b"] }));
    expect(filterKey(undefined)).toBe(filterKey({}));
    expect(filterKey({ origins: ["model"] })).not.toBe(filterKey({ origins: ["human"] }));
    expect(filterKey({ statuses: [] })).not.toBe(filterKey(undefined));
  });
});

describe("legendCounts", () => {
  const loaded = new Map([
    ["cell", 1200],
    ["mitosis", 40],
  ]);
  const records = Array.from({ length: 3 }, (_, i) => box(i + 1, [0, 0, 1, 1]));

  it("shows the server's exact counts when the loaded records are a sample", () => {
    const sampled = { records, limit: 3, total: 14_312, labelCounts: { cell: 14_000, mitosis: 312 } };
    expect(legendCounts(loaded, sampled)).toEqual(new Map([["cell", 14_000], ["mitosis", 312]]));
  });

  it("keeps the loaded counts (with edits made here) when everything in view came back", () => {
    const complete = { records, limit: 2000, total: 3, labelCounts: { cell: 2, mitosis: 1 } }; // then: 3 in view
    expect(legendCounts(loaded, complete)).toEqual(loaded);
    expect(legendCounts(loaded, null)).toEqual(loaded);
    expect(legendCounts(loaded, { records, limit: 2000 })).toEqual(loaded);
  });

  it("takes the server's count of a hidden class, whose loaded shapes are a leftover", () => {
    const only = { hiddenLabels: ["cell"] };
    const page = { records, limit: 2000, total: 40, labelCounts: { cell: 9_876, mitosis: 40 }, only };
    expect(legendCounts(new Map([["cell", 12], ["mitosis", 40]]), page)).toEqual(
      new Map([["cell", 9_876], ["mitosis", 40]]),
    );
  });
});

describe("ViewportCache.evict", () => {
  it("keeps what lies within one view of the visible rectangle", () => {
    const cache = new ViewportCache();
    const view: BBox = [2000, 2000, 3000, 3000];
    const near = [box(1, [2500, 2500, 2510, 2510]), box(2, [1100, 1100, 1110, 1110])];
    const far = [box(3, [10, 10, 20, 20]), box(4, [4100, 2500, 4110, 2510])];
    cache.merge(page([...near, ...far]), RADIUS, idle);
    const dropped = cache.evict(view, idle);
    expect(dropped.map((e) => e.record.id).sort()).toEqual([3, 4]);
    expect(cache.ids()).toEqual([1, 2]);
  });

  it("drops everything off the image, except busy annotations", () => {
    const cache = new ViewportCache();
    cache.merge(page([box(1, [0, 0, 10, 10]), box(2, [0, 0, 10, 10])]), RADIUS, idle);
    expect(cache.evict(null, (annoId) => annoId === "a2").map((e) => e.record.id)).toEqual([1]);
    expect(cache.ids()).toEqual([2]);
  });

  it("bounds memory: beyond maxCached the farthest go first, never what is in view", () => {
    const cache = new ViewportCache(3);
    const view: BBox = [100, 100, 200, 200];
    // Two in view, then three nearby (within one view) at growing distances from the centre.
    cache.merge(
      page([
        box(1, [120, 120, 130, 130]),
        box(2, [170, 170, 180, 180]),
        box(3, [210, 150, 215, 155]),
        box(4, [250, 150, 255, 155]),
        box(5, [290, 150, 295, 155]),
      ]),
      RADIUS,
      idle,
    );
    expect(cache.evict(view, idle).map((e) => e.record.id)).toEqual([5, 4]);
    expect(cache.ids()).toEqual([1, 2, 3]);
    // However many are in view, none of them is dropped.
    const crowded = new ViewportCache(1);
    crowded.merge(page([box(1, [120, 120, 130, 130]), box(2, [170, 170, 180, 180])]), RADIUS, idle);
    expect(crowded.evict(view, idle)).toEqual([]);
    expect(crowded.size).toBe(2);
  });

  it("holds at most MAX_CACHED after panning across many full pages", () => {
    const cache = new ViewportCache();
    // Each step pans 100 px right over a fresh page of 2,000 boxes (50 × 40, 10 px apart) 500 px wide.
    let view: BBox = [0, 0, 0, 0];
    let records: AnnotationRecord[] = [];
    for (let step = 0; step < 8; step++) {
      const x = step * 100;
      records = Array.from({ length: VIEWPORT_LIMIT }, (_, i) => {
        const [cx, cy] = [x + (i % 50) * 10, Math.floor(i / 50) * 10];
        return box(step * VIEWPORT_LIMIT + i + 1, [cx, cy, cx + 5, cy + 5]);
      });
      view = [x, 0, x + 500, 400];
      cache.merge(page(records, view), RADIUS, idle);
      cache.evict(view, idle);
      expect(cache.size).toBeLessThanOrEqual(MAX_CACHED);
    }
    expect(cache.size).toBe(MAX_CACHED);
    expect(records.every((r) => cache.get(r.id) !== undefined)).toBe(true);
  });
});

describe("ViewportCache.add / forget", () => {
  it("holds annotations saved here and forgets them by id", () => {
    const cache = new ViewportCache();
    cache.add({ record: box(7, [0, 0, 1, 1]), annoId: "drawn-uuid", tolerance: 0, radius: RADIUS, changedAt: 1 });
    expect(cache.entryOf("drawn-uuid")?.record.id).toBe(7);
    expect(cache.forget([7, 8]).map((e) => e.annoId)).toEqual(["drawn-uuid"]);
    expect(cache.idOf("drawn-uuid")).toBeUndefined();
    expect(cache.size).toBe(0);
  });
});
