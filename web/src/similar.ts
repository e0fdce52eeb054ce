// "Find similar" in the viewer (issue 15): draw a box on the image, get the regions of other images most like
// it from an embedding index (GET /api/v1/images/{id}/similar), as a grid of thumbnails; a click opens that
// image at that region. The section stays hidden while the workspace has no index.

import type OpenSeadragon from "openseadragon";

import { apiJson, type BBox, type ImageInfo } from "./api";
import { el } from "./dom";

export interface IndexCard {
  name: string;
  mode: "image" | "regions";
  count: number;
  model: string;
}

export interface SimilarHit {
  rank: number;
  score: number;
  image_id: string;
  name: string;
  region: BBox;
  thumbnail_url: string;
  viewer_url: string;
}

export interface SimilarResult {
  index: string;
  searched: number;
  results: SimilarHit[];
}

export interface SimilarHandle {
  destroy: () => void;
}

const MIN_SIDE = 4; // a drag shorter than this (level-0 pixels) is a click, not a box
export const RESULTS = 24;

/** The level-0 box a drag from `a` to `b` spans, inside a `width × height` image; null when (almost) empty. */
export function boxFromDrag(
  a: { x: number; y: number },
  b: { x: number; y: number },
  width: number,
  height: number,
): BBox | null {
  const clamp = (v: number, hi: number): number => Math.min(Math.max(Math.round(v), 0), hi);
  const x0 = clamp(Math.min(a.x, b.x), width);
  const x1 = clamp(Math.max(a.x, b.x), width);
  const y0 = clamp(Math.min(a.y, b.y), height);
  const y1 = clamp(Math.max(a.y, b.y), height);
  return x1 - x0 < MIN_SIDE || y1 - y0 < MIN_SIDE ? null : [x0, y0, x1, y1];
}

/** The request of a search for `box` of image `id` in `index`. */
export function similarUrl(id: string, index: string, box: BBox, k: number = RESULTS): string {
  const query = new URLSearchParams({ index, region: box.join(","), k: String(k) });
  return `/api/v1/images/${encodeURIComponent(id)}/similar?${query.toString()}`;
}

/** Indexes to offer, regions first (what a box on a slide is compared with), then by name. */
export function offered(cards: IndexCard[]): IndexCard[] {
  return [...cards].sort((a, b) => Number(b.mode === "regions") - Number(a.mode === "regions") || a.name.localeCompare(b.name));
}

