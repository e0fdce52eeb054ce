import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";

import type { AnnotationRecord, NewAnnotation } from "../src/api";
import { EditSync, type MessageKind, type SyncView } from "../src/edit-sync";
import { ViewportCache, type Entry } from "../src/viewport-cache";
import { boxRecord } from "./records";

const IMAGE = "ab".repeat(32);

interface Sent {
  method: string;
  path: string;
  body: unknown;
}

/** The annotation REST API in memory, behind a fake `fetch`: versions, 409 on stale ones, 404 when gone. */
class FakeServer {
  readonly records = new Map<number, AnnotationRecord>();
  readonly sent: Sent[] = [];
  /** Answers for the next request of a method (e.g. a 500), before the in-memory API is asked. */
  readonly failNext = new Map<string, { status: number; message: string }>();
  /** While set, POSTs wait for it. */
  gate: Promise<void> | null = null;
  private nextId = 100;

  readonly fetch = async (input: RequestInfo | URL, init?: RequestInit): Promise<Response> => {
    const url = new URL(String(input), "http://gigavision.test");
    const method = init?.method ?? "GET";
    const body: unknown = typeof init?.body === "string" ? JSON.parse(init.body) : undefined;
    this.sent.push({ method, path: url.pathname + url.search, body });
    if (method === "POST" && this.gate) await this.gate;
    const failure = this.failNext.get(method);
    if (failure) {
      this.failNext.delete(method);
      return error(failure.status, failure.message);
    }
    return this.answer(method, url, body);
  };

  add(record: Partial<AnnotationRecord> & { id: number }): AnnotationRecord {
    const full: AnnotationRecord = { ...boxRecord(record.id, [0, 0, 10, 10]), ...record };
    this.records.set(full.id, full);
    return full;
  }

  /** Someone else edits: the version moves on. */
  bump(id: number, changes: Partial<AnnotationRecord>): void {
    const record = this.records.get(id);
    if (record) this.records.set(id, { ...record, ...changes, version: record.version + 1 });
  }

  private answer(method: string, url: URL, body: unknown): Response {
    if (method === "POST" && url.pathname === `/api/v1/images/${IMAGE}/annotations`) {
      const { annotations } = body as { annotations: NewAnnotation[] };
      const ids = annotations.map((a) => {
        const id = this.nextId++;
        this.add({ id, kind: a.kind, label: a.label, bbox: a.bbox ?? null, source: a.source });
        return id;
      });
      return json(201, { ids, count: ids.length });
    }
    const match = /^\/api\/v1\/annotations\/(\d+)$/.exec(url.pathname);
    const record = match ? this.records.get(Number(match[1])) : undefined;
    if (!match) return error(404, "no route");
    if (!record) return error(404, `no annotation ${match[1]}`);
    if (method === "GET") return json(200, record);
    const version =
      method === "DELETE" ? Number(url.searchParams.get("version")) : (body as { version: number }).version;
    if (version !== record.version) return error(409, `annotation ${record.id} is at version ${record.version}`);
    if (method === "DELETE") {
      this.records.delete(record.id);
      return new Response(null, { status: 204 });
    }
    const { changes } = body as { changes: Partial<AnnotationRecord> };
    const updated = { ...record, ...changes, version: record.version + 1 };
    this.records.set(record.id, updated);
    return json(200, updated);
  }
}

function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });
}

function error(status: number, message: string): Response {
  return json(status, { error: { code: "x", message } });
}

/** What the page would show: drawn shapes (by Annotorious id), messages, and when edits finish. */
class FakeView implements SyncView {
  readonly drawn = new Map<string, AnnotationRecord>();
  readonly messages: [string, MessageKind][] = [];
  readonly savedIds: number[] = [];
  done = 0;
  private waiting: (() => void)[] = [];
  sync: EditSync | null = null;

