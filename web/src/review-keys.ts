// The review inbox's keyboard: A accept, R reject, E edit the proposal (then Enter or S saves it as a
// correction, Esc cancels), N next (skip), P previous, 1-9 pick a label, L store the picked label ("labelled").
// Keys typed into a form field, or with Ctrl / Cmd / Alt, are not ours (keys.ts decides what is a field).

export type ReviewAction =
  | { type: "accept" }
  | { type: "reject" }
  | { type: "edit" }
  | { type: "save" }
  | { type: "cancel" }
  | { type: "next" }
  | { type: "previous" }
  | { type: "label"; index: number }
  | { type: "labelled" };

/** The hint line under the buttons. */
export const REVIEW_KEYS_HINT = "Keys: A accept · R reject · E edit (Enter save, Esc cancel) · N next · P previous · 1–9 label · L labelled";

/** What a key press asks for while `editing` (or not), or null when it is not a shortcut. */
export function reviewActionOf(
  event: Pick<KeyboardEvent, "key" | "ctrlKey" | "metaKey" | "altKey">,
  editing: boolean,
): ReviewAction | null {
  if (event.ctrlKey || event.metaKey || event.altKey) return null;
  const key = event.key;
  if (/^[1-9]$/.test(key)) return { type: "label", index: Number(key) - 1 };
  if (editing) {
    // While a shape is being edited, letters would also reach Annotorious: only save and cancel are ours.
    if (key === "Enter" || key.toLowerCase() === "s") return { type: "save" };
    if (key === "Escape") return { type: "cancel" };
    return null;
  }
  switch (key.toLowerCase()) {
    case "a":
      return { type: "accept" };
    case "r":
      return { type: "reject" };
    case "e":
      return { type: "edit" };
    case "n":
    case "arrowright":
      return { type: "next" };
    case "p":
    case "arrowleft":
      return { type: "previous" };
    case "l":
      return { type: "labelled" };
    default:
      return null;
  }
}
