// Conversions between the API's annotation records (level-0 pixels, GeoJSON) and the shapes of
// Annotorious's W3C annotation model (target selectors: RECTANGLE, POLYGON, MULTIPOLYGON, ELLIPSE).
//
//   box      -> RECTANGLE (x, y, w, h)                               editable, saved back as `bbox`
//   polygon  -> POLYGON (one ring), or MULTIPOLYGON (holes, several parts: every ring is kept and
//               drawn, holes cut out)                                 editable, saved back as GeoJSON
//   mask     -> RECTANGLE of its bbox (the RLE pixels are not drawn)   select / relabel / delete only
//   point    -> small ELLIPSE, `pointRadius` level-0 px (a few screen pixels at the zoom it was loaded)
//                                                                     select / relabel / delete only
//   tag      -> no shape (image-level; listed in the side panel)

import {
  ShapeType,
  type MultiPolygon,
  type MultiPolygonElement,
  type Polygon,
  type Rectangle,
  type Shape,
} from "@annotorious/openseadragon";

import type { AnnotationKind, AnnotationRecord, BBox, GeoJsonGeometry, NewAnnotation, Position } from "./api";

interface Bounds {
  minX: number;
  minY: number;
  maxX: number;
  maxY: number;
}

interface Ellipse extends Shape {
  geometry: { cx: number; cy: number; rx: number; ry: number; bounds: Bounds };
}

/** Kinds whose geometry can be reshaped in the viewer. */
export const RESHAPEABLE: ReadonlySet<AnnotationKind> = new Set<AnnotationKind>(["box", "polygon"]);

function boundsOf(points: readonly (readonly number[])[]): Bounds {
  let minX = Infinity;
  let minY = Infinity;
  let maxX = -Infinity;
  let maxY = -Infinity;
  for (const [x = NaN, y = NaN] of points) {
    if (x < minX) minX = x;
    if (y < minY) minY = y;
    if (x > maxX) maxX = x;
    if (y > maxY) maxY = y;
  }
  return { minX, minY, maxX, maxY };
}

function isPosition(value: unknown): value is Position {
  return (
    Array.isArray(value) &&
    value.length >= 2 &&
    typeof value[0] === "number" &&
    typeof value[1] === "number" &&
    Number.isFinite(value[0]) &&
    Number.isFinite(value[1])
  );
}

/** A GeoJSON ring without its closing point (Annotorious rings are implicitly closed). */
function openRing(ring: unknown): [number, number][] {
  if (!Array.isArray(ring)) return [];
  const points = ring.filter(isPosition).map(([x, y]): [number, number] => [x, y]);
  const first = points[0];
  const last = points[points.length - 1];
  if (points.length > 1 && first && last && first[0] === last[0] && first[1] === last[1]) points.pop();
  return points;
}

/** An Annotorious ring as a closed GeoJSON ring, clamped into the image and rounded to 1/100 px. */
function closedRing(points: readonly (readonly number[])[], [w, h]: Extent): Position[] {
  const ring = points.map(([x = 0, y = 0]): Position => [clamp(x, w), clamp(y, h)]);
  const first = ring[0];
  if (first) ring.push([first[0], first[1]]);
  return ring;
}

function round(value: number): number {
  return Math.round(value * 100) / 100;
}

function rectangle(bbox: BBox): Rectangle {
  const [x0, y0, x1, y1] = bbox;
  return {
    type: ShapeType.RECTANGLE,
    geometry: { x: x0, y: y0, w: x1 - x0, h: y1 - y0, bounds: { minX: x0, minY: y0, maxX: x1, maxY: y1 } },
  };
}

/** The polygons of a GeoJSON Polygon / MultiPolygon as lists of open rings (outer ring first). */
function polygonsOf(geometry: GeoJsonGeometry | null): [number, number][][][] {
  if (!geometry) return [];
  const coordinates = geometry.coordinates as unknown;
  if (!Array.isArray(coordinates)) return [];
  const parts = geometry.type === "Polygon" ? [coordinates] : geometry.type === "MultiPolygon" ? coordinates : [];
  return parts
    .map((rings: unknown) => (Array.isArray(rings) ? rings.map(openRing).filter((r) => r.length >= 3) : []))
    .filter((rings) => rings.length > 0);
}

