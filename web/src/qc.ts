// Quality control for people (#/qc and #/adjudicate/{item}), on the QC REST (server/routers/quality.py):
// - the work queue: my assigned items (open one in the viewer, label it there, hand it in) and, for reviewers,
//   the items waiting for adjudication;
// - the adjudication screen: the annotators' versions side by side in synchronised viewers (adjudicate-view.ts),
//   or over one viewer, each shown or hidden; the labels no other version matched highlighted; 1–9 pick a
//   version (the one view shows it alone), Enter chooses it, V switches the view (adjudicate-keys.ts); or
//   "use my own" labels drawn in the viewer.

import OpenSeadragon from "openseadragon";

import { ApiError, currentSession, getImage, type ImageInfo } from "./api";
import { ADJUDICATE_KEYS_HINT, adjudicateActionOf } from "./adjudicate-keys";
import { DIFFERS_COLOR, differs, MAX_PANES, summarise, summaryText, type VersionRecord } from "./adjudicate-panes";
import { showSideBySide, type SideBySide, type Version } from "./adjudicate-view";
import { el } from "./dom";
import { typingInto } from "./keys";
import type { OverlayLayer } from "./overlay-layer";
import type { Hex } from "./palette";
import { qcAdjudicate, qcItem, qcItems, qcQueue, qcSubmit, type QcItem, type QcItemDetail } from "./review-api";
import { drawShapes, tileSourceOf } from "./review-draw";
import { contextRect, imageHash } from "./review-geometry";
import { toolbar, viewerOptions } from "./viewer";

/** Distinct colours for up to 8 annotators' versions (then repeated). */
export const VERSION_COLORS: Hex[] = ["#00c2ff", "#ffb000", "#ff4fd8", "#39e75f", "#ff5a36", "#b18cff", "#f5f5f5", "#00e0b0"];

const ACTOR_KEY = "gigavision.actor";

declare global {
  interface Window {
    /** Test hook: the adjudication screen's viewer. */
    __gvAdjudicate?: { viewer: OpenSeadragon.Viewer; panes: OpenSeadragon.Viewer[]; layers: OverlayLayer[] };
  }
}

/** Who acts: the login, or in a workspace without users the name typed in (remembered in this browser). */
export function actingName(): string {
  const me = currentSession();
  if (me?.users) return me.name;
  return window.localStorage.getItem(ACTOR_KEY) ?? me?.name ?? "";
}

function can(permission: string): boolean {
  const me = currentSession();
  return !me || me.permissions.includes(permission);
}

function messageOf(err: unknown): string {
  return err instanceof ApiError ? err.message : String(err);
}

function regionText(item: QcItem): string {
  if (!item.region) return "whole image";
  const [x0, y0, x1, y1] = item.region.map(Math.round) as [number, number, number, number];
  return `${x1 - x0}×${y1 - y0} at ${x0},${y0}`;
}

/** Without users, who is acting is a name typed here (QC needs one); with users, the login. */
function actorField(onChange: () => void): HTMLElement | null {
  if (currentSession()?.users) return null;
  const input = el("input", {
    type: "text",
    value: actingName(),
    "data-testid": "qc-actor",
    "aria-label": "Acting as",
    maxlength: "200",
  });
  input.addEventListener("change", () => {
    window.localStorage.setItem(ACTOR_KEY, input.value.trim());
    onChange();
  });
  return el("label", { class: "row" }, "Acting as ", input);
}

// -- the work queue -------------------------------------------------------------------------------------

