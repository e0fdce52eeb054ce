import { describe, expect, it } from "vitest";

import type { LabelClass } from "../src/api";
import { classesFor, labelFor, takes } from "../src/kinds";

function cls(kind: LabelClass["kind"]): LabelClass {
  return { kind, color: "#00ff00", parent: null, attributes: {} };
}

const SCHEMA = { cell: cls("box"), nucleus: cls("point"), tumour: cls("polygon"), debris: cls("mask"), blurry: cls("tag") };

describe("kinds", () => {
  it("takes what the server takes: a region class either outline, every other kind only its own", () => {
    expect(takes("polygon", "mask")).toBe(true);
    expect(takes("mask", "polygon")).toBe(true);
    expect(takes("point", "box")).toBe(false);
    expect(takes("box", "tag")).toBe(false);
  });

  it("lists the classes for a kind, exact kind first", () => {
    expect(classesFor(SCHEMA, "polygon")).toEqual(["tumour", "debris"]);
    expect(classesFor(SCHEMA, "point")).toEqual(["nucleus"]);
    expect(classesFor(SCHEMA, "tag")).toEqual(["blurry"]);
  });

  it("keeps a fitting label, else picks a class of the tool's kind, else none", () => {
    expect(labelFor(SCHEMA, "box", "cell")).toBe("cell");
    expect(labelFor(SCHEMA, "box", "nucleus")).toBe("cell"); // the picker defaulted to a point class
    expect(labelFor(SCHEMA, "point", "cell")).toBe("nucleus");
    expect(labelFor(SCHEMA, "mask", "tumour")).toBe("tumour");
    expect(labelFor({ cell: cls("box") }, "point", "cell")).toBeNull();
    expect(labelFor({}, "point", "anything typed")).toBe("anything typed"); // an empty schema takes any label
  });
});
