// The review inbox (#/review?filters): one task at a time, the image zoomed to the task's region with context and
// the model's proposal drawn over it; keyboard-first (review-keys.ts). The next task and its image's metadata
// and tiles are fetched while the expert looks at the current one (review-queue.ts), so an answer is followed
// by the next task at once. A task someone else answered first (409) shows their answer.

import OpenSeadragon from "openseadragon";

import {
  ApiError,
  getImage,
  listLabels,
  type AnnotationRecord,
  type ImageInfo,
  type LabelClass,
  type NewAnnotation,
} from "./api";
import { el } from "./dom";
import { typingInto } from "./keys";
import {
  AnsweredElsewhere,
  answerTask,
  getTask,
  listModels,
  nextTask,
  reviewCounts,
  type ReviewAnswer,
  type ReviewCounts,
  type ReviewFilters,
  type ReviewTask,
} from "./review-api";
import { drawShapes, tileSourceOf } from "./review-draw";
import type { ProposalEditor } from "./review-edit";
import { bandOf, parseFilters, REASONS, reviewHash, SCORE_BANDS } from "./review-filters";
import { contextRect, imageHash, regionLabel, taskRegion, tilesFor } from "./review-geometry";
import { REVIEW_KEYS_HINT, reviewActionOf, type ReviewAction } from "./review-keys";
import { TaskQueue } from "./review-queue";
import { toolbar, viewerOptions } from "./viewer";

declare global {
  interface Window {
    /** Test hook: the inbox's viewer, the task shown, and how long each switch to the next task took (ms). */
    __gvReview?: {
      viewer: OpenSeadragon.Viewer;
      taskId: () => number | null;
      /** The task whose region is in view with its proposal drawn (null: none yet, or the end). */
      shown: number | null;
      switches: number[];
      tilesLoaded: number[];
    };
  }
}

const fmt = new Intl.NumberFormat("en-US", { maximumFractionDigits: 3 });

function describe(decision: string | null, by: string | null, at: string | null): string {
  const when = at ? ` at ${at.replace("T", " ").slice(0, 19)}` : "";
  return `${decision ?? "answered"} by ${by ?? "someone"}${when}`;
}

