// The batched annotation layer: one 2D canvas over OpenSeadragon that draws every loaded shape (except the
// one being edited, which Annotorious shows with its handles) from the typed arrays of overlay-batch.ts.
//
// Per label and status, the area shapes that meet the rendered area are one Path2D in level-0 pixels (from
// the typed arrays, which are built when the data changes); a render sets the image-to-screen transform and
// fills and strokes each path once (a few calls per class, whatever the number of shapes). Points are discs
// of a fixed screen size, drawn from the centres in view.
//
// A render fills the canvas with the view plus a margin (`MARGIN` of its size on every side); a frame of a
// pan only moves the canvas (a CSS translation, composited: nothing is drawn again), so panning costs the
// same with 20 or 20,000 shapes. The canvas is rendered again when the data or colours change, when the
// view leaves it, and when the zoom changed (during a zoom animation it is scaled instead, until the
// animation ends). In software rendering (no GPU) a render of 2,000 polygons takes tens of milliseconds.
//
// The canvas takes no pointer events: clicks reach OpenSeadragon, and overlay.ts hit-tests them.

import type OpenSeadragon from "openseadragon";

import type { AnnotationStatus } from "./api";
import type { BatchStyle } from "./drawing-style";
import { type Batch, type Batched, batchShapes } from "./overlay-batch";

export type StyleOf = (label: string, status: AnnotationStatus) => BatchStyle;

/** The bitmap extends this fraction of the view beyond each of its edges. */
const MARGIN = 0.25;

/** What the canvas holds: level-0 point (x0, y0) at its top-left, `scale` device pixels per level-0 pixel. */
interface Rendered {
  x0: number;
  y0: number;
  scale: number;
  dirty: boolean;
}

/** Level-0 to viewer-element pixels: screen = level0 * scale + offset. */
export interface ImageTransform {
  scale: number;
  offsetX: number;
  offsetY: number;
}

export class OverlayLayer {
  readonly canvas: HTMLCanvasElement;
  private data: Batched = batchShapes([]);
  private shown = true;
  private frame: number | null = null;
  private animating = false;
  private readonly bitmap: Rendered;
  private readonly onUpdate = (): void => this.draw();
  private readonly onAnimationStart = (): void => {
    this.animating = true;
  };
  private readonly onAnimationFinish = (): void => {
    this.animating = false;
    this.draw();
  };
  /** Frames drawn, and the time the last one took (ms): the page's test hook and the benchmark read them. */
  frames = 0;
  lastDrawMs = 0;
  /** Renders of the bitmap (the rest of the frames were copies). */
  renders = 0;

  constructor(
    private readonly viewer: OpenSeadragon.Viewer,
    private readonly styleOf: StyleOf,
  ) {
    this.canvas = document.createElement("canvas");
    this.canvas.className = "gv-overlay-layer";
    this.canvas.dataset["testid"] = "overlay-layer";
    if (!this.canvas.getContext("2d")) throw new Error("this browser cannot draw on a 2D canvas");
    this.canvas.style.transformOrigin = "0 0";
    // Its own compositing layer: a pan moves it without painting it again.
    this.canvas.style.willChange = "transform";
    // Under Annotorious's canvas (the edited shape and its handles stay on top), over the tiles.
    const host = viewer.canvas;
    const annotorious = host.querySelector(".a9s-gl-canvas");
    if (annotorious) host.insertBefore(this.canvas, annotorious);
    else host.append(this.canvas);
    this.bitmap = { x0: 0, y0: 0, scale: 0, dirty: true };
    viewer.addHandler("update-viewport", this.onUpdate);
    viewer.addHandler("resize", this.onUpdate);
    viewer.addHandler("animation-start", this.onAnimationStart);
    viewer.addHandler("animation-finish", this.onAnimationFinish);
  }

  /** The shapes to draw now (rendered on the next frame; pans then only move them). */
  set(data: Batched): void {
    this.data = data;
    this.bitmap.dirty = true;
    this.schedule();
  }

  get batched(): Batched {
    return this.data;
  }

  setVisible(show: boolean): void {
    this.shown = show;
    this.canvas.hidden = !show;
    this.schedule();
  }

