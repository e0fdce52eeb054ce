// Entry point: hash routing between the app's screens; /login shows the login form.
//   #/                     the workspace's images (#/?q=…&label=…: search and filters)
//   #/image/{id}           one image in the viewer (?region=x0,y0,x1,y1: looking at that level-0 rectangle)
//   #/review?filters       the review inbox: one task at a time (review.ts)
//   #/qc                   my QC items to label and hand in, and items to adjudicate (qc.ts)
//   #/adjudicate/{item}    one disputed QC item: the annotators' versions, choose one or give my own
//   #/models               published models: metrics, report, lineage, aliases (models-page.ts)

import "./style.css";

import { ApiError, currentSession, loadSession, type BBox } from "./api";
import { el } from "./dom";
import { showList } from "./list";
import { showLogin, showSessionBar } from "./login";
import { showModels } from "./models-page";
import { showAdjudication, showQc } from "./qc";
import { showReview } from "./review";
import { showViewer } from "./viewer";

export type Route =
  | { view: "list"; query: string }
  | { view: "image"; id: string; region: BBox | null }
  | { view: "review"; query: string }
  | { view: "qc" }
  | { view: "adjudicate"; item: number }
  | { view: "models" };

/** The screen a location hash names (anything unknown: the image list). */
export function parseRoute(hash: string): Route {
  const [path = "", query = ""] = hash.replace(/^#/, "").split("?", 2);
  const image = /^\/image\/([^/?#]+)$/.exec(path);
  if (image?.[1]) return { view: "image", id: decodeURIComponent(image[1]), region: parseRegion(query) };
  if (path === "/review") return { view: "review", query };
  if (path === "/qc") return { view: "qc" };
  const item = /^\/adjudicate\/(\d{1,15})$/.exec(path);
  if (item?.[1]) return { view: "adjudicate", item: Number(item[1]) };
  if (path === "/models") return { view: "models" };
  return { view: "list", query: path === "/" || path === "" ? query : "" };
}

/** `region=x0,y0,x1,y1` of a hash query (four finite numbers, x1 > x0, y1 > y0), else null. */
export function parseRegion(query: string): BBox | null {
  const values = (new URLSearchParams(query).get("region") ?? "").split(",").map(Number);
  if (values.length !== 4 || !values.every(Number.isFinite)) return null;
  const [x0 = 0, y0 = 0, x1 = 0, y1 = 0] = values;
  return x1 > x0 && y1 > y0 ? [x0, y0, x1, y1] : null;
}

/** The header's links: [hash, text, the views it is current for]. */
export const NAV_LINKS: readonly (readonly [string, string, readonly Route["view"][]])[] = [
  ["#/", "Images", ["list", "image"]],
  ["#/review", "Review", ["review"]],
  ["#/qc", "QC", ["qc", "adjudicate"]],
  ["#/models", "Models", ["models"]],
];

const root = document.getElementById("app");
if (!root) throw new Error("#app is missing from index.html");
const app: HTMLElement = root;

let dispose: (() => void) | null = null;

function show(route: Route): () => void {
  switch (route.view) {
    case "image":
      return showViewer(app, route.id, route.region);
    case "review":
      return showReview(app, route.query);
    case "qc":
      return showQc(app);
    case "adjudicate":
      return showAdjudication(app, route.item);
    case "models":
      return showModels(app);
    default:
      return showList(app, route.query);
  }
}

const nav = el("nav", { class: "app-nav", "aria-label": "Screens", "data-testid": "app-nav" });

function renderNav(route: Route): void {
  const permissions = currentSession()?.permissions;
  nav.replaceChildren(
    ...NAV_LINKS.filter(([hash]) => hash !== "#/review" || !permissions || permissions.includes("review")).map(
      ([hash, text, views]) => {
        const link = el("a", { href: hash }, text);
        if (views.includes(route.view)) link.setAttribute("aria-current", "page");
        return link;
      },
    ),
  );
  if (!nav.isConnected) document.body.append(nav);
}

function render(): void {
  dispose?.();
  const route = parseRoute(window.location.hash);
  document.body.dataset["view"] = route.view;
  dispose = show(route);
  renderNav(route);
  window.scrollTo(0, 0);
}

if (window.location.pathname === "/login") {
  showLogin(app);
} else {
  // Who is logged in first: without a login the API's 401 sends the browser to /login.
  loadSession()
    .then((me) => {
      showSessionBar(me);
      window.addEventListener("hashchange", render);
      render();
    })
    .catch((err: unknown) => {
      if (err instanceof ApiError && err.status === 401) return; // on the way to /login
      window.addEventListener("hashchange", render);
      render(); // the views show the API's error (the server is down, ...)
    });
}
