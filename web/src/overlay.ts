// The annotation overlay over the OpenSeadragon viewer, fed by viewport queries so that images with
// millions of annotations stay interactive.
//
// Drawing: every loaded shape is drawn by the batched layer (overlay-layer.ts: one 2D canvas, a few fills
// and strokes per label and status, fed from typed arrays built by overlay-batch.ts). Annotorious (W3C
// annotation model, WebGL) holds only the shapes being selected, edited or drawn (`editing`): a shape
// moves into it when clicked (hit-tested on the batches) and back to the layer once deselected and saved.
// Annotorious drawing all 2,000 shapes of a view managed 1.6 fps in software WebGL; the layer does not
// depend on how many shapes there are per class.
//
// This module only wires the parts together and owns the Annotorious annotator:
//   overlay-layer.ts    the batched canvas layer; overlay-batch.ts its typed arrays, hit-test, filters
//   viewport-loader.ts  debounced, abortable loading of the visible rectangle
//   viewport-cache.ts   what to query for a view, merging answers, what to keep and evict
//   edit-sync.ts        saving edits one annotation at a time, 409 / 404 handling
//   overlay-panel.ts    the side panel (DOM)
//   palette.ts          label colours (the schema's, else the server's palette)
//   drawing-style.ts    fill and stroke by status; keys.ts the shortcuts; shapes.ts records <-> shapes
//
// Loading: after the view has been still for DEBOUNCE_MS, the visible level-0 rectangle is queried
// (`bbox`), with `simplify` = one screen pixel in level-0 units (polygons come back simplified when
// zoomed out) and `limit` = VIEWPORT_LIMIT; beyond it the server sends a sample spread over every label
// and the view, and the panel says "N of M".
//
// Filters (panel): model proposals vs human labels, status, and a switch per label in the legend, which
// also shows each label's colour and count in view. They apply to what is loaded at once, and hidden labels
// and statuses are left out of the next viewport query (so a crowded view's sample goes to what is shown).
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
  STATUSES,
  type AnnotationRecord,
  type AnnotationStatus,
  type BBox,
  type ImageInfo,
  type LabelClass,
} from "./api";
import { batchStyle, drawingStyle, POINT_DISC_PX } from "./drawing-style";
import { EditSync, messageOf } from "./edit-sync";
import { shortcutOf, typingInto } from "./keys";
import {
  batchShapes,
  countByLabel,
  hitTest,
  keysIn,
  ORIGINS,
  passes,
  ringsOf,
  type Drawable,
} from "./overlay-batch";
import { OverlayLayer } from "./overlay-layer";
import { OverlayPanel, type Tool } from "./overlay-panel";
import { LabelColors } from "./palette";
import { screenPixelsPerImagePixel } from "./scalebar";
import { bboxOf, type Extent, geometryChanges, newAnnotation, RESHAPEABLE, shapeOf } from "./shapes";
import {
  intersects,
  isTruncated,
  legendCounts,
  ViewportCache,
  type Entry,
  type Page,
  type QueryFilter,
} from "./viewport-cache";
import { ViewportLoader, type ViewportQuery } from "./viewport-loader";

/** A selected point (Annotorious) is a disc of the layer's size, in screen pixels (radius). */
const POINT_RADIUS_PX = POINT_DISC_PX;
const TAG_LIMIT = 500;
/** A click this many screen pixels from an outline still selects the shape. */
const HIT_SLOP_PX = 3;
/** Who edits, until the server has users: recorded as `source` of new annotations and as the actor. */
const WEB = "web";

type Store = OpenSeadragonAnnotator["state"]["store"] & {
  getIntersecting(x: number, y: number, width: number, height: number): ImageAnnotation[];
};
type Origin = NonNullable<Parameters<Store["deleteAnnotation"]>[1]>;
/** Changes made by this module (not by the user): Annotorious raises no lifecycle events for them. */
const REMOTE = "REMOTE" as unknown as Origin;

/** What a volume's overlay shows and stamps (viewer.ts, volume.ts): the annotations of the slice on screen,
 * and new ones get its plane and slice. */
export interface OverlayScope {
  shows: (record: AnnotationRecord) => boolean;
  attributes: () => Record<string, unknown>;
}

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
  /** What is drawn, by server id: kind, rings (area shapes), status, label, and whether Annotorious has it. */
  drawn: () => Record<number, { kind: string; rings: number; status: string; label: string; editing: boolean }>;
  /** The record held for an annotation id (as loaded or last saved). */
  recordOf: (id: number) => AnnotationRecord | null;
  /** The batched layer's frames drawn, the time the last took (ms), and how many rendered its bitmap anew. */
  frameStats: () => { frames: number; lastDrawMs: number; renders: number; offThread: boolean };
  /** The visible level-0 rectangle, clamped to the image. */
  visibleRect: () => BBox | null;
  /** The scope changed (another slice of a volume): draw what it shows now. */
  rescope: () => void;
  destroy: () => void;
}

