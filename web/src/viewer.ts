// Full-window Deep Zoom viewer for one image.

import OpenSeadragon from "openseadragon";

import { ApiError, dziUrl, getImage, type BBox, type ImageInfo } from "./api";
import { el } from "./dom";
import { formatMpp, formatPixels, formatSize } from "./format";
import { attachLayers, type LayersHandle } from "./layers";
import type { ToolsHandle } from "./annotate";
import type { OverlayHandle } from "./overlay";
import { attachScaleBar } from "./scalebar";
import { attachSimilar, type SimilarHandle } from "./similar";

declare global {
  interface Window {
    /** Test hook: the open viewer, its image's metadata, its prediction layers and (once loaded) the overlay. */
    __gv?: { viewer: OpenSeadragon.Viewer; image: ImageInfo; overlay?: OverlayHandle; layers?: LayersHandle };
  }
}

/** Deepest Deep Zoom level (full resolution): ceil(log2(max(width, height))). */
export function maxDziLevel(width: number, height: number): number {
  return Math.ceil(Math.log2(Math.max(width, height, 1)));
}

function button(label: string, title: string, onClick: () => void): HTMLButtonElement {
  const node = el("button", { type: "button", class: "tool", title, "aria-label": title }, label);
  node.addEventListener("click", onClick);
  return node;
}

/** The OpenSeadragon settings of every viewer of the app (the image viewer, the review inbox, adjudication). */
export function viewerOptions(element: HTMLElement): OpenSeadragon.Options {
  return {
    element,
    // Our own buttons (no button images to fetch); the prefix points nowhere remote.
    showNavigationControl: false,
    prefixUrl: "/",
    showNavigator: true,
    navigatorPosition: "BOTTOM_RIGHT",
    // The 2D canvas drawer works everywhere, including GPU-less and headless browsers.
    drawer: "canvas",
    maxZoomPixelRatio: 2,
    visibilityRatio: 0.5,
    animationTime: 0.6,
    timeout: 60000,
    gestureSettingsMouse: { clickToZoom: false, dblClickToZoom: true },
    // Prediction layers (layers.ts) share the image's bounds and level-0 size, so the world's content
    // factor and bounds stay the image's: the viewport-wide conversions Annotorious uses remain exact.
    silenceMultiImageWarnings: true,
  };
}

/** The zoom buttons (+, −, whole image, 1:1) over a viewer. */
export function toolbar(viewer: OpenSeadragon.Viewer): HTMLElement {
  const zoomBy = (factor: number) => () => {
    viewer.viewport.zoomBy(factor);
    viewer.viewport.applyConstraints();
  };
  const actualPixels = (): void => {
    const item = viewer.world.getItemAt(0);
    if (item) viewer.viewport.zoomTo(item.imageToViewportZoom(1));
  };
  return el(
    "div",
    { class: "tools", role: "toolbar", "aria-label": "Zoom" },
    button("+", "Zoom in", zoomBy(2)),
    button("−", "Zoom out", zoomBy(0.5)),
    button("⌂", "Whole image", () => viewer.viewport.goHome()),
    button("1:1", "Actual pixels (one image pixel per screen pixel)", actualPixels),
  );
}

function header(image: ImageInfo | null, title: string): HTMLElement {
  const info = el("div", { class: "info" }, el("h1", { class: "name", title }, title));
  if (image) {
    const parts = [`${formatSize(image.width, image.height)} px`, formatPixels(image.width, image.height)];
    if (image.mpp_x !== null) parts.push(formatMpp(image.mpp_x, image.mpp_y));
    info.append(el("span", { class: "dims", "data-testid": "image-size" }, parts.join(" · ")));
  }
  return el("header", { class: "bar" }, el("a", { class: "back", href: "#/" }, "← Images"), info);
}

/** Opens image `id` in `root` (looking at `region`, level-0 [x0, y0, x1, y1], when given: a QC item's, a review
 * task's); returns a function that tears the viewer down. */
