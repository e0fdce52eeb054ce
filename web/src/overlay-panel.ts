// The annotation overlay's side panel (DOM only): show/hide toggle, label picker with its colour swatch,
// drawing tools, counts and messages, the filters (model vs human, status) and the legend (class colours,
// counts in view, a switch per label), the selected annotation, and the image's tags. What the controls do
// is the overlay's (`PanelActions`); text from users goes in through textContent only.

import { STATUSES, type AnnotationRecord, type AnnotationStatus, type LabelClass } from "./api";
import { el } from "./dom";
import type { MessageKind } from "./edit-sync";
import { ORIGINS, type Origin, type OverlayFilter } from "./overlay-batch";

export type Tool = "select" | "rectangle" | "polygon";

export interface PanelActions {
  toggleVisible(): void;
  setTool(tool: Tool): void;
  deleteSelected(): void;
  /** Give the selection the picked label. */
  relabel(label: string): void;
  setStatus(status: AnnotationStatus): void;
  /** Tag the image with the picked label. */
  addTag(label: string): void;
  deleteTag(tag: AnnotationRecord): void;
  /** The filters changed (the panel holds them; `filter()` reads them). */
  filterChanged(): void;
}

const ORIGIN_NAMES: Record<Origin, string> = { model: "Model proposals", human: "Human labels" };

const integer = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });

export class OverlayPanel {
  private hasClasses = false;
  private readonly toggle = el(
    "button",
    { type: "button", class: "panel-toggle", "data-testid": "overlay-toggle", "aria-pressed": "true" },
    "Annotations shown",
  );
  private readonly picker = el("select", { "data-testid": "label-picker", "aria-label": "Label for new annotations" });
  private readonly freeLabel = el("input", {
    type: "text",
    "data-testid": "label-input",
    "aria-label": "Label for new annotations",
    maxlength: "256",
    value: "object",
    hidden: "",
  });
  private readonly swatch = el("span", { class: "swatch", "aria-hidden": "true" });
  private readonly toolButtons: Record<Tool, HTMLButtonElement> = {
    select: toolButton("select", "tool-select", "Select and pan (V, Esc)", "Select"),
    rectangle: toolButton("rectangle", "tool-box", "Draw boxes: press, drag, release (B)", "Box"),
    polygon: toolButton("polygon", "tool-polygon", "Draw polygons: click each corner, then the first (P)", "Polygon"),
  };
  private readonly count = el(
    "p",
    { class: "panel-count", "data-testid": "overlay-count", "aria-live": "polite" },
    "Loading…",
  );
  private readonly notice = el("p", {
    class: "panel-notice",
    "data-testid": "overlay-notice",
    role: "status",
    hidden: "",
  });
  private readonly message = el("p", {
    class: "panel-message",
    "data-testid": "overlay-message",
    role: "alert",
    hidden: "",
  });
  private readonly details = el("dl", { class: "details" });
  private readonly statusPicker = el("select", { "data-testid": "status-picker", "aria-label": "Status" });
  private readonly selection: HTMLElement;
  private readonly tagList = el("ul", { class: "tags", "data-testid": "tag-list" });
  private readonly legend = el("ul", { class: "legend", "data-testid": "legend" });
  private readonly hiddenLabels = new Set<string>();
  private readonly origins = new Set<Origin>(ORIGINS);
  private readonly statuses = new Set<AnnotationStatus>(STATUSES);
  private classes: Record<string, LabelClass> = {};
  private lastCounts = new Map<string, number>();

