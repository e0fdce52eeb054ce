import { describe, expect, it } from "vitest";

import { drawingStyle } from "../src/drawing-style";

describe("drawingStyle", () => {
  it("shows the status as fill strength and emphasises the selection", () => {
    expect(drawingStyle("#00c000", "proposed")).toEqual({
      stroke: "#00c000",
      fill: "#00c000",
      strokeOpacity: 1,
      fillOpacity: 0.15,
      strokeWidth: 1,
    });
    expect(drawingStyle("#00c000", "accepted").fillOpacity).toBe(0.35);
    expect(drawingStyle("#00c000", "adjudicated").fillOpacity).toBe(0.35);
    expect(drawingStyle("#00c000", "rejected")).toMatchObject({ fillOpacity: 0, strokeOpacity: 0.45 });
    expect(drawingStyle("#00c000", undefined).fillOpacity).toBe(0.04);
    expect(drawingStyle("#00c000", "accepted", { selected: true })).toMatchObject({ fillOpacity: 0.5, strokeWidth: 2 });
  });
});
