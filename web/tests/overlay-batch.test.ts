import { describe, expect, it } from "vitest";

import type { AnnotationRecord, BBox } from "../src/api";
import { STATUSES } from "../src/api";
import {
  batchShapes,
  countByLabel,
  hitTest,
  keysIn,
  originOf,
  passes,
  ringsOf,
  showAll,
  type Drawable,
} from "../src/overlay-batch";
import { boxRecord } from "./records";

function polygon(id: number, rings: [number, number][][], label = "tumor"): AnnotationRecord {
  return {
    ...boxRecord(id, [0, 0, 0, 0]),
    kind: "polygon",
    label,
    geometry: { type: "Polygon", coordinates: rings.map((r) => [...r, r[0] as [number, number]]) },
  };
}

function point(id: number, x: number, y: number, label = "mitosis"): AnnotationRecord {
  return { ...boxRecord(id, [x, y, x, y]), kind: "point", label, geometry: { type: "Point", coordinates: [x, y] } };
}

function box(id: number, bbox: BBox, extra: Partial<AnnotationRecord> = {}): AnnotationRecord {
  return { ...boxRecord(id, bbox), ...extra };
}

const drawable = (records: AnnotationRecord[]): Drawable[] => records.map((record) => ({ key: `a${record.id}`, record }));

/** Signed area (shoelace) of ring `r` of a batch, in its stored vertex order. */
function signedArea(coords: Float32Array, ringStart: Uint32Array, r: number): number {
  let area2 = 0;
  const start = ringStart[r] as number;
  const end = ringStart[r + 1] as number;
  for (let i = start; i < end; i++) {
    const j = i + 1 < end ? i + 1 : start;
    area2 += (coords[2 * i] as number) * (coords[2 * j + 1] as number) - (coords[2 * j] as number) * (coords[2 * i + 1] as number);
  }
  return area2 / 2;
}

describe("batchShapes", () => {
  it("puts every shape of a label and status in one typed array, whatever their number", () => {
    const records = [
      ...Array.from({ length: 500 }, (_, i) => box(i + 1, [i * 10, 0, i * 10 + 8, 8])),
      ...Array.from({ length: 300 }, (_, i) => box(1000 + i, [i * 10, 20, i * 10 + 8, 28], { status: "accepted" })),
      point(2000, 50, 50),
      { ...boxRecord(3000, [0, 0, 1, 1]), kind: "tag" as const, bbox: null },
    ];
    const b = batchShapes(drawable(records));
    // Three batches (cell proposed, cell accepted, mitosis points) for 801 shapes; the tag is not drawn.
    expect(b.batches.map((x) => [x.label, x.status, x.count])).toEqual([
      ["cell", "proposed", 500],
      ["mitosis", "proposed", 1],
      ["cell", "accepted", 300], // accepted last: drawn on top
    ]);
    const proposed = b.batches[0];
    expect(proposed?.coords).toBeInstanceOf(Float32Array);
    expect(proposed?.coords.length).toBe(500 * 4 * 2);
    expect(proposed?.ringStart.length).toBe(501);
    expect(Array.from(b.batches[1]?.points ?? [])).toEqual([50, 50]);
    expect(b.keys).toHaveLength(801);
    expect(b.keys).not.toContain("a3000");
  });

  it("orients outer rings and holes oppositely, so a non-zero fill cuts holes and unites overlaps", () => {
    const outerClockwise: [number, number][] = [
      [0, 0],
      [0, 100],
      [100, 100],
      [100, 0],
    ];
    const holeSameWay: [number, number][] = [
      [40, 40],
      [40, 60],
      [60, 60],
      [60, 40],
    ];
    const b = batchShapes(drawable([polygon(1, [outerClockwise, holeSameWay])]));
    const batch = b.batches[0];
    if (!batch) throw new Error("no batch");
    expect(batch.ringStart.length).toBe(3);
    expect(signedArea(batch.coords, batch.ringStart, 0)).toBeGreaterThan(0);
    expect(signedArea(batch.coords, batch.ringStart, 1)).toBeLessThan(0);
    expect(ringsOf(polygon(2, [outerClockwise]))).toHaveLength(1);
  });
});

describe("hitTest", () => {
  const tumor = polygon(
    1,
    [
      [
        [0, 0],
        [400, 0],
        [400, 400],
        [0, 400],
      ],
      [
        [100, 100],
        [200, 100],
        [200, 200],
        [100, 200],
      ],
    ],
  );
  const cell = box(2, [300, 300, 340, 340]);
  const mitosis = point(3, 50, 350);
  const b = batchShapes(drawable([tumor, cell, mitosis]));

  it("finds the smallest shape under the click, exactly, not by bbox", () => {
    expect(hitTest(b, 320, 320, 1, 5)).toBe("a2"); // the cell inside the tumour region
    expect(hitTest(b, 250, 250, 1, 5)).toBe("a1");
    expect(hitTest(b, 150, 150, 1, 5)).toBeNull(); // in the tumour's hole
    expect(hitTest(b, 101, 150, 2, 5)).toBe("a1"); // on the hole's outline: within the slop
    expect(hitTest(b, 500, 500, 1, 5)).toBeNull();
  });

  it("hits points within their disc radius", () => {
    expect(hitTest(b, 53, 352, 1, 5)).toBe("a3");
    expect(hitTest(b, 60, 360, 1, 5)).toBe("a1"); // outside the disc: the region under it
  });

  it("lists the shapes whose box overlaps a rectangle", () => {
    expect(keysIn(b, [310, 310, 320, 320]).sort()).toEqual(["a1", "a2"]);
    expect(keysIn(b, [401, 0, 500, 500])).toEqual([]);
  });
});

describe("filters and legend", () => {
  const model = box(1, [0, 0, 10, 10], { source: "model:abc", label: "mitosis" });
  const human = box(2, [0, 0, 10, 10], { source: "user:ana", status: "accepted" });
  const rejected = box(3, [0, 0, 10, 10], { source: "web", status: "rejected" });

  it("tells model proposals from human labels", () => {
    expect(originOf("model:abc")).toBe("model");
    expect(originOf("user:ana")).toBe("human");
    expect(originOf("web")).toBe("human");
  });

  it("hides by origin, status and label; the legend counts hidden labels but not hidden origins", () => {
    const filter = { ...showAll(STATUSES), origins: new Set(["human" as const]), hiddenLabels: new Set(["cell"]) };
    expect([model, human, rejected].filter((r) => passes(r, filter))).toEqual([]);
    expect([model, human, rejected].filter((r) => passes(r, showAll(STATUSES)))).toHaveLength(3);
    expect(countByLabel([model, human, rejected], filter)).toEqual(new Map([["cell", 2]]));
    const noRejected = { ...showAll(STATUSES), statuses: new Set(STATUSES.filter((s) => s !== "rejected")) };
    expect(countByLabel([model, human, rejected], noRejected)).toEqual(
      new Map([
        ["mitosis", 1],
        ["cell", 1],
      ]),
    );
  });
});
