// Full-window Deep Zoom viewer for one image.

import OpenSeadragon from "openseadragon";

import { ApiError, dziUrl, getImage, type BBox, type ImageInfo } from "./api";
import { el } from "./dom";
import { formatMpp, formatPixels, formatSize } from "./format";
import { attachLayers, type LayersHandle } from "./layers";
import type { ToolsHandle } from "./annotate";
import type { OverlayHandle, OverlayScope } from "./overlay";
import { attachScaleBar } from "./scalebar";
import { attachSimilar, type SimilarHandle } from "./similar";
import { middleSlice, onSlice, sliceAttributes, sliceDziUrl, volumeOf, type Plane } from "./volume";
import { attachVolumePanel, type VolumePanelHandle } from "./volume-panel";

/** The slice of a volume on screen: `shown` is its tile source once its tiles replaced the previous slice's. */
export interface SliceState {
  plane: Plane;
  index: number;
  shown: string | null;
}

declare global {
  interface Window {
    /** Test hook: the open viewer, its image's metadata, its prediction layers and (once loaded) the overlay;
     * for a volume, the slice on screen. */
    __gv?: {
      viewer: OpenSeadragon.Viewer;
      image: ImageInfo;
      overlay?: OverlayHandle;
      layers?: LayersHandle;
      volume?: SliceState;
    };
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
    const volume = volumeOf(image);
    if (volume) {
      const [sx, sy, sz] = volume.spacing.map((s) => Number(s.toFixed(3)));
      parts.splice(1, 1, `${volume.shape[0]} slices`, `${sx} × ${sy} × ${sz} mm`);
    } else if (image.mpp_x !== null) parts.push(formatMpp(image.mpp_x, image.mpp_y));
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
  let volumePanel: VolumePanelHandle | null = null;

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
      // A 3D volume's planes and slice slider (volume-panel.ts); hidden for 2D images.
      const volumeSection = el("section", {
        class: "panel-section",
        "aria-label": "Volume",
        "data-testid": "volume-panel",
        hidden: "",
      });
      const side = el(
        "aside",
        { class: "panel", "aria-label": "Layers and annotations" },
        volumeSection,
        layersSection,
        similarSection,
        panel,
        toolsSection,
      );
      root.replaceChildren(header(image, image.name), el("div", { class: "stage" }, container, side));

      // A volume shows one slice at a time, each an image of its own plane's size (volume.ts).
      const volume = volumeOf(image);
      const state: SliceState = { plane: "axial", index: volume ? middleSlice(volume.planes.axial) : 0, shown: null };
      const planeImage = (): ImageInfo =>
        volume ? { ...image, width: volume.planes[state.plane].width, height: volume.planes[state.plane].height } : image;
      const scope: OverlayScope | undefined = volume
        ? { shows: (r) => onSlice(r, state.plane, state.index), attributes: () => sliceAttributes(state.plane, state.index) }
        : undefined;
      const firstUrl = volume ? sliceDziUrl(image.id, state.plane, state.index) : dziUrl(image.id);
      viewer = OpenSeadragon({ ...viewerOptions(container), tileSources: firstUrl });
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
      const hook: NonNullable<Window["__gv"]> = { viewer: opened, image };
      if (volume) {
        hook.volume = state;
        opened.addOnceHandler("open", () => {
          state.shown = firstUrl;
        });
      } else {
        // prediction layers and region search are 2D: a volume's slices have neither
        layers = attachLayers(opened, image, layersSection);
        similar = attachSimilar(opened, image, similarSection);
        hook.layers = layers;
      }
      window.__gv = hook;

      // The overlay (Annotorious + WebGL) is a separate chunk: the image list never loads it. A volume's
      // overlay is attached again for each plane (the image's size changes with it).
      let attachments = 0;
      const attachAnnotations = (): void => {
        const attempt = ++attachments;
        tools?.destroy();
        tools = null;
        overlay?.destroy();
        overlay = null;
        panel.replaceChildren(el("p", { class: "panel-count" }, "Loading annotations…"));
        const shown = planeImage();
        import("./overlay").then(
          ({ attachOverlay }) => {
            if (abort.signal.aborted || attempt !== attachments) return;
            try {
              overlay = attachOverlay(opened, shown, panel, scope);
              hook.overlay = overlay;
              const attached = overlay;
              import("./annotate").then(
                ({ attachAnnotationTools }) => {
                  if (abort.signal.aborted || attempt !== attachments) return;
                  tools = attachAnnotationTools(opened, shown, toolsSection, panel, attached);
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
      };
      attachAnnotations();

      // Moving through slices keeps the zoom and pan: the next slice opens under the current one, which is
      // removed once the new tiles are all drawn (no blank frame); a newer move supersedes a pending one.
      let swaps = 0;
      const showSlice = (plane: Plane, index: number, planeChanged: boolean): void => {
        Object.assign(state, { plane, index, shown: null });
        const url = sliceDziUrl(image.id, plane, index);
        const swap = ++swaps;
        if (planeChanged) {
          opened.addOnceHandler("open", () => {
            if (swap !== swaps) return;
            state.shown = url;
            attachAnnotations();
          });
          opened.open({ tileSource: url }); // another size: the view starts over on the whole slice
          return;
        }
        overlay?.rescope();
        opened.addTiledImage({
          tileSource: url,
          index: 0,
          success: (event) => {
            const item = (event as unknown as { item: OpenSeadragon.TiledImage }).item;
            if (swap !== swaps) {
              opened.world.removeItem(item);
              return;
            }
            const done = (): void => {
              if (swap !== swaps) return;
              for (let i = opened.world.getItemCount() - 1; i >= 0; i--) {
                const other = opened.world.getItemAt(i);
                if (other !== item) opened.world.removeItem(other);
              }
              state.shown = url;
            };
            if (item.getFullyLoaded()) {
              done();
              return;
            }
            const onLoaded = (e: OpenSeadragon.FullyLoadedChangeTiledImageEvent): void => {
              if (!e.fullyLoaded) return;
              item.removeHandler("fully-loaded-change", onLoaded);
              done();
            };
            item.addHandler("fully-loaded-change", onLoaded);
          },
          error: () => {
            if (swap === swaps) container.append(el("div", { class: "error overlay", role: "alert" }, `Could not open ${url}`));
          },
        });
      };
      if (volume) volumePanel = attachVolumePanel(volumeSection, volume, state.plane, showSlice);
    },
    (err: unknown) => {
      if (abort.signal.aborted) return;
      if (err instanceof ApiError && err.status === 404) fail("This image does not exist (any more).");
      else fail(`Could not load the image: ${err instanceof ApiError ? err.message : String(err)}`);
    },
  );

  return () => {
    abort.abort();
    volumePanel?.destroy();
    volumePanel = null;
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
