// What the side-by-side adjudication panes show of each annotator's version, without DOM: the shapes as the
// batched overlay layer's input (overlay-batch.ts), grouped by agreement instead of label, so that a shape
// no other annotator matched (the server's `matched_with`, the pairs its F1 counts) is drawn highlighted;
// the pane's counts; the grid the panes form.

import type { AnnotationRecord } from "./api";
import { batchStyle, type BatchStyle } from "./drawing-style";
import type { Drawable } from "./overlay-batch";
import type { Hex } from "./palette";

/** A submitted label as GET /api/v1/qc/items/{id} gives it once revealed. */
export type VersionRecord = AnnotationRecord & { verdict?: string | null; matched_with?: string[] | null };

/** Side by side up to this many versions (a 2 × 2 grid); with more, the one view only. */
export const MAX_PANES = 4;

/** How a shape without a match in any other version is drawn, whatever the pane's colour. */
export const DIFFERS_COLOR: Hex = "#ff2d55";

/** The batch keys (the layer's "label") of the panes' two groups. */
export const AGREES = "agrees";
export const DIFFERS = "differs";

/** Whether no other annotator drew this object (false when the server said nothing, e.g. while open). */
export function differs(record: VersionRecord): boolean {
  return Array.isArray(record.matched_with) && record.matched_with.length === 0;
}

export interface VersionSummary {
  shapes: number;
  differing: number;
  /** Labels and their counts, most frequent first (then by name). */
  byLabel: [string, number][];
}

export function summarise(records: readonly VersionRecord[]): VersionSummary {
  const counts = new Map<string, number>();
  for (const r of records) counts.set(r.label, (counts.get(r.label) ?? 0) + 1);
  const byLabel = [...counts].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
  return { shapes: records.length, differing: records.filter(differs).length, byLabel };
}

/** "3 shapes · 1 without a match" (tags: "labels"). */
export function summaryText(summary: VersionSummary, kind: string): string {
  const noun = kind === "tag" ? "label" : "shape";
  const head = `${summary.shapes} ${noun}${summary.shapes === 1 ? "" : "s"}`;
  return summary.differing > 0 ? `${head} · ${summary.differing} without a match` : head;
}

/** The layer's input for one version: differing shapes as status "accepted", so they are drawn last (on top). */
export function paneDrawables(records: readonly VersionRecord[]): Drawable[] {
  return records.map((record) => {
    const odd = differs(record);
    return {
      key: String(record.id),
      record: { ...record, label: odd ? DIFFERS : AGREES, status: odd ? "accepted" : "proposed" },
    };
  });
}

/** The layer's style of a pane's batch: the version's colour, or the highlight, thicker, for differences. */
export function paneStyle(color: Hex, batchLabel: string): BatchStyle {
  if (batchLabel === DIFFERS) return { ...batchStyle(DIFFERS_COLOR, "accepted"), lineWidth: 3 };
  return { ...batchStyle(color, "proposed"), lineWidth: 2 };
}

/** Columns and rows of `n` panes: side by side for two, 2 × 2 for three or four. */
export function gridOf(n: number): { columns: number; rows: number } {
  const columns = n <= 1 ? 1 : n <= 4 ? 2 : Math.ceil(Math.sqrt(n));
  return { columns, rows: Math.max(1, Math.ceil(n / columns)) };
}
