// Prediction rasters (label masks, probabilities, heatmaps) as layers over the image, one checkbox and
// opacity slider each.
//
// GET /api/v1/images/{id}/layers lists them. Each is a Deep Zoom pyramid declared at the image's level-0
// size (the server reads the smaller raster at the right scale), so it is added as an OpenSeadragon tiled
// image with the image item's own bounds and lines up pixel for pixel. Tiles are RGBA PNGs: class colours
// (background transparent) for labels, transparent -> yellow -> red for probabilities.

import type OpenSeadragon from "openseadragon";

import { ApiError, apiFetch, type ImageInfo, isImageId } from "./api";
import { el } from "./dom";

export type LayerName = "mask" | "probability" | "heatmap" | "heatmap_probability";

/** One layer as the API lists it. */
export interface LayerInfo {
  model: string;
  name: LayerName;
  kind: "labels" | "scalar";
  classes: string[];
  colors: [number, number, number][];
  downsample: number;
  /** The Deep Zoom pyramid's size: the image's level-0 size. */
  width: number;
  height: number;
  raster_width: number;
  raster_height: number;
  mpp: number | null;
  updated: string;
  /** Same-origin path of the layer's Deep Zoom descriptor. */
  dzi: string;
}

export interface LayersHandle {
  /** The image's layers (empty until listed, or when it has none). */
  readonly layers: readonly LayerInfo[];
  /** True once the listing was answered (or failed). */
  ready(): boolean;
  /** The keys (`model/name`) of the layers now in the viewer's world. */
  shown(): string[];
  /** Shows or hides a layer by key, as its checkbox does. */
  setShown(key: string, show: boolean): void;
  destroy(): void;
}

const LABELS: Record<LayerName, string> = {
  mask: "mask",
  probability: "probability",
  heatmap: "heatmap",
  heatmap_probability: "heatmap probability",
};
const DZI_PATH = /^\/dzi\/layers\/[0-9a-f]{64}\/[A-Za-z0-9][A-Za-z0-9._-]{0,127}\/[a-z_]+\.dzi$/;

export function layerKey(layer: Pick<LayerInfo, "model" | "name">): string {
  return `${layer.model}/${layer.name}`;
}

