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

async function getJson<T>(url: string, signal?: AbortSignal): Promise<T> {
  let response: Response;
  try {
    response = await fetch(url, { headers: { Accept: "application/json" }, signal: signal ?? null });
  } catch (err) {
    if (err instanceof DOMException && err.name === "AbortError") throw err;
    throw new ApiError(0, "network", "The server could not be reached.");
  }
  if (!response.ok) {
    let code = "http_error";
    let message = `${response.status} ${response.statusText}`.trim();
    try {
      const body = (await response.json()) as { error?: { code?: unknown; message?: unknown } };
      if (typeof body.error?.code === "string") code = body.error.code;
      if (typeof body.error?.message === "string") message = body.error.message;
    } catch {
      // Not a JSON error body: keep the status line.
    }
    throw new ApiError(response.status, code, message);
  }
  return (await response.json()) as T;
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
