// The models page (#/models): the aliases (production, staging, …) and the model each serves, with promote and
// rollback for those allowed to deploy; the retraining loops and whether they are due; the workspace's published
// models, newest first, with their headline metric, the dataset version they were trained on (lineage) and
// their evaluation report. A model's row opens its metrics, the aliases serving it and its production metrics
// from the review answers (GET /api/v1/models/{id}/monitor).

import { ApiError, apiJson, currentSession } from "./api";
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

export interface AliasRecord {
  name: string;
  model: string;
  version: number;
  updated_by: string;
  updated_at: string;
  dataset: string | null;
}

export interface AliasEvent {
  id: number;
  action: string;
  model: string | null;
  previous_model: string | null;
  actor: string;
  at: string;
  reason: string;
}

export interface LoopRecord {
  name: string;
  dataset: string;
  metric: string;
  margin: number;
  alias: string;
  every: number;
  enabled: boolean;
  state: { due: boolean; new_labels: number; every: number; since: string | null; baseline: string | null };
  auto?: LoopSchedule;
}

/** How a loop's rounds start on their own (active/loop.py ``schedule``). */
export interface LoopSchedule {
  automatic: boolean;
  check_seconds: number;
  in_flight: { job: string; status: string; by: string } | null;
  last_automatic: string | null;
  paused_until: string | null;
}

/** A loop's state in words: a round in flight first, then disabled / paused / due / waiting, and whether
 * rounds start on their own (workers check every ``check_seconds``) or only when someone runs them. */