export function showQc(root: HTMLElement): () => void {
  let abort = new AbortController();
  const mine = el("tbody", { "data-testid": "qc-items" });
  const queue = el("tbody", { "data-testid": "qc-queue" });
  const message = el("p", { class: "panel-message", role: "alert", "data-testid": "qc-message", hidden: "" });
  const count = el("span", { class: "count" });
  const actor = actorField(() => load());
  const table = (body: HTMLElement, heads: string[]): HTMLElement =>
    el("table", { class: "table" }, el("thead", {}, el("tr", {}, ...heads.map((h) => el("th", {}, h)))), body);

  const queueSection = el(
    "section",
    { class: "page-section" },
    el("h2", {}, "Waiting for adjudication"),
    table(queue, ["Item", "Image", "Kind", "Agreement", "Annotators", ""]),
  );
  queueSection.hidden = !can("qc.review");
  root.replaceChildren(
    el("header", { class: "bar" }, el("h1", {}, "Quality control"), count),
    el(
      "main",
      { class: "page" },
      ...(actor ? [actor] : []),
      message,
      el(
        "section",
        { class: "page-section" },
        el("h2", {}, "My items"),
        el(
          "p",
          { class: "muted" },
          "Open an item in the viewer, label it there (your labels are stored as proposed), then hand it in here.",
        ),
        table(mine, ["Item", "Image", "Kind", "Labels", "Region", "My status", ""]),
      ),
      queueSection,
    ),
  );
  document.title = "Quality control — gigavision";

  const names = new Map<string, Promise<ImageInfo>>();
  const imageCell = (id: string): HTMLElement => {
    const link = el("a", { href: `#/image/${id}` }, id.slice(0, 10));
    let info = names.get(id);
    if (!info) {
      info = getImage(id, abort.signal);
      names.set(id, info);
    }
    info.then(
      (image) => {
        link.textContent = image.name;
      },
      () => undefined,
    );
    return el("td", {}, link);
  };

  function showMessage(text: string, ok = false): void {
    message.textContent = text;
    message.classList.toggle("ok", ok);
    message.hidden = false;
  }

  function myRow(item: QcItem, me: string): HTMLElement {
    const status = item.annotators.find((a) => a.name === me)?.status ?? "—";
    const statusCell = el("td", { "data-testid": "qc-my-status" }, status);
    const submit = el("button", { type: "button", "data-testid": "qc-submit" }, "Hand in");
    submit.disabled = item.status !== "open" || status === "submitted";
    submit.addEventListener("click", () => {
      submit.disabled = true;
      qcSubmit(item.id, me).then(
        (after) => {
          const mineNow = after.submissions.find((s) => s.annotator === me);
          statusCell.textContent = mineNow?.status ?? "submitted";
          const labels = mineNow?.count ?? 0;
          showMessage(`Item #${item.id} handed in with ${labels} label${labels === 1 ? "" : "s"}; the item is ${after.status}.`, true);
        },
        (err: unknown) => {
          submit.disabled = false;
          showMessage(`Item #${item.id} not handed in: ${messageOf(err)}`);
        },
      );
    });
    return el(
      "tr",
      { "data-item": String(item.id) },
      el("td", {}, `#${item.id}`),
      imageCell(item.image_id),
      el("td", {}, item.kind),
      el("td", {}, item.labels.length > 0 ? item.labels.join(", ") : "any"),
      el("td", {}, regionText(item)),
      statusCell,
      el("td", {}, el("a", { href: imageHash(item.image_id, item.region), class: "button-link", "data-testid": "qc-open" }, "Open"), " ", submit),
    );
  }

  function queueRow(item: QcItem): HTMLElement {
    return el(
      "tr",
      { "data-item": String(item.id) },
      el("td", {}, `#${item.id}`),
      imageCell(item.image_id),
      el("td", {}, item.kind),
      el("td", {}, item.agreement === null ? "—" : item.agreement.toFixed(2)),
      el("td", {}, item.annotators.map((a) => a.name).join(", ")),
      el("td", {}, el("a", { href: `#/adjudicate/${item.id}`, "data-testid": "qc-adjudicate" }, "Adjudicate")),
    );
  }

  function load(): void {
    abort.abort();
    abort = new AbortController();
    const me = actingName();
    message.hidden = true;
    if (!me) {
      mine.replaceChildren(el("tr", {}, el("td", { colspan: "7" }, "Type the name you label under above.")));
      return;
    }
    qcItems({ annotator: me }, abort.signal).then(
      (page) => {
        const rows = page.items.filter((i) => i.annotators.some((a) => a.name === me));
        mine.replaceChildren(...rows.map((i) => myRow(i, me)));
        if (rows.length === 0) mine.replaceChildren(el("tr", {}, el("td", { colspan: "7" }, "No items assigned to you.")));
        const open = rows.filter((i) => i.annotators.find((a) => a.name === me)?.status !== "submitted").length;
        count.textContent = `${open} to label · ${rows.length} assigned`;
      },
      (err: unknown) => {
        if (!abort.signal.aborted) showMessage(`Could not load your items: ${messageOf(err)}`);
      },
    );
    if (can("qc.review")) {
      qcQueue(me, abort.signal).then(
        (page) => {
          queue.replaceChildren(...page.items.map(queueRow));
          if (page.items.length === 0) queue.replaceChildren(el("tr", {}, el("td", { colspan: "6" }, "Nothing to adjudicate.")));
        },
        (err: unknown) => {
          if (!abort.signal.aborted) showMessage(`Could not load the adjudication queue: ${messageOf(err)}`);
        },
      );
    }
  }

  load();
  return () => abort.abort();
}

