import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";

import type { AnnotationRecord, NewAnnotation } from "../src/api";
import { EditSync, type MessageKind, type SyncView } from "../src/edit-sync";
import { restoreChanges, UndoStack } from "../src/undo";
import { ViewportCache, type Entry } from "../src/viewport-cache";
import { boxRecord } from "./records";

const IMAGE = "cd".repeat(32);

/** The annotation API in memory: versions, 409 on a stale one, 404 when gone; every request recorded. */
class Server {
  readonly records = new Map<number, AnnotationRecord>();
  readonly sent: { method: string; path: string; body: unknown }[] = [];
  private nextId = 500;

  readonly fetch = async (input: RequestInfo | URL, init?: RequestInit): Promise<Response> => {
    const url = new URL(String(input), "http://gigavision.test");
    const method = init?.method ?? "GET";
    const body: unknown = typeof init?.body === "string" ? JSON.parse(init.body) : undefined;
    this.sent.push({ method, path: url.pathname, body });
    if (method === "POST") {
      const ids = (body as { annotations: NewAnnotation[] }).annotations.map((a) => {
        const id = this.nextId++;
        this.records.set(id, {
          ...boxRecord(id, a.bbox ?? [0, 0, 1, 1]),
          ...a,
          bbox: a.bbox ?? null,
          geometry: a.geometry ?? null,
          mask: a.mask ?? null,
          status: a.status ?? "proposed",
          attributes: a.attributes ?? {},
        });
        return id;
      });
      return json(201, { ids });
    }
    const id = Number(/(\d+)$/.exec(url.pathname)?.[1]);
    const record = this.records.get(id);
    if (!record) return json(404, { error: { code: "not_found", message: `no annotation ${id}` } });
    if (method === "GET") return json(200, record);
    const version = method === "DELETE" ? Number(url.searchParams.get("version")) : (body as { version: number }).version;
    if (version !== record.version) {
      return json(409, { error: { code: "conflict", message: `annotation ${id} changed` } });
    }
    if (method === "DELETE") {
      this.records.delete(id);
      return new Response(null, { status: 204 });
    }
    const updated = { ...record, ...(body as { changes: object }).changes, version: record.version + 1 };
    this.records.set(id, updated);
    return json(200, updated);
  };

  /** Someone else edits. */
  bump(id: number, changes: Partial<AnnotationRecord>): void {
    const r = this.records.get(id);
    if (r) this.records.set(id, { ...r, ...changes, version: r.version + 1 });
  }

  writes(): string[] {
    return this.sent.filter((s) => s.method !== "GET").map((s) => `${s.method} ${s.path}`);
  }
}

function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });
}

class View implements SyncView {
  readonly drawn = new Map<string, AnnotationRecord>();
  readonly messages: [string, MessageKind][] = [];
  sync: EditSync | null = null;
  private waiting: (() => void)[] = [];
  draw(entries: Entry[]): void {
    for (const e of entries) this.drawn.set(e.annoId, e.record);
  }
  undraw(entries: Entry[]): void {
    for (const e of entries) this.drawn.delete(e.annoId);
  }
  removeShape(annoId: string): void {
    this.drawn.delete(annoId);
  }
  saved(): void {}
  showMessage(text: string, kind: MessageKind = "error"): void {
    this.messages.push([text, kind]);
  }
  pointRadius(): number {
    return 4;
  }
  editDone(): void {
    if (this.sync?.inFlight === 0) for (const resolve of this.waiting.splice(0)) resolve();
  }
  idle(): Promise<void> {
    if (this.sync?.inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.waiting.push(resolve));
  }
}

let server: Server;
let view: View;
let cache: ViewportCache;
let sync: EditSync;

function loaded(record: AnnotationRecord): Entry {
  server.records.set(record.id, { ...record });
  const entry: Entry = { record: { ...record }, annoId: `a${record.id}`, tolerance: 0, radius: 4, changedAt: 0 };
  cache.add(entry);
  view.draw([entry]);
  return entry;
}

beforeEach(() => {
  server = new Server();
  vi.stubGlobal("fetch", server.fetch);
  view = new View();
  cache = new ViewportCache();
  sync = new EditSync(IMAGE, cache, view, "web");
  view.sync = sync;
});

afterEach(() => {
  sync.stop();
  vi.unstubAllGlobals();
});

