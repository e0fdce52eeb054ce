// Label colours. A class is drawn in its colour from the label schema; a label without a usable one (an
// empty schema lets any label in) gets the server's palette colour for its name (GET
// /api/v1/labels/palette), the colour it would get as a class. The viewer keeps no palette of its own.

import { labelPalette, type LabelClass } from "./api";

export type Hex = `#${string}`;

const HEX_COLOR = /^#(?:[0-9a-f]{3}|[0-9a-f]{6})$/i;
/** Drawn until the server's colour for a name has arrived. */
export const PENDING_COLOR: Hex = "#808080";
/** Longest query string of one palette request (names are asked for in several when needed). */
export const MAX_QUERY_CHARS = 4000;

/** Splits names into groups whose `name=` query stays within `maxChars`. */
export function queryGroups(names: readonly string[], maxChars: number = MAX_QUERY_CHARS): string[][] {
  const groups: string[][] = [];
  let group: string[] = [];
  let chars = 0;
  for (const name of names) {
    const cost = new URLSearchParams({ name }).toString().length + 1;
    if (group.length > 0 && chars + cost > maxChars) {
      groups.push(group);
      group = [];
      chars = 0;
    }
    group.push(name);
    chars += cost;
  }
  if (group.length > 0) groups.push(group);
  return groups;
}

export class LabelColors {
  private classes: Record<string, LabelClass> | null = null;
  private readonly served = new Map<string, Hex>();
  /** Names asked for (or about to be): each is asked once. */
  private readonly asked = new Set<string>();
  private queue: string[] = [];
  private requests = 0;

  constructor(
    /** Called when colours arrived: whatever was drawn in `PENDING_COLOR` can be drawn again. */
    private readonly changed: () => void,
    private readonly signal?: AbortSignal,
  ) {}

  /** The schema's classes. Until they are set no name is asked for: most labels have a class. */
  setClasses(classes: Record<string, LabelClass>): void {
    this.classes = classes;
  }

  /** The colour of `label` now (`PENDING_COLOR` while the server's is on its way). */
  colorOf(label: string): Hex {
    const declared = this.classes?.[label]?.color;
    if (declared && HEX_COLOR.test(declared)) return declared as Hex;
    const served = this.served.get(label);
    if (served) return served;
    if (this.classes !== null && !this.asked.has(label)) {
      this.asked.add(label);
      this.queue.push(label);
      // Names met while drawing one frame go out together.
      if (this.queue.length === 1) queueMicrotask(() => void this.flush());
    }
    return PENDING_COLOR;
  }

  /** Palette requests queued or running. */
  get pending(): number {
    return this.requests + (this.queue.length > 0 ? 1 : 0);
  }

  private async flush(): Promise<void> {
    const names = this.queue;
    this.queue = [];
    for (const group of queryGroups(names)) {
      this.requests += 1;
      try {
        const colors = await labelPalette(group, this.signal);
        for (const [name, color] of Object.entries(colors)) {
          if (HEX_COLOR.test(color)) this.served.set(name, color as Hex);
        }
      } catch {
        // Left in PENDING_COLOR (not asked again: a failing server is not asked on every frame).
        continue;
      } finally {
        this.requests -= 1;
      }
      if (this.signal?.aborted) return;
      this.changed();
    }
  }
}
