// Brush and eraser strokes on masks stored as the server stores them: a COCO RLE of the mask's bbox window
// (column-major runs, the first of zeros, COCO's compressed counts string), size equal to its box (whole
// level-0 pixels) and at most `limits.max_tile_pixels` pixels. No DOM here: annotate.ts turns mouse drags into
// strokes in level-0 pixels and stores the result (POST a new mask, PATCH {bbox, mask} of an edited one).

import type { AnnotationRecord, BBox } from "./api";
import type { Extent } from "./shapes";

/** A mask's pixels in level-0 coordinates: `data[y * width + x]` is pixel (x0 + x, y0 + y). */
export interface MaskWindow {
  x0: number;
  y0: number;
  width: number;
  height: number;
  data: Uint8Array;
}

/** A stroke: the pointer's path in level-0 pixels and the brush radius in level-0 pixels. */
export interface Stroke {
  points: readonly (readonly [number, number])[];
  radius: number;
}

/** The server's default `limits.max_tile_pixels`: the largest mask window one annotation may have. */
export const MAX_MASK_PIXELS = 4096 * 4096;

/** COCO's compressed counts string (maskApi.c rleToString): 5 bits a character, deltas after the second. */
export function countsToString(counts: readonly number[]): string {
  let out = "";
  for (let i = 0; i < counts.length; i++) {
    let x = counts[i] ?? 0;
    if (i > 2) x -= counts[i - 2] ?? 0;
    let more = true;
    while (more) {
      let c = x & 0x1f;
      x >>= 5;
      more = c & 0x10 ? x !== -1 : x !== 0;
      if (more) c |= 0x20;
      out += String.fromCharCode(c + 48);
    }
  }
  return out;
}

/** Inverse of `countsToString` (maskApi.c rleFrString); throws on a character outside COCO's alphabet. */
export function countsFromString(text: string): number[] {
  const counts: number[] = [];
  let p = 0;
  while (p < text.length) {
    let x = 0;
    let k = 0;
    let more = true;
    while (more) {
      if (p >= text.length) throw new Error("RLE counts end in the middle of a number");
      const c = text.charCodeAt(p) - 48;
      if (c < 0 || c >= 64) throw new Error(`RLE counts have an invalid character ${text[p]}`);
      x |= (c & 0x1f) << (5 * k);
      more = (c & 0x20) !== 0;
      p += 1;
      k += 1;
      if (!more && c & 0x10) x |= -1 << (5 * k);
    }
    if (counts.length > 2) x += counts[counts.length - 2] ?? 0;
    counts.push(x);
  }
  return counts;
}

/** The pixels of a stored mask (its RLE decoded at its box's whole-pixel origin). */
export function decodeMask(record: Pick<AnnotationRecord, "bbox" | "mask">): MaskWindow | null {
  if (!record.mask || !record.bbox) return null;
  const [height, width] = record.mask.size;
  const data = new Uint8Array(width * height);
  let index = 0;
  let value = 0;
  for (const run of countsFromString(record.mask.counts)) {
    for (let i = 0; i < run && index < data.length; i++, index++) {
      if (value) data[(index % height) * width + Math.floor(index / height)] = 1; // column-major runs
    }
    value = 1 - value;
  }
  return { x0: Math.floor(record.bbox[0]), y0: Math.floor(record.bbox[1]), width, height, data };
}

/** The mask as the server stores it: its set pixels' tight box and the RLE of that window; null when empty. */
export function encodeMask(win: MaskWindow): { bbox: BBox; mask: { size: [number, number]; counts: string } } | null {
  let minX = Infinity;
  let minY = Infinity;
  let maxX = -1;
  let maxY = -1;
  for (let y = 0; y < win.height; y++) {
    for (let x = 0; x < win.width; x++) {
      if (!win.data[y * win.width + x]) continue;
      if (x < minX) minX = x;
      if (x > maxX) maxX = x;
      if (y < minY) minY = y;
      if (y > maxY) maxY = y;
    }
  }
  if (maxX < 0) return null;
  const w = maxX - minX + 1;
  const h = maxY - minY + 1;
  const counts: number[] = [];
  let value = 0;
  let run = 0;
  for (let x = minX; x <= maxX; x++) {
    for (let y = minY; y <= maxY; y++) {
      const set = win.data[y * win.width + x] ? 1 : 0;
      if (set !== value) {
        counts.push(run);
        value = set;
        run = 0;
      }
      run += 1;
    }
  }
  counts.push(run);
  const x0 = win.x0 + minX;
  const y0 = win.y0 + minY;
  return { bbox: [x0, y0, x0 + w, y0 + h], mask: { size: [h, w], counts: countsToString(counts) } };
}