export function attachSimilar(viewer: OpenSeadragon.Viewer, image: ImageInfo, section: HTMLElement): SimilarHandle {
  const abort = new AbortController();
  const picker = el("select", { "data-testid": "similar-index", "aria-label": "Index to search" });
  const tool = el(
    "button",
    { type: "button", "data-testid": "similar-tool", "aria-pressed": "false", title: "Draw a box: regions like it (F)" },
    "Find similar",
  );
  const status = el("p", { class: "status", "data-testid": "similar-status", role: "status" });
  const grid = el("div", { class: "similar-grid", "data-testid": "similar-results" });
  section.append(
    el("h2", {}, "Find similar"),
    el("div", { class: "row", role: "toolbar", "aria-label": "Find similar" }, picker, tool),
    status,
    grid,
  );
  let on = false;
  let start: { x: number; y: number } | null = null;
  let outline: HTMLElement | null = null;
  let pending: AbortController | null = null;

  const setOn = (next: boolean): void => {
    on = next;
    tool.setAttribute("aria-pressed", String(on));
    viewer.setMouseNavEnabled(true);
    status.textContent = on ? "Drag a box over the region to compare." : status.textContent;
  };
  const clearOutline = (): void => {
    if (outline) viewer.removeOverlay(outline);
    outline = null;
  };
  const imagePoint = (position: OpenSeadragon.Point): { x: number; y: number } | null => {
    const item = viewer.world.getItemAt(0);
    if (!item) return null;
    const p = item.viewerElementToImageCoordinates(position);
    return { x: p.x, y: p.y };
  };
  const drawOutline = (box: BBox): void => {
    const item = viewer.world.getItemAt(0);
    if (!item) return;
    const rect = item.imageToViewportRectangle(box[0], box[1], box[2] - box[0], box[3] - box[1]);
    if (!outline) {
      outline = el("div", { class: "similar-outline", "data-testid": "similar-outline" });
      viewer.addOverlay(outline, rect);
    } else viewer.updateOverlay(outline, rect);
  };

  const show = (result: SimilarResult): void => {
    grid.replaceChildren(
      ...result.results.map((hit) =>
        el(
          "a",
          { class: "similar-hit", href: hit.viewer_url, "data-testid": "similar-hit", title: `${hit.name} · ${hit.region.join(", ")}` },
          el("img", { src: hit.thumbnail_url, alt: hit.name, loading: "lazy" }),
          el("span", {}, `${hit.score.toFixed(3)} ${hit.name}`),
        ),
      ),
    );
    status.textContent = result.results.length
      ? `${result.results.length} most similar of ${result.searched} regions (${result.index}).`
      : `Nothing found in ${result.index}.`;
    section.scrollIntoView({ block: "nearest" });
  };

  const search = (box: BBox): void => {
    pending?.abort();
    const request = new AbortController();
    pending = request;
    status.textContent = "Searching…";
    apiJson<SimilarResult>("GET", similarUrl(image.id, picker.value, box), undefined, request.signal).then(
      (result) => {
        if (!request.signal.aborted) show(result);
      },
      (err: unknown) => {
        if (!request.signal.aborted) status.textContent = `Search failed: ${err instanceof Error ? err.message : String(err)}`;
      },
    );
  };

  const onPress = (event: OpenSeadragon.CanvasPressEvent): void => {
    if (!on) return;
    start = imagePoint(event.position);
  };
  const onDrag = (event: OpenSeadragon.CanvasDragEvent): void => {
    if (!on || !start) return;
    event.preventDefaultAction = true; // draw, do not pan
    const here = imagePoint(event.position);
    const box = here ? boxFromDrag(start, here, image.width, image.height) : null;
    if (box) drawOutline(box);
  };
  const onRelease = (event: OpenSeadragon.CanvasReleaseEvent): void => {
    if (!on || !start) return;
    const here = imagePoint(event.position);
    const box = here ? boxFromDrag(start, here, image.width, image.height) : null;
    start = null;
    if (!box) return;
    drawOutline(box);
    setOn(false);
    search(box);
  };
  viewer.addHandler("canvas-press", onPress);
  viewer.addHandler("canvas-drag", onDrag);
  viewer.addHandler("canvas-release", onRelease);
  const onTool = (): void => {
    if (!on) clearOutline();
    setOn(!on);
  };
  tool.addEventListener("click", onTool);
  const onKey = (event: KeyboardEvent): void => {
    const target = event.target;
    if (target instanceof HTMLInputElement || target instanceof HTMLTextAreaElement || target instanceof HTMLSelectElement) return;
    if (event.key === "f" && !event.ctrlKey && !event.metaKey && !event.altKey && !section.hidden) onTool();
  };
  document.addEventListener("keydown", onKey);

  apiJson<IndexCard[]>("GET", "/api/v1/indexes", undefined, abort.signal).then(
    (cards) => {
      if (abort.signal.aborted || cards.length === 0) return;
      picker.replaceChildren(
        ...offered(cards).map((card) => el("option", { value: card.name }, `${card.name} (${card.mode}, ${card.count})`)),
      );
      section.hidden = false;
    },
    () => undefined, // no permission to list indexes, or none: the section stays hidden
  );

  return {
    destroy: () => {
      abort.abort();
      pending?.abort();
      clearOutline();
      viewer.removeHandler("canvas-press", onPress);
      viewer.removeHandler("canvas-drag", onDrag);
      viewer.removeHandler("canvas-release", onRelease);
      tool.removeEventListener("click", onTool);
      document.removeEventListener("keydown", onKey);
    },
  };
}
