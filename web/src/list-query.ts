// The image list's search, filters and page live in the hash (#/?q=…&label=…&status=…&meta=K=V&pending=1&page=2),
// so a search can be bookmarked; this module turns that into the images REST query and back.

export interface ListQuery {
  q?: string;
  label?: string;
  status?: string;
  meta?: string;
  /** "1": only images with an open review task; "0": only those without. */
  pending?: "1" | "0";
  /** 1-based. */
  page: number;
}

const KEYS = ["q", "label", "status", "meta"] as const;

export function parseListQuery(query: string): ListQuery {
  const params = new URLSearchParams(query);
  const out: ListQuery = { page: 1 };
  for (const key of KEYS) {
    const value = params.get(key)?.trim();
    if (value) out[key] = value;
  }
  const pending = params.get("pending");
  if (pending === "1" || pending === "0") out.pending = pending;
  const page = Number(params.get("page"));
  if (Number.isSafeInteger(page) && page > 1) out.page = page;
  return out;
}

export function listHash(query: ListQuery): string {
  const params = new URLSearchParams();
  for (const key of KEYS) if (query[key]) params.set(key, query[key] ?? "");
  if (query.pending) params.set("pending", query.pending);
  if (query.page > 1) params.set("page", String(query.page));
  const text = params.toString();
  return text ? `#/?${text}` : "#/";
}

/** The GET /api/v1/images query string of a list query and page size. */
export function imagesQuery(query: ListQuery, pageSize: number): string {
  const params = new URLSearchParams({ offset: String((query.page - 1) * pageSize), limit: String(pageSize) });
  for (const key of KEYS) if (query[key]) params.set(key, query[key] ?? "");
  if (query.pending) params.set("pending_review", query.pending === "1" ? "true" : "false");
  return params.toString();
}

/** How many pages `total` images make (at least 1). */
export function pageCount(total: number, pageSize: number): number {
  return Math.max(1, Math.ceil(total / pageSize));
}