// -- adjudication ---------------------------------------------------------------------------------------

type ViewMode = "side" | "one";

export function showAdjudication(root: HTMLElement, itemId: number): () => void {
  const abort = new AbortController();
  const container = el("div", { class: "viewer", "data-testid": "adjudicate-viewer" });
  const panesHost = el("div", { class: "panes off", "data-testid": "adjudicate-panes" });
  const versions = el("ul", { class: "versions", "data-testid": "adjudicate-versions" });
  const summary = el("p", { class: "panel-count", "data-testid": "adjudicate-state", "aria-live": "polite" }, "Loading…");
  const message = el("p", { class: "panel-message", role: "alert", "data-testid": "adjudicate-message", hidden: "" });
  const own = el("button", { type: "button", "data-testid": "adjudicate-own" }, "Use my own labels");
  const draw = el("a", { class: "button-link" }, "Draw my own in the viewer");
  const sideButton = el("button", { type: "button", "data-testid": "adjudicate-view-side", "aria-pressed": "false" }, "Side by side");
  const oneButton = el("button", { type: "button", "data-testid": "adjudicate-view-one", "aria-pressed": "false" }, "One view");
  const actor = actorField(() => undefined);
  const side = el(
    "aside",
    { class: "panel", "aria-label": "Versions" },
    el("section", { class: "panel-section" }, summary, message),
    el(
      "section",
      { class: "panel-section" },
      el("h2", {}, "View (V)"),
      el("div", { class: "row", role: "group", "aria-label": "View" }, sideButton, oneButton),
      el("p", { class: "muted" }, el("span", { class: "swatch", style: `background:${DIFFERS_COLOR}` }), "no match in another version (one view: dashed)"),
    ),
    el("section", { class: "panel-section" }, el("h2", {}, "Versions (1–9 pick, Enter choose)"), versions),
    el("section", { class: "panel-section" }, el("h2", {}, "Or my own"), el("div", { class: "row" }, draw), el("div", { class: "row" }, own), ...(actor ? [actor] : [])),
    el("p", { class: "panel-hint" }, ADJUDICATE_KEYS_HINT),
  );
  root.replaceChildren(
    el("header", { class: "bar" }, el("a", { class: "back", href: "#/qc" }, "← QC"), el("h1", {}, `Adjudicate item #${itemId}`)),
    el("div", { class: "stage" }, el("div", { class: "adjudicate-views" }, container, panesHost), side),
  );
  document.title = `Adjudicate #${itemId} — gigavision`;

  const viewer = OpenSeadragon({ ...viewerOptions(container), animationTime: 0.3 });
  container.append(toolbar(viewer));
  const hook: NonNullable<Window["__gvAdjudicate"]> = { viewer, panes: [], layers: [] };
  window.__gvAdjudicate = hook;
  const overlays = new Map<string, SVGSVGElement>();
  const toggles: { name: string; box: HTMLInputElement; row: HTMLElement }[] = [];
  let panes: SideBySide | null = null;
  let mode: ViewMode = "one";
  let picked: number | null = null;
  let decided = true;

  function showMessage(text: string, ok = false): void {
    message.textContent = text;
    message.classList.toggle("ok", ok);
    message.hidden = false;
  }

  function applyToggles(): void {
    for (const { name, box } of toggles) {
      const svg = overlays.get(name);
      if (svg) svg.style.visibility = box.checked ? "" : "hidden"; // OpenSeadragon sets display on redraw
    }
  }

  /** Picks version `index` (null: none): the one view shows it alone (none: all), side by side marks its pane. */
  function pick(index: number | null): void {
    picked = index;
    for (const [i, t] of toggles.entries()) {
      t.box.checked = index === null || i === index;
      t.row.classList.toggle("picked", i === index);
    }
    applyToggles();
    panes?.pick(index);
  }

  /** Switches the view; the viewer shown takes the centre and scale (image pixels per screen pixel) of the one
   * hidden. Both views stay laid out, the hidden one invisible and inert: a viewer in a `display: none`
   * container would shrink to 1 × 1 and lose its view, and its overlay layer would render nothing. */
  function setMode(next: ViewMode): void {
    if (next === "side" && !panes) return;
    const [from, to] = next === "side" ? [viewer, panes?.viewers[0]] : [panes?.viewers[0], viewer];
    if (from && to && next !== mode && from.world.getItemCount() > 0 && to.world.getItemCount() > 0) {
      // where `from` is going (the end of a pan still animating), not where it is this frame
      const scale = from.viewport.viewportToImageZoom(from.viewport.getZoom());
      to.viewport.zoomTo(to.viewport.imageToViewportZoom(scale), undefined, true);
      to.viewport.panTo(from.viewport.getCenter(), true);
    }
    mode = next;
    for (const [node, off] of [
      [container, next === "side"],
      [panesHost, next !== "side"],
    ] as const) {
      node.classList.toggle("off", off);
      node.inert = off;
    }
    sideButton.setAttribute("aria-pressed", String(next === "side"));
    oneButton.setAttribute("aria-pressed", String(next === "one"));
  }

  function setBusy(busy: boolean): void {
    own.disabled = busy;
    for (const button of versions.querySelectorAll("button")) button.disabled = busy;
    panes?.setBusy(busy);
  }

  function decide(body: { choose: string } | { own: true }): void {
    if (decided) return;
    decided = true;
    const me = actingName();
    setBusy(true);
    qcAdjudicate(itemId, me, body).then(
      (after) => {
        const how = "choose" in body ? `${body.choose}'s version chosen` : "your own labels used";
        showMessage(`Decided (${how}): the item is ${after.status}, ${after.consensus.length} consensus labels.`, true);
        summary.textContent = `Item #${itemId}: ${after.status}`;
      },
      (err: unknown) => {
        decided = false;
        setBusy(false);
        showMessage(`Not decided: ${messageOf(err)}`);
      },
    );
  }

  function render(item: QcItemDetail, image: ImageInfo): void {
    summary.textContent =
      `${image.name} · ${item.kind} · ${item.status}` + (item.agreement === null ? "" : ` · agreement ${item.agreement.toFixed(2)} (threshold ${item.threshold})`);
    draw.setAttribute("href", imageHash(item.image_id, item.region));
    decided = item.status !== "adjudication";
    own.disabled = decided;
    versions.replaceChildren();
    const shown: Version[] = [];
    item.submissions.forEach((submission, i) => {
      const color = VERSION_COLORS[i % VERSION_COLORS.length] ?? "#ffffff";
      const labels: VersionRecord[] = submission.labels ?? [];
      if (submission.labels !== null) shown.push({ annotator: submission.annotator, color, records: labels });
      const svg = drawShapes(
        viewer,
        labels.map((record) => ({ record, className: differs(record) ? "version-shape version-differs" : "version-shape", color })),
        `version-${i + 1}`,
      );
      if (svg) overlays.set(submission.annotator, svg);
      const box = el("input", { type: "checkbox", "data-testid": "adjudicate-toggle", "aria-label": `Show ${submission.annotator}` });
      box.checked = true;
      box.addEventListener("change", applyToggles);
      const choose = el("button", { type: "button", "data-testid": "adjudicate-choose", "data-annotator": submission.annotator }, "Choose");
      choose.disabled = decided;
      choose.addEventListener("click", () => decide({ choose: submission.annotator }));
      const counts = summarise(labels);
      const row = el(
        "li",
        { "data-annotator": submission.annotator },
        el("label", { class: "row" }, box, el("span", { class: "swatch", style: `background:${color}` }), el("kbd", {}, String(i + 1)), ` ${submission.annotator}`),
        el(
          "p",
          { class: "muted" },
          submission.labels === null
            ? "labels hidden while the item is open"
            : `${summaryText(counts, item.kind)}: ${counts.byLabel.map(([k, v]) => `${k} ×${v}`).join(", ") || "none"}`,
        ),
        choose,
      );
      toggles.push({ name: submission.annotator, box, row });
      versions.append(row);
    });
    const [x0, y0, x1, y1] = contextRect(item.region, image.width, image.height, 1.3);
    const fit = (v: OpenSeadragon.Viewer): void => {
      v.viewport.fitBounds(v.viewport.imageToViewportRectangle(x0, y0, x1 - x0, y1 - y0), true);
    };
    fit(viewer);
    const sideBySide = shown.length >= 2 && shown.length <= MAX_PANES && shown.length === item.submissions.length;
    sideButton.disabled = !sideBySide;
    if (!sideBySide) {
      sideButton.title = `Side by side shows 2 to ${MAX_PANES} versions, all handed in`;
      setMode("one");
      return;
    }
    mode = "side"; // nothing to carry over: the panes fit themselves to the item as they open
    panes = showSideBySide(panesHost, shown, item.kind, () => tileSourceOf(image), fit, (name) => decide({ choose: name }));
    panes.setBusy(decided);
    hook.panes = panes.viewers;
    hook.layers = panes.layers;
    setMode("side");
  }

  const onKey = (event: KeyboardEvent): void => {
    if (typingInto(event.target)) return;
    const action = adjudicateActionOf(event, toggles.length);
    if (!action) return;
    if (action.type === "choose") {
      // Enter on a focused button or link is that button's (or link's) click.
      if (event.target instanceof HTMLButtonElement || event.target instanceof HTMLAnchorElement) return;
      const name = picked === null ? undefined : toggles[picked]?.name;
      if (name === undefined) showMessage(`Pick a version first (1–${toggles.length}), then Enter.`);
      else decide({ choose: name });
    } else if (action.type === "view") setMode(mode === "side" ? "one" : "side");
    else pick(action.type === "pick" ? action.index : null);
    event.preventDefault();
  };
  document.addEventListener("keydown", onKey);
  sideButton.addEventListener("click", () => setMode("side"));
  oneButton.addEventListener("click", () => setMode("one"));

  own.addEventListener("click", () => decide({ own: true }));
  qcItem(itemId, actingName() || null, abort.signal)
    .then(async (item) => {
      const image = await getImage(item.image_id, abort.signal);
      if (abort.signal.aborted) return;
      viewer.addOnceHandler("open", () => render(item, image));
      viewer.open(tileSourceOf(image));
    })
    .catch((err: unknown) => {
      if (!abort.signal.aborted) {
        summary.textContent = "";
        showMessage(`Could not load item #${itemId}: ${messageOf(err)}`);
      }
    });

  return () => {
    abort.abort();
    document.removeEventListener("keydown", onKey);
    panes?.destroy();
    viewer.destroy();
    delete window.__gvAdjudicate;
  };
}
