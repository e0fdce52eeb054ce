// The workspace's images as a grid of thumbnail cards, paged with offset/limit.

import { ApiError, listImages, thumbnailUrl, type ImageInfo } from "./api";
import { el } from "./dom";
import { formatMpp, formatSize } from "./format";

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

function emptyState(): HTMLElement {
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

/** Renders the list into `root`; returns a function that cancels pending requests. */
export function showList(root: HTMLElement): () => void {
  const abort = new AbortController();
  const count = el("span", { class: "count" });
  const grid = el("div", { class: "grid", "data-testid": "image-grid" });
  const more = el("button", { class: "more", type: "button", hidden: "" }, "Load more");
  const status = el("div", { class: "status" }, "Loading…");

  root.replaceChildren(
    el("header", { class: "bar" }, el("h1", {}, "gigavision"), count),
    el("main", { class: "list" }, grid, status, more),
  );
  document.title = "gigavision";

  let loaded = 0;
  let total = 0;

  async function loadPage(): Promise<void> {
    more.disabled = true;
    try {
      const page = await listImages(loaded, PAGE_SIZE, abort.signal);
      total = page.total;
      for (const image of page.items) grid.append(card(image));
      loaded += page.items.length;
      status.replaceChildren();
      if (total === 0) status.append(emptyState());
      count.textContent = total === 1 ? "1 image" : `${total.toLocaleString("en-US")} images`;
      // An empty page means the server has nothing more for us even if total says otherwise.
      more.hidden = loaded >= total || page.items.length === 0;
      more.textContent = `Load more (${(total - loaded).toLocaleString("en-US")} left)`;
    } catch (err) {
      if (abort.signal.aborted) return;
      status.replaceChildren(errorBox(err));
    } finally {
      more.disabled = false;
    }
  }

  more.addEventListener("click", () => void loadPage());
  void loadPage();
  return () => abort.abort();
}
