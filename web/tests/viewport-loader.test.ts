import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";

import type { AnnotationRecord, BBox } from "../src/api";
import type { Page, QueryFilter } from "../src/viewport-cache";
import { DEBOUNCE_MS, ViewportLoader, viewParams, type LoaderView } from "../src/viewport-loader";

const IMAGE = "cd".repeat(32);

function box(id: number): AnnotationRecord {
  return {
    id,
    version: 1,
    kind: "box",
    label: "cell",
    bbox: [0, 0, 10, 10],
    geometry: null,
    mask: null,
    score: null,
    source: "t",
    status: "proposed",
    attributes: {},
  };
}

/** A view the test moves, and what the loader told it. */
class FakeView implements LoaderView {
  rect: BBox | null = [0, 0, 4000, 3000];
  perPixel: number | null = 0.25;
  visible = true;
  filter: QueryFilter | undefined = undefined;
  readonly pages: Page[] = [];
  readonly messages: string[] = [];
  offImages = 0;
  private waiting: (() => void)[] = [];

  visibleRect(): BBox | null {
    return this.rect;
  }
  scale(): number | null {
    return this.perPixel;
  }
  shown(): boolean {
    return this.visible;
  }
  only(): QueryFilter | undefined {
    return this.filter;
  }
  apply(page: Page): void {
    this.pages.push(page);
  }
  offImage(): void {
    this.offImages += 1;
  }
  showMessage(text: string): void {
    this.messages.push(text);
  }
  done(): void {
    for (const resolve of this.waiting.splice(0)) resolve();
  }
  /** Resolves at the next `done()`. */
  nextDone(): Promise<void> {
    return new Promise((resolve) => this.waiting.push(resolve));
  }
}

interface Call {
  url: URL;
  signal: AbortSignal | null | undefined;
  answer: (records: AnnotationRecord[], total?: number, labelCounts?: Record<string, number>) => void;
  fail: (status: number, message: string) => void;
}

let calls: Call[];
let view: FakeView;
let loader: ViewportLoader;

beforeEach(() => {
  vi.useFakeTimers();
  calls = [];
  vi.stubGlobal("fetch", (input: RequestInfo | URL, init?: RequestInit) => {
    return new Promise<Response>((resolve, reject) => {
      const signal = init?.signal;
      signal?.addEventListener("abort", () => reject(new DOMException("aborted", "AbortError")));
      calls.push({
        url: new URL(String(input), "http://gigavision.test"),
        signal,
        answer: (records, total, labelCounts) => {
          const body = { items: records, total: total ?? null, label_counts: labelCounts ?? null };
          resolve(new Response(JSON.stringify(body), { status: 200 }));
        },
        fail: (status, message) =>
          resolve(new Response(JSON.stringify({ error: { code: "x", message } }), { status })),
      });
    });
  });
  view = new FakeView();
  loader = new ViewportLoader(IMAGE, view);
});

afterEach(() => {
  vi.useRealTimers();
  vi.unstubAllGlobals();
});

