// The review inbox's filters live in the hash (#/review?model=…&label=…&reason=…&band=0.5-0.8), so a filtered
// inbox can be bookmarked and shared. A score band is a preset [min, max) of the proposal's score.

import type { ReviewFilters } from "./review-api";

export const REASONS = ["uncertain", "audit", "selected", "suspect"] as const;

/** Score bands offered in the filter bar: [value, label]. */
export const SCORE_BANDS: readonly (readonly [string, string])[] = [
  ["", "any score"],
  ["0-0.5", "score < 0.5"],
  ["0.5-0.8", "score 0.5–0.8"],
  ["0.8-1", "score ≥ 0.8"],
];

/** min_score / max_score of a band "LO-HI" (null: not a band). */
export function parseBand(band: string): { min_score: number; max_score: number } | null {
  const match = /^(\d+(?:\.\d+)?)-(\d+(?:\.\d+)?)$/.exec(band.trim());
  if (!match) return null;
  const lo = Number(match[1]);
  const hi = Number(match[2]);
  return Number.isFinite(lo) && Number.isFinite(hi) && lo <= hi ? { min_score: lo, max_score: hi } : null;
}

/** The band string of a filter set, or "" when it has none. */
export function bandOf(filters: ReviewFilters): string {
  if (filters.min_score === undefined || filters.max_score === undefined) return "";
  return `${filters.min_score}-${filters.max_score}`;
}

/** The filters of a hash query string (what follows "?"); unknown keys and empty values are dropped. */
export function parseFilters(query: string): ReviewFilters {
  const params = new URLSearchParams(query);
  const filters: ReviewFilters = {};
  const reason = params.get("reason");
  if (reason && (REASONS as readonly string[]).includes(reason)) filters.reason = reason;
  const model = params.get("model");
  if (model) filters.model = model;
  const label = params.get("label");
  if (label) filters.label = label;
  const band = parseBand(params.get("band") ?? "");
  if (band) Object.assign(filters, band);
  return filters;
}

/** The hash of the inbox showing `filters` (parseFilters' inverse). */
export function reviewHash(filters: ReviewFilters): string {
  const params = new URLSearchParams();
  if (filters.reason) params.set("reason", filters.reason);
  if (filters.model) params.set("model", filters.model);
  if (filters.label) params.set("label", filters.label);
  const band = bandOf(filters);
  if (band) params.set("band", band);
  const query = params.toString();
  return query ? `#/review?${query}` : "#/review";
}
