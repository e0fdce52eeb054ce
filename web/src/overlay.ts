// The annotation overlay: Annotorious (W3C annotation model, WebGL rendering) over the OpenSeadragon
// viewer, fed by viewport queries so that images with millions of annotations stay interactive.
//
// This module only wires the parts together and owns the Annotorious annotator:
//   viewport-loader.ts  debounced, abortable loading of the visible rectangle
//   viewport-cache.ts   what to query for a view, merging answers, what to keep and evict
//   edit-sync.ts        saving edits one annotation at a time, 409 / 404 handling
//   overlay-panel.ts    the side panel (DOM)
//   palette.ts          label colours (the schema's, else the server's palette)
//   drawing-style.ts    fill and stroke by status; keys.ts the shortcuts; shapes.ts records <-> shapes
//
// Loading: after the view has been still for DEBOUNCE_MS, the visible level-0 rectangle is queried
// (`bbox`), with `simplify` = one screen pixel in level-0 units (polygons come back simplified when
// zoomed out) and `limit` = VIEWPORT_LIMIT; when the limit is hit a notice asks to zoom in.
//
// Editing: the label picker and the Box / Polygon tools create annotations (POST, source "web");
// reshaping one PATCHes its geometry with the version it was loaded at, Delete removes it (DELETE with
// version). A 409 means someone else changed it: the message says so and the annotation is reloaded.
// Polygons loaded simplified become editable only after their exact geometry has been fetched.

import "@annotorious/openseadragon/annotorious-openseadragon.css";

import {
  createOSDAnnotator,
  UserSelectAction,
  type AnnotationState,
  type DrawingStyle,
  type ImageAnnotation,
  type OpenSeadragonAnnotator,
} from "@annotorious/openseadragon";
import type OpenSeadragon from "openseadragon";

import {
  createAnnotations,
  deleteAnnotation,
  listAnnotations,
  listLabels,
  type AnnotationStatus,
  type BBox,
  type ImageInfo,
  type LabelClass,
} from "./api";
import { drawingStyle } from "./drawing-style";
import { EditSync, messageOf } from "./edit-sync";
import { shortcutOf, typingInto } from "./keys";
import { OverlayPanel, type Tool } from "./overlay-panel";
import { LabelColors } from "./palette";
import { screenPixelsPerImagePixel } from "./scalebar";
import { bboxOf, type Extent, geometryChanges, newAnnotation, RESHAPEABLE, shapeOf } from "./shapes";
import { isTruncated, ViewportCache, type Entry } from "./viewport-cache";
import { ViewportLoader, type ViewportQuery } from "./viewport-loader";

/** Points are drawn as discs of this many screen pixels (radius) at the zoom they were loaded at. */
const POINT_RADIUS_PX = 4;
const TAG_LIMIT = 500;
/** Who edits, until the server has users: recorded as `source` of new annotations and as the actor. */
const WEB = "web";

type Store = OpenSeadragonAnnotator["state"]["store"] & {
  getIntersecting(x: number, y: number, width: number, height: number): ImageAnnotation[];
};
type Origin = NonNullable<Parameters<Store["deleteAnnotation"]>[1]>;
/** Changes made by this module (not by the user): Annotorious raises no lifecycle events for them. */
const REMOTE = "REMOTE" as unknown as Origin;

/** What the page exposes to tests and to the console as `window.__gv.overlay`. */
export interface OverlayHandle {
  annotator: OpenSeadragonAnnotator;
  /** Viewport loads completed. */
  loads: () => number;
  lastQuery: () => ViewportQuery | null;
  /** No load scheduled or running, no edit in flight, and the last load covers the current view. */
  settled: () => boolean;
  /** Server ids of the annotations held in memory. */
  loadedIds: () => number[];
  /** Server ids of the shapes drawn in the current view (empty while the overlay is hidden). */
  renderedIds: () => number[];
  /** The visible level-0 rectangle, clamped to the image. */
  visibleRect: () => BBox | null;
  destroy: () => void;
}

function isAbort(err: unknown): boolean {
  return err instanceof DOMException && err.name === "AbortError";
}

