// The overlay's shapes as batched geometry, without DOM: one batch per label and status, each a Float32Array
// of ring vertices (level-0 pixels) and a Float32Array of point centres, so that a frame is a few fills and
// strokes per class instead of one WebGL object per shape (Annotorious drew 2,000 shapes at 1.6 fps in
// software WebGL). Built again only when the loaded data changes; a pan or zoom only changes the transform.
//
// Also here: hit-testing a click against the batches (bbox scan of a typed array, then the exact rings),
// the overlay's filters (label, model vs human, status) and the per-label counts of the legend.

import type { AnnotationRecord, AnnotationStatus, BBox, GeoJsonGeometry } from "./api";

/** Who made an annotation: a model (`source` "model:ID", predict --store) or a person (anything else). */
export type Origin = "model" | "human";
export const ORIGINS: readonly Origin[] = ["model", "human"];

export function originOf(source: string): Origin {
  return source.startsWith("model:") ? "model" : "human";
}

/** What the overlay shows: labels hidden, origins and statuses shown. */
export interface OverlayFilter {
  hiddenLabels: ReadonlySet<string>;
  origins: ReadonlySet<Origin>;
  statuses: ReadonlySet<AnnotationStatus>;
}

export function showAll(statuses: readonly AnnotationStatus[]): OverlayFilter {
  return { hiddenLabels: new Set(), origins: new Set(ORIGINS), statuses: new Set(statuses) };
}

/** Whether a record passes the origin and status filters (labels aside: the legend counts hidden labels). */
export function passesKind(record: AnnotationRecord, filter: OverlayFilter): boolean {
  return filter.origins.has(originOf(record.source)) && filter.statuses.has(record.status);
}

export function passes(record: AnnotationRecord, filter: OverlayFilter): boolean {
  return !filter.hiddenLabels.has(record.label) && passesKind(record, filter);
}

/** One shape handed to the batches: the key it is known by (Annotorious id) and its record. */
export interface Drawable {
  key: string;
  record: AnnotationRecord;
}

/** All shapes of one label and status. Ring `i` is points `ringStart[i]` .. `ringStart[i + 1] - 1`. */
export interface Batch {
  label: string;
  status: AnnotationStatus;
  /** x, y pairs of every ring of every area shape (polygon, box, mask box); outer rings counter-clockwise
   * in screen terms and holes the other way, so that a non-zero fill cuts holes yet unites overlaps. */
  coords: Float32Array;
  ringStart: Uint32Array;
  /** x, y pairs of the point shapes' centres. */
  points: Float32Array;
  /** Shapes in the batch (area and point). */
  count: number;
}

/** The batches and, for hit-testing, a table of every shape (struct of arrays). */
export interface Batched {
  batches: Batch[];
  keys: string[];
  /** Level-0 bbox of shape i: boxes[4i .. 4i + 3]. */
  boxes: Float64Array;
  batchOf: Uint32Array;
  /** Area shapes: first ring and ring count in their batch; points: index in `points` and count 0. */
  first: Uint32Array;
  rings: Uint32Array;
}

/** Draw order: faint first, so that accepted shapes lie on top. */
const STATUS_ORDER: Record<AnnotationStatus, number> = { rejected: 0, proposed: 1, accepted: 2, adjudicated: 3 };

type Ring = number[]; // flat x, y

function isPair(value: unknown): value is [number, number] {
  return (
    Array.isArray(value) &&
    value.length >= 2 &&
    typeof value[0] === "number" &&
    typeof value[1] === "number" &&
    Number.isFinite(value[0]) &&
    Number.isFinite(value[1])
  );
}

/** A ring as flat x, y without its closing point, oriented: positive signed area when `outer`. */
function flatRing(ring: unknown, outer: boolean): Ring | null {
  if (!Array.isArray(ring)) return null;
  const points = ring.filter(isPair);
  const head = points[0];
  const tail = points[points.length - 1];
  if (points.length > 1 && head && tail && head[0] === tail[0] && head[1] === tail[1]) points.pop();
  if (points.length < 3) return null;
  let area2 = 0;
  for (let i = 0; i < points.length; i++) {
    const [ax, ay] = points[i] as [number, number];
    const [bx, by] = points[(i + 1) % points.length] as [number, number];
    area2 += ax * by - bx * ay;
  }
  if (area2 > 0 !== outer) points.reverse();
  return points.flatMap(([x, y]) => [x, y]);
}

