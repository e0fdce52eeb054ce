import { describe, expect, it } from "vitest";

import type { ReviewTask } from "../src/review-api";
import { TaskQueue, type TaskSource } from "../src/review-queue";

function task(id: number, status: ReviewTask["status"] = "open"): ReviewTask {
  return {
    id,
    reason: "uncertain",
    status,
    image_id: "a".repeat(64),
    region: [0, 0, 10, 10],
    annotation_id: id * 10,
    model_id: "m",
    label: "cell",
    score: 0.5,
    uncertainty: 0.5,
    priority: 100 - id,
    batch: null,
    details: {},
    assignee: null,
    created_by: "t",
    created_at: null,
    decision: null,
    decided_by: null,
    decided_at: null,
    result_annotation_id: null,
    version: 1,
    annotation: null,
  };
}

/** Open tasks 1..n in priority order; `next(after)` answers the first open one after `after`. */
function fakeSource(n: number) {
  const tasks = new Map(Array.from({ length: n }, (_, i) => [i + 1, task(i + 1)]));
  const calls: (number | null)[] = [];
  const warmed: number[] = [];
  const pending: (() => void)[] = [];
  let hold = false;
  const source: TaskSource = {
    next: (after) => {
      calls.push(after);
      const ids = [...tasks.keys()].sort((a, b) => a - b);
      const start = after === null ? 0 : ids.indexOf(after) + 1;
      const found = ids.slice(start).map((id) => tasks.get(id)!).find((t) => t.status === "open") ?? null;
      const open = [...tasks.values()].filter((t) => t.status === "open").length;
      const answer = { task: found, remaining: open };
      if (!hold) return Promise.resolve(answer);
      return new Promise((resolve) => pending.push(() => resolve(answer)));
    },
    get: (id) => Promise.resolve(tasks.get(id)!),
    warm: (t) => warmed.push(t.id),
  };
  return {
    source,
    tasks,
    calls,
    warmed,
    hold: (on: boolean) => {
      hold = on;
    },
    release: () => pending.splice(0).forEach((f) => f()),
  };
}

const flush = () => new Promise((resolve) => setTimeout(resolve, 0));

describe("TaskQueue", () => {
  it("prefetches the next task while the current one is shown, and warms its image", async () => {
    const fake = fakeSource(3);
    const queue = new TaskQueue(fake.source);
    expect((await queue.start())?.id).toBe(1);
    await flush();
    expect(fake.calls).toEqual([null, 1]); // the task after 1 was asked for before any answer
    expect(fake.warmed).toEqual([2]);
    fake.tasks.get(1)!.status = "answered";
    expect((await queue.forward())?.id).toBe(2);
    expect(fake.calls).toEqual([null, 1, 2]); // no request between the answer and task 2: only the next prefetch
  });

  it("goes back to tasks already seen (as they are now) and forward again without refetching the next", async () => {
    const fake = fakeSource(3);
    const queue = new TaskQueue(fake.source);
    await queue.start();
    await queue.forward();
    fake.tasks.get(1)!.status = "answered";
    const back = await queue.back();
    expect(back?.id).toBe(1);
    expect(back?.status).toBe("answered");
    expect(queue.position).toBe(0);
    expect((await queue.back())?.id).toBe(1); // stays at the first
    expect((await queue.forward())?.id).toBe(2);
    await flush();
    const asked = fake.calls.length;
    expect((await queue.forward())?.id).toBe(3);
    expect(fake.calls.length).toBe(asked + 1); // only the prefetch after 3
  });

  it("reaches the end (null) and can go back from there", async () => {
    const fake = fakeSource(1);
    const queue = new TaskQueue(fake.source);
    await queue.start();
    fake.tasks.get(1)!.status = "answered";
    expect(await queue.forward()).toBeNull();
    expect(queue.current).toBeNull();
    expect(await queue.forward()).toBeNull();
    expect((await queue.back())?.id).toBe(1);
  });

  it("waits for a prefetch that is still running rather than asking twice", async () => {
    const fake = fakeSource(2);
    const queue = new TaskQueue(fake.source);
    await queue.start();
    fake.hold(true);
    const moving = queue.forward();
    fake.release();
    expect((await moving)?.id).toBe(2);
    expect(fake.calls.filter((c) => c === 1)).toHaveLength(1);
  });

  it("asks again when the prefetch failed", async () => {
    const fake = fakeSource(2);
    let fail = true;
    const next = fake.source.next;
    fake.source.next = (after) => {
      if (after === 1 && fail) {
        fail = false;
        return Promise.reject(new Error("network"));
      }
      return next(after);
    };
    const queue = new TaskQueue(fake.source);
    await queue.start();
    expect((await queue.forward())?.id).toBe(2);
  });

  it("keeps the server's answer for a task (after an answer or a 409)", async () => {
    const fake = fakeSource(2);
    const queue = new TaskQueue(fake.source);
    await queue.start();
    queue.update({ ...task(1, "answered"), decision: "accept", decided_by: "ana" });
    expect(queue.current?.decided_by).toBe("ana");
  });
});

describe("TaskQueue without prefetching (the benchmark's baseline)", () => {
  it("asks for the next task only when moving on", async () => {
    const fake = fakeSource(2);
    const queue = new TaskQueue(fake.source, false);
    await queue.start();
    await flush();
    expect(fake.calls).toEqual([null]);
    expect(fake.warmed).toEqual([]);
    expect((await queue.forward())?.id).toBe(2);
    expect(fake.calls).toEqual([null, 1]);
  });
});

describe("TaskQueue.goTo", () => {
  it("brings back a task already seen (an answer the server refused), as it is now", async () => {
    const fake = fakeSource(3);
    const queue = new TaskQueue(fake.source);
    await queue.start();
    await queue.forward();
    await queue.forward();
    fake.tasks.get(1)!.decided_by = "ana";
    const back = await queue.goTo(1);
    expect(back?.decided_by).toBe("ana");
    expect(queue.position).toBe(0);
    expect((await queue.forward())?.id).toBe(2);
    expect((await queue.goTo(99))?.id).toBe(2); // never seen: stays
  });
});
