// The batched annotation layer: one 2D canvas over OpenSeadragon that draws every loaded shape (except the
// one being edited, which Annotorious shows with its handles) from the typed arrays of overlay-batch.ts.
//
// Per label and status, the area shapes are one Path2D in level-0 pixels, built when the data changes; a
// frame sets the image-to-screen transform and fills and strokes each path once (a few calls per class,
// whatever the number of shapes). Points are discs of a fixed screen size, so their path is rebuilt per
// frame from the centres in view (cheap: a loop over a Float32Array). The canvas takes no pointer events:
// clicks reach OpenSeadragon, and overlay.ts hit-tests them with `hitTest`.

import type OpenSeadragon from "openseadragon";

import type { AnnotationStatus } from "./api";
import type { BatchStyle } from "./drawing-style";
import { type Batch, type Batched, batchShapes } from "./overlay-batch";

export type StyleOf = (label: string, status: AnnotationStatus) => BatchStyle;

interface Prepared {
  batch: Batch;
  /** Area shapes in level-0 pixels (null: the batch holds points only). */
  path: Path2D | null;
}

/** Level-0 to viewer-element pixels: screen = level0 * scale + offset. */
export interface ImageTransform {
  scale: number;
  offsetX: number;
  offsetY: number;
}

export class OverlayLayer {
  readonly canvas: HTMLCanvasElement;
  private readonly ctx: CanvasRenderingContext2D;
  private prepared: Prepared[] = [];
  private data: Batched = batchShapes([]);
  private shown = true;
  private frame: number | null = null;
  private readonly onUpdate = (): void => this.draw();
  /** Frames drawn, and the time the last one took (ms): the page's test hook and the benchmark read them. */
  frames = 0;
  lastDrawMs = 0;

  constructor(
    private readonly viewer: OpenSeadragon.Viewer,
    private readonly styleOf: StyleOf,
  ) {
    this.canvas = document.createElement("canvas");
    this.canvas.className = "gv-overlay-layer";
    this.canvas.dataset["testid"] = "overlay-layer";
    const ctx = this.canvas.getContext("2d");
    if (!ctx) throw new Error("this browser cannot draw on a 2D canvas");
    this.ctx = ctx;
    // Under Annotorious's canvas (the edited shape and its handles stay on top), over the tiles.
    const host = viewer.canvas;
    const annotorious = host.querySelector(".a9s-gl-canvas");
    if (annotorious) host.insertBefore(this.canvas, annotorious);
    else host.append(this.canvas);
    viewer.addHandler("update-viewport", this.onUpdate);
    viewer.addHandler("resize", this.onUpdate);
  }

  /** The shapes to draw now (built once; pans and zooms only move them). */
  set(data: Batched): void {
    this.data = data;
    this.prepared = data.batches.map((batch) => ({ batch, path: areaPath(batch) }));
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
    const { canvas, ctx } = this;
    const ratio = window.devicePixelRatio || 1;
    const width = Math.round(this.viewer.canvas.clientWidth * ratio);
    const height = Math.round(this.viewer.canvas.clientHeight * ratio);
    if (canvas.width !== width || canvas.height !== height) {
      canvas.width = width;
      canvas.height = height;
    } else {
      ctx.setTransform(1, 0, 0, 1, 0, 0);
      ctx.clearRect(0, 0, width, height);
    }
    const t = this.transform();
    if (!this.shown || !t || !(t.scale > 0)) return;
    const scale = t.scale * ratio;
    for (const { batch, path } of this.prepared) {
      const style = this.styleOf(batch.label, batch.status);
      if (path) {
        ctx.setTransform(scale, 0, 0, scale, t.offsetX * ratio, t.offsetY * ratio);
        ctx.fillStyle = style.fill;
        ctx.fill(path);
        ctx.strokeStyle = style.stroke;
        ctx.lineWidth = (style.lineWidth * ratio) / scale;
        ctx.setLineDash(style.dash.map((d) => (d * ratio) / scale));
        ctx.stroke(path);
      }
      if (batch.points.length > 0) this.drawPoints(batch, style, t, ratio, width, height);
    }
    this.frames += 1;
    this.lastDrawMs = performance.now() - started;
  }

  private drawPoints(batch: Batch, style: BatchStyle, t: ImageTransform, ratio: number, w: number, h: number): void {
    const { ctx } = this;
    const r = style.pointRadius * ratio;
    const discs = new Path2D();
    const { points } = batch;
    for (let i = 0; i < points.length; i += 2) {
      const x = ((points[i] as number) * t.scale + t.offsetX) * ratio;
      const y = ((points[i + 1] as number) * t.scale + t.offsetY) * ratio;
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

  destroy(): void {
    if (this.frame !== null) cancelAnimationFrame(this.frame);
    this.viewer.removeHandler("update-viewport", this.onUpdate);
    this.viewer.removeHandler("resize", this.onUpdate);
    this.canvas.remove();
  }
}

/** One path of every ring of a batch's area shapes, in level-0 pixels. */
function areaPath(batch: Batch): Path2D | null {
  const { coords, ringStart } = batch;
  if (ringStart.length < 2) return null;
  const path = new Path2D();
  for (let r = 0; r + 1 < ringStart.length; r++) {
    const start = ringStart[r] as number;
    const end = ringStart[r + 1] as number;
    path.moveTo(coords[2 * start] as number, coords[2 * start + 1] as number);
    for (let i = start + 1; i < end; i++) path.lineTo(coords[2 * i] as number, coords[2 * i + 1] as number);
    path.closePath();
  }
  return path;
}
