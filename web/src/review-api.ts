// Typed calls of the expert screens: review tasks (/api/v1/reviews), quality control (/api/v1/qc) and models
// (/api/v1/models). The shapes follow the REST contract of issue 14 and server/routers/quality.py.

import { ApiError, apiFetch, apiJson, type AnnotationRecord, type BBox, type NewAnnotation } from "./api";

export type ReviewReason = "uncertain" | "audit" | "selected" | "suspect";
export type ReviewDecision = "accept" | "correct" | "reject" | "labelled" | "skip";

export interface ReviewTask {
  id: number;
  reason: ReviewReason;
  status: "open" | "answered" | "cancelled";
  image_id: string;
  region: BBox | null;
  annotation_id: number | null;
  model_id: string | null;
  label: string | null;
  score: number | null;
  uncertainty: number | null;
  priority: number;
  batch: string | null;
  details: Record<string, unknown>;
  assignee: string | null;
  created_by: string;
  created_at: string | null;
  decision: ReviewDecision | null;
  decided_by: string | null;
  decided_at: string | null;
  result_annotation_id: number | null;
  version: number;
  annotation: AnnotationRecord | null;
}

/** What the inbox shows: every field optional (absent: no filter). */
export interface ReviewFilters {
  reason?: string;
  model?: string;
  label?: string;
  min_score?: number;
  max_score?: number;
}

export interface ReviewCounts {
  open: number;
  answered: number;
  by_reason: Record<string, number>;
  by_label: Record<string, number>;
  by_decision: Record<string, number>;
}

/** The body of an answer; `annotation` for "correct", `annotations` for "labelled". */
export interface ReviewAnswer {
  decision: ReviewDecision;
  version: number;
  annotation?: Partial<NewAnnotation> & { attributes?: Record<string, unknown> };
  annotations?: NewAnnotation[];
  note?: string;
}

/** Someone answered the task first: their answer is in `current`. */
export class AnsweredElsewhere extends ApiError {
  constructor(
    message: string,
    readonly current: ReviewTask | null,
  ) {
    super(409, "conflict", message);
    this.name = "AnsweredElsewhere";
  }
}

/** The query string of a filter set (empty fields left out). */
export function filterQuery(filters: ReviewFilters | Record<string, string | number | undefined>, extra: Record<string, string> = {}): URLSearchParams {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(filters)) {
    if (value === undefined || value === null || value === "") continue;
    params.set(key, String(value));
  }
  for (const [key, value] of Object.entries(extra)) params.set(key, value);
  return params;
}

function taskPath(id: number): string {
  if (!Number.isSafeInteger(id) || id < 0) throw new ApiError(404, "not_found", "No such review task.");
  return `/api/v1/reviews/${id}`;
}

export async function nextTask(
  filters: ReviewFilters,
  after: number | null,
  signal?: AbortSignal,
): Promise<{ task: ReviewTask | null; remaining: number }> {
  const params = filterQuery(filters, after === null ? {} : { after: String(after) });
  return apiJson("GET", `/api/v1/reviews/next?${params.toString()}`, undefined, signal);
}

export async function getTask(id: number, signal?: AbortSignal): Promise<ReviewTask> {
  return apiJson("GET", taskPath(id), undefined, signal);
}

export async function reviewCounts(filters: ReviewFilters, signal?: AbortSignal): Promise<ReviewCounts> {
  return apiJson("GET", `/api/v1/reviews/counts?${filterQuery(filters).toString()}`, undefined, signal);
}

export async function listTasks(
  filters: ReviewFilters & { status?: string; image?: string },
  offset: number,
  limit: number,
  signal?: AbortSignal,
): Promise<{ items: ReviewTask[]; total: number }> {
  const params = filterQuery(filters, { offset: String(offset), limit: String(limit) });
  return apiJson("GET", `/api/v1/reviews?${params.toString()}`, undefined, signal);
}

/** The `current` task of a 409 body, wherever the server put it (top level or inside `error` / `detail`). */
export function currentOf(body: unknown): ReviewTask | null {
  if (typeof body !== "object" || body === null) return null;
  const record = body as Record<string, unknown>;
  for (const holder of [record, record["error"], record["detail"]]) {
    if (typeof holder !== "object" || holder === null) continue;
    const current = (holder as Record<string, unknown>)["current"];
    if (typeof current === "object" && current !== null && "id" in current) return current as ReviewTask;
  }
  return null;
}