function isAbort(err: unknown): boolean {
  return err instanceof DOMException && err.name === "AbortError";
}

/** Attaches the overlay and its side panel (rendered into `panelRoot`) to an open viewer. */
export function attachOverlay(
  viewer: OpenSeadragon.Viewer,
  image: ImageInfo,
  panelRoot: HTMLElement,
  scope?: OverlayScope,
): OverlayHandle {
  const extent: Extent = [image.width, image.height]; // what is drawn is stored inside the image
  const inScope = (record: AnnotationRecord): boolean => !scope || scope.shows(record);
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
  /** The last answer for the view (its exact counts per label: the legend's where the loaded are a sample). */
  let lastPage: Page | null = null;
  /** Shapes Annotorious holds (selected, being edited or saved, just drawn): the layer leaves them out. */
  const editing = new Set<string>();
  let stale = false;

  const colors = new LabelColors(() => {
    if (destroyed) return;
    restyle();
    panel.updateSwatch();
    panel.recolorLegend();
    renderSelection();
  }, abortAll.signal);
  const layer = new OverlayLayer(viewer, (label, status) => batchStyle(colors.colorOf(label), status));

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
      filterChanged: () => {
        const chosen = annotator.getSelected()[0];
        const record = chosen && cache.entryOf(chosen.id)?.record;
        if (record && !passes(record, panel.filter())) annotator.cancelSelected();
        rebuild();
        updateCount();
        scheduleLoad(); // a crowded view: the sample for what is shown now
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
        rebuildSoon(); // a new entry: the layer draws it once Annotorious lets go of it
        const current = store.getAnnotation(entry.annoId);
        if (!current) return;
        const { id, kind, status, version } = entry.record;
        store.updateAnnotation({ ...current, properties: { id, kind, status, version } }, REMOTE);
      },
      showMessage: (text, kind) => panel.showMessage(text, kind),
      pointRadius: () => pointRadius(),
      editDone: () => {
        releaseIdle();
        rebuildSoon();
        updateCount();
        renderSelection();
      },
    },
    WEB,
    abortAll.signal,
  );
  if (scope) sync.stamp = () => scope.attributes();

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
    if (editing.size > 0) annotator.setStyle((a: ImageAnnotation, state?: AnnotationState) => styleOf(a, state));
    layer.schedule();
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

  /** Entries changed: Annotorious's copies are updated now, the layer's batches before the next frame. */
  function draw(list: Entry[]): void {
    const shapes = list
      .filter((e) => editing.has(e.annoId))
      .map(toAnnotation)
      .filter((a): a is ImageAnnotation => a !== null);
    if (shapes.length > 0) store.bulkUpsertAnnotations(shapes, REMOTE);
    if (list.length > 0) rebuildSoon();
  }

  function undraw(list: Entry[]): void {
    const annoIds = list.map((e) => e.annoId).filter((annoId) => store.getAnnotation(annoId));
    if (annoIds.length > 0) store.bulkDeleteAnnotations(annoIds, REMOTE);
    for (const e of list) editing.delete(e.annoId);
    if (list.length > 0) rebuildSoon();
  }

  function removeShape(annoId: string): void {
    const id = cache.idOf(annoId);
    if (id !== undefined) undraw(cache.forget([id]));
    else if (store.getAnnotation(annoId)) store.deleteAnnotation(annoId, REMOTE);
    editing.delete(annoId);
  }

  // -- the batched layer ----------------------------------------------------------------------------
  /** The layer's batches from what is loaded, shown by the filters and not held by Annotorious. */
  function rebuild(): void {
    stale = false;
    const filter = panel.filter();
    const shapes: Drawable[] = [];
    for (const id of cache.ids()) {
      const entry = cache.get(id);
      if (entry && !editing.has(entry.annoId) && passes(entry.record, filter) && inScope(entry.record)) {
        shapes.push({ key: entry.annoId, record: entry.record });
      }
    }
    layer.set(batchShapes(shapes));
  }

  /** Rebuilds once after the current task (a load draws and undraws several lists). */
  function rebuildSoon(): void {
    if (stale) return;
    stale = true;
    queueMicrotask(() => {
      if (stale && !destroyed) rebuild();
    });
  }

  /** Annotorious's WebGL canvas is shown only while it has something to show (a shape being selected or
   * edited, or a drawing tool): in software rendering, compositing that empty full-view canvas and redrawing
   * it on every frame of a pan cost as much as the tiles. */
  function showAnnotorious(): void {
    annotator.setVisible(visible && (editing.size > 0 || tool !== "select"));
  }

  /** Hands a shape from the layer to Annotorious and selects it (editable when it is a box or exact polygon). */
  function select(annoId: string): void {
    const entry = cache.entryOf(annoId);
    const shape = entry && toAnnotation(entry);
    if (!shape) return;
    editing.add(annoId);
    showAnnotorious();
    store.bulkUpsertAnnotations([shape], REMOTE);
    rebuild();
    annotator.setSelected(annoId, selectAction(shape) === UserSelectAction.EDIT); // raises selectionChanged
  }

  /** Shapes Annotorious no longer needs (deselected, nothing queued, saved) go back to the layer. */
  function releaseIdle(): void {
    const idle = [...editing].filter((annoId) => !isSelected(annoId) && !sync.has(annoId) && cache.entryOf(annoId));
    for (const annoId of idle) editing.delete(annoId);
    showAnnotorious();
    if (idle.length === 0) return;
    store.bulkDeleteAnnotations(
      idle.filter((annoId) => store.getAnnotation(annoId)),
      REMOTE,
    );
    rebuild();
  }

  /** A click (not a drag) with the Select tool: the smallest shape under it, unless Annotorious kept one. */
  const onCanvasClick = (event: OpenSeadragon.CanvasClickEvent): void => {
    if (!event.quick || tool !== "select" || !visible || annotator.getSelected().length > 0) return;
    const item = viewer.world.getItemAt(0);
    const perPixel = screenPixelsPerImagePixel(viewer);
    if (!item || !perPixel) return;
    if (stale) rebuild();
    const at = item.viewerElementToImageCoordinates(event.position);
    const hit = hitTest(layer.batched, at.x, at.y, HIT_SLOP_PX / perPixel, (POINT_DISC_PX + HIT_SLOP_PX) / perPixel);
    if (hit) select(hit);
  };

  /** The pointer over a shape (Select tool): a hand cursor says a click will select it. */
  let hoverFrame: number | null = null;
  const onPointerMove = (event: PointerEvent): void => {
    if (hoverFrame !== null || event.buttons !== 0) return;
    hoverFrame = requestAnimationFrame(() => {
      hoverFrame = null;
      const t = layer.transform();
      let hit: string | null = null;
      if (t && t.scale > 0 && tool === "select" && visible) {
        const box = viewer.canvas.getBoundingClientRect();
        const x = (event.clientX - box.left - t.offsetX) / t.scale;
        const y = (event.clientY - box.top - t.offsetY) / t.scale;
        hit = hitTest(layer.batched, x, y, HIT_SLOP_PX / t.scale, (POINT_DISC_PX + HIT_SLOP_PX) / t.scale);
      }
      viewer.canvas.classList.toggle("gv-over-shape", hit !== null);
    });
  };
  viewer.canvas.addEventListener("pointermove", onPointerMove, { passive: true });

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
    only: () => queryFilter(),
    apply: (page) => {
      lastPage = page;
      const { changed, dropped } = cache.merge(page, pointRadius(), isBusy);
      draw(changed);
      undraw(dropped);
      undraw(cache.evict(page.bbox, isBusy));
      panel.showTruncated(isTruncated(page), page.records.length, page.total ?? null);
    },
    offImage: () => {
      lastPage = null;
      undraw(cache.evict(null, isBusy));
    },
    showMessage: (text) => panel.showMessage(text),
    done: () => updateCount(),
  });

  /** What the server is asked for while some labels, statuses or origins are hidden: then a crowded view's
   * sample is spent on what is shown (hide the other classes, or the model's proposals, to see all of one). */
  function queryFilter(): QueryFilter | undefined {
    const filter = panel.filter();
    const only: QueryFilter = {};
    if (filter.hiddenLabels.size > 0) only.hiddenLabels = [...filter.hiddenLabels].sort();
    if (filter.statuses.size < STATUSES.length) only.statuses = STATUSES.filter((s) => filter.statuses.has(s));
    if (filter.origins.size < ORIGINS.length) only.origins = ORIGINS.filter((o) => filter.origins.has(o));
    return only.hiddenLabels || only.statuses || only.origins ? only : undefined;
  }

  function scheduleLoad(): void {
    if (!destroyed) loader.schedule();
  }

  function renderedIds(): number[] {
    const rect = visibleRect();
    if (!visible || !rect) return [];
    if (stale) rebuild();
    const [x0, y0, x1, y1] = rect;
    const keys = [...keysIn(layer.batched, rect), ...store.getIntersecting(x0, y0, x1 - x0, y1 - y0).map((a) => a.id)];
    return keys.map((annoId) => cache.idOf(annoId)).filter((id): id is number => id !== undefined);
  }

  /** The loaded records overlapping the view. */
  function recordsInView(): AnnotationRecord[] {
    const rect = visibleRect();
    if (!rect) return [];
    const found: AnnotationRecord[] = [];
    for (const id of cache.ids()) {
      const record = cache.get(id)?.record;
      if (record?.bbox && intersects(record.bbox, rect) && inScope(record)) found.push(record);
    }
    return found;
  }

  /** The count and the legend: of what is loaded in view, or the server's exact counts where the loaded
   * are a sample (`legendCounts`); "N in view (M drawn)" then. */
  function updateCount(): void {
    if (!visible) {
      panel.showCount(null);
      panel.renderLegend(new Map());
      return;
    }
    const filter = panel.filter();
    const counts = legendCounts(countByLabel(recordsInView(), filter), lastPage);
    const drawn = renderedIds().length;
    let inView = 0;
    for (const [label, n] of counts) if (!filter.hiddenLabels.has(label)) inView += n;
    const sampled = lastPage !== null && isTruncated(lastPage);
    panel.showCount({ inView: sampled ? Math.max(inView, drawn) : drawn, drawn, loaded: cache.size });
    panel.renderLegend(counts);
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
    editing.add(a.id);
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
      // Read when the edit's turn comes; the shape may be back in the layer by then: this edit's shape.
      const current = store.getAnnotation(a.id) ?? a;
      return geometryChanges(entry.record.kind, current.target.selector, extent);
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
    else editing.delete(a.id);
  }

  // -- selection ------------------------------------------------------------------------------------
  function renderSelection(): void {
    const chosen = annotator.getSelected()[0];
    panel.renderSelection((chosen && cache.entryOf(chosen.id)?.record) ?? null);
  }

  /** A polygon loaded simplified is made editable once its exact geometry is here. */
  function onSelection(chosen: ImageAnnotation[]): void {
    renderSelection();
    // After this event's other listeners (an edit is queued on deselection): give idle shapes back.
    setTimeout(() => {
      if (!destroyed) releaseIdle();
    }, 0);
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
    showAnnotorious();
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
    showAnnotorious();
    layer.setVisible(show);
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
  viewer.addHandler("canvas-click", onCanvasClick);

  setTool("select");
  listLabels(abortAll.signal)
    .then((found) => {
      classes = found;
      colors.setClasses(found);
      panel.renderClasses(classes);
      restyle();
      updateCount();
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
    drawn: () => {
      const out: ReturnType<OverlayHandle["drawn"]> = {};
      if (stale) rebuild();
      const keys = new Set([...layer.batched.keys, ...editing]);
      for (const annoId of keys) {
        const entry = cache.entryOf(annoId);
        if (!entry) continue;
        const { id, kind, status, label } = entry.record;
        const rings = kind === "point" ? 0 : (ringsOf(entry.record)?.length ?? 0);
        out[id] = { kind, rings, status, label, editing: editing.has(annoId) };
      }
      return out;
    },
    recordOf: (id) => cache.get(id)?.record ?? null,
    frameStats: () => ({
      frames: layer.frames,
      lastDrawMs: layer.lastDrawMs,
      renders: layer.renders,
      offThread: layer.offThread,
    }),
    visibleRect,
    rescope: () => {
      const chosen = annotator.getSelected()[0];
      const record = chosen && cache.entryOf(chosen.id)?.record;
      if (record && !inScope(record)) annotator.cancelSelected();
      rebuild();
      updateCount();
    },
    destroy: () => {
      destroyed = true;
      sync.stop();
      loader.stop();
      abortAll.abort();
      document.removeEventListener("keydown", onKey);
      for (const name of ["open", "viewport-change", "resize"] as const) viewer.removeHandler(name, onViewport);
      viewer.removeHandler("canvas-click", onCanvasClick);
      viewer.canvas.removeEventListener("pointermove", onPointerMove);
      if (hoverFrame !== null) cancelAnimationFrame(hoverFrame);
      layer.destroy();
      annotator.destroy();
      panel.clear();
    },
  };
}
