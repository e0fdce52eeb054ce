import { describe, expect, it } from "vitest";

import { commandOf, shortcutOf } from "../src/keys";

const press = (key: string, mods: Partial<Record<"ctrlKey" | "metaKey" | "altKey", boolean>> = {}) =>
  shortcutOf({ key, ctrlKey: false, metaKey: false, altKey: false, ...mods });

describe("shortcutOf", () => {
  it("maps the keys the panel lists", () => {
    expect(press("b")).toEqual({ tool: "rectangle" });
    expect(press("P")).toEqual({ tool: "polygon" });
    expect(press("v")).toEqual({ tool: "select" });
    expect(press("Escape")).toEqual({ tool: "select" });
    expect(press("h")).toBe("toggle");
    expect(press("Delete")).toBe("delete");
    expect(press("Backspace")).toBe("delete");
    expect(press("x")).toBeNull();
  });

  it("leaves keys with Ctrl, Cmd or Alt to the browser", () => {
    expect(press("b", { ctrlKey: true })).toBeNull();
    expect(press("Delete", { metaKey: true })).toBeNull();
    expect(press("h", { altKey: true })).toBeNull();
  });
});

describe("commandOf", () => {
  const key = (k: string, mods: Partial<KeyboardEvent> = {}) =>
    commandOf({ key: k, ctrlKey: false, metaKey: false, altKey: false, shiftKey: false, ...mods });

  it("maps undo, redo, copy, paste and the point tool", () => {
    expect(key("z", { ctrlKey: true })).toBe("undo");
    expect(key("Z", { metaKey: true, shiftKey: true })).toBe("redo");
    expect(key("y", { ctrlKey: true })).toBe("redo");
    expect(key("c", { ctrlKey: true })).toBe("copy");
    expect(key("v", { metaKey: true })).toBe("paste");
    expect(key("o")).toBe("point");
    expect(key("o", { altKey: true })).toBeNull();
    expect(key("b")).toBeNull();
  });
});
