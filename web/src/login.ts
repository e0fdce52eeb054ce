// The login page (/login: the same built page as the viewer, so it runs under the same CSP with no inline
// script) and the bar that shows who is logged in, with a logout button.

import { ApiError, logIn, logOut, type Session } from "./api";
import { el } from "./dom";

/** Where to go after logging in: the `next` path the API's 401 sent us from (same origin only). */
export function nextPath(search: string): string {
  const next = new URLSearchParams(search).get("next") ?? "/";
  return next.startsWith("/") && !next.startsWith("//") && !next.startsWith("/login") ? next : "/";
}

/** A failed login, in words. */
export function loginError(err: unknown): string {
  if (err instanceof ApiError) {
    if (err.status === 401) return "Wrong user name or password.";
    if (err.status === 429) return "Too many failed logins: wait a minute, then try again.";
    return err.message;
  }
  return "The server could not be reached.";
}

export function showLogin(root: HTMLElement): () => void {
  document.title = "gigavision: log in";
  const name = el("input", { id: "login-name", name: "name", autocomplete: "username", required: "" });
  const password = el("input", {
    id: "login-password",
    name: "password",
    type: "password",
    autocomplete: "current-password",
    required: "",
  });
  const message = el("p", { class: "error", role: "alert", "data-testid": "login-error", hidden: "" });
  const submit = el("button", { type: "submit", class: "tool" }, "Log in");
  const form = el(
    "form",
    { class: "login", method: "post", action: "/api/v1/login", "data-testid": "login-form" },
    el("h1", {}, "gigavision"),
    el("label", { for: "login-name" }, "User name"),
    name,
    el("label", { for: "login-password" }, "Password"),
    password,
    submit,
    message,
  );
  const onSubmit = (event: SubmitEvent): void => {
    event.preventDefault();
    submit.disabled = true;
    message.hidden = true;
    logIn(name.value, password.value)
      .then(() => window.location.assign(nextPath(window.location.search)))
      .catch((err: unknown) => {
        message.textContent = loginError(err);
        message.hidden = false;
        password.value = "";
        submit.disabled = false;
        password.focus();
      });
  };
  form.addEventListener("submit", onSubmit);
  root.replaceChildren(form);
  name.focus();
  return () => form.removeEventListener("submit", onSubmit);
}

/** Who is logged in and a logout button, fixed in a corner (only in a workspace with users). */
export function showSessionBar(me: Session): void {
  if (!me.users || me.via !== "session") return;
  const button = el("button", { type: "button", class: "tool", "data-testid": "logout" }, "Log out");
  button.addEventListener("click", () => {
    button.disabled = true;
    logOut()
      .catch(() => undefined) // the cookie is cleared either way; the login page follows
      .finally(() => window.location.assign("/login"));
  });
  const bar = el("div", { class: "session", "data-testid": "session" }, el("span", {}, `${me.name} (${me.role})`), button);
  document.body.append(bar);
}
