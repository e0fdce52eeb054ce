import { describe, expect, it } from "vitest";

import { applyStroke, area, countsFromString, countsToString, decodeMask, encodeMask } from "../src/brush";

describe("COCO RLE", () => {
  it("reads and writes the counts strings pycocotools writes", () => {
    // pycocotools.mask.encode of a 5 x 7 mask: a[1:4, 2:6] = a[0, 0] = a[4, 6] = 1
    expect(countsFromString("01:2H000003N")).toEqual([0, 1, 10, 3, 2, 3, 2, 3, 2, 3, 5, 1]);
    expect(countsToString([0, 1, 10, 3, 2, 3, 2, 3, 2, 3, 5, 1])).toBe("01:2H000003N");
    const head = countsFromString("V_1h8d0000").slice(0, 4);
    expect(head).toEqual([1510, 280, 20, 280]); // 300 x 200 mask, b[10:290, 5:190] = 1
    expect(() => countsFromString("0\u00ff")).toThrow(/invalid character/);
  });

  it("decodes a stored mask at its box and encodes it back to the tight window", () => {
    const record = { bbox: [10, 20, 17, 25] as [number, number, number, number], mask: { size: [5, 7] as [number, number], counts: "01:2H000003N" } };
    const win = decodeMask(record)!;
    expect([win.x0, win.y0, win.width, win.height]).toEqual([10, 20, 7, 5]);
    expect(win.data[0]).toBe(1); // a[0, 0]
    expect(win.data[1 * 7 + 2]).toBe(1); // a[1, 2]
    expect(win.data[4 * 7 + 6]).toBe(1); // a[4, 6]
    expect(area(win)).toBe(14);
    expect(encodeMask(win)).toEqual({ bbox: [10, 20, 17, 25], mask: { size: [5, 7], counts: "01:2H000003N" } });
  });
});

describe("applyStroke", () => {
  it("paints a disc path, then erases part of it; the tight box follows", () => {
    const painted = applyStroke(null, { points: [[50, 50], [70, 50]], radius: 5 }, false, [1000, 1000])!;
    const stored = encodeMask(painted)!;
    expect(stored.bbox).toEqual([45, 45, 75, 55]);
    expect(stored.mask.size).toEqual([10, 30]);
    const before = area(painted);
    expect(before).toBeGreaterThan(20 * 10);
    const erased = applyStroke(decodeMask(stored), { points: [[70, 50]], radius: 6 }, true, [1000, 1000])!;
    expect(area(erased)).toBeLessThan(before);
    expect(encodeMask(erased)!.bbox[2]).toBeLessThan(75);
    const gone = applyStroke(erased, { points: [[45, 50], [75, 50]], radius: 10 }, true, [1000, 1000]);
    expect(encodeMask(gone!)).toBeNull(); // everything erased: nothing to store
  });

  it("clips a stroke that leaves the image, and refuses a window larger than a mask may be", () => {
    const win = applyStroke(null, { points: [[95, 10], [130, 10]], radius: 8 }, false, [100, 60])!;
    const stored = encodeMask(win)!;
    expect(stored.bbox[2]).toBe(100);
    expect(stored.bbox[1]).toBe(2);
    expect(applyStroke(null, { points: [[500, 500]], radius: 3 }, false, [100, 60])).toBeNull();
    expect(() => applyStroke(null, { points: [[0, 0], [900, 900]], radius: 4 }, false, [1000, 1000], 10_000)).toThrow(
      /zoom in/,
    );
  });
});