/** Stamp centres along the stroke, at most half a radius apart, so a fast drag leaves no gaps. */
function stamps(stroke: Stroke): [number, number][] {
  const out: [number, number][] = [];
  const step = Math.max(stroke.radius / 2, 0.5);
  stroke.points.forEach(([x, y], i) => {
    const previous = i > 0 ? stroke.points[i - 1] : undefined;
    if (!previous) {
      out.push([x, y]);
      return;
    }
    const [px, py] = previous;
    const n = Math.max(1, Math.ceil(Math.hypot(x - px, y - py) / step));
    for (let k = 1; k <= n; k++) out.push([px + ((x - px) * k) / n, py + ((y - py) * k) / n]);
  });
  return out;
}

/**
 * `base` (null: a new mask) with the stroke painted (or erased), clipped to the image's `extent`: pixels whose
 * centre lies within the radius of the path. Throws when the result's window would exceed `maxPixels` (the
 * server would refuse it: zoom in or paint a smaller mask).
 */
export function applyStroke(
  base: MaskWindow | null,
  stroke: Stroke,
  erase: boolean,
  extent: Extent,
  maxPixels: number = MAX_MASK_PIXELS,
): MaskWindow | null {
  const [imageW, imageH] = extent;
  const centres = stamps(stroke);
  const r = stroke.radius;
  let x0 = base ? base.x0 : Infinity;
  let y0 = base ? base.y0 : Infinity;
  let x1 = base ? base.x0 + base.width : -Infinity;
  let y1 = base ? base.y0 + base.height : -Infinity;
  if (!erase) {
    for (const [cx, cy] of centres) {
      x0 = Math.min(x0, Math.floor(cx - r));
      y0 = Math.min(y0, Math.floor(cy - r));
      x1 = Math.max(x1, Math.ceil(cx + r));
      y1 = Math.max(y1, Math.ceil(cy + r));
    }
  }
  x0 = Math.max(0, x0);
  y0 = Math.max(0, y0);
  x1 = Math.min(imageW, x1);
  y1 = Math.min(imageH, y1);
  if (!(x1 > x0 && y1 > y0)) return base; // the whole stroke is outside the image
  const width = x1 - x0;
  const height = y1 - y0;
  if (width * height > maxPixels) {
    throw new Error(
      `This mask would span ${width}×${height} pixels, more than the ${maxPixels.toLocaleString("en-US")} one mask ` +
        "may have: zoom in, or paint a smaller region.",
    );
  }
  const data = new Uint8Array(width * height);
  if (base) {
    for (let y = 0; y < base.height; y++) {
      const ty = base.y0 + y - y0;
      if (ty < 0 || ty >= height) continue;
      for (let x = 0; x < base.width; x++) {
        const tx = base.x0 + x - x0;
        if (tx >= 0 && tx < width && base.data[y * base.width + x]) data[ty * width + tx] = 1;
      }
    }
  }
  const value = erase ? 0 : 1;
  const r2 = r * r;
  for (const [cx, cy] of centres) {
    const fromY = Math.max(y0, Math.floor(cy - r));
    const toY = Math.min(y1, Math.ceil(cy + r));
    const fromX = Math.max(x0, Math.floor(cx - r));
    const toX = Math.min(x1, Math.ceil(cx + r));
    for (let py = fromY; py < toY; py++) {
      const dy = py + 0.5 - cy;
      for (let px = fromX; px < toX; px++) {
        const dx = px + 0.5 - cx;
        if (dx * dx + dy * dy <= r2) data[(py - y0) * width + (px - x0)] = value;
      }
    }
  }
  return { x0, y0, width, height, data };
}

/** How many pixels are set. */
export function area(win: MaskWindow | null): number {
  if (!win) return 0;
  let n = 0;
  for (const v of win.data) n += v;
  return n;
}