  draw(entries: Entry[]): void {
    for (const e of entries) this.drawn.set(e.annoId, e.record);
  }
  undraw(entries: Entry[]): void {
    for (const e of entries) this.drawn.delete(e.annoId);
  }
  removeShape(annoId: string): void {
    this.drawn.delete(annoId);
  }
  saved(entry: Entry): void {
    this.savedIds.push(entry.record.id);
  }
  showMessage(text: string, kind: MessageKind = "error"): void {
    this.messages.push([text, kind]);
  }
  pointRadius(): number {
    return 4;
  }
  editDone(): void {
    this.done += 1;
    if (this.sync?.inFlight === 0) for (const resolve of this.waiting.splice(0)) resolve();
  }
  /** Resolves once no edit is queued or running. */
  idle(): Promise<void> {
    if (this.sync?.inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.waiting.push(resolve));
  }
}

let server: FakeServer;
let view: FakeView;
let cache: ViewportCache;
let sync: EditSync;

/** Holds `record` as a viewport load would (shape `a{id}`, drawn). */
function loaded(record: AnnotationRecord, tolerance = 0): Entry {
  const entry: Entry = { record: { ...record }, annoId: `a${record.id}`, tolerance, radius: 4, changedAt: 0 };
  cache.add(entry);
  view.draw([entry]);
  return entry;
}

beforeEach(() => {
  server = new FakeServer();
  vi.stubGlobal("fetch", server.fetch);
  view = new FakeView();
  cache = new ViewportCache();
  sync = new EditSync(IMAGE, cache, view, "web");
  view.sync = sync;
});

afterEach(() => {
  vi.unstubAllGlobals();
});

describe("EditSync.create", () => {
  it("stores a drawn shape and holds it under its Annotorious id at version 1", async () => {
    sync.create("drawn-1", { kind: "box", label: "cell", bbox: [1, 2, 30, 40], source: "web" }, [1, 2, 30, 40]);
    expect(sync.inFlight).toBe(1);
    expect(sync.has("drawn-1")).toBe(true);
    await view.idle();
    expect(server.sent).toEqual([
      {
        method: "POST",
        path: `/api/v1/images/${IMAGE}/annotations`,
        body: { annotations: [{ kind: "box", label: "cell", bbox: [1, 2, 30, 40], source: "web" }], actor: "web" },
      },
    ]);
    const entry = cache.entryOf("drawn-1");
    expect(entry?.record).toMatchObject({ id: 100, version: 1, label: "cell", bbox: [1, 2, 30, 40], source: "web" });
    expect(entry?.tolerance).toBe(0);
    expect(view.savedIds).toEqual([100]);
    expect(sync.has("drawn-1")).toBe(false);
    expect(view.messages).toEqual([]);
  });

  it("stamps new annotations with the attributes of the moment they are drawn (a volume's slice)", async () => {
    let slice = 7;
    sync.stamp = () => ({ plane: "axial", slice });
    sync.create("drawn-1", { kind: "box", label: "cell", bbox: [1, 2, 3, 4], source: "web", attributes: { a: "b" } }, [1, 2, 3, 4]);
    slice = 8; // the slider moved while the first was being saved
    sync.add({ kind: "point", label: "cell", geometry: { type: "Point", coordinates: [5, 5] }, source: "web" }, [5, 5, 5, 5]);
    await view.idle();
    const sent = server.sent.map((s) => (s.body as { annotations: NewAnnotation[] }).annotations[0]?.attributes);
    expect(sent).toEqual([{ a: "b", plane: "axial", slice: 7 }, { plane: "axial", slice: 8 }]);
  });

  it("removes the shape and shows the server's message when the annotation is refused", async () => {
    view.drawn.set("drawn-1", boxRecord(0, [0, 0, 1, 1]));
    server.failNext.set("POST", { status: 400, message: "label 'dog' is not in the schema" });
    sync.create("drawn-1", { kind: "box", label: "dog", bbox: [0, 0, 1, 1], source: "web" }, [0, 0, 1, 1]);
    await view.idle();
    expect(view.drawn.has("drawn-1")).toBe(false);
    expect(cache.size).toBe(0);
    expect(view.messages).toEqual([["label 'dog' is not in the schema", "error"]]);
  });

  it("runs a later edit of the same shape after the POST, with the id and version it returned", async () => {
    let release = (): void => undefined;
    server.gate = new Promise((resolve) => (release = resolve));
    sync.create("drawn-1", { kind: "box", label: "cell", bbox: [0, 0, 5, 5], source: "web" }, [0, 0, 5, 5]);
    sync.patch("drawn-1", { status: "accepted" });
    await Promise.resolve();
    expect(server.sent.map((s) => s.method)).toEqual(["POST"]);
    expect(sync.inFlight).toBe(2);
    release();
    await view.idle();
    expect(server.sent.map((s) => `${s.method} ${s.path}`)).toEqual([
      `POST /api/v1/images/${IMAGE}/annotations`,
      "PATCH /api/v1/annotations/100",
    ]);
    expect(server.sent[1]?.body).toEqual({ version: 1, changes: { status: "accepted" }, actor: "web" });
    expect(cache.get(100)?.record).toMatchObject({ version: 2, status: "accepted" });
    expect(view.drawn.get("drawn-1")?.status).toBe("accepted");
  });
});