export function loopState(loop: Pick<LoopRecord, "enabled" | "state" | "auto">): { text: string; busy: boolean } {
  const auto = loop.auto;
  const flight = auto?.in_flight;
  if (flight) return { text: `round ${flight.status} (job ${flight.job.slice(0, 12)}, by ${flight.by})`, busy: true };
  if (!loop.enabled) return { text: "disabled", busy: false };
  if (auto?.paused_until) return { text: `paused after a failed round until ${auto.paused_until.slice(0, 16).replace("T", " ")}`, busy: false };
  const start = auto === undefined ? "" : auto.automatic ? ` · starts on its own (checked every ${auto.check_seconds} s)` : " · run by hand";
  return { text: (loop.state.due ? "due" : "waiting") + start, busy: false };
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

/** Whether the login may move aliases and run loops (permission "deploy"); without users, yes. */
function canDeploy(): boolean {
  const me = currentSession();
  return !me || me.permissions.includes("deploy");
}

function when(iso: string): string {
  return iso.replace("T", " ").slice(0, 19);
}

const aliasPath = (name: string): string => `/api/v1/aliases/${encodeURIComponent(name)}`;

/** GET /api/v1/aliases/{name}'s lineage: the model and the dataset version it was trained on. */
export interface Lineage {
  model: string;
  aliases: string[];
  dataset: {
    ref: string;
    exists: boolean;
    created_by?: string;
    created_at?: string;
    images?: number;
    annotations?: number;
    same_content?: boolean | null;
  };
}

/** "production → digits-a → digits@1: 1,203 images, 3,400 labels, frozen by ana at …" */
export function lineageText(alias: Pick<AliasRecord, "name" | "model">, lineage: Lineage | undefined): string {
  const head = `${alias.name} → ${alias.model.slice(0, 12)}`;
  if (!lineage) return `${head} (its model folder is gone)`;
  const d = lineage.dataset;
  if (!d.exists) return `${head} → ${d.ref} (that dataset version no longer exists)`;
  const n = (v: number | undefined): string => (v ?? 0).toLocaleString("en-US");
  const changed = d.same_content === false ? "; its content changed since the training" : "";
  return `${head} → ${d.ref}: ${n(d.images)} images, ${n(d.annotations)} labels, frozen by ${d.created_by ?? "?"} at ${when(d.created_at ?? "")}${changed}`;
}

/** The aliases table: alias -> model -> dataset version; rollback and history per alias. */
function aliasesSection(
  items: AliasRecord[],
  open: (modelId: string) => void,
  changed: (text: string, ok: boolean) => void,
): HTMLElement {
  const rows = items.map((alias) => {
    const model = el("button", { type: "button", class: "linklike" }, alias.model.slice(0, 12));
    model.addEventListener("click", () => open(alias.model));
    const history = el("ol", { class: "history", "data-testid": "alias-history", hidden: "" });
    const showHistory = el("button", { type: "button", class: "linklike" }, "history");
    showHistory.addEventListener("click", () => {
      history.hidden = !history.hidden;
      if (history.hidden) return;
      apiJson<{ items: AliasEvent[] }>("GET", `${aliasPath(alias.name)}/history?limit=20`).then(
        (h) =>
          history.replaceChildren(
            ...h.items.map((e) =>
              el("li", {}, `${when(e.at)} ${e.action} → ${(e.model ?? "—").slice(0, 12)} by ${e.actor}${e.reason ? ` (${e.reason})` : ""}`),
            ),
          ),
        (err: unknown) => history.replaceChildren(el("li", {}, messageOf(err))),
      );
    });
    const lineage = el("p", { class: "history", "data-testid": "alias-lineage", hidden: "" });
    const showLineage = el("button", { type: "button", class: "linklike" }, "lineage");
    showLineage.addEventListener("click", () => {
      lineage.hidden = !lineage.hidden;
      if (lineage.hidden) return;
      apiJson<{ lineage?: Lineage }>("GET", aliasPath(alias.name)).then(
        (detail) => {
          lineage.textContent = lineageText(alias, detail.lineage);
        },
        (err: unknown) => {
          lineage.textContent = messageOf(err);
        },
      );
    });
    const actions = el("td", {}, showHistory, " ", showLineage);
    if (canDeploy()) {
      const rollback = el("button", { type: "button", "data-testid": "alias-rollback" }, "Roll back");
      rollback.addEventListener("click", () => {
        rollback.disabled = true;
        apiJson<AliasRecord>("POST", `${aliasPath(alias.name)}/rollback`, { version: alias.version, reason: "web app" }).then(
          (moved) => changed(`${alias.name} rolled back to ${moved.model.slice(0, 12)}.`, true),
          (err: unknown) => {
            rollback.disabled = false;
            changed(`${alias.name} not rolled back: ${messageOf(err)}`, false);
          },
        );
      });
      actions.append(" ", rollback);
    }
    return el(
      "tr",
      { "data-alias": alias.name },
      el("td", {}, el("strong", {}, alias.name)),
      el("td", { "data-testid": "alias-model" }, model),
      el("td", {}, alias.dataset ?? "—"),
      el("td", {}, `${when(alias.updated_at)} by ${alias.updated_by}`),
      actions,
      el("td", {}, history, lineage),
    );
  });
  return el(
    "section",
    { class: "page-section", "data-testid": "aliases" },
    el("h2", {}, "Aliases"),
    items.length === 0
      ? el("p", { class: "muted" }, "No aliases yet: point one at a model with `gigavision models alias set production MODEL`.")
      : el(
          "table",
          { class: "table" },
          el("thead", {}, el("tr", {}, ...["Alias", "Model", "Dataset version", "Moved", "", ""].map((h) => el("th", {}, h)))),
          el("tbody", {}, ...rows),
        ),
  );
}

/** The retraining loops: due or not (new labels since the served model's dataset version), run now. */
function loopsSection(items: LoopRecord[], changed: (text: string, ok: boolean) => void): HTMLElement {
  const rows = items.map((loop) => {
    const run = el("td", {});
    const state = loopState(loop);
    if (canDeploy() && !state.busy) {
      const button = el("button", { type: "button", "data-testid": "loop-run" }, "Run now");
      button.addEventListener("click", () => {
        button.disabled = true;
        apiJson<{ id: string }>("POST", `/api/v1/loops/${encodeURIComponent(loop.name)}/run`, { force: !loop.state.due }).then(
          (job) => changed(`Loop ${loop.name}: round queued as job ${job.id}.`, true),
          (err: unknown) => {
            button.disabled = false;
            changed(`Loop ${loop.name} not run: ${messageOf(err)}`, false);
          },
        );
      });
      run.append(button);
    }
    return el(
      "tr",
      { "data-loop": loop.name },
      el("td", {}, loop.name),
      el("td", {}, `${loop.dataset} → ${loop.alias}`),
      el("td", {}, `${loop.metric}, margin ${loop.margin}`),
      el("td", {}, `${loop.state.new_labels} / ${loop.every} new labels since ${loop.state.since ?? "—"}`),
      el("td", { "data-testid": "loop-state" }, state.text),
      run,
    );
  });
  return el(
    "section",
    { class: "page-section", "data-testid": "loops" },
    el("h2", {}, "Retraining loops"),
    el(
      "table",
      { class: "table" },
      el("thead", {}, el("tr", {}, ...["Loop", "Dataset → alias", "Compared on", "Labels", "State", ""].map((h) => el("th", {}, h)))),
      el("tbody", {}, ...rows),
    ),
  );
}

function details(
  model: ModelRecord,
  serving: AliasRecord[],
  signal: AbortSignal,
  changed: (text: string, ok: boolean) => void,
): HTMLElement {
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
    el("h3", {}, "Aliases"),
    aliasesOf(model, serving, changed),
    el("h3", {}, "In production (review answers)"),
    production,
  );
}