  /** Draws on the next animation frame (colours or data changed). */
  schedule(): void {
    this.bitmap.dirty = true;
    if (this.frame !== null) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = null;
      this.draw();
    });
  }

  /** The current (animated) level-0 to viewer-element transform, or null before the image is open. */
  transform(): ImageTransform | null {
    const item = this.viewer.world.getItemAt(0);
    if (!item) return null;
    const viewport = this.viewer.viewport;
    const origin = viewport.pixelFromPoint(item.imageToViewportCoordinates(0, 0, true), true);
    const unit = viewport.pixelFromPoint(item.imageToViewportCoordinates(1024, 0, true), true);
    return { scale: (unit.x - origin.x) / 1024, offsetX: origin.x, offsetY: origin.y };
  }

  draw(): void {
    const started = performance.now();
    const { canvas } = this;
    const ratio = window.devicePixelRatio || 1;
    const width = Math.round(this.viewer.canvas.clientWidth * ratio);
    const height = Math.round(this.viewer.canvas.clientHeight * ratio);
    const t = this.transform();
    if (!this.shown || !t || !(t.scale > 0)) return;
    const scale = t.scale * ratio; // device pixels per level-0 pixel
    // The view, level-0 pixels.
    const vx0 = -t.offsetX / t.scale;
    const vy0 = -t.offsetY / t.scale;
    const b = this.bitmap;
    const covers =
      vx0 >= b.x0 &&
      vy0 >= b.y0 &&
      vx0 + width / scale <= b.x0 + canvas.width / b.scale &&
      vy0 + height / scale <= b.y0 + canvas.height / b.scale;
    const sameScale = Math.abs(b.scale - scale) <= 1e-6 * scale;
    if (b.dirty || !covers || (!sameScale && !this.animating)) this.render(scale, vx0, vy0, width, height, ratio);
    // Where the canvas's top-left lies now, in CSS pixels of the viewer (whole device pixels: no blur).
    const k = scale / b.scale;
    const dx = Math.round((b.x0 - vx0) * scale) / ratio;
    const dy = Math.round((b.y0 - vy0) * scale) / ratio;
    canvas.style.transform =
      Math.abs(k - 1) <= 1e-6 ? `translate(${dx}px, ${dy}px)` : `translate(${dx}px, ${dy}px) scale(${k})`;
    this.frames += 1;
    this.lastDrawMs = performance.now() - started;
  }

  /** Renders every batch into the canvas: the view (level-0 top-left `vx0, vy0`, `width` × `height` device
   * pixels at `scale` device pixels per level-0 pixel) and a margin around it. */
  private render(scale: number, vx0: number, vy0: number, width: number, height: number, ratio: number): void {
    const b = this.bitmap;
    const mx = Math.ceil(width * MARGIN);
    const my = Math.ceil(height * MARGIN);
    b.x0 = vx0 - mx / scale;
    b.y0 = vy0 - my / scale;
    b.scale = scale;
    b.dirty = false;
    const w = width + 2 * mx;
    const h = height + 2 * my;
    const { canvas } = this;
    if (canvas.width !== w || canvas.height !== h) {
      canvas.width = w;
      canvas.height = h;
      canvas.style.width = `${w / ratio}px`;
      canvas.style.height = `${h / ratio}px`;
    }
    const ctx = canvas.getContext("2d");
    if (!ctx) return;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const paths = areaPaths(this.data, [b.x0, b.y0, b.x0 + w / scale, b.y0 + h / scale]);
    this.data.batches.forEach((batch, i) => {
      const path = paths[i];
      const style = this.styleOf(batch.label, batch.status);
      if (path) {
        ctx.setTransform(scale, 0, 0, scale, -b.x0 * scale, -b.y0 * scale);
        ctx.fillStyle = style.fill;
        ctx.fill(path);
        ctx.strokeStyle = style.stroke;
        ctx.lineWidth = (style.lineWidth * ratio) / scale;
        ctx.setLineDash(style.dash.map((d) => (d * ratio) / scale));
        ctx.stroke(path);
      }
      if (batch.points.length > 0) drawPoints(ctx, batch, style, b, ratio, w, h);
    });
    this.renders += 1;
  }

  destroy(): void {
    if (this.frame !== null) cancelAnimationFrame(this.frame);
    this.viewer.removeHandler("update-viewport", this.onUpdate);
    this.viewer.removeHandler("resize", this.onUpdate);
    this.viewer.removeHandler("animation-start", this.onAnimationStart);
    this.viewer.removeHandler("animation-finish", this.onAnimationFinish);
    this.canvas.remove();
  }
}

/** Points as discs of `style.pointRadius` screen pixels, on a bitmap `w` × `h` rendered as `b` says. */
function drawPoints(
  ctx: CanvasRenderingContext2D,
  batch: Batch,
  style: BatchStyle,
  b: Rendered,
  ratio: number,
  w: number,
  h: number,
): void {
  const r = style.pointRadius * ratio;
  const discs = new Path2D();
  const { points } = batch;
  for (let i = 0; i < points.length; i += 2) {
    const x = ((points[i] as number) - b.x0) * b.scale;
    const y = ((points[i + 1] as number) - b.y0) * b.scale;
    if (x < -r || y < -r || x > w + r || y > h + r) continue;
    discs.moveTo(x + r, y);
    discs.arc(x, y, r, 0, 2 * Math.PI);
  }
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.setLineDash([]);
  ctx.fillStyle = style.pointFill;
  ctx.fill(discs);
  ctx.strokeStyle = "rgba(0, 0, 0, 0.7)";
  ctx.lineWidth = ratio;
  ctx.stroke(discs);
}

/** Per batch, one path (level-0 pixels) of every ring of its area shapes whose box meets `rect` (what lies
 * beyond the rendered area costs nothing); null where none does. */
function areaPaths(data: Batched, [x0, y0, x1, y1]: [number, number, number, number]): (Path2D | null)[] {
  const paths: (Path2D | null)[] = data.batches.map(() => null);
  const { boxes } = data;
  for (let i = 0; i < data.keys.length; i++) {
    const rings = data.rings[i] as number;
    if (rings === 0) continue; // a point
    if ((boxes[4 * i] as number) > x1 || (boxes[4 * i + 2] as number) < x0) continue;
    if ((boxes[4 * i + 1] as number) > y1 || (boxes[4 * i + 3] as number) < y0) continue;
    const index = data.batchOf[i] as number;
    const batch = data.batches[index] as Batch;
    const path = (paths[index] ??= new Path2D());
    const { coords, ringStart } = batch;
    const first = data.first[i] as number;
    for (let r = first; r < first + rings; r++) {
      const start = ringStart[r] as number;
      const end = ringStart[r + 1] as number;
      path.moveTo(coords[2 * start] as number, coords[2 * start + 1] as number);
      for (let k = start + 1; k < end; k++) path.lineTo(coords[2 * k] as number, coords[2 * k + 1] as number);
      path.closePath();
    }
  }
  return paths;
}