async function listLayers(imageId: string, signal: AbortSignal): Promise<LayerInfo[]> {
  if (!isImageId(imageId)) throw new ApiError(404, "not_found", "No such image.");
  // apiFetch: a 401 (no login) sends the browser to the login page, as every API call does
  const response = await apiFetch(`/api/v1/images/${imageId}/layers`, { headers: { Accept: "application/json" }, signal });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`.trim();
    try {
      const body = (await response.json()) as { error?: { message?: unknown } };
      if (typeof body.error?.message === "string") message = body.error.message;
    } catch {
      // Not a JSON error body: keep the status line.
    }
    throw new ApiError(response.status, "http_error", message);
  }
  const items = (await response.json()) as LayerInfo[];
  // Only same-origin Deep Zoom paths of the expected shape ever reach OpenSeadragon.
  return items.filter((item) => DZI_PATH.test(item.dzi));
}

interface Entry {
  info: LayerInfo;
  key: string;
  toggle: HTMLInputElement;
  opacity: HTMLInputElement;
  item: OpenSeadragon.TiledImage | null;
  /** Being added: OpenSeadragon fetches the descriptor first. */
  pending: boolean;
  wanted: boolean;
}

function legend(info: LayerInfo): HTMLElement {
  if (info.kind === "scalar") {
    return el(
      "div",
      { class: "layer-legend" },
      el("span", { class: "muted" }, "0"),
      el("span", { class: "layer-ramp", "aria-hidden": "true" }),
      el("span", { class: "muted" }, "1"),
    );
  }
  const list = el("div", { class: "layer-legend" });
  info.classes.forEach((name, index) => {
    if (index === 0) return; // class 0 is the background: drawn transparent
    const rgb = info.colors[index] ?? [128, 128, 128];
    const swatch = el("span", { class: "swatch", "aria-hidden": "true" });
    swatch.style.backgroundColor = `rgb(${rgb[0]}, ${rgb[1]}, ${rgb[2]})`;
    list.append(el("span", { class: "layer-class" }, swatch, name));
  });
  return list;
}

/** Lists the image's layers into `section` (kept hidden when there are none) and toggles them in `viewer`. */
export function attachLayers(viewer: OpenSeadragon.Viewer, image: ImageInfo, section: HTMLElement): LayersHandle {
  const abort = new AbortController();
  const entries = new Map<string, Entry>();
  let layers: LayerInfo[] = [];
  let answered = false;
  let destroyed = false;
  const message = el("p", { class: "panel-message", "data-testid": "layers-message", role: "alert", hidden: "" });

  function placement(): { x: number; y: number; width: number } {
    // The layer's pyramid has the image's size: give it the image item's bounds.
    const base = viewer.world.getItemCount() > 0 ? viewer.world.getItemAt(0) : null;
    const bounds = base?.getBounds();
    return bounds ? { x: bounds.x, y: bounds.y, width: bounds.width } : { x: 0, y: 0, width: 1 };
  }

  function add(entry: Entry): void {
    if (entry.item || entry.pending) return;
    entry.pending = true;
    viewer.addTiledImage({
      tileSource: entry.info.dzi,
      ...placement(),
      opacity: Number(entry.opacity.value) / 100,
      success: (event) => {
        entry.pending = false;
        const item = (event as unknown as { item: OpenSeadragon.TiledImage }).item;
        if (destroyed) return;
        if (!entry.wanted) {
          viewer.world.removeItem(item); // unchecked while it was loading
          return;
        }
        entry.item = item;
      },
      error: (err) => {
        entry.pending = false;
        entry.wanted = false;
        entry.toggle.checked = false;
        if (destroyed) return;
        const text = err instanceof Error ? err.message : String((err as { message?: unknown }).message ?? err);
        message.textContent = `Could not open ${entry.info.model} · ${LABELS[entry.info.name]}: ${text}`;
        message.hidden = false;
      },
    });
  }

  function setShown(key: string, show: boolean): void {
    const entry = entries.get(key);
    if (!entry || destroyed) return;
    entry.wanted = show;
    entry.toggle.checked = show;
    if (show) {
      message.hidden = true;
      add(entry);
    } else if (entry.item) {
      viewer.world.removeItem(entry.item);
      entry.item = null;
    }
  }

  function render(): void {
    const list = el("ul", { class: "layers", "data-testid": "layer-list" });
    for (const info of layers) {
      const key = layerKey(info);
      const title = `${info.model} · ${LABELS[info.name]}`;
      const toggle = el("input", { type: "checkbox", "data-testid": "layer-toggle", "data-layer": key });
      const opacity = el("input", {
        type: "range",
        min: "0",
        max: "100",
        value: "100",
        "data-testid": "layer-opacity",
        "data-layer": key,
        "aria-label": `Opacity of ${title}`,
        title: "Opacity",
      });
      const entry: Entry = { info, key, toggle, opacity, item: null, pending: false, wanted: false };
      entries.set(key, entry);
      toggle.addEventListener("change", () => setShown(key, toggle.checked));
      opacity.addEventListener("input", () => entry.item?.setOpacity(Number(opacity.value) / 100));
      const name = el("span", { class: "layer-name", title: `downsample ${info.downsample}` }, title);
      const row = el("label", { class: "row" }, toggle, name);
      list.append(el("li", { class: "layer", "data-layer": key }, row, opacity, legend(info)));
    }
    section.replaceChildren(el("h2", {}, "Layers"), list, message);
    section.hidden = false;
  }

  listLayers(image.id, abort.signal).then(
    (found) => {
      if (destroyed) return;
      layers = found;
      answered = true;
      if (layers.length > 0) render();
    },
    (err: unknown) => {
      if (destroyed || (err instanceof DOMException && err.name === "AbortError")) return;
      answered = true;
      message.textContent = `Layers unavailable: ${err instanceof Error ? err.message : String(err)}`;
      message.hidden = false;
      section.replaceChildren(el("h2", {}, "Layers"), message);
      section.hidden = false;
    },
  );

  return {
    get layers() {
      return layers;
    },
    ready: () => answered,
    shown: () => [...entries.values()].filter((e) => e.item !== null).map((e) => e.key),
    setShown,
    destroy() {
      destroyed = true;
      abort.abort();
      for (const entry of entries.values()) {
        if (entry.item) viewer.world.removeItem(entry.item);
      }
      entries.clear();
      section.replaceChildren();
      section.hidden = true;
    },
  };
}
