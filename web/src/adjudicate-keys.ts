// The adjudication screen's keyboard, the same in both views: 1–N pick an annotator's version (the one view
// shows it alone, side by side marks its pane), 0 unpick (all shown), Enter choose the picked version,
// V switch between side by side and one view. As in the review inbox (review-keys.ts), a number picks and
// Enter commits, so that one stray key never decides an item. Keys typed into a form field, or with
// Ctrl / Cmd / Alt, are not ours (keys.ts decides what is a field).

export type AdjudicateAction = { type: "pick"; index: number } | { type: "all" } | { type: "choose" } | { type: "view" };

/** The hint line of the screen. */
export const ADJUDICATE_KEYS_HINT = "Keys: 1–9 pick a version · 0 all · Enter choose the picked one · V side by side / one view";

/** What a key press asks for with `versions` versions on screen, or null when it is not a shortcut. */
export function adjudicateActionOf(
  event: Pick<KeyboardEvent, "key" | "ctrlKey" | "metaKey" | "altKey">,
  versions: number,
): AdjudicateAction | null {
  if (event.ctrlKey || event.metaKey || event.altKey) return null;
  const { key } = event;
  if (/^[1-9]$/.test(key)) {
    const index = Number(key) - 1;
    return index < versions ? { type: "pick", index } : null;
  }
  if (key === "0") return { type: "all" };
  if (key === "Enter") return { type: "choose" };
  if (key.toLowerCase() === "v") return { type: "view" };
  return null;
}