  constructor(
    private readonly root: HTMLElement,
    private readonly actions: PanelActions,
    private readonly colorOf: (label: string) => string,
  ) {
    for (const status of STATUSES) this.statusPicker.append(el("option", { value: status }, status));
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
    this.selection = el(
      "section",
      { class: "panel-section", "data-testid": "selection", hidden: "" },
      el("h2", {}, "Selected"),
      this.details,
      el("label", { class: "row" }, "Status ", this.statusPicker),
      el("div", { class: "row" }, relabel, remove),
    );
    const addTag = el(
      "button",
      { type: "button", "data-testid": "add-tag", title: "Tag the whole image with the picked label" },
      "Tag image with picked label",
    );

    root.replaceChildren(
      el("div", { class: "panel-section" }, this.toggle),
      el(
        "div",
        { class: "panel-section" },
        el("label", { class: "row" }, this.swatch, "Label ", this.picker, this.freeLabel),
        el(
          "div",
          { class: "row", role: "toolbar", "aria-label": "Drawing tools" },
          this.toolButtons.select,
          this.toolButtons.rectangle,
          this.toolButtons.polygon,
        ),
      ),
      el("div", { class: "panel-section" }, this.count, this.notice, this.message),
      this.filters(),
      el("section", { class: "panel-section" }, el("h2", {}, "Classes in view"), this.legend),
      this.selection,
      el("section", { class: "panel-section" }, el("h2", {}, "Image tags"), this.tagList, addTag),
      el("p", { class: "panel-hint" }, "Keys: B box · P polygon · V / Esc select · Del delete · H hide"),
    );

    this.toggle.addEventListener("click", () => actions.toggleVisible());
    for (const [name, button] of Object.entries(this.toolButtons)) {
      button.addEventListener("click", () => actions.setTool(name as Tool));
    }
    this.picker.addEventListener("change", () => this.updateSwatch());
    this.freeLabel.addEventListener("input", () => this.updateSwatch());
    remove.addEventListener("click", () => actions.deleteSelected());
    relabel.addEventListener("click", () => {
      const label = this.pickedLabel();
      if (label) actions.relabel(label);
    });
    this.statusPicker.addEventListener("change", () =>
      actions.setStatus(this.statusPicker.value as AnnotationStatus),
    );
    addTag.addEventListener("click", () => {
      const label = this.pickedLabel();
      if (label) actions.addTag(label);
    });
  }

  /** What the overlay shows now. */
  filter(): OverlayFilter {
    return { hiddenLabels: this.hiddenLabels, origins: this.origins, statuses: this.statuses };
  }

  /** Check boxes: model proposals / human labels, and each status. */
  private filters(): HTMLElement {
    const box = <T>(set: Set<T>, value: T, text: string, testid: string): HTMLElement => {
      const input = el("input", { type: "checkbox", "data-testid": testid, "data-value": String(value) });
      input.checked = set.has(value);
      input.addEventListener("change", () => {
        if (input.checked) set.add(value);
        else set.delete(value);
        this.actions.filterChanged();
      });
      return el("label", { class: "check" }, input, text);
    };
    return el(
      "section",
      { class: "panel-section", "data-testid": "overlay-filters" },
      el("h2", {}, "Show"),
      el("div", { class: "row" }, ...ORIGINS.map((o) => box(this.origins, o, ORIGIN_NAMES[o], "filter-origin"))),
      el("div", { class: "row" }, ...STATUSES.map((s) => box(this.statuses, s, s, "filter-status"))),
    );
  }

  /** Every class of the schema (tags aside) and every label in view, with its colour, its count in view
   * (after the model/human and status filters; exact, the server's, when a sample is drawn) and a switch
   * that hides or shows it. */
  renderLegend(counts: Map<string, number>): void {
    this.lastCounts = counts;
    const names = new Set(Object.keys(this.classes).filter((name) => this.classes[name]?.kind !== "tag"));
    for (const name of counts.keys()) names.add(name);
    const rows = [...names]
      .sort((a, b) => a.localeCompare(b))
      .map((name) => {
        const input = el("input", {
          type: "checkbox",
          "data-testid": "legend-toggle",
          "aria-label": `Show ${name}`,
        });
        input.checked = !this.hiddenLabels.has(name);
        input.addEventListener("change", () => {
          if (input.checked) this.hiddenLabels.delete(name);
          else this.hiddenLabels.add(name);
          this.actions.filterChanged();
        });
        const dot = el("span", { class: "swatch", "aria-hidden": "true" });
        dot.style.backgroundColor = this.colorOf(name);
        const n = counts.get(name) ?? 0;
        return el(
          "li",
          { "data-testid": "legend-row", "data-label": name, "data-count": String(n) },
          el("label", { class: "check" }, input, dot, el("span", { class: "legend-label" }, name)),
          el("span", { class: "legend-count" }, integer.format(n)),
        );
      });
    if (rows.length === 0) rows.push(el("li", { class: "muted" }, "Nothing in view."));
    this.legend.replaceChildren(...rows);
  }

  /** Colours changed: the legend's swatches again. */
  recolorLegend(): void {
    this.renderLegend(this.lastCounts);
  }

  /** The label new annotations get: the picked class, or the typed label while the schema is empty. */
  pickedLabel(): string {
    return this.hasClasses ? this.picker.value : this.freeLabel.value.trim();
  }

  showMessage(text: string, kind: MessageKind = "error"): void {
    this.message.textContent = text;
    this.message.dataset["kind"] = kind;
    this.message.hidden = false;
  }

  clearMessage(): void {
    this.message.hidden = true;
    this.message.textContent = "";
  }

  updateSwatch(): void {
    this.swatch.style.backgroundColor = this.colorOf(this.pickedLabel());
  }

