// The annotation overlay: Annotorious (W3C annotation model, WebGL rendering) over the OpenSeadragon
// viewer, fed by viewport queries so that images with millions of annotations stay interactive.
//
// Loading: after the view has been still for DEBOUNCE_MS, the visible level-0 rectangle is queried
// (`bbox`), with `simplify` = one screen pixel in level-0 units (polygons come back simplified when
// zoomed out) and `limit` = VIEWPORT_LIMIT; when the limit is hit a notice asks to zoom in. Results
// are cached by annotation id (a newer version replaces an older one, a finer simplification a coarser
// one); annotations more than one view away from the visible rectangle are dropped, and at most
// MAX_CACHED are kept, so memory stays bounded however far one pans.
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
  ApiError,
  createAnnotations,
  deleteAnnotation,
  getAnnotation,
  listAnnotations,
  listLabels,
  STATUSES,
  updateAnnotation,
  type AnnotationRecord,
  type AnnotationStatus,
  type BBox,
  type ImageInfo,
  type LabelClass,
} from "./api";
import { el } from "./dom";
import { screenPixelsPerImagePixel } from "./scalebar";
import { bboxOf, geometryChanges, intersects, newAnnotation, RESHAPEABLE, shapeOf } from "./shapes";

/** Most annotations one viewport query returns. */
export const VIEWPORT_LIMIT = 2000;
/** Most annotations held in memory (the visible ones are never dropped). */
export const MAX_CACHED = 4 * VIEWPORT_LIMIT;
const DEBOUNCE_MS = 200;
/** Points are drawn as discs of this many screen pixels (radius) at the zoom they were loaded at. */
const POINT_RADIUS_PX = 4;
const TAG_LIMIT = 500;
/** Who edits, until the server has users: recorded as `source` of new annotations and as the actor. */
const WEB = "web";

const FALLBACK_COLORS = ["#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6"];
const HEX_COLOR = /^#(?:[0-9a-f]{3}|[0-9a-f]{6})$/i;

type Store = OpenSeadragonAnnotator["state"]["store"] & {
  getIntersecting(x: number, y: number, width: number, height: number): ImageAnnotation[];
};
type Origin = NonNullable<Parameters<Store["deleteAnnotation"]>[1]>;
/** Changes made by this module (not by the user): Annotorious raises no lifecycle events for them. */
const REMOTE = "REMOTE" as unknown as Origin;

interface Entry {
  record: AnnotationRecord;
  /** Id of the shape in Annotorious (`a{id}` when loaded, a random id when drawn here). */
  annoId: string;
  /** Simplification tolerance the geometry was loaded with (0: exact). */
  tolerance: number;
  /** Radius of a point's disc, level-0 px. */
  radius: number;
  /** When this page last created, changed or reloaded it (performance.now()). */
  changedAt: number;
}

export interface ViewportQuery {
  bbox: BBox;
  simplify: number;
  limit: number;
  count: number;
  truncated: boolean;
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
  /** The visible level-0 rectangle, clamped to the image. */
  visibleRect: () => BBox | null;
  destroy: () => void;
}

function colorFor(label: string, classes: Record<string, LabelClass>): `#${string}` {
  const declared = classes[label]?.color;
  if (declared && HEX_COLOR.test(declared)) return declared as `#${string}`;
  let hash = 0;
  for (const ch of label) hash = (hash * 31 + (ch.codePointAt(0) ?? 0)) >>> 0;
  return (FALLBACK_COLORS[hash % FALLBACK_COLORS.length] ?? "#ff0000") as `#${string}`;
}

function messageOf(err: unknown): string {
  if (err instanceof ApiError) return err.message;
  return err instanceof Error ? err.message : String(err);
}

function isAbort(err: unknown): boolean {
  return err instanceof DOMException && err.name === "AbortError";
}