describe("EditSync.patch and reshape", () => {
  it("saves with the version the edit is based on and draws the server's answer", async () => {
    loaded(server.add({ id: 1 }));
    sync.patch("a1", { label: "tumor" });
    await view.idle();
    expect(server.sent[0]?.body).toEqual({ version: 1, changes: { label: "tumor" }, actor: "web" });
    expect(cache.get(1)?.record).toMatchObject({ version: 2, label: "tumor" });
    expect(view.drawn.get("a1")?.label).toBe("tumor");
    expect(view.done).toBe(1);
  });

  it("on 409 reloads what someone else stored and says the edit was not saved", async () => {
    loaded(server.add({ id: 1 }));
    server.bump(1, { label: "theirs" });
    sync.patch("a1", { label: "mine" });
    await view.idle();
    expect(server.sent.map((s) => `${s.method} ${s.path}`)).toEqual([
      "PATCH /api/v1/annotations/1",
      "GET /api/v1/annotations/1",
    ]);
    expect(cache.get(1)?.record).toMatchObject({ version: 2, label: "theirs" });
    expect(view.drawn.get("a1")?.label).toBe("theirs");
    expect(view.messages).toEqual([
      [
        "Annotation 1 was changed by someone else — reloaded. Your edit was not saved; " +
          "apply it again if it is still needed.",
        "conflict",
      ],
    ]);
    // The next edit is based on the reloaded version and goes through.
    sync.patch("a1", { label: "mine" });
    await view.idle();
    expect(server.records.get(1)).toMatchObject({ version: 3, label: "mine" });
  });

  it("on 409 for an annotation deleted meanwhile forgets it", async () => {
    loaded(server.add({ id: 1 }));
    server.failNext.set("PATCH", { status: 409, message: "stale" });
    server.records.delete(1);
    sync.patch("a1", { status: "rejected" });
    await view.idle();
    expect(cache.get(1)).toBeUndefined();
    expect(view.drawn.has("a1")).toBe(false);
    expect(view.messages).toEqual([["Annotation 1 was deleted by someone else.", "conflict"]]);
  });

  it("on another refusal draws the shape back as the server has it and shows the message", async () => {
    const entry = loaded(server.add({ id: 1, bbox: [0, 0, 10, 10] }));
    view.drawn.set("a1", { ...entry.record, bbox: [0, 0, 99, 99] }); // the user's unsaved reshape
    server.failNext.set("PATCH", { status: 400, message: "x1 >= x0" });
    sync.reshape("a1", () => ({ bbox: [0, 0, 99, 99] }));
    await view.idle();
    expect(view.drawn.get("a1")?.bbox).toEqual([0, 0, 10, 10]);
    expect(view.messages).toEqual([["x1 >= x0", "error"]]);
    expect(cache.get(1)?.record.version).toBe(1);
  });

  it("sends a reshape only when the geometry differs, and marks it exact", async () => {
    loaded(server.add({ id: 1, bbox: [0, 0, 10, 10] }), 3);
    sync.reshape("a1", () => ({ bbox: [0, 0, 10, 10] }));
    sync.reshape("a1", () => null);
    await view.idle();
    expect(server.sent).toEqual([]);
    sync.reshape("a1", (entry) => ({ bbox: [0, 0, 20, entry.record.bbox?.[3] ?? 0] }));
    await view.idle();
    expect(server.sent[0]?.body).toEqual({ version: 1, changes: { bbox: [0, 0, 20, 10] }, actor: "web" });
    expect(cache.get(1)).toMatchObject({ tolerance: 0, record: { version: 2, bbox: [0, 0, 20, 10] } });
  });

  it("does nothing for a shape that was never saved", async () => {
    sync.patch("drawn-x", { label: "cell" });
    sync.reshape("drawn-x", () => ({ bbox: [0, 0, 1, 1] }));
    await view.idle();
    expect(server.sent).toEqual([]);
    expect(view.done).toBe(2);
  });
});

