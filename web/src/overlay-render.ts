// Rendering the batched shapes into a 2D context, on the page or in a worker (overlay-worker.ts): no DOM and
// no OpenSeadragon. One path per batch of the area shapes that meet the rendered area, filled and stroked
// once; points as fixed-size discs. See overlay-layer.ts for when a render happens.

import type { BatchStyle } from "./drawing-style";
import type { Batch, Batched } from "./overlay-batch";

export type Context2D = CanvasRenderingContext2D | OffscreenCanvasRenderingContext2D;

/** What a render needs of the batches (the keys stay on the page, for hit-testing). */
export type Geometry = Omit<Batched, "keys">;

export function geometryOf(data: Batched): Geometry {
  const { batches, boxes, batchOf, first, rings } = data;
  return { batches, boxes, batchOf, first, rings };
}

/** One render: the level-0 point (x0, y0) at the bitmap's top-left, `scale` device pixels per level-0
 * pixel, `width` × `height` device pixels, and the style of each batch (in `Geometry.batches` order). */
export interface RenderRequest {
  id: number;
  x0: number;
  y0: number;
  scale: number;
  width: number;
  height: number;
  ratio: number;
  styles: BatchStyle[];
}

export function renderInto(ctx: Context2D, g: Geometry, r: RenderRequest): void {
  const { scale, x0, y0, width, height, ratio } = r;
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const paths = areaPaths(g, [x0, y0, x0 + width / scale, y0 + height / scale]);
  g.batches.forEach((batch, i) => {
    const style = r.styles[i];
    if (!style) return;
    const path = paths[i];
    if (path) {
      ctx.setTransform(scale, 0, 0, scale, -x0 * scale, -y0 * scale);
      ctx.fillStyle = style.fill;
      ctx.fill(path);
      ctx.strokeStyle = style.stroke;
      ctx.lineWidth = (style.lineWidth * ratio) / scale;
      ctx.setLineDash(style.dash.map((d) => (d * ratio) / scale));
      ctx.stroke(path);
    }
    if (batch.points.length > 0) drawPoints(ctx, batch, style, r);
  });
}

/** Per batch, one path (level-0 pixels) of every ring of its area shapes whose box meets `rect` (what lies
 * beyond the rendered area costs nothing); null where none does. */
function areaPaths(g: Geometry, [x0, y0, x1, y1]: [number, number, number, number]): (Path2D | null)[] {
  const paths: (Path2D | null)[] = g.batches.map(() => null);
  const { boxes } = g;
  for (let i = 0; i < g.batchOf.length; i++) {
    const rings = g.rings[i] as number;
    if (rings === 0) continue; // a point
    if ((boxes[4 * i] as number) > x1 || (boxes[4 * i + 2] as number) < x0) continue;
    if ((boxes[4 * i + 1] as number) > y1 || (boxes[4 * i + 3] as number) < y0) continue;
    const index = g.batchOf[i] as number;
    const batch = g.batches[index] as Batch;
    const path = (paths[index] ??= new Path2D());
    const { coords, ringStart } = batch;
    const first = g.first[i] as number;
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

/** Points as discs of `style.pointRadius` screen pixels. */
function drawPoints(ctx: Context2D, batch: Batch, style: BatchStyle, r: RenderRequest): void {
  const radius = style.pointRadius * r.ratio;
  const discs = new Path2D();
  const { points } = batch;
  for (let i = 0; i < points.length; i += 2) {
    const x = ((points[i] as number) - r.x0) * r.scale;
    const y = ((points[i + 1] as number) - r.y0) * r.scale;
    if (x < -radius || y < -radius || x > r.width + radius || y > r.height + radius) continue;
    discs.moveTo(x + radius, y);
    discs.arc(x, y, radius, 0, 2 * Math.PI);
  }
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.setLineDash([]);
  ctx.fillStyle = style.pointFill;
  ctx.fill(discs);
  ctx.strokeStyle = "rgba(0, 0, 0, 0.7)";
  ctx.lineWidth = r.ratio;
  ctx.stroke(discs);
}
