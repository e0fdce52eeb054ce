// Renders the overlay's batched shapes off the page's thread (OffscreenCanvas), so that a pan never waits
// for a render: the page keeps moving the last bitmap while the next one is drawn here. Messages: `data`
// (the batches, after each change) and `render` (a RenderRequest); the answer is the request and its
// ImageBitmap (transferred).

import { renderInto, type Geometry, type RenderRequest } from "./overlay-render";

export type WorkerMessage = { type: "data"; geometry: Geometry } | { type: "render"; request: RenderRequest };
export interface WorkerAnswer {
  request: RenderRequest;
  bitmap: ImageBitmap;
}

let geometry: Geometry | null = null;
let canvas: OffscreenCanvas | null = null;

addEventListener("message", (event: MessageEvent<WorkerMessage>) => {
  const message = event.data;
  if (message.type === "data") {
    geometry = message.geometry;
    return;
  }
  const { request } = message;
  if (!canvas || canvas.width !== request.width || canvas.height !== request.height) {
    canvas = new OffscreenCanvas(request.width, request.height);
  }
  const ctx = canvas.getContext("2d");
  if (!ctx) throw new Error("no 2D context on an OffscreenCanvas");
  if (geometry) renderInto(ctx, geometry, request);
  else ctx.clearRect(0, 0, request.width, request.height);
  const bitmap = canvas.transferToImageBitmap();
  const answer: WorkerAnswer = { request, bitmap };
  (globalThis as unknown as { postMessage(message: unknown, transfer: Transferable[]): void }).postMessage(answer, [
    bitmap,
  ]);
});
