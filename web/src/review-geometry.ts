// Where the review inbox looks: the task's region with context around it, and which Deep Zoom tiles the
// viewer will need there (fetched ahead for the next task, so it appears without waiting for tiles).

import type { BBox } from "./api";

/** The region grown to `factor` times its size (at least `minSide` level-0 px a side), inside the image. */
export function contextRect(region: BBox | null, width: number, height: number, factor = 3, minSide = 256): BBox {
  if (!region) return [0, 0, width, height];
  const [x0, y0, x1, y1] = region;
  const cx = (x0 + x1) / 2;
  const cy = (y0 + y1) / 2;
  const w = Math.min(width, Math.max((x1 - x0) * factor, minSide));
  const h = Math.min(height, Math.max((y1 - y0) * factor, minSide));
  const left = Math.min(Math.max(cx - w / 2, 0), width - w);
  const top = Math.min(Math.max(cy - h / 2, 0), height - h);
  return [left, top, left + w, top + h];
}

/** The region a task shows: its own, else its proposal's box, else none (the whole image). */
export function taskRegion(task: { region: BBox | null; annotation: { bbox: BBox | null } | null }): BBox | null {
  return task.region ?? task.annotation?.bbox ?? null;
}

export interface TileRef {
  level: number;
  col: number;
  row: number;
}

/** The Deep Zoom tiles (`tileSize`, no overlap) on screen when `rect` is fitted into a `screenW` x `screenH`
 * viewer: the level with at least one tile pixel per screen pixel. At most `max` tiles (none when more). */
export function tilesFor(
  rect: BBox,
  width: number,
  height: number,
  screenW: number,
  screenH: number,
  tileSize = 256,
  max = 64,
): TileRef[] {
  const maxLevel = Math.ceil(Math.log2(Math.max(width, height, 1)));
  const [rx0, ry0, rx1, ry1] = rect;
  const scale = Math.min(screenW / Math.max(rx1 - rx0, 1), screenH / Math.max(ry1 - ry0, 1));
  // What the viewer shows: the rect fitted, grown along one side to the screen's aspect.
  const cx = (rx0 + rx1) / 2;
  const cy = (ry0 + ry1) / 2;
  const x0 = Math.max(0, cx - screenW / scale / 2);
  const y0 = Math.max(0, cy - screenH / scale / 2);
  const x1 = cx + screenW / scale / 2;
  const y1 = cy + screenH / scale / 2;
  const level = Math.min(maxLevel, Math.max(0, maxLevel + Math.ceil(Math.log2(Math.max(scale, 1e-9)))));
  const shrink = 2 ** (maxLevel - level);
  const c0 = Math.floor(x0 / shrink / tileSize);
  const r0 = Math.floor(y0 / shrink / tileSize);
  const c1 = Math.ceil(Math.min(x1, width) / shrink / tileSize) - 1;
  const r1 = Math.ceil(Math.min(y1, height) / shrink / tileSize) - 1;
  const count = (c1 - c0 + 1) * (r1 - r0 + 1);
  if (count > max || count <= 0) return [];
  const tiles: TileRef[] = [];
  for (let row = r0; row <= r1; row += 1) for (let col = c0; col <= c1; col += 1) tiles.push({ level, col, row });
  return tiles;
}

type Kind = "tag" | "box" | "polygon" | "mask" | "point";

/** The label an expert gives a selected region (or a whole image) with one key, in the shape its class takes
 * (the server refuses a shape of another kind): a tag, the region as a box or a rectangle polygon, or its centre
 * as a point. Null: a class that needs drawing (a mask), or a region-shaped class without a region. */
export function regionLabel(
  kind: Kind | undefined,
  label: string,
  region: BBox | null,
): { kind: Kind; label: string; source: string; bbox?: BBox; geometry?: { type: string; coordinates: unknown } } | null {
  const source = "review";
  if (kind === "tag") return { kind, label, source };
  if (!region) return kind === undefined ? { kind: "tag", label, source } : null;
  const [x0, y0, x1, y1] = region;
  switch (kind) {
    case undefined:
    case "box":
      return { kind: "box", label, source, bbox: region };
    case "polygon":
      return {
        kind,
        label,
        source,
        geometry: { type: "Polygon", coordinates: [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]] },
      };
    case "point":
      return { kind, label, source, geometry: { type: "Point", coordinates: [(x0 + x1) / 2, (y0 + y1) / 2] } };
    default:
      return null;
  }
}

/** The viewer's hash for an image, looking at `region` (level-0, rounded) when there is one. */
export function imageHash(imageId: string, region: readonly number[] | null): string {
  return region ? `#/image/${imageId}?region=${region.map((v) => Math.round(v)).join(",")}` : `#/image/${imageId}`;
}
