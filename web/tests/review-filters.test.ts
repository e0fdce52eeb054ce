import { describe, expect, it } from "vitest";

import { currentOf, filterQuery } from "../src/review-api";
import { parseBand, parseFilters, reviewHash } from "../src/review-filters";
import { contextRect, imageHash, regionLabel, taskRegion, tilesFor } from "../src/review-geometry";
import { imagesQuery, listHash, pageCount, parseListQuery } from "../src/list-query";

describe("review filters in the hash", () => {
  it("round-trips reason, model, label and score band", () => {
    const filters = parseFilters("reason=audit&model=abc&label=mitosis&band=0.5-0.8&junk=1");
    expect(filters).toEqual({ reason: "audit", model: "abc", label: "mitosis", min_score: 0.5, max_score: 0.8 });
    expect(reviewHash(filters)).toBe("#/review?reason=audit&model=abc&label=mitosis&band=0.5-0.8");
    expect(parseFilters(reviewHash(filters).split("?")[1] ?? "")).toEqual(filters);
  });

  it("drops unknown reasons and bad bands", () => {
    expect(parseFilters("reason=whatever&band=0.9-0.1")).toEqual({});
    expect(parseBand("abc")).toBeNull();
    expect(parseBand("0-0.5")).toEqual({ min_score: 0, max_score: 0.5 });
    expect(reviewHash({})).toBe("#/review");
  });

  it("sends only the filters that are set", () => {
    expect(filterQuery({ label: "cell", model: "" }, { after: "7" }).toString()).toBe("label=cell&after=7");
  });

  it("finds the other person's task in a 409 body wherever the server put it", () => {
    const current = { id: 3, decision: "reject" };
    expect(currentOf({ error: { code: "conflict" }, current })).toEqual(current);
    expect(currentOf({ error: { current } })).toEqual(current);
    expect(currentOf({ detail: "answered" })).toBeNull();
    expect(currentOf(null)).toBeNull();
  });
});

describe("where the inbox looks", () => {
  it("grows the region to three times its size, at least 256 px, inside the image", () => {
    expect(contextRect([1000, 1000, 1100, 1050], 40000, 25000)).toEqual([900, 897, 1200, 1153]);
    expect(contextRect([0, 0, 10, 10], 40000, 25000)).toEqual([0, 0, 256, 256]); // clamped at the corner
    expect(contextRect(null, 400, 300)).toEqual([0, 0, 400, 300]);
    expect(contextRect([0, 0, 390, 290], 400, 300)).toEqual([0, 0, 400, 300]);
  });

  it("takes the task's region, else its proposal's box", () => {
    expect(taskRegion({ region: null, annotation: { bbox: [1, 2, 3, 4] } })).toEqual([1, 2, 3, 4]);
    expect(taskRegion({ region: [5, 6, 7, 8], annotation: { bbox: [1, 2, 3, 4] } })).toEqual([5, 6, 7, 8]);
    expect(taskRegion({ region: null, annotation: null })).toBeNull();
  });

  it("lists the tiles of the sharpest level the viewer needs there", () => {
    // a 512 x 512 view of a 2,000-px region of a 40,000 x 25,000 slide: 0.256 screen px per pixel, so the
    // level at half resolution (15 of 16) has more than one tile pixel per screen pixel
    const tiles = tilesFor([10000, 10000, 12000, 12000], 40000, 25000, 512, 512);
    expect(new Set(tiles.map((t) => t.level))).toEqual(new Set([15]));
    expect(tiles.map((t) => t.col).sort((a, b) => a - b)[0]).toBe(19); // 10,000 / 2 / 256
    expect(tiles).toHaveLength(25); // columns and rows 19..23
    // a 1,000-px region at 0.512 screen px per pixel needs the full resolution
    expect(new Set(tilesFor([10000, 10000, 11000, 11000], 40000, 25000, 512, 512).map((t) => t.level))).toEqual(new Set([16]));
    expect(tilesFor([0, 0, 40000, 25000], 40000, 25000, 100000, 100000)).toEqual([]); // too many: none
  });
});

describe("the image list's query", () => {
  it("round-trips search, filters and page through the hash and into the REST query", () => {
    const query = parseListQuery("q=slide&label=tumour&status=proposed&meta=stain%3DHE&pending=1&page=3");
    expect(query).toEqual({ q: "slide", label: "tumour", status: "proposed", meta: "stain=HE", pending: "1", page: 3 });
    expect(parseListQuery(listHash(query).split("?")[1] ?? "")).toEqual(query);
    const rest = new URLSearchParams(imagesQuery(query, 50));
    expect(rest.get("offset")).toBe("100");
    expect(rest.get("pending_review")).toBe("true");
    expect(rest.get("meta")).toBe("stain=HE");
    expect(listHash({ page: 1 })).toBe("#/");
    expect(pageCount(0, 50)).toBe(1);
    expect(pageCount(101, 50)).toBe(3);
  });
});

describe("a region labelled with one key", () => {
  it("takes the shape its class takes", () => {
    const region: [number, number, number, number] = [10, 20, 30, 60];
    expect(regionLabel(undefined, "x", region)).toMatchObject({ kind: "box", bbox: region });
    expect(regionLabel(undefined, "x", null)).toMatchObject({ kind: "tag" });
    expect(regionLabel("tag", "x", region)).toMatchObject({ kind: "tag" });
    expect(regionLabel("point", "x", region)).toMatchObject({ kind: "point", geometry: { type: "Point", coordinates: [20, 40] } });
    expect(regionLabel("polygon", "x", region)?.geometry?.coordinates).toEqual([[[10, 20], [30, 20], [30, 60], [10, 60], [10, 20]]]);
    expect(regionLabel("mask", "x", region)).toBeNull(); // drawn in the viewer
    expect(regionLabel("box", "x", null)).toBeNull();
  });
});

describe("links to the viewer", () => {
  it("name the region to look at, rounded", () => {
    expect(imageHash("ab", [1.4, 2.6, 30, 40])).toBe("#/image/ab?region=1,3,30,40");
    expect(imageHash("ab", null)).toBe("#/image/ab");
  });
});