describe("UndoStack", () => {
  it("turns each applied step into its inverse on the other stack; a new edit clears redo", () => {
    const a = boxRecord(1, [0, 0, 5, 5], 1);
    const b = { ...a, bbox: [10, 10, 15, 15] as AnnotationRecord["bbox"], version: 2 };
    const stack = new UndoStack();
    stack.record({ now: b, then: a });
    const step = stack.takeUndo();
    expect(step).toEqual({ now: b, then: a });
    const restored = { ...a, version: 3 };
    stack.undid(step!, restored);
    expect(stack.sizes).toEqual({ undo: 0, redo: 1 });
    expect(stack.takeRedo()).toEqual({ now: restored, then: b });
    stack.undid(step!, restored);
    stack.record({ now: null, then: restored });
    expect(stack.canRedo).toBe(false);
  });

  it("follows an annotation re-created under a new id, and drops the steps of one that cannot be undone", () => {
    const stack = new UndoStack();
    const a = boxRecord(1, [0, 0, 5, 5]);
    stack.record({ now: a, then: null });
    stack.record({ now: { ...a, version: 2 }, then: a });
    stack.remap(1, 9);
    expect(stack.takeUndo()?.now?.id).toBe(9);
    stack.drop(9);
    expect(stack.canUndo).toBe(false);
  });

  it("restores label, status, attributes and the shape of the kind", () => {
    const point: AnnotationRecord = {
      ...boxRecord(3, [4, 4, 4, 4]),
      kind: "point",
      geometry: { type: "Point", coordinates: [4, 4] },
      attributes: { grade: "high" },
    };
    expect(restoreChanges(point)).toEqual({
      label: "cell",
      status: "proposed",
      attributes: { grade: "high" },
      geometry: { type: "Point", coordinates: [4, 4] },
    });
  });
});

describe("EditSync undo / redo", () => {
  it("undoes a move with ONE write restoring the previous geometry, and redoes it", async () => {
    const entry = loaded(boxRecord(7, [0, 0, 10, 10]));
    sync.reshape(entry.annoId, () => ({ bbox: [50, 50, 60, 60] }));
    await view.idle();
    expect(server.records.get(7)).toMatchObject({ bbox: [50, 50, 60, 60], version: 2 });
    server.sent.length = 0;

    expect(await sync.undo()).toBe(true);
    await view.idle();
    expect(server.writes()).toEqual(["PATCH /api/v1/annotations/7"]);
    expect(server.sent[0]?.body).toMatchObject({ version: 2, changes: { bbox: [0, 0, 10, 10] } });
    expect(server.records.get(7)).toMatchObject({ bbox: [0, 0, 10, 10], version: 3 });
    expect(view.drawn.get("a7")?.bbox).toEqual([0, 0, 10, 10]);

    expect(await sync.redo()).toBe(true);
    await view.idle();
    expect(server.records.get(7)).toMatchObject({ bbox: [50, 50, 60, 60], version: 4 });
    expect(await sync.redo()).toBe(false);
    expect(view.messages).toEqual([]);
  });

  it("undoes an edit whose save is still on its way (it is the last write)", async () => {
    const entry = loaded(boxRecord(9, [0, 0, 10, 10]));
    sync.patch(entry.annoId, { status: "accepted" });
    expect(await sync.undo()).toBe(true);
    await view.idle();
    expect(server.writes()).toEqual(["PATCH /api/v1/annotations/9", "PATCH /api/v1/annotations/9"]);
    expect(server.records.get(9)).toMatchObject({ status: "proposed", version: 3 });
  });

  it("refuses to undo across someone else's edit and shows their version", async () => {
    const entry = loaded(boxRecord(8, [0, 0, 10, 10]));
    sync.patch(entry.annoId, { label: "tumour" });
    await view.idle();
    server.bump(8, { label: "stroma", bbox: [1, 1, 2, 2] });
    await sync.undo();
    await view.idle();
    expect(server.records.get(8)).toMatchObject({ label: "stroma", version: 3 }); // nothing overwritten
    expect(view.drawn.get("a8")).toMatchObject({ label: "stroma", version: 3 });
    const [text, kind] = view.messages[0] ?? ["", "error"];
    expect(kind).toBe("conflict");
    expect(text).toContain("Cannot undo: annotation 8 was changed by someone else");
    expect(text).toContain("version 3, stroma");
    expect(sync.history.canUndo).toBe(false);
  });

  it("undoes a creation by deleting it, a deletion by storing it again (a new id that later steps follow)", async () => {
    sync.add({ kind: "point", label: "nucleus", geometry: { type: "Point", coordinates: [3, 4] }, source: "web" }, [
      3, 4, 3, 4,
    ]);
    await view.idle();
    expect(server.records.get(500)).toMatchObject({ kind: "point" });
    await sync.undo();
    await view.idle();
    expect(server.records.has(500)).toBe(false);
    expect([...view.drawn.values()]).toEqual([]);
    await sync.redo();
    await view.idle();
    expect(server.records.get(501)).toMatchObject({ kind: "point", label: "nucleus" });
    await sync.undo();
    await view.idle();
    expect(server.records.size).toBe(0);
    expect(view.messages).toEqual([]);
  });
});
