import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";

import type { LabelClass } from "../src/api";
import { LabelColors, PENDING_COLOR, queryGroups } from "../src/palette";

/** The server's palette behind a fake `fetch`: a colour per name, and the names each request asked for. */
let asked: string[][];
let failing: boolean;

function paletteColor(name: string): string {
  return `#${(name.length * 1234567).toString(16).padStart(6, "0").slice(-6)}`;
}

beforeEach(() => {
  asked = [];
  failing = false;
  vi.stubGlobal("fetch", (input: RequestInfo | URL) => {
    const url = new URL(String(input), "http://gigavision.test");
    expect(url.pathname).toBe("/api/v1/labels/palette");
    const names = url.searchParams.getAll("name");
    asked.push(names);
    if (failing) return Promise.resolve(new Response("{}", { status: 500 }));
    const body = Object.fromEntries(names.map((n) => [n, paletteColor(n)]));
    return Promise.resolve(new Response(JSON.stringify(body), { status: 200 }));
  });
});

afterEach(() => {
  vi.unstubAllGlobals();
});

function cls(color: string): LabelClass {
  return { kind: "box", color, parent: null, attributes: {} };
}

describe("LabelColors", () => {
  it("draws classes in their schema colour without asking the server", async () => {
    const colors = new LabelColors(() => undefined);
    colors.setClasses({ cell: cls("#00c000"), tumor: cls("#F30") });
    expect(colors.colorOf("cell")).toBe("#00c000");
    expect(colors.colorOf("tumor")).toBe("#F30");
    await Promise.resolve();
    expect(asked).toEqual([]);
  });

  it("asks the server's palette, once and together, for labels without a usable colour", async () => {
    const changed = vi.fn();
    const colors = new LabelColors(changed);
    colors.setClasses({ odd: cls("red") });
    expect(colors.colorOf("object")).toBe(PENDING_COLOR);
    expect(colors.colorOf("odd")).toBe(PENDING_COLOR);
    expect(colors.colorOf("object")).toBe(PENDING_COLOR);
    await vi.waitFor(() => expect(changed).toHaveBeenCalledTimes(1));
    expect(asked).toEqual([["object", "odd"]]);
    expect(colors.colorOf("object")).toBe(paletteColor("object"));
    expect(colors.colorOf("odd")).toBe(paletteColor("odd"));
    expect(colors.pending).toBe(0);
    expect(asked).toHaveLength(1);
  });

  it("asks nothing before the schema is known (most labels have a class)", async () => {
    const colors = new LabelColors(() => undefined);
    expect(colors.colorOf("cell")).toBe(PENDING_COLOR);
    await Promise.resolve();
    expect(asked).toEqual([]);
    colors.setClasses({ cell: cls("#00c000") });
    expect(colors.colorOf("cell")).toBe("#00c000");
  });

  it("leaves a label pending, and does not ask again, when the server fails", async () => {
    failing = true;
    const changed = vi.fn();
    const colors = new LabelColors(changed);
    colors.setClasses({});
    colors.colorOf("object");
    await vi.waitFor(() => expect(colors.pending).toBe(0));
    expect(colors.colorOf("object")).toBe(PENDING_COLOR);
    await Promise.resolve();
    expect(asked).toEqual([["object"]]);
    expect(changed).not.toHaveBeenCalled();
  });

  it("splits many long names over requests with short URLs", async () => {
    const changed = vi.fn();
    const colors = new LabelColors(changed);
    colors.setClasses({});
    const names = Array.from({ length: 60 }, (_, i) => `${i} ${"é".repeat(200)}`);
    for (const name of names) colors.colorOf(name);
    await vi.waitFor(() => expect(colors.pending).toBe(0));
    expect(asked.flat()).toEqual(names);
    expect(asked.length).toBeGreaterThan(1);
    expect(changed).toHaveBeenCalledTimes(asked.length);
    expect(names.every((n) => colors.colorOf(n) === paletteColor(n))).toBe(true);
  });
});

describe("queryGroups", () => {
  it("keeps each group's query within the limit and every name once, in order", () => {
    const names = ["a", "b c", "d&e", "x".repeat(30)];
    const groups = queryGroups(names, 20);
    expect(groups.flat()).toEqual(names);
    for (const group of groups) {
      const query = new URLSearchParams(group.map((name) => ["name", name])).toString();
      expect(query.length <= 20 || group.length === 1).toBe(true);
    }
    expect(queryGroups([], 20)).toEqual([]);
  });
});
