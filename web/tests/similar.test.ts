import { describe, expect, it } from "vitest";

import { boxFromDrag, offered, similarUrl, type IndexCard } from "../src/similar";

describe("boxFromDrag", () => {
  it("spans the drag in either direction, in whole level-0 pixels", () => {
    expect(boxFromDrag({ x: 10.4, y: 20.6 }, { x: 100.5, y: 80.2 }, 1000, 1000)).toEqual([10, 21, 101, 80]);
    expect(boxFromDrag({ x: 100, y: 80 }, { x: 10, y: 20 }, 1000, 1000)).toEqual([10, 20, 100, 80]);
  });

  it("stops at the image's edges", () => {
    expect(boxFromDrag({ x: -50, y: -5 }, { x: 2000, y: 700 }, 1500, 600)).toEqual([0, 0, 1500, 600]);
  });

  it("is no box for a click or a drag outside the image", () => {
    expect(boxFromDrag({ x: 10, y: 10 }, { x: 12, y: 200 }, 1000, 1000)).toBeNull();
    expect(boxFromDrag({ x: 1200, y: 10 }, { x: 1300, y: 200 }, 1000, 1000)).toBeNull();
  });
});

describe("similarUrl", () => {
  it("asks the image's similar route with the index, the region and k", () => {
    const url = new URL(similarUrl("ab12", "slides l1", [1, 2, 30, 40], 8), "http://gigavision.test");
    expect(url.pathname).toBe("/api/v1/images/ab12/similar");
    expect(url.searchParams.get("index")).toBe("slides l1");
    expect(url.searchParams.get("region")).toBe("1,2,30,40");
    expect(url.searchParams.get("k")).toBe("8");
  });
});

describe("offered", () => {
  it("lists region indexes first, then by name", () => {
    const card = (name: string, mode: IndexCard["mode"]): IndexCard => ({ name, mode, count: 1, model: "m" });
    const names = offered([card("b", "image"), card("z", "regions"), card("a", "image"), card("c", "regions")]);
    expect(names.map((c) => c.name)).toEqual(["c", "z", "a", "b"]);
  });
});