  /** Fills the label picker (the first drawable class picked); an empty schema shows a text field. */
  renderClasses(classes: Record<string, LabelClass>): void {
    this.classes = classes;
    const names = Object.keys(classes).sort((a, b) => a.localeCompare(b));
    this.hasClasses = names.length > 0;
    this.picker.replaceChildren(...names.map((name) => el("option", { value: name }, name)));
    const drawable = names.find((name) => classes[name]?.kind !== "tag");
    if (drawable) this.picker.value = drawable;
    this.picker.hidden = names.length === 0;
    this.freeLabel.hidden = names.length > 0;
    this.updateSwatch();
  }

  showTool(tool: Tool): void {
    for (const [name, button] of Object.entries(this.toolButtons)) {
      button.setAttribute("aria-pressed", String(name === tool));
    }
  }

  showVisible(show: boolean): void {
    this.toggle.setAttribute("aria-pressed", String(show));
    this.toggle.textContent = show ? "Annotations shown" : "Annotations hidden";
    this.root.dataset["overlay"] = show ? "shown" : "hidden";
    if (!show) this.notice.hidden = true;
  }

  /** "N in view · M loaded", "N in view (D drawn) · M loaded" when a sample is drawn (`drawn` of the `inView`
   * shown by the filters), or that the overlay is hidden (null). */
  showCount(counts: { inView: number; drawn?: number; loaded: number } | null): void {
    if (!counts) {
      this.count.textContent = "Annotations hidden";
      return;
    }
    const drawn = counts.drawn ?? counts.inView;
    const sample = drawn === counts.inView ? "" : ` (${integer.format(drawn)} drawn)`;
    const loaded = integer.format(counts.loaded);
    this.count.textContent = `${integer.format(counts.inView)} in view${sample} · ${loaded} loaded`;
    this.count.dataset["inView"] = String(counts.inView);
    this.count.dataset["drawn"] = String(drawn);
    this.count.dataset["loaded"] = String(counts.loaded);
  }

  /** Says that a viewport answer is a sample: `shown` of `total` (null: unknown) in view. */
  showTruncated(truncated: boolean, shown: number, total: number | null = null): void {
    this.notice.hidden = !truncated;
    const of = total === null ? "many" : integer.format(total);
    this.notice.textContent = truncated
      ? `Showing ${integer.format(shown)} of ${of} annotations here, sampled across classes and the view — ` +
        "zoom in (or hide classes) to see them all."
      : "";
    this.notice.dataset["shown"] = String(shown);
    this.notice.dataset["total"] = total === null ? "" : String(total);
  }

  /** The selected annotation's details and status, or nothing. */
  renderSelection(record: AnnotationRecord | null): void {
    if (!record) {
      this.selection.hidden = true;
      this.details.replaceChildren();
      return;
    }
    const item = (term: string, value: Node | string): HTMLElement[] => [el("dt", {}, term), el("dd", {}, value)];
    const labelSwatch = el("span", { class: "swatch", "aria-hidden": "true" });
    labelSwatch.style.backgroundColor = this.colorOf(record.label);
    this.details.replaceChildren(
      ...item("Label", el("span", { "data-testid": "selected-label" }, labelSwatch, record.label)),
      ...item("Kind", record.kind),
      ...item("Source", record.source),
      ...(record.score === null ? [] : item("Score", record.score.toFixed(3))),
      ...item("Id", `${record.id} (version ${record.version})`),
    );
    this.statusPicker.value = record.status;
    this.selection.hidden = false;
    this.selection.dataset["annotationId"] = String(record.id);
  }

  /** The image's tags (null: the schema has no tag classes). */
  renderTags(tags: AnnotationRecord[] | null): void {
    if (tags === null) {
      this.tagList.replaceChildren(el("li", { class: "muted" }, "No tag classes in the label schema."));
      return;
    }
    if (tags.length === 0) {
      this.tagList.replaceChildren(el("li", { class: "muted" }, "No tags on this image."));
      return;
    }
    this.tagList.replaceChildren(
      ...tags.map((tag) => {
        const dot = el("span", { class: "swatch", "aria-hidden": "true" });
        dot.style.backgroundColor = this.colorOf(tag.label);
        const drop = el("button", { type: "button", class: "link", "aria-label": `Delete tag ${tag.label}` }, "×");
        drop.addEventListener("click", () => this.actions.deleteTag(tag));
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

  clear(): void {
    this.root.replaceChildren();
  }
}

function toolButton(tool: Tool, testid: string, title: string, text: string): HTMLButtonElement {
  return el("button", { type: "button", "data-tool": tool, "data-testid": testid, title }, text);
}
