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
// animation ends). Renders run in a worker (overlay-worker.ts, OffscreenCanvas) so that a frame never waits
// for one: in software rendering (no GPU) on a busy CPU a render of 2,000 polygons can take 100+ ms; the
// page moves the last bitmap meanwhile. Without workers the page renders itself (overlay-render.ts).
//
// The canvas takes no pointer events: clicks reach OpenSeadragon, and overlay.ts hit-tests them.

import type OpenSeadragon from "openseadragon";

import type { AnnotationStatus } from "./api";
import type { BatchStyle } from "./drawing-style";
import { type Batched, batchShapes } from "./overlay-batch";
import { geometryOf, renderInto, type RenderRequest } from "./overlay-render";
import type { WorkerAnswer, WorkerMessage } from "./overlay-worker";

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
  private worker: Worker | null = null;
  /** The render the worker is doing (one at a time: the next is asked for when it is done). */
  private inFlight: RenderRequest | null = null;
  private requests = 0;
  private destroyed = false;
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
    this.worker = startWorker((answer) => this.received(answer), () => this.withoutWorker());
    viewer.addHandler("update-viewport", this.onUpdate);
    viewer.addHandler("resize", this.onUpdate);
    viewer.addHandler("animation-start", this.onAnimationStart);
    viewer.addHandler("animation-finish", this.onAnimationFinish);
  }

  /** The shapes to draw now (rendered on the next frame; pans then only move them). */
  set(data: Batched): void {
    this.data = data;
    this.post({ type: "data", geometry: geometryOf(data) });
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
    if ((b.dirty || !covers || (!sameScale && !this.animating)) && !this.inFlight) {
      this.render(scale, vx0, vy0, width, height, ratio);
    }
    if (!(b.scale > 0)) return; // the first render is on its way
    // Where the canvas's top-left lies now, in CSS pixels of the viewer (whole device pixels: no blur).
    const k = scale / b.scale;
    const dx = Math.round((b.x0 - vx0) * scale) / ratio;
    const dy = Math.round((b.y0 - vy0) * scale) / ratio;
    canvas.style.transform =
      Math.abs(k - 1) <= 1e-6 ? `translate(${dx}px, ${dy}px)` : `translate(${dx}px, ${dy}px) scale(${k})`;
    this.frames += 1;
    this.lastDrawMs = performance.now() - started;
  }

  /** Renders every batch: the view (level-0 top-left `vx0, vy0`, `width` × `height` device pixels at `scale`
   * device pixels per level-0 pixel) and a margin around it; in the worker when there is one. */
  private render(scale: number, vx0: number, vy0: number, width: number, height: number, ratio: number): void {
    const mx = Math.ceil(width * MARGIN);
    const my = Math.ceil(height * MARGIN);
    this.requests += 1;
    const request: RenderRequest = {
      id: this.requests,
      x0: vx0 - mx / scale,
      y0: vy0 - my / scale,
      scale,
      width: width + 2 * mx,
      height: height + 2 * my,
      ratio,
      styles: this.data.batches.map((batch) => this.styleOf(batch.label, batch.status)),
    };
    this.bitmap.dirty = false; // a change from now on asks for another render
    if (this.worker) {
      this.inFlight = request;
      this.post({ type: "render", request });
      return;
    }
    const ctx = this.resize(request);
    if (ctx) renderInto(ctx, geometryOf(this.data), request);
    this.holds(request);
  }

  /** The visible canvas sized for a render; its context. */
  private resize(r: RenderRequest): CanvasRenderingContext2D | null {
    const { canvas } = this;
    if (canvas.width !== r.width || canvas.height !== r.height) {
      canvas.width = r.width;
      canvas.height = r.height;
      canvas.style.width = `${r.width / r.ratio}px`;
      canvas.style.height = `${r.height / r.ratio}px`;
    }
    return canvas.getContext("2d");
  }

  /** The canvas now holds render `r`. */
  private holds(r: RenderRequest): void {
    this.bitmap.x0 = r.x0;
    this.bitmap.y0 = r.y0;
    this.bitmap.scale = r.scale;
    this.renders += 1;
  }

  /** The worker's bitmap: onto the canvas, then placed for the view as it is now (and the next render asked
   * for if the view or the data moved on meanwhile). */
  private received({ request, bitmap }: WorkerAnswer): void {
    this.inFlight = null;
    if (this.destroyed) {
      bitmap.close();
      return;
    }
    const ctx = this.resize(request);
    if (ctx) {
      ctx.setTransform(1, 0, 0, 1, 0, 0);
      ctx.clearRect(0, 0, request.width, request.height);
      ctx.drawImage(bitmap, 0, 0);
    }
    bitmap.close();
    this.holds(request);
    this.draw();
  }

  /** The worker failed (no OffscreenCanvas there): render on the page from now on. */
  private withoutWorker(): void {
    this.worker?.terminate();
    this.worker = null;
    this.inFlight = null;
    this.bitmap.dirty = true;
    if (!this.destroyed) this.schedule();
  }

  /** Whether renders run in the worker. */
  get offThread(): boolean {
    return this.worker !== null;
  }

  private post(message: WorkerMessage): void {
    this.worker?.postMessage(message);
  }

  destroy(): void {
    if (this.frame !== null) cancelAnimationFrame(this.frame);
    this.viewer.removeHandler("update-viewport", this.onUpdate);
    this.viewer.removeHandler("resize", this.onUpdate);
    this.viewer.removeHandler("animation-start", this.onAnimationStart);
    this.viewer.removeHandler("animation-finish", this.onAnimationFinish);
    this.destroyed = true;
    this.worker?.terminate();
    this.worker = null;
    this.canvas.remove();
  }
}

/** The render worker, or null where workers or OffscreenCanvas are missing. */
function startWorker(received: (answer: WorkerAnswer) => void, failed: () => void): Worker | null {
  if (typeof Worker === "undefined" || typeof OffscreenCanvas === "undefined") return null;
  try {
    const worker = new Worker(new URL("./overlay-worker.ts", import.meta.url), { type: "module" });
    worker.addEventListener("message", (event: MessageEvent<WorkerAnswer>) => received(event.data));
    worker.addEventListener("error", () => failed());
    return worker;
  } catch {
    return null;
  }
}
