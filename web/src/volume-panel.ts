// The side panel of a 3D volume (issue 17): plane buttons A / C / S, the slice slider and its keys (volume.ts
// `sliceStep`). It only says what the user chose; the viewer (viewer.ts) swaps the slice's tiles.

import { el } from "./dom";
import { typingInto } from "./keys";
import { clampSlice, middleSlice, PLANE_LETTERS, PLANES, sliceStep, type Plane, type VolumeInfo } from "./volume";

export interface VolumePanelHandle {
  plane: () => Plane;
  index: () => number;
  destroy: () => void;
}

const NAMES: Record<Plane, string> = { axial: "Axial", coronal: "Coronal", sagittal: "Sagittal" };

/** Fills `section` with the controls of `volume`, starting on `plane`'s middle slice; `onChange` hears every
 * move (`planeChanged` when the plane changed, which changes the image's size). */
export function attachVolumePanel(
  section: HTMLElement,
  volume: VolumeInfo,
  plane: Plane,
  onChange: (plane: Plane, index: number, planeChanged: boolean) => void,
): VolumePanelHandle {
  let current = plane;
  let index = middleSlice(volume.planes[plane]);
  const buttons = new Map<Plane, HTMLButtonElement>();
  for (const p of PLANES) {
    const title = `${NAMES[p]} slices`;
    const node = el(
      "button",
      { type: "button", "data-testid": `plane-${p}`, title, "aria-label": title, "aria-pressed": "false" },
      PLANE_LETTERS[p],
    );
    node.addEventListener("click", () => setPlane(p));
    buttons.set(p, node);
  }
  const slider = el("input", {
    type: "range",
    class: "slice-slider",
    min: "0",
    step: "1",
    "data-testid": "slice-slider",
    "aria-label": "Slice",
  });
  const label = el("p", { class: "panel-count", "data-testid": "slice-label", role: "status" });
  section.replaceChildren(
    el("h2", {}, "Volume"),
    el("div", { class: "row", role: "toolbar", "aria-label": "Plane" }, ...buttons.values()),
    slider,
    label,
    el("p", { class: "muted" }, ", / . or Page Up / Down: previous / next slice (Shift: 10 at a time)"),
  );
  section.hidden = false;

  function render(): void {
    const size = volume.planes[current];
    slider.max = String(size.slices - 1);
    slider.value = String(index);
    label.textContent = `${NAMES[current]} slice ${index + 1} of ${size.slices}`;
    for (const [p, node] of buttons) node.setAttribute("aria-pressed", String(p === current));
  }

  function setSlice(next: number): void {
    const clamped = clampSlice(next, volume.planes[current]);
    if (clamped === index) return;
    index = clamped;
    render();
    onChange(current, index, false);
  }

  function setPlane(next: Plane): void {
    if (next === current) return;
    current = next;
    index = middleSlice(volume.planes[next]);
    render();
    onChange(current, index, true);
  }

  slider.addEventListener("input", () => setSlice(Number(slider.value)));
  const onKey = (event: KeyboardEvent): void => {
    // The focused slider moves itself with the arrows and Page Up / Down; , and . still step it.
    const native = event.target === slider && event.key.startsWith("Page");
    if (native || (event.target !== slider && typingInto(event.target))) return;
    const step = sliceStep(event);
    if (step === null) return;
    event.preventDefault();
    setSlice(index + step);
  };
  document.addEventListener("keydown", onKey);
  render();

  return {
    plane: () => current,
    index: () => index,
    destroy: () => {
      document.removeEventListener("keydown", onKey);
      section.replaceChildren();
      section.hidden = true;
    },
  };
}
