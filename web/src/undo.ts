// Undo / redo of the overlay's edits, as server writes (no DOM, no fetch: edit-sync.ts performs the steps).
//
// A step is what one write did: `now` is the annotation as the server holds it after the write (with its
// version), `then` is what it was before (null: it did not exist; `now` null: it was deleted). Undoing a step
// writes `then` back, based on `now.version`: ONE request however many intermediate states the edit passed
// through (a move is one step, not a replay of the drag). When someone else changed the annotation since, the
// server's version is not `now.version` and the undo is refused (409) instead of overwriting their edit.
// The write's answer makes the inverse step for the other stack: {now: answer, then: step.now}.

import type { AnnotationRecord, BBox, GeoJsonGeometry } from "./api";

export interface Step {
  /** The annotation as stored after the edit (null: the edit deleted it). */
  now: AnnotationRecord | null;
  /** The annotation as it was before the edit (null: the edit created it). */
  then: AnnotationRecord | null;
}

/** What a PATCH sends to give an annotation the content of `record` back (label, status, attributes, shape). */
export interface RestoreChanges {
  label: string;
  status: AnnotationRecord["status"];
  attributes: Record<string, unknown>;
  bbox?: BBox;
  geometry?: GeoJsonGeometry;
  mask?: AnnotationRecord["mask"];
}

export function restoreChanges(record: AnnotationRecord): RestoreChanges {
  const changes: RestoreChanges = { label: record.label, status: record.status, attributes: { ...record.attributes } };
  if (record.kind === "box" && record.bbox) changes.bbox = record.bbox;
  if ((record.kind === "polygon" || record.kind === "point") && record.geometry) changes.geometry = record.geometry;
  if (record.kind === "mask" && record.bbox && record.mask) {
    changes.bbox = record.bbox;
    changes.mask = record.mask;
  }
  return changes;
}

/** The server id a step is about (the annotation it changes, or the one it would re-create). */
export function stepId(step: Step): number {
  return (step.now ?? step.then)?.id ?? -1;
}

/** The two stacks. Recording a new edit clears the redo stack, as in every editor. */
export class UndoStack {
  private readonly done: Step[] = [];
  private readonly undone: Step[] = [];

  constructor(private readonly limit: number = 200) {}

  get canUndo(): boolean {
    return this.done.length > 0;
  }

  get canRedo(): boolean {
    return this.undone.length > 0;
  }

  /** A new edit by the user. */
  record(step: Step): void {
    this.done.push(step);
    if (this.done.length > this.limit) this.done.shift();
    this.undone.length = 0;
  }

  /** The step to undo next (taken off the stack; `undid` or `refused` says how it went). */
  takeUndo(): Step | undefined {
    return this.done.pop();
  }

  takeRedo(): Step | undefined {
    return this.undone.pop();
  }

  /** An undo was written; `answer` is the server's record after it (null: deleted). */
  undid(step: Step, answer: AnnotationRecord | null): void {
    this.undone.push({ now: answer, then: step.now });
  }

  redid(step: Step, answer: AnnotationRecord | null): void {
    this.done.push({ now: answer, then: step.now });
  }

  /** An annotation re-created by an undo has a new id: the steps about the old one follow it. */
  remap(oldId: number, newId: number): void {
    for (const step of [...this.done, ...this.undone]) {
      if (step.now?.id === oldId) step.now = { ...step.now, id: newId };
      if (step.then?.id === oldId) step.then = { ...step.then, id: newId };
    }
  }

  /** Steps about an annotation that cannot be undone any more (a refused undo): dropped from both stacks. */
  drop(id: number): void {
    for (const stack of [this.done, this.undone]) {
      for (let i = stack.length - 1; i >= 0; i--) {
        const step = stack[i];
        if (step && stepId(step) === id) stack.splice(i, 1);
      }
    }
  }

  get sizes(): { undo: number; redo: number } {
    return { undo: this.done.length, redo: this.undone.length };
  }
}