describe("ViewportLoader", () => {
  it("loads the view once it has been still for the debounce time", async () => {
    loader.schedule();
    vi.advanceTimersByTime(DEBOUNCE_MS - 1);
    loader.schedule(); // moved again: the wait starts over
    vi.advanceTimersByTime(DEBOUNCE_MS - 1);
    expect(calls).toHaveLength(0);
    expect(loader.settled()).toBe(false);
    vi.advanceTimersByTime(1);
    expect(calls).toHaveLength(1);
    const call = calls[0];
    if (!call) throw new Error("no request");
    expect(call.url.pathname).toBe(`/api/v1/images/${IMAGE}/annotations`);
    expect(Object.fromEntries(call.url.searchParams)).toEqual({
      bbox: "0,0,4000,3000",
      limit: "2000",
      simplify: "4",
      total: "false",
      sample: "true", // beyond the limit: a sample spread over every label and the view, with its count
      counts: "true", // and the exact count per label, for the legend
    });
    const done = view.nextDone();
    call.answer([box(1), box(2)]);
    await done;
    expect(view.pages).toHaveLength(1);
    expect(view.pages[0]).toMatchObject({ bbox: [0, 0, 4000, 3000], simplify: 4, limit: 2000 });
    expect(view.pages[0]?.records.map((r) => r.id)).toEqual([1, 2]);
    expect(loader.loads).toBe(1);
    const last = { bbox: [0, 0, 4000, 3000], simplify: 4, limit: 2000, count: 2, total: null, truncated: false };
    Object.assign(last, { labelCounts: null });
    expect(loader.lastQuery).toEqual(last);
    expect(loader.settled()).toBe(true);
    view.rect = [2, 0, 4002, 3000]; // panned by more than a pixel: the answer no longer covers the view
    expect(loader.settled()).toBe(false);
  });

  it("says how many were in view when the server answered a sample", async () => {
    loader.schedule();
    vi.advanceTimersByTime(DEBOUNCE_MS);
    const done = view.nextDone();
    calls[0]?.answer([box(1), box(2)], 2400, { cell: 2300, mitosis: 100 });
    await done;
    expect(view.pages[0]?.total).toBe(2400);
    expect(view.pages[0]?.labelCounts).toEqual({ cell: 2300, mitosis: 100 });
    expect(loader.lastQuery).toMatchObject({ count: 2, total: 2400, truncated: true });
  });

  it("asks only for what the filters show: labels left out, statuses, model or human", () => {
    view.filter = { hiddenLabels: ["nucleus"], statuses: ["proposed"], origins: ["human"] };
    loader.schedule();
    vi.advanceTimersByTime(DEBOUNCE_MS);
    const params = calls[0]?.url.searchParams;
    expect(params?.getAll("exclude_label")).toEqual(["nucleus"]);
    expect(params?.getAll("status")).toEqual(["proposed"]);
    expect(params?.getAll("source")).toEqual(["!model:*"]);
    expect(params?.get("sample")).toBe("true");
  });

  it("asks for nothing but the counts when no status or no origin is shown", () => {
    for (const filter of [{ statuses: [] }, { origins: [] }, { statuses: ["accepted"], origins: [] }]) {
      const params = viewParams({ bbox: [0, 0, 10, 10], simplify: 0, limit: 5, only: filter });
      expect(params.getAll("source")).toEqual(["!*"]);
      expect(params.getAll("status")).toEqual([]);
    }
    const models = viewParams({ bbox: [0, 0, 10, 10], simplify: 0, limit: 5, only: { origins: ["model"] } });
    expect(models.getAll("source")).toEqual(["model:*"]);
  });

  it("is not settled while the filters shown differ from those of the last answer", async () => {
    loader.schedule();
    vi.advanceTimersByTime(DEBOUNCE_MS);
    const done = view.nextDone();
    calls[0]?.answer([]);
    await done;
    expect(loader.settled()).toBe(true);
    view.filter = { origins: ["model"] };
    expect(loader.settled()).toBe(false);
    view.filter = undefined;
    expect(loader.settled()).toBe(true);
  });

  it("aborts a load the view has moved away from", async () => {
    loader.schedule();
    vi.advanceTimersByTime(DEBOUNCE_MS);
    view.rect = [100, 100, 4100, 3100];
    loader.schedule();
    vi.advanceTimersByTime(DEBOUNCE_MS);
    expect(calls).toHaveLength(2);
    expect(calls[0]?.signal?.aborted).toBe(true);
    const done = view.nextDone();
    calls[1]?.answer([box(5)]);
    await done;
    expect(view.pages.map((p) => p.bbox)).toEqual([[100, 100, 4100, 3100]]);
    expect(view.messages).toEqual([]);
    expect(loader.loads).toBe(1);
  });

  it("loads nothing while hidden, and forgets everything when the view is off the image", async () => {
    view.visible = false;
    let done = view.nextDone();
    loader.schedule();
    vi.advanceTimersByTime(DEBOUNCE_MS);
    await done;
    expect(calls).toHaveLength(0);
    expect(view.offImages).toBe(0);
    expect(loader.settled()).toBe(true);

    view.visible = true;
    view.rect = null;
    done = view.nextDone();
    loader.schedule();
    vi.advanceTimersByTime(DEBOUNCE_MS);
    await done;
    expect(calls).toHaveLength(0);
    expect(view.offImages).toBe(1);
    expect(loader.lastQuery).toBeNull();
    expect(loader.settled()).toBe(true);
  });

  it("says when a load fails, and loads again when the view moves", async () => {
    loader.schedule();
    vi.advanceTimersByTime(DEBOUNCE_MS);
    let done = view.nextDone();
    calls[0]?.fail(500, "database is locked");
    await done;
    expect(view.messages).toEqual(["Could not load annotations: database is locked"]);
    expect(loader.loads).toBe(0);
    loader.schedule();
    vi.advanceTimersByTime(DEBOUNCE_MS);
    done = view.nextDone();
    calls[1]?.answer([]);
    await done;
    expect(loader.loads).toBe(1);
  });

  it("asks for exact geometry when zoomed in past one screen pixel per level-0 pixel", () => {
    view.perPixel = 2;
    loader.schedule();
    vi.advanceTimersByTime(DEBOUNCE_MS);
    expect(calls[0]?.url.searchParams.has("simplify")).toBe(false);
  });

  it("loads nothing once stopped", () => {
    loader.schedule();
    loader.stop();
    vi.advanceTimersByTime(DEBOUNCE_MS);
    loader.schedule();
    vi.advanceTimersByTime(DEBOUNCE_MS);
    expect(calls).toHaveLength(0);
  });
});