describe("EditSync.destroy", () => {
  it("deletes with the version and forgets the annotation", async () => {
    loaded(server.add({ id: 1 }));
    sync.destroy("a1");
    await view.idle();
    expect(server.sent.map((s) => `${s.method} ${s.path}`)).toEqual([
      "DELETE /api/v1/annotations/1?version=1&actor=web",
    ]);
    expect(server.records.has(1)).toBe(false);
    expect(cache.size).toBe(0);
    expect(view.drawn.size).toBe(0);
  });

  it("on 404 forgets it and says someone else deleted it", async () => {
    loaded(server.add({ id: 1 }));
    server.records.delete(1);
    sync.destroy("a1");
    await view.idle();
    expect(cache.size).toBe(0);
    expect(view.drawn.size).toBe(0);
    expect(view.messages).toEqual([["Annotation 1 was deleted by someone else.", "conflict"]]);
  });

  it("removes a shape that was never saved without asking the server", async () => {
    view.drawn.set("drawn-1", boxRecord(0, [0, 0, 1, 1]));
    sync.destroy("drawn-1");
    await view.idle();
    expect(server.sent).toEqual([]);
    expect(view.drawn.has("drawn-1")).toBe(false);
  });
});

describe("EditSync.fetchExact", () => {
  it("replaces a simplified polygon by its exact geometry, then runs the follow-up", async () => {
    const exact = server.add({
      id: 1,
      kind: "polygon",
      geometry: {
        type: "Polygon",
        coordinates: [
          [
            [0, 0],
            [10, 0],
            [5, 1],
            [10, 10],
            [0, 0],
          ],
        ],
      },
    });
    loaded({ ...exact, geometry: null }, 8);
    const then = vi.fn();
    sync.fetchExact("a1", then);
    await view.idle();
    expect(cache.get(1)).toMatchObject({ tolerance: 0, record: { geometry: exact.geometry } });
    expect(then).toHaveBeenCalledTimes(1);
  });

  it("skips the follow-up when the annotation is gone", async () => {
    loaded(server.add({ id: 1 }), 8);
    server.records.delete(1);
    const then = vi.fn();
    sync.fetchExact("a1", then);
    await view.idle();
    expect(then).not.toHaveBeenCalled();
    expect(cache.size).toBe(0);
  });
});

describe("EditSync.stop", () => {
  it("shows nothing once the page is gone", async () => {
    loaded(server.add({ id: 1 }));
    server.failNext.set("PATCH", { status: 500, message: "boom" });
    sync.patch("a1", { label: "x" });
    sync.stop();
    await vi.waitFor(() => expect(sync.inFlight).toBe(0));
    expect(view.messages).toEqual([]);
    expect(view.done).toBe(0);
  });

  it("reports a failed transport as a message", async () => {
    loaded(server.add({ id: 1 }));
    vi.stubGlobal("fetch", () => Promise.reject(new TypeError("Failed to fetch")));
    sync.patch("a1", { label: "x" });
    await view.idle();
    expect(view.messages).toEqual([["The server could not be reached.", "error"]]);
  });
});