/** Renders the inbox into `root` with the filters of the hash query; returns a function that tears it down. */
export function showReview(root: HTMLElement, query: string): () => void {
  const abort = new AbortController();
  const filters = parseFilters(query);
  const images = new Map<string, Promise<ImageInfo>>();
  const warmed = new Set<string>();
  let labels: string[] = [];
  let classes: Record<string, LabelClass> = {};
  let picked: string | null = null;
  let editing = false;
  let editor: ProposalEditor | null = null;
  let busy = false;
  /** Answers sent and not yet confirmed (the next task is shown without waiting for them). */
  const inFlight = new Set<Promise<ReviewTask>>();
  let answeredHere = 0;
  let openImage: string | null = null;
  let proposalOverlay: Element | null = null;

  // -- the page --------------------------------------------------------------------------------------
  const counts = el("span", { class: "count", "data-testid": "review-counts" }, "…");
  const filterBar = buildFilterBar(filters);
  const container = el("div", { class: "viewer", "data-testid": "review-viewer" });
  const card = el("dl", { class: "details", "data-testid": "review-task" });
  const state = el("p", { class: "panel-count", "data-testid": "review-state", "aria-live": "polite" });
  const conflict = el("p", { class: "panel-message conflict", role: "alert", "data-testid": "review-conflict", hidden: "" });
  const labelList = el("ol", { class: "review-labels", "data-testid": "review-labels" });
  const open = el("a", { class: "review-open", "data-testid": "review-open-viewer" }, "Open in the viewer");
  const buttons = {
    accept: actionButton("Accept", "A", "review-accept", { type: "accept" }),
    reject: actionButton("Reject", "R", "review-reject", { type: "reject" }),
    edit: actionButton("Edit", "E", "review-edit", { type: "edit" }),
    save: actionButton("Save correction", "Enter", "review-save", { type: "save" }),
    cancel: actionButton("Cancel", "Esc", "review-cancel", { type: "cancel" }),
    labelled: actionButton("Store label", "L", "review-labelled", { type: "labelled" }),
    previous: actionButton("Previous", "P", "review-previous", { type: "previous" }),
    next: actionButton("Next", "N", "review-next", { type: "next" }),
  };
  const side = el(
    "aside",
    { class: "panel review-panel", "aria-label": "Review task" },
    el("section", { class: "panel-section" }, state, card, conflict),
    el(
      "section",
      { class: "panel-section" },
      el("div", { class: "row review-actions" }, buttons.accept, buttons.reject, buttons.edit),
      el("div", { class: "row review-actions" }, buttons.save, buttons.cancel, buttons.labelled),
      el("div", { class: "row review-actions" }, buttons.previous, buttons.next),
    ),
    el("section", { class: "panel-section" }, el("h2", {}, "Labels (1–9)"), labelList),
    el("section", { class: "panel-section" }, open),
    el("p", { class: "panel-hint" }, REVIEW_KEYS_HINT),
  );
  root.replaceChildren(
    el("header", { class: "bar" }, el("h1", {}, "Review"), counts),
    filterBar.node,
    el("div", { class: "stage" }, container, side),
  );
  document.title = "Review — gigavision";

  // immediateRender: draw the level the view needs at once (its tiles were fetched ahead with the task) rather
  // than the coarser levels first, which nobody fetched ahead.
  const viewer = OpenSeadragon({ ...viewerOptions(container), animationTime: 0.3, immediateRender: true });
  container.append(toolbar(viewer));
  const hook: NonNullable<Window["__gvReview"]> = {
    viewer,
    taskId: () => queue.current?.id ?? null,
    shown: null,
    switches: [],
    tilesLoaded: [],
  };
  window.__gvReview = hook;

  // -- tasks ------------------------------------------------------------------------------------------
  function imageOf(id: string): Promise<ImageInfo> {
    let found = images.get(id);
    if (!found) {
      found = getImage(id, abort.signal);
      found.catch(() => images.delete(id));
      images.set(id, found);
    }
    return found;
  }

  /** Fetches the next task's image metadata and the tiles it will show, into the browser's cache. */
  function warm(task: ReviewTask): void {
    imageOf(task.image_id).then(
      (image) => {
        const rect = contextRect(taskRegion(task), image.width, image.height);
        const key = `${image.id}:${rect.join(",")}`;
        if (warmed.has(key) || abort.signal.aborted) return;
        warmed.add(key);
        const ratio = window.devicePixelRatio || 1;
        const size = [container.clientWidth * ratio, container.clientHeight * ratio] as const;
        for (const t of tilesFor(rect, image.width, image.height, size[0], size[1])) {
          const img = new Image();
          img.src = `/dzi/${image.id}_files/${t.level}/${t.col}_${t.row}.jpeg`;
        }
      },
      () => undefined,
    );
  }

  // #/review?prefetch=0 turns prefetching off: the baseline benchmarks/bench_review.py compares against.
  const prefetch = new URLSearchParams(query).get("prefetch") !== "0";
  const queue = new TaskQueue(
    {
      next: (after) => nextTask(filters, after, abort.signal),
      get: (id) => getTask(id, abort.signal),
      warm,
    },
    prefetch,
  );

  /** Shows `task` (or the end of the queue); resolves once the viewer looks at its region. */
  async function show(task: ReviewTask | null): Promise<void> {
    stopEditing();
    conflict.hidden = true;
    picked = null;
    if (proposalOverlay) {
      viewer.removeOverlay(proposalOverlay);
      proposalOverlay = null;
    }
    hook.shown = null;
    if (!task) {
      card.replaceChildren();
      state.textContent = queue.position > 0 ? "No more open tasks here: all done." : "No open tasks match these filters.";
      open.removeAttribute("href");
      renderLabels(null);
      updateButtons(null);
      return;
    }
    renderTask(task);
    renderLabels(task);
    updateButtons(task);
    const image = await imageOf(task.image_id);
    if (queue.current?.id !== task.id) return; // moved on meanwhile
    renderTask(task, image);
    if (openImage !== image.id) {
      await openInViewer(image);
      if (queue.current?.id !== task.id) return;
    }
    const [x0, y0, x1, y1] = contextRect(taskRegion(task), image.width, image.height);
    viewer.viewport.fitBounds(viewer.viewport.imageToViewportRectangle(x0, y0, x1 - x0, y1 - y0), true);
    proposalOverlay = drawProposal(task);
    hook.shown = task.id;
  }

  function openInViewer(image: ImageInfo): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        viewer.removeHandler("open", done);
        viewer.removeHandler("open-failed", done);
        openImage = image.id;
        resolve();
      };
      viewer.addHandler("open", done);
      viewer.addHandler("open-failed", done);
      viewer.open(tileSourceOf(image));
    });
  }

  /** The proposal (or the task's region when it has none) as an SVG overlay. */
  function drawProposal(task: ReviewTask): Element | null {
    const record = task.annotation;
    if (record) return drawShapes(viewer, [{ record, className: "review-proposal" }], "review-proposal");
    if (task.region) return drawShapes(viewer, [{ box: task.region, className: "review-region" }], "review-proposal");
    return null;
  }

  function renderTask(task: ReviewTask, image?: ImageInfo): void {
    const rows: [string, string][] = [
      ["Task", `#${task.id} (${task.reason})`],
      ["Proposal", task.label ?? task.annotation?.label ?? "—"],
      ["Score", task.score === null ? "—" : fmt.format(task.score)],
      ["Uncertainty", task.uncertainty === null ? "—" : fmt.format(task.uncertainty)],
      ["Model", task.model_id ? task.model_id.slice(0, 12) : "—"],
      ["Image", image?.name ?? task.image_id.slice(0, 12)],
    ];
    if (task.assignee) rows.push(["Assigned to", task.assignee]);
    card.replaceChildren(...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
    card.dataset["taskId"] = String(task.id);
    state.textContent =
      task.status === "open"
        ? `Task ${queue.position + 1} of this session · ${task.annotation ? "accept, correct or reject the proposal" : "label this region"}`
        : `Already ${describe(task.decision, task.decided_by, task.decided_at)}`;
    const region = taskRegion(task);
    open.setAttribute("href", imageHash(task.image_id, image && region ? contextRect(region, image.width, image.height) : region));
  }

  function renderLabels(task: ReviewTask | null): void {
    const current = picked ?? task?.label ?? task?.annotation?.label ?? null;
    labelList.replaceChildren(
      ...labels.slice(0, 9).map((name, i) => {
        const item = el("li", { "data-label": name }, el("kbd", {}, String(i + 1)), ` ${name}`);
        if (name === current) item.classList.add("picked");
        return item;
      }),
    );
    if (labels.length === 0) labelList.replaceChildren(el("li", { class: "muted" }, "No label classes in the schema."));
  }

  function updateButtons(task: ReviewTask | null): void {
    const isOpen = task?.status === "open";
    const proposal = Boolean(task?.annotation);
    buttons.accept.disabled = !isOpen || busy;
    buttons.reject.disabled = !isOpen || !proposal || busy;
    buttons.edit.disabled = !isOpen || !proposal || busy || editing;
    buttons.save.hidden = !editing;
    buttons.cancel.hidden = !editing;
    buttons.labelled.disabled = !isOpen || !picked || busy;
    buttons.previous.disabled = queue.position === 0;
    buttons.next.disabled = !task;
  }

  async function refreshCounts(): Promise<void> {
    try {
      const c: ReviewCounts = await reviewCounts(filters, abort.signal);
      counts.textContent = `${c.open.toLocaleString("en-US")} open · ${c.answered.toLocaleString("en-US")} answered · ${answeredHere} by you here`;
      if (labels.length === 0) {
        labels = Object.keys(c.by_label).filter(Boolean).sort();
        renderLabels(queue.current);
      }
      filterBar.offerLabels(Object.keys(c.by_label).filter(Boolean));
    } catch (err) {
      if (!abort.signal.aborted) counts.textContent = `counts unavailable: ${err instanceof ApiError ? err.message : String(err)}`;
    }
  }

  // -- answers -----------------------------------------------------------------------------------------
  async function move(step: () => Promise<ReviewTask | null>, started: number): Promise<void> {
    let task: ReviewTask | null;
    try {
      task = await step();
      await show(task);
    } catch (err) {
      failed(err);
      return;
    }
    if (task) record(started, task.id);
  }

  /** A fetch for the next task or its image failed: say so, unless the page was left (every fetch aborted). */
  function failed(err: unknown): void {
    if (abort.signal.aborted) return;
    state.textContent = `Could not load review tasks: ${err instanceof ApiError ? err.message : String(err)}`;
    state.classList.add("error");
  }

  /** Time from the key press to the next task's region in view, and (later) to its tiles being loaded. */
  function record(started: number, taskId: number): void {
    hook.switches.push(performance.now() - started);
    const item = viewer.world.getItemAt(0);
    const loaded = (): void => {
      if (queue.current?.id === taskId) hook.tilesLoaded.push(performance.now() - started);
    };
    if (!item) return loaded();
    // The item's fully-loaded flag is brought up to date by the next drawing of the new view, not before.
    viewer.addOnceHandler("update-viewport", () => {
      if (item.getFullyLoaded()) return loaded();
      const handler = (event: { fullyLoaded: boolean }): void => {
        if (!event.fullyLoaded) return;
        item.removeHandler("fully-loaded-change", handler);
        loaded();
      };
      item.addHandler("fully-loaded-change", handler);
    });
  }

  /** Sends the answer and shows the next task at once, without waiting for the server: an answer it refuses
   * brings its task back on screen with the reason (a 409: the other person's answer). */
  async function answer(task: ReviewTask, body: ReviewAnswer): Promise<void> {
    const started = performance.now();
    stopEditing();
    const sent = answerTask(task.id, body);
    inFlight.add(sent);
    void sent.catch(() => undefined).finally(() => inFlight.delete(sent));
    busy = true;
    try {
      await move(() => queue.forward(), started);
    } finally {
      busy = false;
      updateButtons(queue.current);
    }
    try {
      queue.update(await sent);
      if (body.decision !== "skip") answeredHere += 1;
      void refreshCounts();
    } catch (err) {
      if (abort.signal.aborted) return;
      let text = `Not saved: ${err instanceof ApiError ? err.message : String(err)}`;
      const other = err instanceof AnsweredElsewhere ? err.current : null;
      if (other) text = `Not saved: this task was already ${describe(other.decision, other.decided_by, other.decided_at)}.`;
      const back = await queue.goTo(task.id).catch(() => task);
      if (other) queue.update(other);
      await show(other ?? back);
      conflict.textContent = text;
      conflict.hidden = false;
    }
  }

  function proposalRecord(task: ReviewTask, label: string): NewAnnotation & { attributes?: Record<string, unknown> } {
    const base = task.annotation as AnnotationRecord;
    const rec: NewAnnotation & { attributes?: Record<string, unknown> } = { kind: base.kind, label, source: "review" };
    if (base.bbox) rec.bbox = base.bbox;
    if (base.geometry) rec.geometry = base.geometry;
    if (Object.keys(base.attributes ?? {}).length > 0) rec.attributes = base.attributes;
    return rec;
  }

  async function startEditing(task: ReviewTask): Promise<void> {
    editing = true;
    updateButtons(task);
    state.textContent = "Editing: drag the shape or its corners, 1–9 relabel; Enter saves, Esc cancels.";
    try {
      const { editProposal } = await import("./review-edit");
      if (!editing || queue.current?.id !== task.id || !task.annotation) return;
      const image = await imageOf(task.image_id);
      editor = editProposal(viewer, task.annotation, [image.width, image.height]);
      if (proposalOverlay) (proposalOverlay as SVGElement).style.visibility = "hidden";
    } catch (err) {
      conflict.textContent = `Editing unavailable: ${String(err)} (relabel with 1–9 and save)`;
      conflict.hidden = false;
    }
  }

  function stopEditing(): void {
    editor?.destroy();
    editor = null;
    editing = false;
    if (proposalOverlay) (proposalOverlay as SVGElement).style.visibility = "";
  }

  async function saveCorrection(task: ReviewTask): Promise<void> {
    if (!task.annotation) return labelled(task);
    const label = picked ?? task.annotation.label;
    const rec = proposalRecord(task, label);
    const changes = editor?.changes();
    if (changes && "bbox" in changes) rec.bbox = changes.bbox;
    if (changes && "geometry" in changes) {
      rec.geometry = changes.geometry;
      delete rec.bbox;
    }
    await answer(task, { decision: "correct", version: task.version, annotation: rec });
  }

  async function labelled(task: ReviewTask): Promise<void> {
    if (!picked) {
      conflict.textContent = "Pick a label first (1–9).";
      conflict.hidden = false;
      return;
    }
    // One key, one label in the shape its class takes (a tag, the region as a box or polygon, its centre).
    const rec = regionLabel(classes[picked]?.kind, picked, task.region);
    if (!rec) {
      conflict.textContent = `“${picked}” is a ${classes[picked]?.kind ?? "?"} class: draw it in the viewer (Open in the viewer).`;
      conflict.hidden = false;
      return;
    }
    await answer(task, { decision: "labelled", version: task.version, annotations: [rec as NewAnnotation] });
  }

  function act(action: ReviewAction): void {
    const task = queue.current;
    if (busy) return;
    const started = performance.now();
    switch (action.type) {
      case "next":
        void move(() => queue.forward(), started);
        return;
      case "previous":
        // Back to a task whose answer is still on its way: show it once the server has it.
        void move(async () => {
          await Promise.allSettled([...inFlight]);
          return queue.back();
        }, started);
        return;
      default:
        break;
    }
    if (!task || task.status !== "open") return;
    switch (action.type) {
      case "accept":
        if (task.annotation) void answer(task, { decision: "accept", version: task.version });
        else void labelled(task);
        return;
      case "reject":
        if (task.annotation) void answer(task, { decision: "reject", version: task.version });
        return;
      case "edit":
        if (task.annotation && !editing) void startEditing(task);
        return;
      case "save":
        void saveCorrection(task);
        return;
      case "cancel":
        stopEditing();
        picked = null;
        renderTask(task);
        renderLabels(task);
        updateButtons(task);
        return;
      case "labelled":
        void labelled(task);
        return;
      case "label": {
        const name = labels[action.index];
        if (!name) return;
        picked = name;
        if (task.annotation && !editing) {
          editing = true; // a relabel is a correction: Enter saves it
          state.textContent = `Relabel as “${name}”: Enter saves the correction, Esc cancels.`;
        }
        renderLabels(task);
        updateButtons(task);
        return;
      }
    }
  }

  function actionButton(text: string, key: string, testId: string, action: ReviewAction): HTMLButtonElement {
    const node = el("button", { type: "button", "data-testid": testId, title: `${text} (${key})` }, text, el("kbd", {}, key));
    node.addEventListener("click", () => {
      act(action);
      node.blur(); // the keyboard stays the inbox's
    });
    return node;
  }

  const onKey = (event: KeyboardEvent): void => {
    if (typingInto(event.target)) return;
    const action = reviewActionOf(event, editing);
    if (!action) return;
    event.preventDefault();
    act(action);
  };
  document.addEventListener("keydown", onKey);

  // -- start -------------------------------------------------------------------------------------------
  listLabels(abort.signal).then(
    (schema) => {
      classes = schema;
      const names = Object.keys(schema);
      if (names.length > 0) labels = names;
      renderLabels(queue.current);
      filterBar.offerLabels(names);
    },
    () => undefined,
  );
  listModels(abort.signal).then(
    (models) => filterBar.offerModels(models.map((m) => m.id)),
    () => undefined,
  );
  void refreshCounts();
  state.textContent = "Loading…";
  queue
    .start()
    .then((task) => show(task))
    .catch(failed);

  return () => {
    abort.abort();
    document.removeEventListener("keydown", onKey);
    stopEditing();
    viewer.destroy();
    delete window.__gvReview;
  };
}

