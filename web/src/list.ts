// The workspace's images as a grid of thumbnail cards: search by name, filters (label, annotation status, a
// metadata value, "has pending review") and pages, all in the hash (list-query.ts) and answered by the server.

import { ApiError, apiJson, listLabels, STATUSES, thumbnailUrl, type ImageInfo, type ImagePage } from "./api";
import { el } from "./dom";
import { formatMpp, formatSize } from "./format";
import { imagesQuery, listHash, pageCount, parseListQuery, type ListQuery } from "./list-query";

export const PAGE_SIZE = 50;

function card(image: ImageInfo): HTMLElement {
  const thumb = el("img", {
    class: "card-thumb",
    src: thumbnailUrl(image.id),
    alt: "",
    loading: "lazy",
    decoding: "async",
  });
  const meta = el("div", { class: "card-meta" });
  meta.append(el("span", { class: "card-name", title: image.name }, image.name));
  meta.append(el("span", { class: "card-size" }, `${formatSize(image.width, image.height)} px`));
  if (image.mpp_x !== null) {
    meta.append(el("span", { class: "card-mpp" }, formatMpp(image.mpp_x, image.mpp_y)));
  }
  const link = el(
    "a",
    { class: "card", href: `#/image/${image.id}`, "data-testid": "image-card", "data-image-id": image.id },
    el("div", { class: "card-frame" }, thumb),
    meta,
  );
  link.setAttribute("aria-label", image.name);
  return link;
}

function emptyState(filtered: boolean): HTMLElement {
  if (filtered) return el("div", { class: "empty", "data-testid": "empty" }, el("p", {}, "No images match these filters."));
  return el(
    "div",
    { class: "empty", "data-testid": "empty" },
    el("p", {}, "No images in this workspace yet."),
    el("p", {}, "Add some with ", el("code", {}, "gigavision ingest PATH"), " and reload this page."),
  );
}

function errorBox(err: unknown): HTMLElement {
  const message = err instanceof ApiError ? err.message : "Something went wrong.";
  return el("div", { class: "error", role: "alert" }, `Could not load images: ${message}`);
}

function searchForm(query: ListQuery): { node: HTMLFormElement; labels: HTMLSelectElement } {
  const q = el("input", { type: "search", name: "q", placeholder: "Search by name", "data-testid": "list-search", "aria-label": "Search by name" });
  q.value = query.q ?? "";
  const labels = el("select", { name: "label", "data-testid": "list-label", "aria-label": "Label" }, el("option", { value: "" }, "any label"));
  if (query.label) labels.append(el("option", { value: query.label }, query.label));
  labels.value = query.label ?? "";
  const status = el("select", { name: "status", "data-testid": "list-status", "aria-label": "Annotation status" }, el("option", { value: "" }, "any status"));
  for (const s of STATUSES) status.append(el("option", { value: s }, s));
  status.value = query.status ?? "";
  const meta = el("input", { type: "text", name: "meta", placeholder: "metadata key=value", "data-testid": "list-meta", "aria-label": "Metadata key=value" });
  meta.value = query.meta ?? "";
  const pending = el(
    "select",
    { name: "pending", "data-testid": "list-pending", "aria-label": "Pending review" },
    el("option", { value: "" }, "any review state"),
    el("option", { value: "1" }, "has pending review"),
    el("option", { value: "0" }, "no pending review"),
  );
  pending.value = query.pending ?? "";
  const form = el("form", { class: "filters", role: "search", "data-testid": "list-filters" }, q, labels, status, meta, pending, el("button", { type: "submit" }, "Search"));
  const apply = (): void => {
    const next: ListQuery = { page: 1 };
    if (q.value.trim()) next.q = q.value.trim();
    if (labels.value) next.label = labels.value;
    if (status.value) next.status = status.value;
    if (meta.value.trim()) next.meta = meta.value.trim();
    if (pending.value === "1" || pending.value === "0") next.pending = pending.value;
    window.location.hash = listHash(next);
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    apply();
  });
  for (const select of [labels, status, pending]) select.addEventListener("change", apply);
  return { node: form, labels };
}

/** Renders the list into `root` for the hash query `query`; returns a function that cancels pending requests. */
export function showList(root: HTMLElement, query = ""): () => void {
  const abort = new AbortController();
  const parsed = parseListQuery(query);
  const filtered = Boolean(parsed.q || parsed.label || parsed.status || parsed.meta || parsed.pending);
  const count = el("span", { class: "count", "data-testid": "list-count" });
  const grid = el("div", { class: "grid", "data-testid": "image-grid" });
  const status = el("div", { class: "status" }, "Loading…");
  const pager = el("nav", { class: "pager", "aria-label": "Pages", "data-testid": "list-pager", hidden: "" });
  const form = searchForm(parsed);

  root.replaceChildren(
    el("header", { class: "bar" }, el("h1", {}, "gigavision"), count),
    form.node,
    el("main", { class: "list" }, grid, status, pager),
  );
  document.title = "gigavision";

  listLabels(abort.signal).then(
    (schema) => {
      for (const name of Object.keys(schema)) {
        if (name !== parsed.label) form.labels.append(el("option", { value: name }, name));
      }
    },
    () => undefined,
  );

  apiJson<ImagePage>("GET", `/api/v1/images?${imagesQuery(parsed, PAGE_SIZE)}`, undefined, abort.signal).then(
    (page) => {
      for (const image of page.items) grid.append(card(image));
      status.replaceChildren();
      if (page.total === 0) status.append(emptyState(filtered));
      count.textContent = page.total === 1 ? "1 image" : `${page.total.toLocaleString("en-US")} images`;
      const pages = pageCount(page.total, PAGE_SIZE);
      if (pages > 1) {
        const link = (text: string, to: number, testId: string): HTMLElement =>
          to < 1 || to > pages
            ? el("span", { class: "muted" }, text)
            : el("a", { href: listHash({ ...parsed, page: to }), "data-testid": testId }, text);
        pager.replaceChildren(
          link("← Previous", parsed.page - 1, "list-previous"),
          el("span", {}, `Page ${parsed.page} of ${pages}`),
          link("Next →", parsed.page + 1, "list-next"),
        );
        pager.hidden = false;
      }
    },
    (err: unknown) => {
      if (abort.signal.aborted) return;
      status.replaceChildren(errorBox(err));
    },
  );
  return () => abort.abort();
}
