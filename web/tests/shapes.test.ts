import { ShapeType, type Polygon, type Rectangle } from "@annotorious/openseadragon";
import { describe, expect, it, vi } from "vitest";

// The real module loads OpenSeadragon, which needs a DOM; shapes.ts only needs the ShapeType enum, whose
// values are these strings in @annotorious/annotorious.
vi.mock("@annotorious/openseadragon", () => ({
  ShapeType: { ELLIPSE: "ELLIPSE", MULTIPOLYGON: "MULTIPOLYGON", POLYGON: "POLYGON", RECTANGLE: "RECTANGLE" },
}));

import type { AnnotationRecord } from "../src/api";
import { copyOf, geometryChanges, newAnnotation } from "../src/shapes";
import { boxRecord } from "./records";

const EXTENT = [1000, 800] as const;

function rect(x: number, y: number, w: number, h: number): Rectangle {
  return {
    type: ShapeType.RECTANGLE,
    geometry: { x, y, w, h, bounds: { minX: x, minY: y, maxX: x + w, maxY: y + h } },
  };
}

function polygon(points: [number, number][]): Polygon {
  const xs = points.map((p) => p[0]);
  const ys = points.map((p) => p[1]);
  const bounds = { minX: Math.min(...xs), minY: Math.min(...ys), maxX: Math.max(...xs), maxY: Math.max(...ys) };
  return { type: ShapeType.POLYGON, geometry: { points, bounds } };
}

describe("drawn shapes are stored inside the image", () => {
  it("clamps a box dragged past the image's edges to the edges", () => {
    expect(newAnnotation(rect(-20.5, 700, 100, 300), "cell", "web", EXTENT)).toEqual({
      kind: "box",
      label: "cell",
      bbox: [0, 700, 79.5, 800],
      source: "web",
    });
  });

  it("keeps a box inside the image as drawn", () => {
    expect(geometryChanges("box", rect(10.123, 20, 30, 40), EXTENT)).toEqual({ bbox: [10.12, 20, 40.12, 60] });
  });

  it("stores nothing for a box wholly outside the image", () => {
    expect(newAnnotation(rect(1200, 10, 50, 50), "cell", "web", EXTENT)).toBeNull();
  });

  it("moves polygon vertices outside the image onto its edge", () => {
    const drawn = polygon([
      [900, 700],
      [1100, 700],
      [1100, 900],
      [900, 900],
    ]);
    expect(geometryChanges("polygon", drawn, EXTENT)).toEqual({
      geometry: {
        type: "Polygon",
        coordinates: [
          [
            [900, 700],
            [1000, 700],
            [1000, 800],
            [900, 800],
            [900, 700],
          ],
        ],
      },
    });
  });
});

describe("copyOf (paste)", () => {
  it("moves a polygon's copy and keeps it inside the image", () => {
    const polygon: AnnotationRecord = {
      ...boxRecord(1, [90, 10, 100, 20]),
      kind: "polygon",
      geometry: { type: "Polygon", coordinates: [[[90, 10], [100, 10], [100, 20], [90, 10]]] },
      attributes: { grade: "high", model: "m1" },
      status: "accepted",
    };
    const copy = copyOf(polygon, 16, 16, [105, 200], "web");
    expect(copy?.bbox).toEqual([95, 26, 105, 36]); // x shift cut to 5: the image ends at 105
    expect(copy?.annotation).toEqual({
      kind: "polygon",
      label: "cell",
      source: "web",
      attributes: { grade: "high" },
      geometry: { type: "Polygon", coordinates: [[[95, 26], [105, 26], [105, 36], [95, 26]]] },
    });
  });

  it("moves masks by whole pixels with the same RLE, and has nothing to copy of a tag", () => {
    const mask: AnnotationRecord = { ...boxRecord(2, [0, 0, 4, 4]), kind: "mask", mask: { size: [4, 4], counts: "0`0" } };
    expect(copyOf(mask, 2.7, 3.2, [100, 100], "web")?.annotation).toMatchObject({
      bbox: [2, 3, 6, 7],
      mask: { size: [4, 4], counts: "0`0" },
    });
    expect(copyOf({ ...boxRecord(3, [0, 0, 1, 1]), kind: "tag", bbox: null }, 1, 1, [9, 9], "web")).toBeNull();
  });
});
