// Typed access to the gigavision REST API (/api/v1) and the tile URLs.

export interface Level {
  width: number;
  height: number;
  downsample: number;
}

export interface ImageInfo {
  id: string;
  name: string;
  width: number;
  height: number;
  levels: Level[];
  bands: number;
  dtype: string;
  mpp_x: number | null;
  mpp_y: number | null;
  crs: string | null;
  modality: string | null;
  reader: string;
  created_at: string;
  urls: { thumbnail: string; dzi: string; iiif: string };
  /** What ingest recorded and users set (a volume's `volume`: shape, spacing, planes; volume.ts). */
  meta?: Record<string, unknown>;
}

export interface ImagePage {
  items: ImageInfo[];
  total: number;
  offset: number;
  limit: number;
}

/** An error answered by the API as `{"error": {"code", "message"}}`, or a transport failure. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = "ApiError";
  }
}

const IMAGE_ID = /^[0-9a-f]{64}$/;

/** Image ids are sha256 hex digests; anything else never reaches a URL. */
export function isImageId(value: string): boolean {
  return IMAGE_ID.test(value);
}

function imagePath(id: string): string {
  if (!isImageId(id)) {
    throw new ApiError(404, "not_found", "No such image.");
  }
  return `/api/v1/images/${id}`;
}

async function errorFrom(response: Response): Promise<ApiError> {
  let code = "http_error";
  let message = `${response.status} ${response.statusText}`.trim();
  try {
    const body = (await response.json()) as { error?: { code?: unknown; message?: unknown } };
    if (typeof body.error?.code === "string") code = body.error.code;
    if (typeof body.error?.message === "string") message = body.error.message;
  } catch {
    // Not a JSON error body: keep the status line.
  }
  return new ApiError(response.status, code, message);
}

// -- the login ------------------------------------------------------------------------------------

/** Who this page acts as (`GET /api/v1/me`); `users: false` is a workspace without users (no login). */
export interface Session {
  name: string;
  role: string;
  permissions: string[];
  via: "session" | "token" | "local";
  csrf: string | null;
  users: boolean;
}

let session: Session | null = null;

const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS"]);

/** The login page, remembering where to come back to (same origin: a path and hash only). */
export function loginUrl(next: string = window.location.pathname + window.location.search + window.location.hash): string {
  const back = next.startsWith("/") && !next.startsWith("//") && !next.startsWith("/login") ? next : "/";
  return `/login?${new URLSearchParams({ next: back }).toString()}`;
}

/** Sends the browser to the login page (the API answered 401: no login, or it expired). */
function toLogin(): void {
  if (typeof window !== "undefined" && window.location.pathname !== "/login") window.location.assign(loginUrl());
}

/** Headers every API request carries: the session's CSRF token on unsafe methods (cookie logins). */
export function authHeaders(method: string): Record<string, string> {
  const token = session?.csrf;
  return token && !SAFE_METHODS.has(method.toUpperCase()) ? { "X-CSRF-Token": token } : {};
}

/** A fetch of the API: the CSRF header on unsafe methods, and a 401 sends the browser to the login page. */
export async function apiFetch(url: string, init: RequestInit = {}): Promise<Response> {
  const method = (init.method ?? "GET").toUpperCase();
  const headers = { ...(init.headers as Record<string, string> | undefined), ...authHeaders(method) };
  let response: Response;
  try {
    response = await fetch(url, { ...init, method, headers, credentials: "same-origin" });
  } catch (err) {
    if (err instanceof DOMException && err.name === "AbortError") throw err;
    throw new ApiError(0, "network", "The server could not be reached.");
  }
  if (response.status === 401) toLogin();
  return response;
}

/** Who is logged in (and the CSRF token); without a login the browser goes to the login page. */
export async function loadSession(): Promise<Session> {
  session = await getJson<Session>("/api/v1/me");
  return session;
}

export function currentSession(): Session | null {
  return session;
}

/** Logs in with a name and password; the server sets the session cookie. */
export async function logIn(name: string, password: string): Promise<Session> {
  session = await request<Session>("POST", "/api/v1/login", { name, password });
  return session;
}

export async function logOut(): Promise<void> {
  await request<void>("POST", "/api/v1/logout");
  session = null;
}

/** Who an edit is recorded as: with users the server takes the login (and refuses another name). */
function actorFor(actor: string): string {
  return session?.users ? session.name : actor;
}

/** One API call: JSON in (optional), JSON out (or nothing for 204); errors as `ApiError`. */
async function request<T>(method: string, url: string, body?: unknown, signal?: AbortSignal): Promise<T> {
  const headers: Record<string, string> = { Accept: "application/json" };
  const init: RequestInit = { method, headers, signal: signal ?? null };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await apiFetch(url, init);
  if (!response.ok) throw await errorFrom(response);
  if (response.status === 204) return undefined as T;
  return (await response.json()) as T;
}

async function getJson<T>(url: string, signal?: AbortSignal): Promise<T> {
  return request<T>("GET", url, undefined, signal);
}

export async function listImages(offset: number, limit: number, signal?: AbortSignal): Promise<ImagePage> {
  const query = new URLSearchParams({ offset: String(offset), limit: String(limit) });
  return getJson<ImagePage>(`/api/v1/images?${query.toString()}`, signal);
}

export async function getImage(id: string, signal?: AbortSignal): Promise<ImageInfo> {
  return getJson<ImageInfo>(imagePath(id), signal);
}

export function thumbnailUrl(id: string): string {
  return `${imagePath(id)}/thumbnail`;
}

export function dziUrl(id: string): string {
  if (!isImageId(id)) throw new ApiError(404, "not_found", "No such image.");
  return `/dzi/${id}.dzi`;
}

// -- annotations -----------------------------------------------------------------------------------

