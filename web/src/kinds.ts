// Which classes of the label schema a tool draws with: the server refuses an annotation whose kind its class
// does not take (400 naming the class and its kind), so the viewer picks a class that fits the tool. The rule
// mirrors `store/labels.py` KIND_COMPATIBLE: polygons and masks both outline a region; other kinds only their own.

import type { AnnotationKind, LabelClass } from "./api";

const COMPATIBLE: Record<AnnotationKind, readonly AnnotationKind[]> = {
  tag: ["tag"],
  box: ["box"],
  point: ["point"],
  polygon: ["polygon", "mask"],
  mask: ["mask", "polygon"],
};

/** The kind of annotation each drawing tool makes (the overlay's tools and annotate.ts's). */
export const TOOL_KINDS: Readonly<Record<string, AnnotationKind>> = {
  rectangle: "box",
  polygon: "polygon",
  point: "point",
  brush: "mask",
  eraser: "mask",
  tag: "tag",
};

/** Whether a class of `classKind` takes an annotation of `kind`. */
export function takes(classKind: AnnotationKind, kind: AnnotationKind): boolean {
  return COMPATIBLE[classKind]?.includes(kind) ?? classKind === kind;
}

/** The classes (names, sorted) that take annotations of `kind`, those of exactly that kind first. */
export function classesFor(classes: Record<string, LabelClass>, kind: AnnotationKind): string[] {
  const names = Object.keys(classes).sort((a, b) => a.localeCompare(b));
  const exact = names.filter((n) => classes[n]?.kind === kind);
  const other = names.filter((n) => classes[n]?.kind !== kind && takes(classes[n]!.kind, kind));
  return [...exact, ...other];
}

/**
 * The label to draw with `kind`: `current` when its class takes that kind (or the schema does not know it:
 * an empty schema takes any label), else the first class that does; null when no class does (the message
 * then says which kind of class to add).
 */
export function labelFor(classes: Record<string, LabelClass>, kind: AnnotationKind, current: string): string | null {
  const cls = classes[current];
  if (!cls) return Object.keys(classes).length === 0 ? current : (classesFor(classes, kind)[0] ?? null);
  if (takes(cls.kind, kind)) return current;
  return classesFor(classes, kind)[0] ?? null;
}