function polygonShape(parts: [number, number][][][]): Polygon | MultiPolygon | null {
  const first = parts[0];
  if (!first?.[0]) return null;
  if (parts.length === 1 && first.length === 1) {
    return { type: ShapeType.POLYGON, geometry: { points: first[0], bounds: boundsOf(first[0]) } };
  }
  const polygons: MultiPolygonElement[] = parts.map((rings) => ({
    rings: rings.map((points) => ({ points })),
    bounds: boundsOf(rings[0] ?? []),
  }));
  const all = parts.flatMap((rings) => rings[0] ?? []);
  return { type: ShapeType.MULTIPOLYGON, geometry: { polygons, bounds: boundsOf(all) } };
}

/**
 * The Annotorious selector for a record, or null for image-level tags (and records without usable
 * geometry). `pointRadius` sizes points, in level-0 pixels.
 */
export function shapeOf(record: AnnotationRecord, pointRadius: number): Shape | null {
  switch (record.kind) {
    case "tag":
      return null;
    case "box":
    case "mask":
      return record.bbox ? rectangle(record.bbox) : null;
    case "polygon":
      return polygonShape(polygonsOf(record.geometry)) ?? (record.bbox ? rectangle(record.bbox) : null);
    case "point": {
      const geometry = record.geometry;
      const center = geometry?.type === "Point" && isPosition(geometry.coordinates) ? geometry.coordinates : null;
      const [cx, cy] = center ?? (record.bbox ? [record.bbox[0], record.bbox[1]] : [NaN, NaN]);
      if (!Number.isFinite(cx) || !Number.isFinite(cy)) return null;
      const r = pointRadius;
      const ellipse: Ellipse = {
        type: ShapeType.ELLIPSE,
        geometry: { cx, cy, rx: r, ry: r, bounds: { minX: cx - r, minY: cy - r, maxX: cx + r, maxY: cy + r } },
      };
      return ellipse;
    }
    default:
      return null;
  }
}

/** The image's level-0 width and height: what is drawn is stored inside it (the server refuses shapes that
 * leave the image, as import does), so a drag past the edge is clamped to the edge, as CVAT does. */
export type Extent = readonly [width: number, height: number];

function clamp(value: number, max: number): number {
  return round(Math.min(Math.max(value, 0), max));
}

function boxOf(shape: Shape, extent: Extent): BBox | null {
  const [w, h] = extent;
  let box: [number, number, number, number];
  if (shape.type === ShapeType.RECTANGLE && !(shape as Rectangle).geometry.rot) {
    const g = (shape as Rectangle).geometry;
    box = [g.x, g.y, g.x + g.w, g.y + g.h];
  } else {
    const { minX, minY, maxX, maxY } = shape.geometry.bounds;
    box = [minX, minY, maxX, maxY];
  }
  const [x0, y0, x1, y1] = [clamp(box[0], w), clamp(box[1], h), clamp(box[2], w), clamp(box[3], h)];
  return x1 > x0 && y1 > y0 ? [x0, y0, x1, y1] : null; // wholly outside the image: nothing to store
}

function geometryOf(shape: Shape, extent: Extent): GeoJsonGeometry | null {
  if (shape.type === ShapeType.POLYGON) {
    const points = (shape as Polygon).geometry.points;
    return points.length >= 3 ? { type: "Polygon", coordinates: [closedRing(points, extent)] } : null;
  }
  if (shape.type === ShapeType.MULTIPOLYGON) {
    const parts = (shape as MultiPolygon).geometry.polygons.map((polygon) =>
      polygon.rings.map((ring) => closedRing(ring.points, extent)),
    );
    if (parts.length === 0) return null;
    return parts.length === 1 && parts[0]
      ? { type: "Polygon", coordinates: parts[0] }
      : { type: "MultiPolygon", coordinates: parts };
  }
  if (shape.type === ShapeType.RECTANGLE) {
    const box = boxOf(shape, extent);
    if (!box) return null;
    const [x0, y0, x1, y1] = box;
    return {
      type: "Polygon",
      coordinates: [
        [
          [x0, y0],
          [x1, y0],
          [x1, y1],
          [x0, y1],
          [x0, y0],
        ],
      ],
    };
  }
  return null;
}

