// The adjudication screen's side-by-side view: one OpenSeadragon viewer per annotator's version (2 side by
// side, 3–4 in a 2 × 2 grid) on the same tiles, moved together (adjudicate-sync.ts), each drawing its
// version with the batched overlay layer (overlay-layer.ts) and the shapes no other version matched
// highlighted (adjudicate-panes.ts), under a head naming the annotator, their counts and "Choose this version".

import OpenSeadragon from "openseadragon";

import { el } from "./dom";
import { gridOf, paneDrawables, paneStyle, summarise, summaryText, type VersionRecord } from "./adjudicate-panes";
import { syncViewers } from "./adjudicate-sync";
import { batchShapes } from "./overlay-batch";
import { OverlayLayer } from "./overlay-layer";
import type { Hex } from "./palette";
import { toolbar, viewerOptions } from "./viewer";

export interface Version {
  annotator: string;
  color: Hex;
  records: VersionRecord[];
}

export interface SideBySide {
  viewers: OpenSeadragon.Viewer[];
  layers: OverlayLayer[];
  /** Resolves once every pane shows the image at the same view (and is synchronised from then on). */
  ready: Promise<void>;
  /** Marks pane `index` as picked (null: none). */
  pick(index: number | null): void;
  /** Disables the choose buttons (the item is decided, or a decision is on its way). */
  setBusy(busy: boolean): void;
  destroy(): void;
}

/** Fills `host` (already in the page) with one pane per version, each opening a `tileSource()` of the image
 * and then `fit` to the item. One tile source object per viewer: shared by two viewers of OpenSeadragon 6.1.1,
 * one of them at times drew only some of its tiles while reporting them all loaded (3 runs of 8 in the browser
 * test). The tiles are still fetched once: the same immutable URLs, from the browser's cache. */
export function showSideBySide(
  host: HTMLElement,
  versions: readonly Version[],
  kind: string,
  tileSource: () => Parameters<OpenSeadragon.Viewer["open"]>[0],
  fit: (viewer: OpenSeadragon.Viewer) => void,
  onChoose: (annotator: string) => void,
): SideBySide {
  const { columns, rows } = gridOf(versions.length);
  host.style.gridTemplateColumns = `repeat(${columns}, minmax(0, 1fr))`;
  host.style.gridTemplateRows = `repeat(${rows}, minmax(0, 1fr))`;
  const panes: HTMLElement[] = [];
  const buttons: HTMLButtonElement[] = [];
  const viewers: OpenSeadragon.Viewer[] = [];
  const layers: OverlayLayer[] = [];
  const opened: Promise<void>[] = [];
  host.replaceChildren();
  versions.forEach((version, i) => {
    const summary = summarise(version.records);
    const choose = el(
      "button",
      { type: "button", "data-testid": "adjudicate-pane-choose", "data-annotator": version.annotator },
      "Choose this version",
    );
    choose.addEventListener("click", () => onChoose(version.annotator));
    buttons.push(choose);
    const labels = summary.byLabel.map(([label, n]) => `${label} ×${n}`).join(", ") || "nothing";
    const container = el("div", { class: "viewer pane-viewer" });
    const pane = el(
      "section",
      { class: "pane", "data-testid": "adjudicate-pane", "data-annotator": version.annotator, "aria-label": `${version.annotator}'s version` },
      el(
        "header",
        { class: "pane-head" },
        el("span", { class: "swatch", style: `background:${version.color}` }),
        el("kbd", {}, String(i + 1)),
        el("strong", {}, version.annotator),
        el("span", { class: "pane-count", "data-testid": "adjudicate-pane-count" }, summaryText(summary, kind)),
        el("span", { class: "muted pane-labels", title: labels }, labels),
        choose,
      ),
      container,
    );
    panes.push(pane);
    host.append(pane);
    // No navigator: the panes are small, and they all show the same place anyway.
    const viewer = OpenSeadragon({ ...viewerOptions(container), showNavigator: false, animationTime: 0.3 });
    if (i === 0) container.append(toolbar(viewer));
    const layer = new OverlayLayer(viewer, (label) => paneStyle(version.color, label));
    layer.set(batchShapes(paneDrawables(version.records)));
    viewers.push(viewer);
    layers.push(layer);
    opened.push(
      new Promise<void>((resolve) => {
        viewer.addOnceHandler("open", () => {
          fit(viewer);
          resolve();
        });
      }),
    );
    viewer.open(tileSource());
  });

  let unsync: (() => void) | null = null;
  let destroyed = false;
  const ready = Promise.all(opened).then(() => {
    // Only once all are open and fitted alike: a pane opening later would otherwise pull the others home.
    if (!destroyed) unsync = syncViewers(viewers);
  });

  return {
    viewers,
    layers,
    ready,
    pick(index) {
      panes.forEach((pane, i) => pane.classList.toggle("picked", i === index));
    },
    setBusy(busy) {
      for (const button of buttons) button.disabled = busy;
    },
    destroy() {
      destroyed = true;
      unsync?.();
      for (const layer of layers) layer.destroy();
      for (const viewer of viewers) viewer.destroy();
      host.replaceChildren();
    },
  };
}