function boxRing([x0, y0, x1, y1]: BBox): Ring {
  return [x0, y0, x1, y0, x1, y1, x0, y1];
}

/** The rings of an area shape (outer rings first of each part), or null when it has none. */
export function ringsOf(record: AnnotationRecord): Ring[] | null {
  if (record.kind === "box" || record.kind === "mask") return record.bbox ? [boxRing(record.bbox)] : null;
  if (record.kind !== "polygon") return null;
  const geometry: GeoJsonGeometry | null = record.geometry;
  const parts: unknown[] =
    geometry?.type === "Polygon"
      ? [geometry.coordinates]
      : geometry?.type === "MultiPolygon" && Array.isArray(geometry.coordinates)
        ? geometry.coordinates
        : [];
  const rings: Ring[] = [];
  for (const part of parts) {
    if (!Array.isArray(part)) continue;
    part.forEach((ring, i) => {
      const flat = flatRing(ring, i === 0);
      if (flat) rings.push(flat);
    });
  }
  if (rings.length > 0) return rings;
  return record.bbox ? [boxRing(record.bbox)] : null;
}

/** A point's centre. */
export function centreOf(record: AnnotationRecord): [number, number] | null {
  const g = record.geometry;
  if (g?.type === "Point" && isPair(g.coordinates)) return [g.coordinates[0], g.coordinates[1]];
  return record.bbox ? [record.bbox[0], record.bbox[1]] : null;
}

interface Building {
  label: string;
  status: AnnotationStatus;
  coords: number[];
  ringStart: number[];
  points: number[];
  count: number;
}

/** Groups shapes by label and status into typed arrays (tags and shapes without geometry are skipped). */
export function batchShapes(shapes: readonly Drawable[]): Batched {
  const groups = new Map<string, Building>();
  const keys: string[] = [];
  const boxes: number[] = [];
  const groupOf: Building[] = [];
  const first: number[] = [];
  const ringCount: number[] = [];
  for (const { key, record } of shapes) {
    const groupKey = `${record.status}\u0000${record.label}`;
    let group = groups.get(groupKey);
    const make = (): Building => {
      const made: Building = {
        label: record.label,
        status: record.status,
        coords: [],
        ringStart: [0],
        points: [],
        count: 0,
      };
      groups.set(groupKey, made);
      return made;
    };
    if (record.kind === "point") {
      const centre = centreOf(record);
      if (!centre) continue;
      group ??= make();
      first.push(group.points.length / 2);
      ringCount.push(0);
      group.points.push(centre[0], centre[1]);
      boxes.push(centre[0], centre[1], centre[0], centre[1]);
    } else {
      const rings = ringsOf(record);
      if (!rings) continue;
      group ??= make();
      first.push(group.ringStart.length - 1);
      ringCount.push(rings.length);
      let x0 = Infinity;
      let y0 = Infinity;
      let x1 = -Infinity;
      let y1 = -Infinity;
      for (const ring of rings) {
        for (let i = 0; i < ring.length; i += 2) {
          const x = ring[i] as number;
          const y = ring[i + 1] as number;
          group.coords.push(x, y);
          if (x < x0) x0 = x;
          if (x > x1) x1 = x;
          if (y < y0) y0 = y;
          if (y > y1) y1 = y;
        }
        group.ringStart.push(group.coords.length / 2);
      }
      boxes.push(x0, y0, x1, y1);
    }
    group.count += 1;
    keys.push(key);
    groupOf.push(group);
  }
  const ordered = [...groups.values()].sort(
    (a, b) => STATUS_ORDER[a.status] - STATUS_ORDER[b.status] || a.label.localeCompare(b.label),
  );
  const indexOf = new Map(ordered.map((g, i) => [g, i]));
  return {
    batches: ordered.map((g) => ({
      label: g.label,
      status: g.status,
      coords: new Float32Array(g.coords),
      ringStart: new Uint32Array(g.ringStart),
      points: new Float32Array(g.points),
      count: g.count,
    })),
    keys,
    boxes: new Float64Array(boxes),
    batchOf: new Uint32Array(groupOf.map((g) => indexOf.get(g) ?? 0)),
    first: new Uint32Array(first),
    rings: new Uint32Array(ringCount),
  };
}

