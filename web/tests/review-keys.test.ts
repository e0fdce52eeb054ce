import { describe, expect, it } from "vitest";

import { reviewActionOf } from "../src/review-keys";

const press = (key: string, editing = false, mods: Partial<Record<"ctrlKey" | "metaKey" | "altKey", boolean>> = {}) =>
  reviewActionOf({ key, ctrlKey: false, metaKey: false, altKey: false, ...mods }, editing);

describe("reviewActionOf", () => {
  it("maps the inbox's letters, either case", () => {
    expect(press("a")).toEqual({ type: "accept" });
    expect(press("A")).toEqual({ type: "accept" });
    expect(press("r")).toEqual({ type: "reject" });
    expect(press("e")).toEqual({ type: "edit" });
    expect(press("n")).toEqual({ type: "next" });
    expect(press("ArrowRight")).toEqual({ type: "next" });
    expect(press("p")).toEqual({ type: "previous" });
    expect(press("l")).toEqual({ type: "labelled" });
    expect(press("x")).toBeNull();
    expect(press("Enter")).toBeNull(); // nothing to save outside an edit
  });

  it("maps 1-9 to the label list's positions, and never 0", () => {
    expect(press("1")).toEqual({ type: "label", index: 0 });
    expect(press("9")).toEqual({ type: "label", index: 8 });
    expect(press("0")).toBeNull();
    expect(press("3", true)).toEqual({ type: "label", index: 2 });
  });

  it("while editing, only saves, cancels and relabels (letters go to the shape editor)", () => {
    expect(press("Enter", true)).toEqual({ type: "save" });
    expect(press("s", true)).toEqual({ type: "save" });
    expect(press("Escape", true)).toEqual({ type: "cancel" });
    expect(press("a", true)).toBeNull();
    expect(press("r", true)).toBeNull();
    expect(press("n", true)).toBeNull();
  });

  it("leaves keys with Ctrl, Cmd or Alt to the browser", () => {
    expect(press("a", false, { ctrlKey: true })).toBeNull();
    expect(press("r", false, { metaKey: true })).toBeNull();
    expect(press("1", false, { altKey: true })).toBeNull();
  });
});
