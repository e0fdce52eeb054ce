// The annotation tools beside the overlay (a section of the side panel): the point tool, brush and eraser for
// masks (brush.ts: RLE of the bbox window, as the server stores masks), undo / redo, copy / paste, the
// attributes editor of the selected shape, a label picker that follows the tool's kind, and focus
// that goes back to the image after a choice in the panel (so B, P, H, O work at once).
//
// It works through the overlay's edit queue (`currentSync()`, edit-sync.ts: every write versioned, undoable)
// and the overlay's Annotorious selection; the overlay's label picker and tool buttons are found by their
// test ids, the contract its browser tests use too. Keys: O point, Ctrl/Cmd+Z undo, Ctrl/Cmd+Shift+Z or
// Ctrl+Y redo, Ctrl/Cmd+C / Ctrl/Cmd+V copy and paste the selected shape.

import OpenSeadragon from "openseadragon";

import {
  currentSession,
  listLabels,
  putLabel,
  type AnnotationKind,
  type AnnotationRecord,
  type ImageInfo,
  type LabelClass,
} from "./api";
import { applyStroke, decodeMask, encodeMask, type MaskWindow } from "./brush";
import { el } from "./dom";
import { currentSync, messageOf, type EditSync } from "./edit-sync";
import { commandOf, typingInto } from "./keys";
import { labelFor, TOOL_KINDS } from "./kinds";
import { screenPixelsPerImagePixel } from "./scalebar";
import { copyOf, type Extent } from "./shapes";

/** What the tools need of the overlay: its Annotorious selection. */
export interface SelectionSource {
  annotator: {
    getSelected(): { id: string }[];
    cancelSelected(): void;
    on(event: "selectionChanged", handler: (selected: { id: string }[]) => void): void;
    off(event: "selectionChanged", handler: (selected: { id: string }[]) => void): void;
  };
}

export type Mode = "point" | "brush" | "eraser";

export interface ToolsHandle {
  /** The tool of this section that is on (null: none, the overlay's tools act). */
  mode: () => Mode | null;
  destroy: () => void;
}

/** Brush radius in screen pixels, until the slider says otherwise. */
const BRUSH_RADIUS_PX = 12;
/** Masks larger than this are painted without a pixel preview (the box outline still shows). */
const PREVIEW_MAX_PIXELS = 4_000_000;

/** A pasted copy lands this many screen pixels right of and below the original (more for each paste). */
const PASTE_OFFSET_PX = 16;