/** Even-odd test of (x, y) against rings `first .. first + count - 1` of a batch (holes are outside). */
function inside(batch: Batch, first: number, count: number, x: number, y: number): boolean {
  const { coords, ringStart } = batch;
  let odd = false;
  for (let r = first; r < first + count; r++) {
    const start = ringStart[r] as number;
    const end = ringStart[r + 1] as number;
    for (let i = start, j = end - 1; i < end; j = i++) {
      const xi = coords[2 * i] as number;
      const yi = coords[2 * i + 1] as number;
      const xj = coords[2 * j] as number;
      const yj = coords[2 * j + 1] as number;
      if (yi > y !== yj > y && x < ((xj - xi) * (y - yi)) / (yj - yi) + xi) odd = !odd;
    }
  }
  return odd;
}

/** Distance from (x, y) to the nearest edge of the rings, level-0 px. */
function edgeDistance(batch: Batch, first: number, count: number, x: number, y: number): number {
  const { coords, ringStart } = batch;
  let best = Infinity;
  for (let r = first; r < first + count; r++) {
    const start = ringStart[r] as number;
    const end = ringStart[r + 1] as number;
    for (let i = start, j = end - 1; i < end; j = i++) {
      const ax = coords[2 * j] as number;
      const ay = coords[2 * j + 1] as number;
      const dx = (coords[2 * i] as number) - ax;
      const dy = (coords[2 * i + 1] as number) - ay;
      const len2 = dx * dx + dy * dy;
      const t = len2 > 0 ? Math.max(0, Math.min(1, ((x - ax) * dx + (y - ay) * dy) / len2)) : 0;
      best = Math.min(best, Math.hypot(x - ax - t * dx, y - ay - t * dy));
    }
  }
  return best;
}

/**
 * The key of the shape under level-0 point (x, y): inside an area shape or within `tolerance` level-0 px of
 * its outline, or within `pointRadius` of a point. When several are hit, the smallest (usually the one the
 * user means: a nucleus inside a tumour region). Null when nothing is there.
 */
export function hitTest(b: Batched, x: number, y: number, tolerance: number, pointRadius: number): string | null {
  const { boxes } = b;
  let found: string | null = null;
  let foundArea = Infinity;
  const reach = Math.max(tolerance, pointRadius);
  for (let i = 0; i < b.keys.length; i++) {
    const x0 = boxes[4 * i] as number;
    const y0 = boxes[4 * i + 1] as number;
    const x1 = boxes[4 * i + 2] as number;
    const y1 = boxes[4 * i + 3] as number;
    if (x < x0 - reach || x > x1 + reach || y < y0 - reach || y > y1 + reach) continue;
    const batch = b.batches[b.batchOf[i] as number] as Batch;
    const rings = b.rings[i] as number;
    let area: number;
    if (rings === 0) {
      if (Math.hypot(x - x0, y - y0) > pointRadius) continue;
      area = 0;
    } else {
      const first = b.first[i] as number;
      if (!inside(batch, first, rings, x, y) && edgeDistance(batch, first, rings, x, y) > tolerance) continue;
      area = (x1 - x0) * (y1 - y0);
    }
    if (area < foundArea) {
      found = b.keys[i] as string;
      foundArea = area;
    }
  }
  return found;
}

/** Keys of the shapes whose bbox overlaps `rect` (edges included). */
export function keysIn(b: Batched, [qx0, qy0, qx1, qy1]: BBox): string[] {
  const out: string[] = [];
  const { boxes } = b;
  for (let i = 0; i < b.keys.length; i++) {
    if ((boxes[4 * i] as number) <= qx1 && (boxes[4 * i + 2] as number) >= qx0) {
      if ((boxes[4 * i + 1] as number) <= qy1 && (boxes[4 * i + 3] as number) >= qy0) out.push(b.keys[i] as string);
    }
  }
  return out;
}

/** Annotations per label among `records` (the legend: those in view that pass the origin/status filters). */
export function countByLabel(records: Iterable<AnnotationRecord>, filter: OverlayFilter): Map<string, number> {
  const counts = new Map<string, number>();
  for (const record of records) {
    if (record.kind === "tag" || !passesKind(record, filter)) continue;
    counts.set(record.label, (counts.get(record.label) ?? 0) + 1);
  }
  return counts;
}
