// The annotation tools beside the overlay (a section of the side panel): the point tool, undo / redo, copy /
// paste, the attributes editor of the selected shape, a label picker that follows the tool's kind, and focus
// that goes back to the image after a choice in the panel (so B, P, H, O work at once).
//
// It works through the overlay's edit queue (`currentSync()`, edit-sync.ts: every write versioned, undoable)
// and the overlay's Annotorious selection; the overlay's label picker and tool buttons are found by their
// test ids, the contract its browser tests use too. Keys: O point, Ctrl/Cmd+Z undo, Ctrl/Cmd+Shift+Z or
// Ctrl+Y redo, Ctrl/Cmd+C / Ctrl/Cmd+V copy and paste the selected shape.

import type OpenSeadragon from "openseadragon";

import {
  currentSession,
  listLabels,
  putLabel,
  type AnnotationKind,
  type AnnotationRecord,
  type ImageInfo,
  type LabelClass,
} from "./api";
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

export interface ToolsHandle {
  /** Whether the point tool is on. */
  pointTool: () => boolean;
  destroy: () => void;
}

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
  let pointOn = false;
  let clipboard: AnnotationRecord | null = null;
  let pastes = 0;
  let selected: string | null = null;

  const pointButton = el(
    "button",
    { type: "button", "data-testid": "tool-point", "aria-pressed": "false", title: "Place points: click (O)" },
    "Point",
  );
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
    el("div", { class: "row" }, copyButton, pasteButton),
    message,
    attributes,
    el("p", { class: "panel-hint" }, "Keys: O point · Ctrl+Z undo · Ctrl+Shift+Z redo · Ctrl+C / Ctrl+V copy, paste"),
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
  function setPoint(on: boolean): void {
    if (on) {
      // The overlay's Select tool first (no box or polygon drawing under the clicks); its click turns the
      // point tool off (onToolClick), so the point tool goes on after it.
      const select = overlayPanel.querySelector('[data-testid="tool-select"]');
      if (select instanceof HTMLButtonElement && select.getAttribute("aria-pressed") !== "true") select.click();
      overlay.annotator.cancelSelected();
    }
    pointOn = on;
    pointButton.setAttribute("aria-pressed", String(on));
    viewer.element.classList.toggle("placing-points", on);
    if (!on) return;
    fitLabel("point");
    focusImage();
  }

  const onCanvasClick = (event: OpenSeadragon.CanvasClickEvent): void => {
    if (!pointOn || !event.quick) return;
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
    setPoint(false);
    const kind = TOOL_KINDS[tool];
    if (kind) fitLabel(kind);
  };
  overlayPanel.addEventListener("click", onToolClick);

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

  pointButton.addEventListener("click", () => setPoint(!pointOn));
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
      setPoint(!pointOn);
    } else if (!event.ctrlKey && !event.metaKey && !event.altKey) {
      const key = event.key.toLowerCase();
      if (key === "b" || key === "p") {
        setPoint(false);
        fitLabel(key === "b" ? "box" : "polygon");
      } else if (key === "v" || key === "escape") setPoint(false);
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
      renderAttributes();
    },
    () => undefined, // the overlay says that the schema could not be loaded
  );

  return {
    pointTool: () => pointOn,
    destroy: () => {
      abort.abort();
      stopListening?.();
      window.removeEventListener("keydown", onCommand, true);
      viewer.removeHandler("canvas-click", onCanvasClick);
      overlayPanel.removeEventListener("click", onToolClick);
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