function messageIn(body: unknown, fallback: string): string {
  if (typeof body !== "object" || body === null) return fallback;
  const record = body as Record<string, unknown>;
  const error = record["error"] as Record<string, unknown> | undefined;
  if (typeof error?.["message"] === "string") return error["message"];
  if (typeof record["detail"] === "string") return record["detail"];
  return fallback;
}

/** Answers a task at `answer.version`; a task someone else answered first throws `AnsweredElsewhere`. */
export async function answerTask(id: number, answer: ReviewAnswer): Promise<ReviewTask> {
  const response = await apiFetch(`${taskPath(id)}/answer`, {
    method: "POST",
    headers: { Accept: "application/json", "Content-Type": "application/json" },
    body: JSON.stringify(answer),
  });
  let body: unknown = null;
  try {
    body = await response.json();
  } catch {
    // no JSON body
  }
  if (response.ok) return body as ReviewTask;
  const message = messageIn(body, `${response.status} ${response.statusText}`.trim());
  if (response.status === 409) throw new AnsweredElsewhere(message, currentOf(body));
  const code = (body as { error?: { code?: string } } | null)?.error?.code ?? "http_error";
  throw new ApiError(response.status, code, message);
}

// -- quality control --------------------------------------------------------------------------------

export interface QcPerson {
  name: string;
  status: string;
  submitted_at?: string | null;
  assigned_at?: string | null;
}

export interface QcItem {
  id: number;
  image_id: string;
  region: BBox | null;
  kind: string;
  labels: string[];
  required: number;
  threshold: number;
  status: "open" | "agreed" | "adjudication" | "adjudicated";
  agreement: number | null;
  annotators: QcPerson[];
  adjudicator: QcPerson | null;
  created_by: string;
  version: number;
}

export interface QcSubmission {
  annotator: string;
  status: string;
  submitted_at: string | null;
  count: number | null;
  labels: (AnnotationRecord & { verdict?: string | null })[] | null;
}

export interface QcItemDetail extends QcItem {
  submissions: QcSubmission[];
  labels_hidden: boolean;
  consensus: AnnotationRecord[];
  decision: { how: string; chosen: string | null } | null;
}

function qcItemPath(id: number): string {
  if (!Number.isSafeInteger(id) || id < 0) throw new ApiError(404, "not_found", "No such QC item.");
  return `/api/v1/qc/items/${id}`;
}

export async function qcItems(
  query: { annotator?: string; status?: string },
  signal?: AbortSignal,
): Promise<{ items: QcItem[]; total: number }> {
  const params = filterQuery(query, { limit: "500" });
  return apiJson("GET", `/api/v1/qc/items?${params.toString()}`, undefined, signal);
}

export async function qcItem(id: number, viewer: string | null, signal?: AbortSignal): Promise<QcItemDetail> {
  const query = viewer ? `?${new URLSearchParams({ actor: viewer }).toString()}` : "";
  return apiJson("GET", `${qcItemPath(id)}${query}`, undefined, signal);
}

/** Hands in the annotator's proposed annotations in the item (drawn in the viewer as `user:NAME`). */
export async function qcSubmit(id: number, actor: string): Promise<QcItemDetail> {
  return apiJson("POST", `${qcItemPath(id)}/submit`, { actor });
}

export async function qcQueue(adjudicator: string | null, signal?: AbortSignal): Promise<{ items: QcItem[]; total: number }> {
  const params = filterQuery(adjudicator ? { adjudicator } : {}, { limit: "500" });
  return apiJson("GET", `/api/v1/qc/queue?${params.toString()}`, undefined, signal);
}

/** Decides an item: one annotator's labels (`choose`), the adjudicator's proposed ones in the item (`own`) or
 * the given `annotations`. */
export async function qcAdjudicate(
  id: number,
  actor: string,
  decision: { choose: string } | { own: true } | { annotations: NewAnnotation[] },
): Promise<QcItemDetail> {
  return apiJson("POST", `${qcItemPath(id)}/adjudicate`, { actor, ...decision });
}

// -- models ------------------------------------------------------------------------------------------

export interface ModelRecord {
  id: string;
  task: string;
  arch: string;
  classes: string[];
  dataset: string;
  created_at: string;
  headline: string | null;
  metrics: Record<string, number | string | null>;
  evaluated_on: string | null;
  files: string[];
  urls: { self: string; report: string };
}

export async function listModels(signal?: AbortSignal): Promise<ModelRecord[]> {
  const page = await apiJson<{ items: ModelRecord[] }>("GET", "/api/v1/models", undefined, signal);
  return page.items;
}
