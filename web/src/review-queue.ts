// The review inbox's task queue: one task at a time, the next one fetched while the expert looks at the
// current one (so an answer is followed by the next task without a round trip), and a history for
// "previous". No DOM here: the page gives it the fetches and a hook to warm the next task's image.

import type { ReviewTask } from "./review-api";

export interface TaskSource {
  /** The highest-priority open task after task `after` (null: from the start), and how many are open. */
  next(after: number | null): Promise<{ task: ReviewTask | null; remaining: number }>;
  /** A task as it is now (for going back to one already seen). */
  get(id: number): Promise<ReviewTask>;
  /** Called with the next task as soon as it is known: fetch its image's metadata and tiles. */
  warm?(task: ReviewTask): void;
}

interface Ahead {
  after: number | null;
  answer: Promise<{ task: ReviewTask | null; remaining: number }>;
}

export class TaskQueue {
  private readonly seen: ReviewTask[] = [];
  /** Position in `seen`; `seen.length` is the end ("no more tasks"). */
  private index = 0;
  private ahead: Ahead | null = null;
  /** Open tasks matching the filters, as the server last counted them. */
  remaining = 0;

  /** `prefetch` false: ask for each task only when it is needed (the benchmark's baseline, #/review?prefetch=0). */
  constructor(
    private readonly source: TaskSource,
    private readonly prefetching = true,
  ) {}

  /** The task shown now, or null at the end of the queue. */
  get current(): ReviewTask | null {
    return this.seen[this.index] ?? null;
  }

  /** How many tasks were shown before the current one (for "previous"). */
  get position(): number {
    return this.index;
  }

  /** Fetches the first task (from the start of the queue). */
  async start(): Promise<ReviewTask | null> {
    this.seen.length = 0;
    this.index = 0;
    this.ahead = null;
    const { task, remaining } = await this.source.next(null);
    this.remaining = remaining;
    if (task) {
      this.seen.push(task);
      this.prefetch();
    }
    return task;
  }

  /** Moves to the next task: one seen before, else the prefetched one (waiting for it only if it is late). */
  async forward(): Promise<ReviewTask | null> {
    if (this.index < this.seen.length - 1) {
      this.index += 1;
      return this.refresh();
    }
    if (this.index >= this.seen.length) return null;
    const last = this.seen[this.index] ?? null;
    const after = last ? last.id : null;
    const ahead = this.ahead?.after === after ? this.ahead.answer : this.source.next(after);
    this.ahead = null;
    let answer: { task: ReviewTask | null; remaining: number };
    try {
      answer = await ahead;
    } catch {
      answer = await this.source.next(after); // the prefetch failed: ask again, now
    }
    this.remaining = answer.remaining;
    this.index += 1;
    if (answer.task) {
      this.seen.push(answer.task);
      this.prefetch();
    }
    return answer.task;
  }

  /** Moves back to the task shown before (as it is now), or stays at the first one. */
  async back(): Promise<ReviewTask | null> {
    if (this.index === 0) return this.current;
    this.index -= 1;
    return this.refresh();
  }

  /** Moves back (or forward) to a task already seen, as it is now (an answer the server refused). */
  async goTo(id: number): Promise<ReviewTask | null> {
    const at = this.seen.findIndex((t) => t.id === id);
    if (at < 0) return this.current;
    this.index = at;
    return this.refresh();
  }

  /** Puts the server's answer in place of the current task (after an answer or a 409). */
  update(task: ReviewTask): void {
    const at = this.seen.findIndex((t) => t.id === task.id);
    if (at >= 0) this.seen[at] = task;
  }

  /** Asks for the task after the current one now, so it is ready when the expert answers. */
  private prefetch(): void {
    const last = this.seen[this.seen.length - 1];
    if (!this.prefetching || !last || this.ahead?.after === last.id) return;
    const answer = this.source.next(last.id);
    this.ahead = { after: last.id, answer };
    answer.then(
      ({ task }) => {
        if (task) this.source.warm?.(task);
      },
      () => undefined, // forward() asks again
    );
  }

  private async refresh(): Promise<ReviewTask | null> {
    const shown = this.seen[this.index];
    if (!shown) return null;
    const fresh = await this.source.get(shown.id);
    this.update(fresh);
    return fresh;
  }
}