export function showViewer(root: HTMLElement, id: string, region: BBox | null = null): () => void {
  const abort = new AbortController();
  let viewer: OpenSeadragon.Viewer | null = null;
  let detachScaleBar: (() => void) | null = null;
  let overlay: OverlayHandle | null = null;
  let layers: LayersHandle | null = null;
  let tools: ToolsHandle | null = null;
  let similar: SimilarHandle | null = null;

  root.replaceChildren(header(null, "Loading…"), el("div", { class: "status" }, "Loading…"));

  const fail = (message: string): void => {
    root.replaceChildren(
      header(null, "Image unavailable"),
      el("div", { class: "error", role: "alert" }, message),
    );
  };

  getImage(id, abort.signal).then(
    (image) => {
      if (abort.signal.aborted) return;
      document.title = `${image.name} — gigavision`;
      const container = el("div", { class: "viewer", "data-testid": "viewer" });
      // The side panel: prediction layers (hidden when there are none) above the annotation overlay's panel.
      const layersSection = el("section", {
        class: "panel-section",
        "aria-label": "Layers",
        "data-testid": "layers-panel",
        hidden: "",
      });
      const panel = el("div", { class: "panel-annotations", "data-testid": "annotation-panel" });
      // The annotation tools (annotate.ts: point, undo / redo, copy / paste, attributes) below the overlay's panel.
      const toolsSection = el("section", {
        class: "panel-section",
        "aria-label": "Annotation tools",
        "data-testid": "annotate-tools",
        hidden: "",
      });
      // "Find similar" (similar.ts): hidden until the workspace has an embedding index.
      const similarSection = el("section", {
        class: "panel-section",
        "aria-label": "Find similar",
        "data-testid": "similar-panel",
        hidden: "",
      });
      const side = el(
        "aside",
        { class: "panel", "aria-label": "Layers and annotations" },
        layersSection,
        similarSection,
        panel,
        toolsSection,
      );
      root.replaceChildren(header(image, image.name), el("div", { class: "stage" }, container, side));

      viewer = OpenSeadragon({ ...viewerOptions(container), tileSources: dziUrl(image.id) });
      const opened = viewer;
      container.append(toolbar(opened));
      if (region) {
        const [x0, y0, x1, y1] = region;
        opened.addOnceHandler("open", () =>
          opened.viewport.fitBounds(opened.viewport.imageToViewportRectangle(x0, y0, x1 - x0, y1 - y0), true),
        );
      }

      opened.addHandler("open-failed", (event) => {
        const message = typeof event.message === "string" ? event.message : "unknown error";
        container.append(el("div", { class: "error overlay", role: "alert" }, `Could not open tiles: ${message}`));
      });
      if (image.mpp_x !== null && image.mpp_x > 0) {
        detachScaleBar = attachScaleBar(opened, image.mpp_x);
      }
      layers = attachLayers(opened, image, layersSection);
      similar = attachSimilar(opened, image, similarSection);
      const hook: NonNullable<Window["__gv"]> = { viewer: opened, image, layers };
      window.__gv = hook;

      // The overlay (Annotorious + WebGL) is a separate chunk: the image list never loads it.
      panel.append(el("p", { class: "panel-count" }, "Loading annotations…"));
      import("./overlay").then(
        ({ attachOverlay }) => {
          if (abort.signal.aborted) return;
          try {
            overlay = attachOverlay(opened, image, panel);
            hook.overlay = overlay;
            const attached = overlay;
            import("./annotate").then(
              ({ attachAnnotationTools }) => {
                if (!abort.signal.aborted) tools = attachAnnotationTools(opened, image, toolsSection, panel, attached);
              },
              () => undefined, // the overlay works without the extra tools
            );
          } catch (err) {
            // E.g. no WebGL: the image stays viewable without its annotations.
            const text = `Annotations unavailable: ${String(err)}`;
            panel.replaceChildren(el("p", { class: "error", role: "alert" }, text));
          }
        },
        (err: unknown) => {
          if (abort.signal.aborted) return;
          panel.replaceChildren(el("p", { class: "error", role: "alert" }, `Annotations unavailable: ${String(err)}`));
        },
      );
    },
    (err: unknown) => {
      if (abort.signal.aborted) return;
      if (err instanceof ApiError && err.status === 404) fail("This image does not exist (any more).");
      else fail(`Could not load the image: ${err instanceof ApiError ? err.message : String(err)}`);
    },
  );

  return () => {
    abort.abort();
    tools?.destroy();
    tools = null;
    similar?.destroy();
    similar = null;
    overlay?.destroy();
    overlay = null;
    layers?.destroy();
    layers = null;
    detachScaleBar?.();
    if (viewer) {
      viewer.destroy();
      viewer = null;
    }
    delete window.__gv;
  };
}
