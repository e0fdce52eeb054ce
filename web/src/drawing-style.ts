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