/** Attaches the overlay and its side panel (rendered into `panelRoot`) to an open viewer. */
export function attachOverlay(viewer: OpenSeadragon.Viewer, image: ImageInfo, panelRoot: HTMLElement): OverlayHandle {
  const extent: Extent = [image.width, image.height]; // what is drawn is stored inside the image
  const annotator = createOSDAnnotator(viewer, {
    drawingEnabled: false,
    drawingMode: "drag",
    theme: "dark",
    userSelectAction: (a: ImageAnnotation) => selectAction(a),
    style: (a: ImageAnnotation, state?: AnnotationState) => styleOf(a, state),
  });
  const store = annotator.state.store as Store;
  const abortAll = new AbortController();

  const cache = new ViewportCache();
  let classes: Record<string, LabelClass> = {};
  let visible = true;
  let destroyed = false;
  let tool: Tool = "select";

  const colors = new LabelColors(() => {
    if (destroyed) return;
    restyle();
    panel.updateSwatch();
    renderSelection();
  }, abortAll.signal);

  const panel = new OverlayPanel(
    panelRoot,
    {
      toggleVisible: () => setVisible(!visible),
      setTool: (next) => setTool(next),
      deleteSelected: () => deleteSelected(),
      relabel: (label) => {
        const chosen = annotator.getSelected()[0];
        if (chosen) patch(chosen.id, { label });
      },
      setStatus: (status: AnnotationStatus) => {
        const chosen = annotator.getSelected()[0];
        if (chosen) patch(chosen.id, { status });
      },
      addTag: (label) => {
        panel.clearMessage();
        createAnnotations(image.id, [{ kind: "tag", label, source: WEB }], WEB).then(
          () => loadTags(),
          (err: unknown) => panel.showMessage(messageOf(err)),
        );
      },
      deleteTag: (tag) => {
        panel.clearMessage();
        deleteAnnotation(tag.id, tag.version, WEB).then(
          () => loadTags(),
          (err: unknown) => {
            panel.showMessage(messageOf(err));
            return loadTags();
          },
        );
      },
    },
    (label) => colors.colorOf(label),
  );

  const sync = new EditSync(
    image.id,
    cache,
    {
      draw: (list) => draw(list),
      undraw: (list) => undraw(list),
      removeShape: (annoId) => removeShape(annoId),
      saved: (entry) => {
        const current = store.getAnnotation(entry.annoId);
        if (!current) return;
        const { id, kind, status, version } = entry.record;
        store.updateAnnotation({ ...current, properties: { id, kind, status, version } }, REMOTE);
      },
      showMessage: (text, kind) => panel.showMessage(text, kind),
      pointRadius: () => pointRadius(),
      editDone: () => {
        updateCount();
        renderSelection();
      },
    },
    WEB,
    abortAll.signal,
  );

  // -- shapes ---------------------------------------------------------------------------------------
  function pointRadius(): number {
    const perPixel = screenPixelsPerImagePixel(viewer);
    return perPixel ? POINT_RADIUS_PX / perPixel : POINT_RADIUS_PX;
  }

  function toAnnotation(entry: Entry): ImageAnnotation | null {
    const { record, annoId } = entry;
    const selector = shapeOf(record, entry.radius);
    if (!selector) return null;
    return {
      id: annoId,
      bodies: [{ id: `${annoId}#label`, annotation: annoId, purpose: "classifying", value: record.label }],
      target: { annotation: annoId, selector },
      properties: { id: record.id, kind: record.kind, status: record.status, version: record.version },
    };
  }

  function styleOf(a: ImageAnnotation, state?: AnnotationState): DrawingStyle {
    const color = colors.colorOf(a.bodies[0]?.value ?? panel.pickedLabel());
    return drawingStyle(color, a.properties?.["status"] as AnnotationStatus | undefined, state);
  }

  /** Draws every shape again with the current colours. */
  function restyle(): void {
    if (cache.size > 0) annotator.setStyle((a: ImageAnnotation, state?: AnnotationState) => styleOf(a, state));
  }

  function selectAction(a: ImageAnnotation): UserSelectAction {
    const entry = cache.entryOf(a.id);
    if (!entry) return UserSelectAction.SELECT;
    const reshapeable = RESHAPEABLE.has(entry.record.kind) && entry.tolerance === 0;
    return reshapeable ? UserSelectAction.EDIT : UserSelectAction.SELECT;
  }

  function isSelected(annoId: string): boolean {
    return annotator.state.selection.isSelected(annoId);
  }

  /** Selected, or with an edit queued: never replaced nor dropped by a viewport load. */
  function isBusy(annoId: string): boolean {
    return sync.has(annoId) || isSelected(annoId);
  }

  function draw(list: Entry[]): void {
    const shapes = list.map(toAnnotation).filter((a): a is ImageAnnotation => a !== null);
    if (shapes.length > 0) store.bulkUpsertAnnotations(shapes, REMOTE);
  }

  function undraw(list: Entry[]): void {
    const annoIds = list.map((e) => e.annoId).filter((annoId) => store.getAnnotation(annoId));
    if (annoIds.length > 0) store.bulkDeleteAnnotations(annoIds, REMOTE);
  }

  function removeShape(annoId: string): void {
    const id = cache.idOf(annoId);
    if (id !== undefined) undraw(cache.forget([id]));
    else if (store.getAnnotation(annoId)) store.deleteAnnotation(annoId, REMOTE);
  }

  // -- viewport loading -----------------------------------------------------------------------------
  function visibleRect(): BBox | null {
    const item = viewer.world.getItemAt(0);
    if (!item) return null;
    const r = item.viewportToImageRectangle(viewer.viewport.getBounds(true));
    const x0 = Math.max(0, r.x);
    const y0 = Math.max(0, r.y);
    const x1 = Math.min(image.width, r.x + r.width);
    const y1 = Math.min(image.height, r.y + r.height);
    if (!(x1 > x0 && y1 > y0)) return null;
    return [x0, y0, x1, y1];
  }

  const loader = new ViewportLoader(image.id, {
    visibleRect: () => visibleRect(),
    scale: () => screenPixelsPerImagePixel(viewer),
    shown: () => visible,
    apply: (page) => {
      const { changed, dropped } = cache.merge(page, pointRadius(), isBusy);
      draw(changed);
      undraw(dropped);
      undraw(cache.evict(page.bbox, isBusy));
      panel.showTruncated(isTruncated(page), page.records.length);
    },
    offImage: () => undraw(cache.evict(null, isBusy)),
    showMessage: (text) => panel.showMessage(text),
    done: () => updateCount(),
  });

  function scheduleLoad(): void {
    if (!destroyed) loader.schedule();
  }

  function renderedIds(): number[] {
    const rect = visibleRect();
    if (!visible || !rect) return [];
    const [x0, y0, x1, y1] = rect;
    return store
      .getIntersecting(x0, y0, x1 - x0, y1 - y0)
      .map((a) => cache.idOf(a.id))
      .filter((id): id is number => id !== undefined);
  }

  function updateCount(): void {
    panel.showCount(visible ? { inView: renderedIds().length, loaded: cache.size } : null);
  }

  // -- edits ----------------------------------------------------------------------------------------
  function onCreated(a: ImageAnnotation): void {
    const label = panel.pickedLabel();
    const payload = label ? newAnnotation(a.target.selector, label, WEB, extent) : null;
    if (!payload) {
      store.deleteAnnotation(a.id, REMOTE);
      panel.showMessage(label ? "This shape cannot be stored." : "Pick or type a label first.");
      return;
    }
    // Saved and deselected at once: the next drag draws the next shape. Click it to edit.
    store.updateAnnotation(
      { ...a, bodies: [{ id: `${a.id}#label`, annotation: a.id, purpose: "classifying", value: label }] },
      REMOTE,
    );
    annotator.cancelSelected();
    sync.create(a.id, payload, bboxOf(payload));
  }

  function onUpdated(a: ImageAnnotation, previous: ImageAnnotation | undefined): void {
    if (previous && JSON.stringify(a.target.selector) === JSON.stringify(previous.target.selector)) return;
    sync.reshape(a.id, (entry) => {
      const current = store.getAnnotation(a.id);
      return current ? geometryChanges(entry.record.kind, current.target.selector, extent) : null;
    });
  }

  function patch(annoId: string, changes: Parameters<EditSync["patch"]>[1]): void {
    panel.clearMessage();
    sync.patch(annoId, changes);
  }

  function deleteSelected(): void {
    const chosen = annotator.getSelected().map((a) => a.id);
    if (chosen.length === 0) return;
    panel.clearMessage();
    annotator.cancelSelected();
    for (const annoId of chosen) sync.destroy(annoId);
  }

  /** Annotorious deleted a shape itself (e.g. Ctrl+Z of a drawing): delete it on the server too. */
  function onDeleted(a: ImageAnnotation): void {
    if (cache.idOf(a.id) !== undefined || sync.has(a.id)) sync.destroy(a.id);
  }

  // -- selection ------------------------------------------------------------------------------------
  function renderSelection(): void {
    const chosen = annotator.getSelected()[0];
    panel.renderSelection((chosen && cache.entryOf(chosen.id)?.record) ?? null);
  }

  /** A polygon loaded simplified is made editable once its exact geometry is here. */
  function onSelection(chosen: ImageAnnotation[]): void {
    renderSelection();
    for (const a of chosen) {
      const entry = cache.entryOf(a.id);
      if (!entry || entry.tolerance === 0 || !RESHAPEABLE.has(entry.record.kind)) continue;
      sync.fetchExact(a.id, () => {
        if (isSelected(a.id)) annotator.setSelected(a.id, true);
      });
    }
  }

  // -- tags -----------------------------------------------------------------------------------------
  async function loadTags(): Promise<void> {
    const tagClasses = Object.entries(classes)
      .filter(([, c]) => c.kind === "tag")
      .map(([name]) => name);
    if (tagClasses.length === 0) {
      panel.renderTags(null);
      return;
    }
    const records = await listAnnotations(image.id, { labels: tagClasses, limit: TAG_LIMIT }, abortAll.signal);
    panel.renderTags(records.filter((r) => r.kind === "tag"));
  }

  // -- tools and keys -------------------------------------------------------------------------------
  function setTool(next: Tool): void {
    tool = next;
    panel.showTool(next);
    if (next === "select") {
      annotator.cancelDrawing();
      annotator.setDrawingEnabled(false);
      return;
    }
    if (!visible) setVisible(true);
    annotator.cancelSelected();
    annotator.setDrawingTool(next);
    // Boxes: press-drag-release. Polygons: a click per corner, while dragging still pans.
    annotator.setDrawingMode(next === "rectangle" ? "drag" : "click");
    annotator.setDrawingEnabled(true);
  }

  function setVisible(show: boolean): void {
    visible = show;
    annotator.setVisible(show);
    panel.showVisible(show);
    if (!show) {
      annotator.cancelSelected();
      if (tool !== "select") setTool("select");
    }
    updateCount();
    if (show) scheduleLoad();
  }

  const onKey = (event: KeyboardEvent): void => {
    const shortcut = typingInto(event.target) ? null : shortcutOf(event);
    if (shortcut === "delete") {
      // The polygon editor uses these keys for selected corners (and says so with preventDefault).
      if (!event.defaultPrevented && annotator.getSelected().length > 0) {
        event.preventDefault();
        deleteSelected();
      }
    } else if (shortcut === "toggle") setVisible(!visible);
    else if (shortcut) {
      setTool(shortcut.tool);
      if (shortcut.tool === "select") annotator.cancelSelected();
    }
  };
  document.addEventListener("keydown", onKey);

  annotator.on("createAnnotation", onCreated);
  annotator.on("updateAnnotation", onUpdated);
  annotator.on("deleteAnnotation", onDeleted);
  annotator.on("selectionChanged", onSelection);

  const onViewport = (): void => scheduleLoad();
  for (const name of ["open", "viewport-change", "resize"] as const) viewer.addHandler(name, onViewport);

  setTool("select");
  listLabels(abortAll.signal)
    .then((found) => {
      classes = found;
      colors.setClasses(found);
      panel.renderClasses(classes);
      restyle();
      return loadTags();
    })
    .catch((err: unknown) => {
      if (isAbort(err) || destroyed) return;
      colors.setClasses(classes);
      panel.showMessage(`Could not load the label schema: ${messageOf(err)}`);
    });
  if (viewer.world.getItemCount() > 0) scheduleLoad();

  return {
    annotator,
    loads: () => loader.loads,
    lastQuery: () => loader.lastQuery,
    settled: () => sync.inFlight === 0 && loader.settled(),
    loadedIds: () => cache.ids(),
    renderedIds,
    visibleRect,
    destroy: () => {
      destroyed = true;
      sync.stop();
      loader.stop();
      abortAll.abort();
      document.removeEventListener("keydown", onKey);
      for (const name of ["open", "viewport-change", "resize"] as const) viewer.removeHandler(name, onViewport);
      annotator.destroy();
      panel.clear();
    },
  };
}