/** Which aliases serve the model; for deployers, "promote to" an alias (same task and label set, or a 400). */
function aliasesOf(model: ModelRecord, all: AliasRecord[], changed: (text: string, ok: boolean) => void): HTMLElement {
  const mine = all.filter((a) => a.model === model.id).map((a) => a.name);
  const box = el("div", { "data-testid": "model-aliases" }, el("p", {}, mine.length > 0 ? `Served as ${mine.join(", ")}` : "Not served by an alias."));
  const others = all.filter((a) => a.model !== model.id);
  if (!canDeploy() || others.length === 0) return box;
  const target = el("select", { "data-testid": "promote-target", "aria-label": "Alias to promote to" });
  for (const a of others) target.append(el("option", { value: a.name }, a.name));
  const promote = el("button", { type: "button", "data-testid": "model-promote" }, "Promote");
  promote.addEventListener("click", () => {
    const alias = others.find((a) => a.name === target.value);
    if (!alias) return;
    promote.disabled = true;
    apiJson<AliasRecord>("POST", `${aliasPath(alias.name)}/promote`, {
      model: model.id,
      version: alias.version,
      reason: "promoted in the web app",
      evidence: { headline: model.headline, metrics: model.metrics, dataset: model.dataset },
    }).then(
      () => changed(`${alias.name} now serves ${model.id.slice(0, 12)}.`, true),
      (err: unknown) => {
        promote.disabled = false;
        changed(`Not promoted: ${messageOf(err)}`, false);
      },
    );
  });
  box.append(el("div", { class: "row" }, "Promote to ", target, " ", promote));
  return box;
}

export function showModels(root: HTMLElement): () => void {
  const abort = new AbortController();
  const body = el("tbody", { "data-testid": "model-rows" });
  const count = el("span", { class: "count" });
  const side = el("section", { class: "page-section", "data-testid": "model-side" });
  const status = el("p", { class: "muted" }, "Loading…");
  const message = el("p", { class: "panel-message", role: "alert", "data-testid": "models-message", hidden: "" });
  const deploy = el("div", {});
  root.replaceChildren(
    el("header", { class: "bar" }, el("h1", {}, "Models"), count),
    el(
      "main",
      { class: "page models" },
      el(
        "div",
        {},
        message,
        deploy,
        el(
          "section",
          { class: "page-section" },
          el("h2", {}, "Published models"),
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
      ),
      side,
    ),
  );
  document.title = "Models — gigavision";

  let aliases: AliasRecord[] = [];
  let models: ModelRecord[] = [];
  let selectedId: string | null = null;

  const changed = (text: string, ok: boolean): void => {
    message.textContent = text;
    message.classList.toggle("ok", ok);
    message.hidden = false;
    if (ok) load();
  };

  function open(modelId: string): void {
    const model = models.find((m) => m.id === modelId);
    if (!model) return;
    selectedId = modelId;
    for (const row of body.querySelectorAll("tr")) row.classList.toggle("selected", row.dataset["model"] === modelId);
    side.replaceChildren(details(model, aliases, abort.signal, changed));
  }

  function load(): void {
    Promise.all([
      listModels(abort.signal),
      apiJson<{ items: AliasRecord[] }>("GET", "/api/v1/aliases", undefined, abort.signal),
      apiJson<{ items: LoopRecord[] }>("GET", "/api/v1/loops", undefined, abort.signal),
    ]).then(
      ([found, served, loops]) => {
        models = found;
        aliases = served.items;
        count.textContent = `${models.length} model${models.length === 1 ? "" : "s"}`;
        status.textContent = models.length === 0 ? "No models yet: train one with `gigavision train`." : "";
        deploy.replaceChildren(aliasesSection(aliases, open, changed), ...(loops.items.length > 0 ? [loopsSection(loops.items, changed)] : []));
        body.replaceChildren(
          ...models.map((model) => {
            const headline = model.headline ? `${model.headline} ${metricText(model.metrics[model.headline])}` : "—";
            const button = el("button", { type: "button", class: "linklike", "data-testid": "model-open" }, model.id.slice(0, 12));
            button.addEventListener("click", () => open(model.id));
            const served = aliases.filter((a) => a.model === model.id).map((a) => a.name);
            return el(
              "tr",
              { "data-model": model.id },
              el("td", {}, button, served.length > 0 ? el("span", { class: "badge" }, served.join(", ")) : ""),
              el("td", {}, model.task),
              el("td", {}, model.arch),
              el("td", {}, headline),
              el("td", {}, model.dataset),
              el("td", {}, model.created_at.slice(0, 10)),
            );
          }),
        );
        if (selectedId) open(selectedId);
      },
      (err: unknown) => {
        if (!abort.signal.aborted) status.textContent = `Could not load models: ${messageOf(err)}`;
      },
    );
  }

  load();
  return () => abort.abort();
}
