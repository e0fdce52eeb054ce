// The models page (#/models): the workspace's published models, newest first, with their headline metric, the
// dataset version they were trained on (lineage) and their evaluation report; a model's row opens its metrics
// and its production metrics from the review answers (GET /api/v1/models/{id}/monitor).

import { ApiError, apiJson } from "./api";
import { el } from "./dom";
import { listModels, type ModelRecord } from "./review-api";

export interface ModelMonitor {
  model_id: string;
  predictions_routed: number;
  auto_accepted: number;
  sent_to_review: { uncertain: number; audit: number };
  answered: number;
  backlog: number;
  audit: { n: number; errors: number; error_rate: number | null; ci95: [number, number] | null };
  precision_by_score_band: { band: [number, number]; n: number; precision: number | null }[];
}

const REPORT = "report.html"; // models/store.py REPORT_HTML: written when the model had a split to evaluate on

function messageOf(err: unknown): string {
  return err instanceof ApiError ? err.message : String(err);
}

/** A metric value as people read it: 4 significant digits, text as it is. */
export function metricText(value: number | string | null | undefined): string {
  if (value === null || value === undefined) return "—";
  if (typeof value === "number") return Number.isInteger(value) ? value.toLocaleString("en-US") : String(Number(value.toPrecision(4)));
  return value;
}

function percent(value: number | null | undefined): string {
  return value === null || value === undefined ? "—" : `${(value * 100).toFixed(1)} %`;
}

function dl(rows: [string, string | Node][]): HTMLElement {
  return el("dl", { class: "details" }, ...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
}

function monitorSection(m: ModelMonitor): HTMLElement {
  const ci = m.audit.ci95 ? ` (95 % CI ${percent(m.audit.ci95[0])}–${percent(m.audit.ci95[1])})` : "";
  const bands = el(
    "table",
    { class: "table" },
    el("thead", {}, el("tr", {}, el("th", {}, "Score band"), el("th", {}, "Answers"), el("th", {}, "Precision"))),
    el(
      "tbody",
      {},
      ...m.precision_by_score_band.map((b) =>
        el("tr", {}, el("td", {}, `${b.band[0]}–${b.band[1]}`), el("td", {}, String(b.n)), el("td", {}, percent(b.precision))),
      ),
    ),
  );
  return el(
    "div",
    { "data-testid": "model-monitor" },
    dl([
      ["Predictions routed", metricText(m.predictions_routed)],
      ["Auto-accepted", metricText(m.auto_accepted)],
      ["Sent to review", `${m.sent_to_review.uncertain} uncertain · ${m.sent_to_review.audit} audit`],
      ["Answered / backlog", `${m.answered} / ${m.backlog}`],
      ["Audit error rate", `${percent(m.audit.error_rate)} of ${m.audit.n}${ci}`],
    ]),
    m.precision_by_score_band.length > 0 ? bands : el("p", { class: "muted" }, "No answered reviews yet."),
  );
}

function details(model: ModelRecord, signal: AbortSignal): HTMLElement {
  const metrics = Object.entries(model.metrics);
  const production = el("div", {}, el("p", { class: "muted" }, "Loading production metrics…"));
  apiJson<ModelMonitor>("GET", `/api/v1/models/${encodeURIComponent(model.id)}/monitor`, undefined, signal).then(
    (m) => production.replaceChildren(monitorSection(m)),
    (err: unknown) => {
      if (!signal.aborted) production.replaceChildren(el("p", { class: "muted" }, `Production metrics unavailable: ${messageOf(err)}`));
    },
  );
  const report = model.files.includes(REPORT)
    ? el("a", { href: model.urls.report, target: "_blank", rel: "noopener", "data-testid": "model-report" }, "Evaluation report")
    : el("span", { class: "muted" }, "no report (no split to evaluate on)");
  return el(
    "div",
    { class: "model-details", "data-testid": "model-details" },
    dl([
      ["Model", model.id],
      ["Task / architecture", `${model.task} · ${model.arch}`],
      ["Trained on (dataset version)", model.dataset],
      ["Classes", model.classes.join(", ") || "—"],
      ["Created", model.created_at.replace("T", " ").slice(0, 19)],
      ["Report", report],
    ]),
    el("h3", {}, `Metrics${model.evaluated_on ? ` (${model.evaluated_on} split)` : ""}`),
    metrics.length > 0
      ? dl(metrics.map(([k, v]): [string, string] => [k === model.headline ? `${k} (headline)` : k, metricText(v)]))
      : el("p", { class: "muted" }, "No metrics."),
    el("h3", {}, "In production (review answers)"),
    production,
  );
}

export function showModels(root: HTMLElement): () => void {
  const abort = new AbortController();
  const body = el("tbody", { "data-testid": "model-rows" });
  const count = el("span", { class: "count" });
  const side = el("section", { class: "page-section", "data-testid": "model-side" });
  const status = el("p", { class: "muted" }, "Loading…");
  root.replaceChildren(
    el("header", { class: "bar" }, el("h1", {}, "Models"), count),
    el(
      "main",
      { class: "page models" },
      el(
        "section",
        { class: "page-section" },
        el(
          "table",
          { class: "table selectable" },
          el(
            "thead",
            {},
            el("tr", {}, ...["Model", "Task", "Architecture", "Headline metric", "Dataset version", "Created"].map((h) => el("th", {}, h))),
          ),
          body,
        ),
        status,
      ),
      side,
    ),
  );
  document.title = "Models — gigavision";

  let selected: HTMLElement | null = null;
  listModels(abort.signal).then(
    (models) => {
      count.textContent = `${models.length} model${models.length === 1 ? "" : "s"}`;
      status.textContent = models.length === 0 ? "No models yet: train one with `gigavision train`." : "";
      for (const model of models) {
        const headline = model.headline ? `${model.headline} ${metricText(model.metrics[model.headline])}` : "—";
        const open = el("button", { type: "button", class: "linklike", "data-testid": "model-open" }, model.id.slice(0, 12));
        const row = el(
          "tr",
          { "data-model": model.id },
          el("td", {}, open),
          el("td", {}, model.task),
          el("td", {}, model.arch),
          el("td", {}, headline),
          el("td", {}, model.dataset),
          el("td", {}, model.created_at.slice(0, 10)),
        );
        open.addEventListener("click", () => {
          selected?.classList.remove("selected");
          selected = row;
          row.classList.add("selected");
          side.replaceChildren(details(model, abort.signal));
        });
        body.append(row);
      }
    },
    (err: unknown) => {
      if (!abort.signal.aborted) status.textContent = `Could not load models: ${messageOf(err)}`;
    },
  );
  return () => abort.abort();
}
