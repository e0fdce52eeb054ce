// The overlay's keyboard shortcuts (also listed in the panel's hint): B box, P polygon, V / Esc select,
// Del / Backspace delete, H hide or show. Keys typed into a form field, or with Ctrl / Cmd / Alt, are not ours.

import type { Tool } from "./overlay-panel";

export type Shortcut = { tool: Tool } | "delete" | "toggle";

/** What a key press asks for, or null when it is not a shortcut. */
export function shortcutOf(event: Pick<KeyboardEvent, "key" | "ctrlKey" | "metaKey" | "altKey">): Shortcut | null {
  if (event.ctrlKey || event.metaKey || event.altKey) return null;
  if (event.key === "Delete" || event.key === "Backspace") return "delete";
  switch (event.key.toLowerCase()) {
    case "escape":
    case "v":
      return { tool: "select" };
    case "b":
      return { tool: "rectangle" };
    case "p":
      return { tool: "polygon" };
    case "h":
      return "toggle";
    default:
      return null;
  }
}

/** Whether a key press goes to a form field (or other editable text) rather than to the overlay. */
export function typingInto(target: EventTarget | null): boolean {
  return (
    target instanceof HTMLInputElement ||
    target instanceof HTMLSelectElement ||
    target instanceof HTMLTextAreaElement ||
    (target instanceof HTMLElement && target.isContentEditable)
  );
}

/** The annotation tools' commands (annotate.ts): O point tool, Ctrl/Cmd+Z undo, Ctrl/Cmd+Shift+Z and Ctrl+Y
 * redo, Ctrl/Cmd+C copy and Ctrl/Cmd+V paste the selected shape. */
export type ToolCommand = "point" | "undo" | "redo" | "copy" | "paste";

export function commandOf(
  event: Pick<KeyboardEvent, "key" | "ctrlKey" | "metaKey" | "altKey" | "shiftKey">,
): ToolCommand | null {
  if (event.altKey) return null;
  const key = event.key.toLowerCase();
  if (event.ctrlKey || event.metaKey) {
    if (key === "z") return event.shiftKey ? "redo" : "undo";
    if (key === "y" && event.ctrlKey) return "redo";
    if (key === "c" && !event.shiftKey) return "copy";
    if (key === "v" && !event.shiftKey) return "paste";
    return null;
  }
  return key === "o" && !event.shiftKey ? "point" : null;
}
