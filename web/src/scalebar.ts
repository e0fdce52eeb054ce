// A physical scale bar for images with a known pixel size (microns per pixel at level 0).

import OpenSeadragon from "openseadragon";

import { el } from "./dom";

export interface ScaleChoice {
  /** Bar length in micrometres: 1, 2 or 5 × 10^k. */
  micrometres: number;
  /** Bar length in CSS pixels on screen. */
  pixels: number;
  /** Human label, e.g. "500 µm", "2 mm", "200 nm". */
  label: string;
}

/** Removes binary floating-point noise (0.30000000000000004 -> 0.3). */
function clean(value: number): number {
  return Number(value.toPrecision(12));
}

export function formatLength(micrometres: number): string {
  if (micrometres >= 1e6) return `${clean(micrometres / 1e6)} m`;
  if (micrometres >= 1e3) return `${clean(micrometres / 1e3)} mm`;
  if (micrometres >= 1) return `${clean(micrometres)} µm`;
  return `${clean(micrometres * 1e3)} nm`;
}

/**
 * The longest round length (1, 2, 5 × 10^k µm) whose bar fits in `maxPixels`
 * CSS pixels when one CSS pixel covers `micrometresPerPixel` µm.
 */
export function chooseScale(micrometresPerPixel: number, maxPixels: number): ScaleChoice | null {
  if (!(micrometresPerPixel > 0) || !Number.isFinite(micrometresPerPixel) || !(maxPixels > 0)) {
    return null;
  }
  const maxLength = micrometresPerPixel * maxPixels;
  const exponent = Math.floor(Math.log10(maxLength));
  let micrometres = 0;
  // Start one decade up to absorb log10 rounding (log10(1000) may come out as 2.9999…).
  for (let k = exponent + 1; k >= exponent - 1 && micrometres === 0; k--) {
    for (const step of [5, 2, 1]) {
      const candidate = clean(step * 10 ** k);
      if (candidate <= maxLength * (1 + 1e-9)) {
        micrometres = candidate;
        break;
      }
    }
  }
  if (micrometres === 0) return null;
  return { micrometres, pixels: micrometres / micrometresPerPixel, label: formatLength(micrometres) };
}

/**
 * Screen (CSS) pixels covered by one level-0 image pixel, horizontally, at the
 * current (animated) zoom. Null while no image is open.
 */
export function screenPixelsPerImagePixel(viewer: OpenSeadragon.Viewer): number | null {
  const item = viewer.world.getItemAt(0);
  if (!item) return null;
  const origin = item.imageToViewportCoordinates(0, 0, true);
  const unit = item.imageToViewportCoordinates(1, 0, true);
  const delta = new OpenSeadragon.Point(unit.x - origin.x, unit.y - origin.y);
  const onScreen = viewer.viewport.deltaPixelsFromPointsNoRotate(delta, true);
  const pixels = Math.hypot(onScreen.x, onScreen.y);
  return pixels > 0 && Number.isFinite(pixels) ? pixels : null;
}

/**
 * Adds a scale bar to the viewer's container, kept in step with every zoom
 * and animation frame. Returns a function that removes it.
 */
export function attachScaleBar(viewer: OpenSeadragon.Viewer, mppX: number, maxPixels = 160): () => void {
  const bar = el("div", { class: "scalebar-bar" });
  const label = el("span", { class: "scalebar-label" });
  const box = el("div", { class: "scalebar", "data-testid": "scalebar", hidden: "" }, bar, label);
  viewer.container.append(box);

  const update = (): void => {
    const perImagePixel = screenPixelsPerImagePixel(viewer);
    const choice = perImagePixel === null ? null : chooseScale(mppX / perImagePixel, maxPixels);
    if (choice === null) {
      box.hidden = true;
      return;
    }
    bar.style.width = `${choice.pixels.toFixed(1)}px`;
    if (label.textContent !== choice.label) label.textContent = choice.label;
    box.dataset["micrometres"] = String(choice.micrometres);
    box.hidden = false;
  };

  const events = ["open", "animation", "update-viewport", "resize", "rotate", "flip"] as const;
  for (const name of events) viewer.addHandler(name, update);
  update();
  return () => {
    for (const name of events) viewer.removeHandler(name, update);
    box.remove();
  };
}
