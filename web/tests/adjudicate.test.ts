import { describe, expect, it } from "vitest";

import { adjudicateActionOf } from "../src/adjudicate-keys";
import { AGREES, DIFFERS, DIFFERS_COLOR, gridOf, paneDrawables, paneStyle, summarise, summaryText, type VersionRecord } from "../src/adjudicate-panes";
import { sameView, syncViewers, type Point, type SyncedViewer } from "../src/adjudicate-sync";
import { batchShapes } from "../src/overlay-batch";
import { boxRecord } from "./records";

const press = (key: string, versions = 3, mods: Partial<Record<"ctrlKey" | "metaKey" | "altKey", boolean>> = {}) =>
  adjudicateActionOf({ key, ctrlKey: false, metaKey: false, altKey: false, ...mods }, versions);

describe("adjudicateActionOf", () => {
  it("picks 1..N, unpicks with 0, chooses with Enter, switches the view with V", () => {
    expect(press("1")).toEqual({ type: "pick", index: 0 });
    expect(press("3")).toEqual({ type: "pick", index: 2 });
    expect(press("4")).toBeNull(); // only three versions
    expect(press("0")).toEqual({ type: "all" });
    expect(press("Enter")).toEqual({ type: "choose" });
    expect(press("v")).toEqual({ type: "view" });
    expect(press("V")).toEqual({ type: "view" });
    expect(press("a")).toBeNull();
  });

  it("leaves keys with Ctrl / Cmd / Alt to the browser", () => {
    expect(press("1", 3, { ctrlKey: true })).toBeNull();
    expect(press("Enter", 3, { metaKey: true })).toBeNull();
    expect(press("v", 3, { altKey: true })).toBeNull();
  });
});

function version(id: number, label: string, matched: string[] | null | undefined): VersionRecord {
  const record: VersionRecord = { ...boxRecord(id, [id, id, id + 10, id + 10]), label };
  if (matched !== undefined) record.matched_with = matched;
  return record;
}

describe("the panes' content", () => {
  const records = [version(1, "face", ["ben"]), version(2, "face", []), version(3, "flag", [])];

  it("counts shapes, those nobody else matched, and labels", () => {
    const s = summarise(records);
    expect(s).toEqual({ shapes: 3, differing: 2, byLabel: [["face", 2], ["flag", 1]] });
    expect(summaryText(s, "box")).toBe("3 shapes · 2 without a match");
    expect(summaryText(summarise([records[0] as VersionRecord]), "box")).toBe("1 shape");
    expect(summaryText(summarise([]), "tag")).toBe("0 labels");
    // without the server's matches (labels still hidden, an older server) nothing is called a difference
    expect(summarise([version(4, "face", undefined), version(5, "face", null)]).differing).toBe(0);
  });

  it("batches by agreement, differences drawn last in the highlight", () => {
    const batched = batchShapes(paneDrawables(records));
    expect(batched.batches.map((b) => [b.label, b.count])).toEqual([
      [AGREES, 1],
      [DIFFERS, 2],
    ]);
    expect(batched.keys).toEqual(["1", "2", "3"]);
    expect(records[1]?.label).toBe("face"); // the records themselves are left alone
    expect(paneStyle("#00c2ff", DIFFERS).stroke).toContain("255, 45, 85");
    expect(DIFFERS_COLOR).toBe("#ff2d55");
    expect(paneStyle("#00c2ff", AGREES).stroke).toContain("0, 194, 255");
    expect(paneStyle("#00c2ff", DIFFERS).lineWidth).toBeGreaterThan(paneStyle("#00c2ff", AGREES).lineWidth);
  });

  it("lays two panes side by side and three or four in a 2 × 2 grid", () => {
    expect(gridOf(1)).toEqual({ columns: 1, rows: 1 });
    expect(gridOf(2)).toEqual({ columns: 2, rows: 1 });
    expect(gridOf(3)).toEqual({ columns: 2, rows: 2 });
    expect(gridOf(4)).toEqual({ columns: 2, rows: 2 });
  });
});

/** A viewer whose viewport jumps (no springs): enough for the sync's bookkeeping. */
class FakeViewer implements SyncedViewer {
  zoom = 1;
  center: Point = { x: 0.5, y: 0.5 };
  moves = 0;
  private handlers: (() => void)[] = [];
  viewport = {
    getZoom: (): number => this.zoom,
    getCenter: (): Point => ({ ...this.center }),
    zoomTo: (zoom: number): void => {
      this.zoom = zoom;
      this.moves += 1;
      this.changed();
    },
    panTo: (center: Point): void => {
      this.center = { ...center };
      this.moves += 1;
      this.changed();
    },
  };
  addHandler(_event: "viewport-change", handler: () => void): void {
    this.handlers.push(handler);
  }
  removeHandler(_event: "viewport-change", handler: () => void): void {
    this.handlers = this.handlers.filter((h) => h !== handler);
  }
  /** OpenSeadragon raises viewport-change after a move (here at once, the harder case for loops). */
  changed(): void {
    for (const h of this.handlers) h();
  }
}

describe("syncViewers", () => {
  it("moves every other viewer with the one that moved, whichever it is, without echoes", () => {
    const [a, b, c] = [new FakeViewer(), new FakeViewer(), new FakeViewer()];
    const stop = syncViewers([a, b, c]);
    a.viewport.zoomTo(3);
    expect([b.zoom, c.zoom]).toEqual([3, 3]);
    a.viewport.panTo({ x: 0.2, y: 0.7 });
    expect([b.center, c.center]).toEqual([
      { x: 0.2, y: 0.7 },
      { x: 0.2, y: 0.7 },
    ]);
    expect(a.moves).toBe(2); // nothing was copied back onto the viewer that moved
    c.viewport.panTo({ x: 0.9, y: 0.1 });
    expect(sameView(a, c) && sameView(b, c)).toBe(true);
    b.changed(); // a frame with nothing new: nobody moves
    const before = a.moves + b.moves + c.moves;
    b.changed();
    expect(a.moves + b.moves + c.moves).toBe(before);
    stop();
    a.viewport.zoomTo(5);
    expect(b.zoom).toBe(3);
  });
});
