// How an annotation is drawn: its label's colour, the fill strength telling its status (accepted strong,
// rejected faint, drawn-not-saved fainter still), emphasised while selected or hovered.

import type { AnnotationState, DrawingStyle } from "@annotorious/openseadragon";

import type { AnnotationStatus } from "./api";
import type { Hex } from "./palette";

/** The style of an annotation in `color`; `status` undefined: drawn here, not saved yet. */
export function drawingStyle(
  color: Hex,
  status: AnnotationStatus | undefined,
  state?: AnnotationState,
): DrawingStyle {
  let fillOpacity = 0.15;
  let strokeOpacity = 1;
  if (status === "accepted" || status === "adjudicated") fillOpacity = 0.35;
  else if (status === "rejected") {
    fillOpacity = 0;
    strokeOpacity = 0.45;
  } else if (status === undefined) fillOpacity = 0.04;
  const emphasis = Boolean(state?.selected || state?.hovered);
  return {
    stroke: color,
    fill: color,
    strokeOpacity,
    fillOpacity: emphasis ? Math.min(fillOpacity + 0.15, 1) : fillOpacity,
    // Width 1 is drawn as native lines that need no re-tessellation when zooming (thousands of shapes).
    strokeWidth: emphasis ? 2 : 1,
  };
}

/** How the batched layer (overlay-layer.ts) draws a label's shapes of one status: CSS colours, a stroke
 * width and dash in screen pixels. Rejected shapes are a dashed outline (still visible on any image, and
 * unlike a faint 1-px line, plainly "rejected"); points are discs with a dark rim. */
export interface BatchStyle {
  fill: string;
  stroke: string;
  lineWidth: number;
  dash: number[];
  /** Points: disc radius in screen pixels. */
  pointRadius: number;
  pointFill: string;
}

/** Screen pixels: the radius of a point's disc. */
export const POINT_DISC_PX = 6;

function rgba(color: Hex, alpha: number): string {
  let hex = color.slice(1);
  if (hex.length === 3) hex = [...hex].map((c) => c + c).join("");
  const value = Number.parseInt(hex, 16);
  const channels = [(value >> 16) & 255, (value >> 8) & 255, value & 255];
  return `rgba(${channels.join(", ")}, ${alpha})`;
}

export function batchStyle(color: Hex, status: AnnotationStatus): BatchStyle {
  const style = drawingStyle(color, status);
  const rejected = status === "rejected";
  return {
    fill: rgba(color, style.fillOpacity ?? 0),
    stroke: rgba(color, rejected ? 0.9 : (style.strokeOpacity ?? 1)),
    lineWidth: 1, // one device pixel: Skia draws it as a hairline, far cheaper than a wider stroke
    dash: rejected ? [6, 4] : [],
    pointRadius: POINT_DISC_PX,
    pointFill: rgba(color, rejected ? 0.35 : 0.9),
  };
}