export type AnnotationKind = "tag" | "box" | "polygon" | "mask" | "point";
export type AnnotationStatus = "proposed" | "accepted" | "rejected" | "adjudicated";
export const STATUSES: readonly AnnotationStatus[] = ["proposed", "accepted", "rejected", "adjudicated"];

/** [x0, y0, x1, y1] in level-0 pixels. */
export type BBox = [number, number, number, number];

export type Position = [number, number];
export type GeoJsonGeometry =
  | { type: "Point"; coordinates: Position }
  | { type: "Polygon"; coordinates: Position[][] }
  | { type: "MultiPolygon"; coordinates: Position[][][] }
  | { type: string; coordinates: unknown };

/** One stored annotation as the API returns it (geometry in level-0 pixels). */
export interface AnnotationRecord {
  id: number;
  version: number;
  kind: AnnotationKind;
  label: string;
  bbox: BBox | null;
  geometry: GeoJsonGeometry | null;
  mask: { size: [number, number]; counts: string } | null;
  score: number | null;
  source: string;
  status: AnnotationStatus;
  attributes: Record<string, unknown>;
}

/** What a new annotation is made of (POST). */
export interface NewAnnotation {
  kind: AnnotationKind;
  label: string;
  bbox?: BBox;
  geometry?: GeoJsonGeometry;
  mask?: AnnotationRecord["mask"];
  source: string;
  status?: AnnotationStatus;
  attributes?: Record<string, unknown>;
}

/** The source the viewer gives what it draws: with users the login's own (`user:NAME`, the source QC and the
 * isolation of annotators read), else `web`. The server stores `web` from a login as `user:NAME` too. */
export function humanSource(): string {
  return session?.users ? `user:${session.name}` : "web";
}

export interface LabelClass {
  kind: AnnotationKind;
  color: string;
  parent: string | null;
  attributes: Record<string, string[]>;
}

export interface AnnotationQuery {
  /** Viewport in level-0 pixels. */
  bbox?: BBox;
  labels?: string[];
  limit?: number;
  /** Polygon simplification tolerance in level-0 pixels (0: exact). */
  simplify?: number;
}

function annotationPath(id: number): string {
  if (!Number.isSafeInteger(id) || id < 0) throw new ApiError(404, "not_found", "No such annotation.");
  return `/api/v1/annotations/${id}`;
}

export async function listAnnotations(
  imageId: string,
  query: AnnotationQuery,
  signal?: AbortSignal,
): Promise<AnnotationRecord[]> {
  const params = new URLSearchParams();
  if (query.bbox) params.set("bbox", query.bbox.map((v) => String(Math.round(v * 100) / 100)).join(","));
  for (const label of query.labels ?? []) params.append("label", label);
  if (query.limit !== undefined) params.set("limit", String(query.limit));
  if (query.simplify !== undefined && query.simplify > 0) params.set("simplify", String(query.simplify));
  // The viewer re-queries on every pan and needs no count: skip counting a viewport of millions.
  params.set("total", "false");
  const page = await getJson<{ items: AnnotationRecord[] }>(
    `${imagePath(imageId)}/annotations?${params.toString()}`,
    signal,
  );
  return page.items;
}

export async function getAnnotation(id: number, signal?: AbortSignal): Promise<AnnotationRecord> {
  return getJson<AnnotationRecord>(annotationPath(id), signal);
}

/** Stores annotations of one image in one transaction; returns their new ids (version 1 each). */
export async function createAnnotations(
  imageId: string,
  annotations: NewAnnotation[],
  actor: string,
): Promise<number[]> {
  const mine = humanSource();
  const answer = await request<{ ids: number[] }>("POST", `${imagePath(imageId)}/annotations`, {
    annotations: annotations.map((a) => (a.source === "web" && mine !== "web" ? { ...a, source: mine } : a)),
    actor: actorFor(actor),
  });
  return answer.ids;
}

/** Changes an annotation that is still at `version` (else 409); returns the new record. */
export async function updateAnnotation(
  id: number,
  version: number,
  changes: Partial<Pick<AnnotationRecord, "label" | "status" | "geometry" | "bbox" | "attributes" | "mask">>,
  actor: string,
): Promise<AnnotationRecord> {
  return request<AnnotationRecord>("PATCH", annotationPath(id), { version, changes, actor: actorFor(actor) });
}

export async function deleteAnnotation(id: number, version: number, actor: string): Promise<void> {
  const query = new URLSearchParams({ version: String(version), actor: actorFor(actor) });
  await request<void>("DELETE", `${annotationPath(id)}?${query.toString()}`);
}

export async function listLabels(signal?: AbortSignal): Promise<Record<string, LabelClass>> {
  return getJson<Record<string, LabelClass>>("/api/v1/labels", signal);
}

/** The palette colour of each name: the colour a class of that name gets when it is given none. */
export async function labelPalette(names: string[], signal?: AbortSignal): Promise<Record<string, string>> {
  const params = new URLSearchParams();
  for (const name of names) params.append("name", name);
  return getJson<Record<string, string>>(`/api/v1/labels/palette?${params.toString()}`, signal);
}

/** One JSON API call for the other typed modules (review-api.ts): the same errors, CSRF and 401 handling. */
export async function apiJson<T>(method: string, url: string, body?: unknown, signal?: AbortSignal): Promise<T> {
  return request<T>(method, url, body, signal);
}

/** Adds or replaces a class of the label schema (permission "schema"); a class without `color` gets the
 * server's palette colour. */
export async function putLabel(
  name: string,
  cls: Pick<LabelClass, "kind"> & Partial<LabelClass>,
): Promise<LabelClass> {
  return request<LabelClass>("PUT", `/api/v1/labels/${encodeURIComponent(name)}`, cls);
}