export function attachAnnotationTools(
  viewer: OpenSeadragon.Viewer,
  image: ImageInfo,
  root: HTMLElement,
  overlayPanel: HTMLElement,
  overlay: SelectionSource,
): ToolsHandle {
  const extent: Extent = [image.width, image.height];
  const abort = new AbortController();
  let classes: Record<string, LabelClass> = {};
  /** The schema has been read; until then the kind a tool wants waits here. */
  let classesLoaded = false;
  let pendingKind: AnnotationKind | null = null;
  let mode: Mode | null = null;
  /** The mask the brush and eraser edit (the selected one when the tool was chosen, or the one just painted). */
  let brushTarget: string | null = null;
  let stroke: [number, number][] | null = null;
  let clipboard: AnnotationRecord | null = null;
  let pastes = 0;
  let selected: string | null = null;

  const pointButton = el(
    "button",
    { type: "button", "data-testid": "tool-point", "aria-pressed": "false", title: "Place points: click (O)" },
    "Point",
  );
  const brushButton = el(
    "button",
    { type: "button", "data-testid": "tool-brush", "aria-pressed": "false", title: "Paint a mask: drag (the selected mask, else a new one)" },
    "Brush",
  );
  const eraserButton = el(
    "button",
    { type: "button", "data-testid": "tool-eraser", "aria-pressed": "false", title: "Erase from the selected mask: drag" },
    "Eraser",
  );
  const brushSize = el("input", {
    type: "range",
    min: "2",
    max: "80",
    value: String(BRUSH_RADIUS_PX),
    "data-testid": "brush-size",
    "aria-label": "Brush radius (screen pixels)",
    title: "Brush radius (screen pixels)",
  });
  const preview = el("canvas", { class: "brush-preview", "data-testid": "brush-preview", "aria-hidden": "true" });
  viewer.element.append(preview);
  const undoButton = el("button", { type: "button", "data-testid": "undo", title: "Undo (Ctrl+Z)" }, "Undo");
  const redoButton = el("button", { type: "button", "data-testid": "redo", title: "Redo (Ctrl+Shift+Z)" }, "Redo");
  const copyButton = el("button", { type: "button", "data-testid": "copy", title: "Copy the selection (Ctrl+C)" }, "Copy");
  const pasteButton = el("button", { type: "button", "data-testid": "paste", title: "Paste (Ctrl+V)" }, "Paste");
  const message = el("p", { class: "panel-message", "data-testid": "annotate-message", role: "status", hidden: "" });
  const fields = el("div", { class: "attributes", "data-testid": "attributes-editor" });
  const attributes = el("section", { class: "panel-section", hidden: "" }, el("h2", {}, "Attributes"), fields);
  root.replaceChildren(
    el("h2", {}, "Tools"),
    el("div", { class: "row", role: "toolbar", "aria-label": "More tools" }, pointButton, undoButton, redoButton),
    el("div", { class: "row", role: "toolbar", "aria-label": "Mask tools" }, brushButton, eraserButton, brushSize),
    el("div", { class: "row" }, copyButton, pasteButton),
    message,
    attributes,
    el("p", { class: "panel-hint" }, "Keys: O point · M brush · E eraser · Ctrl+Z undo · Ctrl+Shift+Z redo · Ctrl+C / Ctrl+V copy, paste"),
  );
  root.hidden = false;

  function say(text: string, kind: "info" | "error" = "info"): void {
    message.textContent = text;
    message.dataset["kind"] = kind;
    message.hidden = text === "";
  }

  function sync(): EditSync | null {
    const found = currentSync();
    if (!found) say("Annotations are unavailable: nothing can be edited.", "error");
    return found;
  }

  // -- the overlay's label picker, kept to the tool's kind ----------------------------------------------
  function picker(): HTMLSelectElement | null {
    const node = overlayPanel.querySelector('[data-testid="label-picker"]');
    return node instanceof HTMLSelectElement && !node.hidden ? node : null;
  }

  function freeLabel(): HTMLInputElement | null {
    const node = overlayPanel.querySelector('[data-testid="label-input"]');
    return node instanceof HTMLInputElement && !node.hidden ? node : null;
  }

  function pickedLabel(): string {
    return picker()?.value ?? freeLabel()?.value.trim() ?? "";
  }

  /** Picks a class that takes `kind` when the picked one does not (the server would refuse the shape). */
  function fitLabel(kind: AnnotationKind): void {
    if (!classesLoaded) {
      pendingKind = kind;
      return;
    }
    const select = picker();
    if (!select) return;
    const wanted = labelFor(classes, kind, select.value);
    if (wanted === null) {
      say(`No ${kind} class in the label schema: ask a manager to add one (gigavision labels add NAME --kind ${kind}).`);
      return;
    }
    if (wanted !== select.value) {
      select.value = wanted;
      select.dispatchEvent(new Event("change", { bubbles: true }));
    }
  }

  /** Focus back on the image after a choice in the panel: the overlay's keys (B, P, H, O) work at once. */
  function focusImage(): void {
    const active = document.activeElement;
    if (active instanceof HTMLElement) active.blur();
    (viewer.canvas as HTMLElement | undefined)?.focus({ preventScroll: true });
  }

  const onChange = (event: Event): void => {
    if (event.target instanceof HTMLSelectElement) focusImage();
  };
  const onEnter = (event: KeyboardEvent): void => {
    if (event.key === "Enter" && event.target instanceof HTMLInputElement) focusImage();
  };
  for (const node of [overlayPanel, root]) {
    node.addEventListener("change", onChange);
    node.addEventListener("keydown", onEnter);
  }

  // -- the point tool ------------------------------------------------------------------------------------
  function setMode(next: Mode | null): void {
    if (next) {
      if (next !== "point") {
        // The brush edits the selected mask (or, with none, paints a new one); the eraser needs one.
        const chosen = overlay.annotator.getSelected()[0]?.id;
        const record = chosen ? currentSync()?.recordOf(chosen) : null;
        if (record?.kind === "mask") brushTarget = chosen ?? null;
        else if (!(mode === "brush" || mode === "eraser")) brushTarget = null;
      }
      // The overlay's Select tool first (no box or polygon drawing under the clicks); its click turns these
      // tools off (onToolClick), so this one goes on after it.
      const select = overlayPanel.querySelector('[data-testid="tool-select"]');
      if (select instanceof HTMLButtonElement && select.getAttribute("aria-pressed") !== "true") select.click();
      overlay.annotator.cancelSelected();
    }
    mode = next;
    stroke = null;
    pointButton.setAttribute("aria-pressed", String(next === "point"));
    brushButton.setAttribute("aria-pressed", String(next === "brush"));
    eraserButton.setAttribute("aria-pressed", String(next === "eraser"));
    viewer.element.classList.toggle("placing-points", next === "point");
    viewer.element.classList.toggle("painting", next === "brush" || next === "eraser");
    if (next === "eraser" && !brushTarget) say("Select a mask first (Select tool, click it), then erase from it.");
    renderPreview();
    if (!next) return;
    fitLabel(next === "point" ? "point" : "mask");
    focusImage();
  }

  // -- brush and eraser ----------------------------------------------------------------------------------
  function imagePoint(position: OpenSeadragon.Point): [number, number] | null {
    const item = viewer.world.getItemAt(0);
    if (!item) return null;
    const p = item.viewerElementToImageCoordinates(position);
    return [p.x, p.y];
  }

  function brushRadius(): number {
    const perPixel = screenPixelsPerImagePixel(viewer) ?? 1;
    return Number(brushSize.value) / perPixel;
  }

  /** The target mask's pixels now (as the server last answered), or null. */
  function targetWindow(): MaskWindow | null {
    const record = brushTarget ? currentSync()?.recordOf(brushTarget) : null;
    return record?.kind === "mask" ? decodeMask(record) : null;
  }

  function finishStroke(points: [number, number][]): void {
    const edits = sync();
    if (!edits || points.length === 0) return;
    const erase = mode === "eraser";
    const radius = brushRadius();
    const target = brushTarget && edits.recordOf(brushTarget)?.kind === "mask" ? brushTarget : null;
    if (erase && !target) {
      say("Select a mask first (Select tool, click it), then erase from it.");
      return;
    }
    if (target) {
      say("");
      // Computed when the edit's turn comes: on the mask as the server has it after the strokes before.
      edits.reshape(target, (entry) => {
        let next: MaskWindow | null;
        try {
          next = applyStroke(decodeMask(entry.record), { points, radius }, erase, extent);
        } catch (err) {
          say(messageOf(err), "error");
          return null;
        }
        const stored = next ? encodeMask(next) : null;
        if (!stored) {
          say("The stroke erased the whole mask: press Del to delete it, or paint again.");
          return null;
        }
        return { bbox: stored.bbox, mask: stored.mask };
      });
      return;
    }
    let painted: MaskWindow | null;
    try {
      painted = applyStroke(null, { points, radius }, false, extent);
    } catch (err) {
      say(messageOf(err), "error");
      return;
    }
    const stored = painted ? encodeMask(painted) : null;
    if (!stored) {
      say("That stroke is outside the image: nothing painted.");
      return;
    }
    const label = pickedLabel();
    if (!label) {
      say("Pick or type a label first.");
      return;
    }
    say("");
    brushTarget = edits.add({ kind: "mask", label, bbox: stored.bbox, mask: stored.mask, source: "web" }, stored.bbox);
  }

  let previewKey = "";
  let previewBitmap: HTMLCanvasElement | null = null;

  /** The target mask's pixels and the stroke being drawn, over the image (the overlay draws masks as boxes). */
  function renderPreview(): void {
    const painting = mode === "brush" || mode === "eraser";
    const rect = viewer.element.getBoundingClientRect();
    const ratio = window.devicePixelRatio || 1;
    preview.hidden = !painting;
    if (!painting) return;
    if (preview.width !== Math.round(rect.width * ratio) || preview.height !== Math.round(rect.height * ratio)) {
      preview.width = Math.round(rect.width * ratio);
      preview.height = Math.round(rect.height * ratio);
    }
    const ctx = preview.getContext("2d");
    const item = viewer.world.getItemAt(0);
    if (!ctx || !item) return;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, preview.width, preview.height);
    ctx.scale(ratio, ratio);
    const record = brushTarget ? currentSync()?.recordOf(brushTarget) : null;
    const color = (record && classes[record.label]?.color) || "#00d0ff";
    const win = targetWindow();
    if (win && record && win.width * win.height <= PREVIEW_MAX_PIXELS) {
      const key = `${record.id}@${record.version}`;
      if (key !== previewKey || !previewBitmap) {
        previewKey = key;
        previewBitmap = document.createElement("canvas");
        previewBitmap.width = win.width;
        previewBitmap.height = win.height;
        const bctx = previewBitmap.getContext("2d");
        if (bctx) {
          const pixels = bctx.createImageData(win.width, win.height);
          const [r, g, b] = [1, 3, 5].map((i) => parseInt(color.slice(i, i + 2), 16) || 0);
          for (let i = 0; i < win.data.length; i++) {
            if (!win.data[i]) continue;
            pixels.data.set([r ?? 0, g ?? 208, b ?? 255, 120], i * 4);
          }
          bctx.putImageData(pixels, 0, 0);
        }
      }
      const a = item.imageToViewerElementCoordinates(new OpenSeadragon.Point(win.x0, win.y0));
      const b = item.imageToViewerElementCoordinates(new OpenSeadragon.Point(win.x0 + win.width, win.y0 + win.height));
      ctx.imageSmoothingEnabled = false;
      ctx.drawImage(previewBitmap, a.x, a.y, b.x - a.x, b.y - a.y);
    }
    if (stroke && stroke.length > 0) {
      const r = Number(brushSize.value);
      ctx.fillStyle = mode === "eraser" ? "rgba(255, 255, 255, 0.5)" : color;
      ctx.globalAlpha = mode === "eraser" ? 1 : 0.5;
      for (const [x, y] of stroke) {
        const p = item.imageToViewerElementCoordinates(new OpenSeadragon.Point(x, y));
        ctx.beginPath();
        ctx.arc(p.x, p.y, r, 0, 2 * Math.PI);
        ctx.fill();
      }
      ctx.globalAlpha = 1;
    }
  }

  const onPress = (event: OpenSeadragon.CanvasPressEvent): void => {
    if (mode !== "brush" && mode !== "eraser") return;
    const p = imagePoint(event.position);
    stroke = p ? [p] : null;
    renderPreview();
  };
  const onDrag = (event: OpenSeadragon.CanvasDragEvent): void => {
    if (mode !== "brush" && mode !== "eraser") return;
    event.preventDefaultAction = true; // paint, do not pan
    const p = imagePoint(event.position);
    if (stroke && p) stroke.push(p);
    renderPreview();
  };
  const onRelease = (): void => {
    if ((mode !== "brush" && mode !== "eraser") || !stroke) return;
    const points = stroke;
    stroke = null;
    finishStroke(points);
    renderPreview();
  };
  viewer.addHandler("canvas-press", onPress);
  viewer.addHandler("canvas-drag", onDrag);
  viewer.addHandler("canvas-release", onRelease);
  const onView = (): void => renderPreview();
  for (const name of ["animation", "update-viewport", "resize"] as const) viewer.addHandler(name, onView);

  const onCanvasClick = (event: OpenSeadragon.CanvasClickEvent): void => {
    if (mode === "brush" || mode === "eraser") event.preventDefaultAction = true;
    if (mode !== "point" || !event.quick) return;
    event.preventDefaultAction = true;
    const item = viewer.world.getItemAt(0);
    const edits = sync();
    if (!item || !edits) return;
    const p = item.viewerElementToImageCoordinates(event.position);
    const x = Math.round(p.x * 100) / 100;
    const y = Math.round(p.y * 100) / 100;
    if (!(x >= 0 && y >= 0 && x <= image.width && y <= image.height)) {
      say("That click is outside the image: no point placed.");
      return;
    }
    const label = pickedLabel();
    if (!label) {
      say("Pick or type a label first.");
      return;
    }
    say("");
    edits.add({ kind: "point", label, geometry: { type: "Point", coordinates: [x, y] }, source: "web" }, [x, y, x, y]);
  };
  viewer.addHandler("canvas-click", onCanvasClick);

  // The overlay's tools: the picker follows their kind and the point tool goes off.
  const onToolClick = (event: Event): void => {
    const button = event.target instanceof Element ? event.target.closest("[data-tool]") : null;
    const tool = button?.getAttribute("data-tool");
    if (!tool) return;
    setMode(null);
    const kind = TOOL_KINDS[tool];
    if (kind) fitLabel(kind);
  };
  overlayPanel.addEventListener("click", onToolClick);

  // "Tag image with picked label" tags with a tag class: picked for that click (capture phase, before the
  // overlay reads the picker), then the class the drawing tools use is picked again.
  const onTagClick = (event: Event): void => {
    const target = event.target instanceof Element ? event.target.closest('[data-testid="add-tag"]') : null;
    const select = picker();
    if (!target || !select) return;
    const before = select.value;
    fitLabel("tag");
    if (select.value === before) return;
    setTimeout(() => {
      select.value = before;
      select.dispatchEvent(new Event("change", { bubbles: true }));
    }, 0);
  };
  overlayPanel.addEventListener("click", onTagClick, true);

  // -- undo / redo / copy / paste -----------------------------------------------------------------------
  function undoOrRedo(which: "undo" | "redo"): void {
    const edits = sync();
    if (!edits) return;
    say("");
    // A shape being edited is saved when its selection ends (Annotorious reports it on the next task):
    // that save is the last write, so the undo is asked for after it.
    if (overlay.annotator.getSelected().length > 0) overlay.annotator.cancelSelected();
    setTimeout(() => {
      const run = which === "undo" ? edits.undo() : edits.redo();
      run.then(
        (done) => {
          if (!done) say(which === "undo" ? "Nothing to undo." : "Nothing to redo.");
        },
        (err: unknown) => say(messageOf(err), "error"),
      );
    }, 0);
  }

  function copy(): boolean {
    const annoId = overlay.annotator.getSelected()[0]?.id;
    const record = annoId ? (currentSync()?.recordOf(annoId) ?? null) : null;
    if (!record || record.kind === "tag") return false;
    clipboard = record;
    pastes = 0;
    say(`Copied ${record.kind} ${record.label} (${record.id}).`);
    return true;
  }

  function paste(): void {
    const edits = sync();
    if (!edits) return;
    if (!clipboard) {
      say("Nothing copied: select a shape and press Ctrl+C first.");
      return;
    }
    pastes += 1;
    const perPixel = screenPixelsPerImagePixel(viewer) ?? 1;
    const shift = (PASTE_OFFSET_PX * pastes) / perPixel;
    const copied = copyOf(clipboard, shift, shift, extent, "web");
    if (!copied) {
      say("This shape cannot be copied.", "error");
      return;
    }
    say("");
    edits.add(copied.annotation, copied.bbox);
  }

  pointButton.addEventListener("click", () => setMode(mode === "point" ? null : "point"));
  brushButton.addEventListener("click", () => setMode(mode === "brush" ? null : "brush"));
  eraserButton.addEventListener("click", () => setMode(mode === "eraser" ? null : "eraser"));
  brushSize.addEventListener("change", () => focusImage());
  undoButton.addEventListener("click", () => undoOrRedo("undo"));
  redoButton.addEventListener("click", () => undoOrRedo("redo"));
  copyButton.addEventListener("click", () => {
    if (!copy()) say("Select a shape to copy first.");
  });
  pasteButton.addEventListener("click", () => paste());

  // Capture phase: Annotorious's own Ctrl+Z replays every drag step of its store; ours is one write.
  const onCommand = (event: KeyboardEvent): void => {
    if (typingInto(event.target)) return;
    const command = commandOf(event);
    if (command === "undo" || command === "redo") {
      event.preventDefault();
      event.stopImmediatePropagation();
      undoOrRedo(command);
    } else if (command === "copy") {
      if (!window.getSelection()?.toString() && copy()) event.preventDefault();
    } else if (command === "paste" && clipboard) {
      event.preventDefault();
      paste();
    } else if (command === "point") {
      setMode(mode === "point" ? null : "point");
    } else if (!event.ctrlKey && !event.metaKey && !event.altKey) {
      const key = event.key.toLowerCase();
      if (key === "b" || key === "p") {
        setMode(null);
        fitLabel(key === "b" ? "box" : "polygon");
      } else if (key === "m") setMode(mode === "brush" ? null : "brush");
      else if (key === "e") setMode(mode === "eraser" ? null : "eraser");
      else if (key === "v" || key === "escape") setMode(null);
    }
  };
  window.addEventListener("keydown", onCommand, true);

  // -- attributes of the selected shape -----------------------------------------------------------------
  function renderAttributes(): void {
    const record = selected ? (currentSync()?.recordOf(selected) ?? null) : null;
    if (!record) {
      attributes.hidden = true;
      fields.replaceChildren();
      return;
    }
    const declared = classes[record.label]?.attributes ?? {};
    const names = Object.keys(declared).sort((a, b) => a.localeCompare(b));
    attributes.hidden = false;
    attributes.dataset["annotationId"] = String(record.id);
    if (names.length === 0) {
      fields.replaceChildren(el("p", { class: "muted" }, `Class ${record.label} has no attributes.`));
      return;
    }
    const annoId = selected;
    fields.replaceChildren(
      ...names.map((name) => {
        const allowed = declared[name] ?? [];
        const value = record.attributes[name];
        const shown = value === undefined || value === null ? "" : String(value);
        let input: HTMLSelectElement | HTMLInputElement;
        if (allowed.length > 0) {
          input = el("select", { "data-testid": "attribute", "data-attribute": name, "aria-label": name });
          input.append(el("option", { value: "" }, "—"), ...allowed.map((v) => el("option", { value: v }, v)));
        } else {
          input = el("input", { type: "text", "data-testid": "attribute", "data-attribute": name, "aria-label": name });
        }
        input.value = shown;
        input.addEventListener("change", () => {
          const edits = sync();
          const current = annoId ? edits?.recordOf(annoId) : null;
          if (!edits || !annoId || !current) return;
          const next = { ...current.attributes };
          if (input.value === "") delete next[name];
          else next[name] = input.value;
          say("");
          edits.patch(annoId, { attributes: next });
        });
        return el("label", { class: "row" }, `${name} `, input);
      }),
    );
  }

  const onSelection = (chosen: { id: string }[]): void => {
    selected = chosen[0]?.id ?? null;
    renderAttributes();
  };
  overlay.annotator.on("selectionChanged", onSelection);
  let stopListening: (() => void) | null = null;
  const listen = (): void => {
    const edits = currentSync();
    if (!edits || stopListening) return;
    stopListening = edits.onChange(() => {
      if (selected) renderAttributes();
      renderPreview();
    });
    // A label typed while the schema is empty joins it, as a class of the drawn shape's kind, when this login
    // may change the schema (else it is stored as typed: an empty schema takes any label).
    edits.adoptLabel = async (label, kind) => {
      if (!freeLabel() || classes[label] || !currentSession()?.permissions.includes("schema")) return;
      classes[label] = await putLabel(label, { kind });
    };
  };
  listen();

  listLabels(abort.signal).then(
    (found) => {
      classes = { ...found, ...classes };
      classesLoaded = true;
      root.dataset["ready"] = "true";
      if (pendingKind) fitLabel(pendingKind);
      pendingKind = null;
      renderAttributes();
    },
    () => undefined, // the overlay says that the schema could not be loaded
  );

  return {
    mode: () => mode,
    destroy: () => {
      abort.abort();
      viewer.removeHandler("canvas-press", onPress);
      viewer.removeHandler("canvas-drag", onDrag);
      viewer.removeHandler("canvas-release", onRelease);
      for (const name of ["animation", "update-viewport", "resize"] as const) viewer.removeHandler(name, onView);
      preview.remove();
      viewer.element.classList.remove("painting");
      stopListening?.();
      window.removeEventListener("keydown", onCommand, true);
      viewer.removeHandler("canvas-click", onCanvasClick);
      overlayPanel.removeEventListener("click", onToolClick);
      overlayPanel.removeEventListener("click", onTagClick, true);
      for (const node of [overlayPanel, root]) {
        node.removeEventListener("change", onChange);
        node.removeEventListener("keydown", onEnter);
      }
      overlay.annotator.off("selectionChanged", onSelection);
      viewer.element.classList.remove("placing-points");
      root.replaceChildren();
      root.hidden = true;
    },
  };
}