interface FilterBar {
  node: HTMLElement;
  offerLabels(names: string[]): void;
  offerModels(ids: string[]): void;
}

/** Reason, model, label and score band selectors; a change goes to the hash (and so reloads the inbox). */
function buildFilterBar(filters: ReviewFilters): FilterBar {
  const select = (name: string, testId: string, options: [string, string][], value: string): HTMLSelectElement => {
    const node = el("select", { name, "data-testid": testId, "aria-label": name });
    for (const [v, text] of options) node.append(el("option", { value: v }, text));
    node.value = value;
    return node;
  };
  const reason = select("reason", "filter-reason", [["", "any reason"], ...REASONS.map((r): [string, string] => [r, r])], filters.reason ?? "");
  const model = select("model", "filter-model", [["", "any model"]], "");
  const label = select("label", "filter-label", [["", "any label"]], "");
  const band = select("band", "filter-band", SCORE_BANDS.map(([v, t]): [string, string] => [v, t]), bandOf(filters));
  const offer = (node: HTMLSelectElement, values: string[], current: string | undefined): void => {
    const have = new Set(Array.from(node.options).map((o) => o.value));
    for (const v of [...values, ...(current ? [current] : [])]) {
      if (have.has(v)) continue;
      have.add(v);
      node.append(el("option", { value: v }, v.length > 24 ? `${v.slice(0, 12)}…` : v));
    }
    node.value = current ?? "";
  };
  offer(model, [], filters.model);
  offer(label, [], filters.label);
  const apply = (): void => {
    const next: ReviewFilters = {};
    if (reason.value) next.reason = reason.value;
    if (model.value) next.model = model.value;
    if (label.value) next.label = label.value;
    Object.assign(next, parseFilters(`band=${band.value}`));
    window.location.hash = reviewHash(next);
  };
  for (const node of [reason, model, label, band]) node.addEventListener("change", apply);
  return {
    node: el("div", { class: "filters", role: "search", "aria-label": "Filters" }, reason, model, label, band),
    offerLabels: (names) => offer(label, names, filters.label),
    offerModels: (ids) => offer(model, ids, filters.model),
  };
}