function typingInto(target: EventTarget | null): boolean {
  return (
    target instanceof HTMLInputElement ||
    target instanceof HTMLSelectElement ||
    target instanceof HTMLTextAreaElement ||
    (target instanceof HTMLElement && target.isContentEditable)
  );
}

const integer = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });

/** Attaches the overlay and its side panel (rendered into `panel`) to an open viewer. */
export function attachOverlay(viewer: OpenSeadragon.Viewer, image: ImageInfo, panel: HTMLElement): OverlayHandle {
  const annotator = createOSDAnnotator(viewer, {
    drawingEnabled: false,
    drawingMode: "drag",
    theme: "dark",
    userSelectAction: (a: ImageAnnotation) => selectAction(a),
    style: (a: ImageAnnotation, state?: AnnotationState) => styleOf(a, state),
  });
  const store = annotator.state.store as Store;

  const entries = new Map<number, Entry>();
  const byAnno = new Map<string, number>();
  const queues = new Map<string, Promise<void>>();
  let inFlight = 0;
  let classes: Record<string, LabelClass> = {};
  let visible = true;
  let destroyed = false;
  let loadTimer: ReturnType<typeof setTimeout> | null = null;
  let loadAbort: AbortController | null = null;
  let loading = false;
  let loads = 0;
  let lastQuery: ViewportQuery | null = null;
  let tool: "select" | "rectangle" | "polygon" = "select";
  const abortAll = new AbortController();

  // -- panel ----------------------------------------------------------------------------------------
  const toggle = el(
    "button",
    { type: "button", class: "panel-toggle", "data-testid": "overlay-toggle", "aria-pressed": "true" },
    "Annotations shown",
  );
  const picker = el("select", { "data-testid": "label-picker", "aria-label": "Label for new annotations" });
  const freeLabel = el("input", {
    type: "text",
    "data-testid": "label-input",
    "aria-label": "Label for new annotations",
    maxlength: "256",
    value: "object",
    hidden: "",
  });
  const swatch = el("span", { class: "swatch", "aria-hidden": "true" });
  const toolButton = (tool: string, testid: string, title: string, text: string): HTMLButtonElement =>
    el("button", { type: "button", "data-tool": tool, "data-testid": testid, title }, text);
  const toolButtons = {
    select: toolButton("select", "tool-select", "Select and pan (V, Esc)", "Select"),
    rectangle: toolButton("rectangle", "tool-box", "Draw boxes: press, drag, release (B)", "Box"),
    polygon: toolButton("polygon", "tool-polygon", "Draw polygons: click each corner, then the first (P)", "Polygon"),
  };
  const count = el("p", { class: "panel-count", "data-testid": "overlay-count", "aria-live": "polite" }, "Loading…");
  const notice = el("p", { class: "panel-notice", "data-testid": "overlay-notice", role: "status", hidden: "" });
  const message = el("p", { class: "panel-message", "data-testid": "overlay-message", role: "alert", hidden: "" });
  const details = el("dl", { class: "details" });
  const statusPicker = el("select", { "data-testid": "status-picker", "aria-label": "Status" });
  for (const status of STATUSES) statusPicker.append(el("option", { value: status }, status));
  const relabel = el(
    "button",
    { type: "button", "data-testid": "relabel", title: "Give the selected annotation the picked label" },
    "Use picked label",
  );
  const remove = el(
    "button",
    { type: "button", class: "danger", "data-testid": "delete-annotation", title: "Delete the selection (Del)" },
    "Delete",
  );
  const selection = el(
    "section",
    { class: "panel-section", "data-testid": "selection", hidden: "" },
    el("h2", {}, "Selected"),
    details,
    el("label", { class: "row" }, "Status ", statusPicker),
    el("div", { class: "row" }, relabel, remove),
  );
  const tagList = el("ul", { class: "tags", "data-testid": "tag-list" });
  const addTag = el(
    "button",
    { type: "button", "data-testid": "add-tag", title: "Tag the whole image with the picked label" },
    "Tag image with picked label",
  );

  panel.replaceChildren(
    el("div", { class: "panel-section" }, toggle),
    el(
      "div",
      { class: "panel-section" },
      el("label", { class: "row" }, swatch, "Label ", picker, freeLabel),
      el(
        "div",
        { class: "row", role: "toolbar", "aria-label": "Drawing tools" },
        toolButtons.select,
        toolButtons.rectangle,
        toolButtons.polygon,
      ),
    ),
    el("div", { class: "panel-section" }, count, notice, message),
    selection,
    el("section", { class: "panel-section" }, el("h2", {}, "Image tags"), tagList, addTag),
    el("p", { class: "panel-hint" }, "Keys: B box · P polygon · V / Esc select · Del delete · H hide"),
  );

  function pickedLabel(): string {
    return Object.keys(classes).length > 0 ? picker.value : freeLabel.value.trim();
  }

  function showMessage(text: string, kind: "error" | "conflict" | "info" = "error"): void {
    message.textContent = text;
    message.dataset["kind"] = kind;
    message.hidden = false;
  }

  function clearMessage(): void {
    message.hidden = true;
    message.textContent = "";
  }

  function updateSwatch(): void {
    swatch.style.backgroundColor = colorFor(pickedLabel(), classes);
  }

  function renderClasses(): void {
    const names = Object.keys(classes).sort((a, b) => a.localeCompare(b));
    picker.replaceChildren(...names.map((name) => el("option", { value: name }, name)));
    const drawable = names.find((name) => classes[name]?.kind !== "tag");
    if (drawable) picker.value = drawable;
    picker.hidden = names.length === 0;
    freeLabel.hidden = names.length > 0;
    updateSwatch();
  }

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
    const label = a.bodies[0]?.value ?? pickedLabel();
    const color = colorFor(label, classes);
    const status = a.properties?.["status"] as AnnotationStatus | undefined;
    let fillOpacity = 0.15;
    let strokeOpacity = 1;
    if (status === "accepted" || status === "adjudicated") fillOpacity = 0.35;
    else if (status === "rejected") {
      fillOpacity = 0;
      strokeOpacity = 0.45;
    } else if (status === undefined) fillOpacity = 0.04; // drawn, not saved yet
    const emphasis = Boolean(state?.selected || state?.hovered);
    return {
      stroke: color,
      fill: color,
      strokeOpacity,
      fillOpacity: emphasis ? Math.min(fillOpacity + 0.15, 1) : fillOpacity,
      // Width 1 is drawn as native lines that need no re-tessellation when zooming (thousands of shapes).
      strokeWidth: emphasis ? 2 : 1,
    };
  }

  function selectAction(a: ImageAnnotation): UserSelectAction {
    const id = byAnno.get(a.id);
    const entry = id === undefined ? undefined : entries.get(id);
    if (!entry) return UserSelectAction.SELECT;
    const reshapeable = RESHAPEABLE.has(entry.record.kind) && entry.tolerance === 0;
    return reshapeable ? UserSelectAction.EDIT : UserSelectAction.SELECT;
  }

  function isSelected(annoId: string): boolean {
    return annotator.state.selection.isSelected(annoId);
  }

  function isBusy(annoId: string): boolean {
    return queues.has(annoId) || isSelected(annoId);
  }

  function upsertShapes(list: Entry[]): void {
    const shapes = list.map(toAnnotation).filter((a): a is ImageAnnotation => a !== null);
    if (shapes.length > 0) store.bulkUpsertAnnotations(shapes, REMOTE);
  }

  function forget(ids: number[]): void {
    const annoIds: string[] = [];
    for (const id of ids) {
      const entry = entries.get(id);
      if (!entry) continue;
      entries.delete(id);
      byAnno.delete(entry.annoId);
      if (store.getAnnotation(entry.annoId)) annoIds.push(entry.annoId);
    }
    if (annoIds.length > 0) store.bulkDeleteAnnotations(annoIds, REMOTE);
  }

  function removeShape(annoId: string): void {
    const id = byAnno.get(annoId);
    if (id !== undefined) forget([id]);
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

  function scheduleLoad(): void {
    if (destroyed) return;
    if (loadTimer !== null) clearTimeout(loadTimer);
    loadTimer = setTimeout(() => {
      loadTimer = null;
      void loadViewport();
    }, DEBOUNCE_MS);
  }

  async function loadViewport(): Promise<void> {
    loadAbort?.abort();
    const rect = visibleRect();
    if (!visible || !rect) {
      loadAbort = null;
      loading = false;
      if (rect === null) {
        // Panned or zoomed off the image: nothing can be in view.
        evict(null);
        lastQuery = null;
      }
      updateCount();
      return;
    }
    const perPixel = screenPixelsPerImagePixel(viewer);
    const tolerance = perPixel ? 1 / perPixel : 0;
    // Below one level-0 pixel per screen pixel there is nothing to simplify: exact geometry.
    const simplify = tolerance < 1 ? 0 : Number(tolerance.toPrecision(3));
    const bbox: BBox = [rect[0], rect[1], rect[2], rect[3]].map((v) => Math.round(v * 100) / 100) as BBox;
    const abort = new AbortController();
    loadAbort = abort;
    loading = true;
    const startedAt = performance.now();
    try {
      const records = await listAnnotations(image.id, { bbox, limit: VIEWPORT_LIMIT, simplify }, abort.signal);
      if (abort.signal.aborted || destroyed) return;
      const truncated = records.length >= VIEWPORT_LIMIT;
      merge(records, bbox, simplify, truncated, startedAt);
      evict(bbox);
      lastQuery = { bbox, simplify, limit: VIEWPORT_LIMIT, count: records.length, truncated };
      loads += 1;
      notice.hidden = !truncated;
      notice.textContent = truncated
        ? `Showing ${integer.format(records.length)} of many annotations here — zoom in to see them all.`
        : "";
    } catch (err) {
      if (isAbort(err) || destroyed) return;
      showMessage(`Could not load annotations: ${messageOf(err)}`);
    } finally {
      if (loadAbort === abort) {
        loadAbort = null;
        loading = false;
        updateCount();
      }
    }
  }

  function merge(
    records: AnnotationRecord[],
    bbox: BBox,
    simplify: number,
    truncated: boolean,
    startedAt: number,
  ): void {
    const changed: Entry[] = [];
    const returned = new Set<number>();
    const radius = pointRadius();
    // The server simplifies polygons only: everything else is exact whatever the zoom.
    const toleranceOf = (record: AnnotationRecord): number => (record.kind === "polygon" ? simplify : 0);
    for (const record of records) {
      if (record.kind === "tag") continue;
      returned.add(record.id);
      const known = entries.get(record.id);
      if (!known) {
        const entry: Entry = { record, annoId: `a${record.id}`, tolerance: toleranceOf(record), radius, changedAt: 0 };
        entries.set(record.id, entry);
        byAnno.set(entry.annoId, record.id);
        changed.push(entry);
        continue;
      }
      // Being edited here, or changed here after this query was sent: never overwritten by it.
      if (isBusy(known.annoId) || known.changedAt > startedAt) continue;
      const newer = record.version > known.record.version;
      const finer =
        record.version === known.record.version && record.kind === "polygon" && simplify < known.tolerance / 2;
      const resized = record.kind === "point" && Math.abs(Math.log(radius / known.radius)) > Math.log(1.5);
      if (newer || finer || resized) {
        known.record = record;
        known.tolerance = toleranceOf(record);
        known.radius = radius;
        changed.push(known);
      }
    }
    upsertShapes(changed);
    if (!truncated) {
      // Everything in this rectangle came back: what we hold there and did not get was deleted elsewhere.
      const gone = [...entries.values()]
        .filter(
          (e) =>
            e.record.bbox &&
            intersects(e.record.bbox, bbox) &&
            !returned.has(e.record.id) &&
            !isBusy(e.annoId) &&
            e.changedAt < startedAt,
        )
        .map((e) => e.record.id);
      forget(gone);
    }
  }

  /** Drops annotations more than one view away from `view` (all when null), then the farthest beyond MAX_CACHED. */
  function evict(view: BBox | null): void {
    const candidates = [...entries.values()].filter((e) => !isBusy(e.annoId));
    if (view === null) {
      forget(candidates.map((e) => e.record.id));
      return;
    }
    const [x0, y0, x1, y1] = view;
    const w = x1 - x0;
    const h = y1 - y0;
    const keep: BBox = [x0 - w, y0 - h, x1 + w, y1 + h];
    const far = candidates.filter((e) => !e.record.bbox || !intersects(e.record.bbox, keep));
    forget(far.map((e) => e.record.id));
    if (entries.size > MAX_CACHED) {
      const cx = (x0 + x1) / 2;
      const cy = (y0 + y1) / 2;
      const distance = (e: Entry): number => {
        const b = e.record.bbox ?? [cx, cy, cx, cy];
        return Math.hypot((b[0] + b[2]) / 2 - cx, (b[1] + b[3]) / 2 - cy);
      };
      const movable = [...entries.values()]
        .filter((e) => !isBusy(e.annoId) && !(e.record.bbox && intersects(e.record.bbox, view)))
        .sort((a, b) => distance(b) - distance(a));
      forget(movable.slice(0, entries.size - MAX_CACHED).map((e) => e.record.id));
    }
  }

  function renderedIds(): number[] {
    const rect = visibleRect();
    if (!visible || !rect) return [];
    const [x0, y0, x1, y1] = rect;
    return store
      .getIntersecting(x0, y0, x1 - x0, y1 - y0)
      .map((a) => byAnno.get(a.id))
      .filter((id): id is number => id !== undefined);
  }

  function updateCount(): void {
    if (!visible) {
      count.textContent = "Annotations hidden";
      return;
    }
    const inView = renderedIds().length;
    count.textContent = `${integer.format(inView)} in view · ${integer.format(entries.size)} loaded`;
    count.dataset["inView"] = String(inView);
    count.dataset["loaded"] = String(entries.size);
  }

  // -- edits ----------------------------------------------------------------------------------------
  /** Runs edits of one annotation one after the other (a PATCH waits for the POST that created it). */
  function enqueue(annoId: string, task: () => Promise<void>): void {
    inFlight += 1;
    const previous = queues.get(annoId) ?? Promise.resolve();
    const next = previous
      .then(task)
      .catch((err: unknown) => {
        if (!destroyed) showMessage(messageOf(err));
      })
      .finally(() => {
        inFlight -= 1;
        if (queues.get(annoId) === next) queues.delete(annoId);
        if (!destroyed) {
          updateCount();
          renderSelection();
        }
      });
    queues.set(annoId, next);
  }

  /** After a 409 (or to get exact geometry): the annotation as stored now, or gone. */
  async function reload(id: number): Promise<Entry | null> {
    try {
      const record = await getAnnotation(id, abortAll.signal);
      const entry = entries.get(id);
      if (!entry) return null;
      entry.record = record;
      entry.tolerance = 0;
      entry.radius = pointRadius();
      entry.changedAt = performance.now();
      upsertShapes([entry]);
      return entry;
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) {
        forget([id]);
        return null;
      }
      throw err;
    }
  }

  /** What to do with an edit the server refused. */
  async function refused(id: number, err: unknown): Promise<void> {
    if (err instanceof ApiError && err.status === 409) {
      const entry = await reload(id);
      showMessage(
        entry
          ? `Annotation ${id} was changed by someone else — reloaded. Your edit was not saved; ` +
              "apply it again if it is still needed."
          : `Annotation ${id} was deleted by someone else.`,
        "conflict",
      );
      return;
    }
    if (err instanceof ApiError && err.status === 404) {
      forget([id]);
      showMessage(`Annotation ${id} was deleted by someone else.`, "conflict");
      return;
    }
    const entry = entries.get(id);
    if (entry) upsertShapes([entry]); // back to what the server has
    showMessage(messageOf(err));
  }

  function onCreated(a: ImageAnnotation): void {
    const label = pickedLabel();
    const payload = label ? newAnnotation(a.target.selector, label, WEB) : null;
    if (!payload) {
      store.deleteAnnotation(a.id, REMOTE);
      showMessage(label ? "This shape cannot be stored." : "Pick or type a label first.");
      return;
    }
    // Saved and deselected at once: the next drag draws the next shape. Click it to edit.
    store.updateAnnotation(
      { ...a, bodies: [{ id: `${a.id}#label`, annotation: a.id, purpose: "classifying", value: label }] },
      REMOTE,
    );
    annotator.cancelSelected();
    enqueue(a.id, async () => {
      let ids: number[];
      try {
        ids = await createAnnotations(image.id, [payload], WEB);
      } catch (err) {
        removeShape(a.id);
        throw err;
      }
      const id = ids[0];
      if (id === undefined) return;
      const current = store.getAnnotation(a.id);
      const record: AnnotationRecord = {
        id,
        version: 1,
        kind: payload.kind,
        label,
        bbox: bboxOf(payload),
        geometry: payload.geometry ?? null,
        mask: null,
        score: null,
        source: WEB,
        status: "proposed",
        attributes: {},
      };
      const entry: Entry = { record, annoId: a.id, tolerance: 0, radius: pointRadius(), changedAt: performance.now() };
      entries.set(id, entry);
      byAnno.set(a.id, id);
      if (current) {
        store.updateAnnotation(
          { ...current, properties: { id, kind: record.kind, status: record.status, version: 1 } },
          REMOTE,
        );
      }
    });
  }

  function onUpdated(a: ImageAnnotation, previous: ImageAnnotation | undefined): void {
    if (previous && JSON.stringify(a.target.selector) === JSON.stringify(previous.target.selector)) return;
    enqueue(a.id, async () => {
      const id = byAnno.get(a.id);
      const entry = id === undefined ? undefined : entries.get(id);
      const current = store.getAnnotation(a.id);
      if (id === undefined || !entry || !current) return; // not saved (creation failed) or deleted since
      const changes = geometryChanges(entry.record.kind, current.target.selector);
      if (!changes) return;
      if ("bbox" in changes && JSON.stringify(changes.bbox) === JSON.stringify(entry.record.bbox)) return;
      if ("geometry" in changes && JSON.stringify(changes.geometry) === JSON.stringify(entry.record.geometry)) return;
      try {
        entry.record = await updateAnnotation(id, entry.record.version, changes, WEB);
        entry.tolerance = 0;
        entry.changedAt = performance.now();
        upsertShapes([entry]);
      } catch (err) {
        await refused(id, err);
      }
    });
  }

  function patch(annoId: string, changes: Parameters<typeof updateAnnotation>[2]): void {
    clearMessage();
    enqueue(annoId, async () => {
      const id = byAnno.get(annoId);
      const entry = id === undefined ? undefined : entries.get(id);
      if (id === undefined || !entry) return;
      try {
        entry.record = await updateAnnotation(id, entry.record.version, changes, WEB);
        entry.changedAt = performance.now();
        upsertShapes([entry]);
      } catch (err) {
        await refused(id, err);
      }
    });
  }

  function destroyOnServer(annoId: string): void {
    enqueue(annoId, async () => {
      const id = byAnno.get(annoId);
      const entry = id === undefined ? undefined : entries.get(id);
      if (id === undefined || !entry) {
        removeShape(annoId);
        return;
      }
      try {
        await deleteAnnotation(id, entry.record.version, WEB);
        forget([id]);
      } catch (err) {
        await refused(id, err);
      }
    });
  }

  function deleteSelected(): void {
    const chosen = annotator.getSelected().map((a) => a.id);
    if (chosen.length === 0) return;
    clearMessage();
    annotator.cancelSelected();
    for (const annoId of chosen) destroyOnServer(annoId);
  }

  /** Annotorious deleted a shape itself (e.g. Ctrl+Z of a drawing): delete it on the server too. */
  function onDeleted(a: ImageAnnotation): void {
    if (byAnno.has(a.id) || queues.has(a.id)) destroyOnServer(a.id);
  }

  // -- selection ------------------------------------------------------------------------------------
  function renderSelection(): void {
    const chosen = annotator.getSelected()[0];
    const id = chosen ? byAnno.get(chosen.id) : undefined;
    const entry = id === undefined ? undefined : entries.get(id);
    if (!chosen || !entry) {
      selection.hidden = true;
      details.replaceChildren();
      return;
    }
    const { record } = entry;
    const item = (term: string, value: Node | string): HTMLElement[] => [el("dt", {}, term), el("dd", {}, value)];
    const labelSwatch = el("span", { class: "swatch", "aria-hidden": "true" });
    labelSwatch.style.backgroundColor = colorFor(record.label, classes);
    details.replaceChildren(
      ...item("Label", el("span", { "data-testid": "selected-label" }, labelSwatch, record.label)),
      ...item("Kind", record.kind),
      ...item("Source", record.source),
      ...(record.score === null ? [] : item("Score", record.score.toFixed(3))),
      ...item("Id", `${record.id} (version ${record.version})`),
    );
    statusPicker.value = record.status;
    selection.hidden = false;
    selection.dataset["annotationId"] = String(record.id);
  }

  /** A polygon loaded simplified is made editable once its exact geometry is here. */
  function onSelection(chosen: ImageAnnotation[]): void {
    renderSelection();
    for (const a of chosen) {
      const id = byAnno.get(a.id);
      const entry = id === undefined ? undefined : entries.get(id);
      if (id === undefined || !entry || entry.tolerance === 0 || !RESHAPEABLE.has(entry.record.kind)) continue;
      enqueue(a.id, async () => {
        const exact = await reload(id);
        if (exact && isSelected(a.id)) annotator.setSelected(a.id, true);
      });
    }
  }

  // -- tags -----------------------------------------------------------------------------------------
  async function loadTags(): Promise<void> {
    const tagClasses = Object.entries(classes)
      .filter(([, c]) => c.kind === "tag")
      .map(([name]) => name);
    if (tagClasses.length === 0) {
      tagList.replaceChildren(el("li", { class: "muted" }, "No tag classes in the label schema."));
      return;
    }
    const records = await listAnnotations(image.id, { labels: tagClasses, limit: TAG_LIMIT }, abortAll.signal);
    const tags = records.filter((r) => r.kind === "tag");
    if (tags.length === 0) {
      tagList.replaceChildren(el("li", { class: "muted" }, "No tags on this image."));
      return;
    }
    tagList.replaceChildren(
      ...tags.map((tag) => {
        const dot = el("span", { class: "swatch", "aria-hidden": "true" });
        dot.style.backgroundColor = colorFor(tag.label, classes);
        const drop = el("button", { type: "button", class: "link", "aria-label": `Delete tag ${tag.label}` }, "×");
        drop.addEventListener("click", () => {
          clearMessage();
          deleteAnnotation(tag.id, tag.version, WEB).then(
            () => loadTags(),
            (err: unknown) => {
              showMessage(messageOf(err));
              return loadTags();
            },
          );
        });
        return el(
          "li",
          { "data-testid": "tag", "data-status": tag.status },
          dot,
          el("span", { class: "tag-label" }, tag.label),
          el("span", { class: `status status-${tag.status}` }, tag.status),
          drop,
        );
      }),
    );
  }

  // -- wiring ---------------------------------------------------------------------------------------
  function setTool(next: typeof tool): void {
    tool = next;
    for (const [name, button] of Object.entries(toolButtons)) {
      button.setAttribute("aria-pressed", String(name === next));
    }
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
    toggle.setAttribute("aria-pressed", String(show));
    toggle.textContent = show ? "Annotations shown" : "Annotations hidden";
    panel.dataset["overlay"] = show ? "shown" : "hidden";
    if (!show) {
      annotator.cancelSelected();
      if (tool !== "select") setTool("select");
      notice.hidden = true;
    }
    updateCount();
    if (show) scheduleLoad();
  }

  toggle.addEventListener("click", () => setVisible(!visible));
  for (const [name, button] of Object.entries(toolButtons)) {
    button.addEventListener("click", () => setTool(name as typeof tool));
  }
  picker.addEventListener("change", updateSwatch);
  freeLabel.addEventListener("input", updateSwatch);
  remove.addEventListener("click", deleteSelected);
  relabel.addEventListener("click", () => {
    const chosen = annotator.getSelected()[0];
    const label = pickedLabel();
    if (chosen && label) patch(chosen.id, { label });
  });
  statusPicker.addEventListener("change", () => {
    const chosen = annotator.getSelected()[0];
    if (chosen) patch(chosen.id, { status: statusPicker.value as AnnotationStatus });
  });
  addTag.addEventListener("click", () => {
    const label = pickedLabel();
    if (!label) return;
    clearMessage();
    createAnnotations(image.id, [{ kind: "tag", label, source: WEB }], WEB).then(
      () => loadTags(),
      (err: unknown) => showMessage(messageOf(err)),
    );
  });

  const onKey = (event: KeyboardEvent): void => {
    if (event.ctrlKey || event.metaKey || event.altKey || typingInto(event.target)) return;
    if (event.key === "Delete" || event.key === "Backspace") {
      // The polygon editor uses these keys for selected corners (and says so with preventDefault).
      if (!event.defaultPrevented && annotator.getSelected().length > 0) {
        event.preventDefault();
        deleteSelected();
      }
      return;
    }
    const key = event.key.toLowerCase();
    if (key === "escape" || key === "v") {
      setTool("select");
      annotator.cancelSelected();
    } else if (key === "b") setTool("rectangle");
    else if (key === "p") setTool("polygon");
    else if (key === "h") setVisible(!visible);
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
      renderClasses();
      if (entries.size > 0) annotator.setStyle((a: ImageAnnotation, state?: AnnotationState) => styleOf(a, state));
      return loadTags();
    })
    .catch((err: unknown) => {
      if (!isAbort(err) && !destroyed) showMessage(`Could not load the label schema: ${messageOf(err)}`);
    });
  if (viewer.world.getItemCount() > 0) scheduleLoad();

  return {
    annotator,
    loads: () => loads,
    lastQuery: () => lastQuery,
    settled: () => {
      if (loadTimer !== null || loading || inFlight > 0) return false;
      const rect = visibleRect();
      if (!visible || !rect) return true;
      const q = lastQuery;
      return q !== null && q.bbox.every((v, i) => Math.abs(v - (rect[i] ?? NaN)) <= 1);
    },
    loadedIds: () => [...entries.keys()],
    renderedIds,
    visibleRect,
    destroy: () => {
      destroyed = true;
      if (loadTimer !== null) clearTimeout(loadTimer);
      loadAbort?.abort();
      abortAll.abort();
      document.removeEventListener("keydown", onKey);
      for (const name of ["open", "viewport-change", "resize"] as const) viewer.removeHandler(name, onViewport);
      annotator.destroy();
      panel.replaceChildren();
    },
  };
}