/** The PATCH `changes` that store a reshaped selector on an annotation of `kind` (null: not storable),
 * clamped into the image's `extent`. */
export function geometryChanges(
  kind: AnnotationKind,
  shape: Shape,
  extent: Extent,
): { bbox: BBox } | { geometry: GeoJsonGeometry } | null {
  if (kind === "box") {
    const bbox = boxOf(shape, extent);
    return bbox ? { bbox } : null;
  }
  if (kind === "polygon") {
    const geometry = geometryOf(shape, extent);
    return geometry ? { geometry } : null;
  }
  return null;
}

/** The POST body of a freshly drawn selector (rectangle -> box, polygon -> polygon), clamped into the
 * image's `extent` (null: nothing of it lies inside the image). */
export function newAnnotation(shape: Shape, label: string, source: string, extent: Extent): NewAnnotation | null {
  if (shape.type === ShapeType.RECTANGLE) {
    const bbox = boxOf(shape, extent);
    return bbox ? { kind: "box", label, bbox, source } : null;
  }
  const geometry = geometryOf(shape, extent);
  return geometry ? { kind: "polygon", label, geometry, source } : null;
}

/** The level-0 bounding box of a new annotation (what the server derives from its geometry). */
export function bboxOf(annotation: NewAnnotation): BBox | null {
  if (annotation.bbox) return annotation.bbox;
  const outer = polygonsOf(annotation.geometry ?? null).flatMap((rings) => rings[0] ?? []);
  if (outer.length === 0) return null;
  const { minX, minY, maxX, maxY } = boundsOf(outer);
  return [minX, minY, maxX, maxY];
}


function shiftGeometry(geometry: GeoJsonGeometry, dx: number, dy: number): GeoJsonGeometry {
  const move = (value: unknown): unknown =>
    isPosition(value) ? [round(value[0] + dx), round(value[1] + dy)] : Array.isArray(value) ? value.map(move) : value;
  return { type: geometry.type, coordinates: move(geometry.coordinates) } as GeoJsonGeometry;
}

/**
 * A copy of `record` to paste (POST body), moved by (`dx`, `dy`) level-0 px and kept inside the image's `extent`
 * (the shift is reduced where the image ends; masks move by whole pixels). Label and attributes are kept; the
 * copy is a proposed label of the viewer's `source`. Null for tags and records without a usable shape.
 */
export function copyOf(
  record: AnnotationRecord,
  dx: number,
  dy: number,
  extent: Extent,
  source: string,
): { annotation: NewAnnotation; bbox: BBox } | null {
  const box = record.bbox;
  if (record.kind === "tag" || !box) return null;
  const [w, h] = extent;
  const [x0, y0, x1, y1] = box;
  const fit = (shift: number, lo: number, hi: number, max: number): number =>
    Math.max(-lo, Math.min(shift, max - hi));
  let sx = fit(dx, x0, x1, w);
  let sy = fit(dy, y0, y1, h);
  if (record.kind === "mask") {
    sx = sx >= 0 ? Math.floor(sx) : Math.ceil(sx);
    sy = sy >= 0 ? Math.floor(sy) : Math.ceil(sy);
  }
  const bbox: BBox = [round(x0 + sx), round(y0 + sy), round(x1 + sx), round(y1 + sy)];
  // A new label of this user: proposed, without a model's prediction attributes.
  const attributes = Object.fromEntries(
    Object.entries(record.attributes).filter(([key]) => key !== "model" && key !== "uncertainty"),
  );
  const annotation: NewAnnotation = { kind: record.kind, label: record.label, source, attributes };
  if (record.kind === "box" || record.kind === "mask") annotation.bbox = bbox;
  if (record.kind === "mask") {
    if (!record.mask) return null;
    annotation.mask = record.mask;
  }
  if (record.kind === "polygon" || record.kind === "point") {
    if (!record.geometry) return null;
    annotation.geometry = shiftGeometry(record.geometry, sx, sy);
  }
  return { annotation, bbox };
}
