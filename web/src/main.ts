// Entry point: hash routing between the image list and the viewer; /login shows the login form.
//   #/              the workspace's images
//   #/image/{id}    one image in the viewer

import "./style.css";

import { ApiError, loadSession } from "./api";
import { showList } from "./list";
import { showLogin, showSessionBar } from "./login";
import { showViewer } from "./viewer";

type Route = { view: "list" } | { view: "image"; id: string };

export function parseRoute(hash: string): Route {
  const match = /^#\/image\/([^/?#]+)$/.exec(hash);
  if (match?.[1]) return { view: "image", id: decodeURIComponent(match[1]) };
  return { view: "list" };
}

const root = document.getElementById("app");
if (!root) throw new Error("#app is missing from index.html");
const app: HTMLElement = root;

let dispose: (() => void) | null = null;

function render(): void {
  dispose?.();
  const route = parseRoute(window.location.hash);
  document.body.dataset["view"] = route.view;
  dispose = route.view === "image" ? showViewer(app, route.id) : showList(app);
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
