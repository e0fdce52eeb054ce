// 3D volumes in the viewer (issue 17): which images are volumes, the tile URL of a slice, the slice keys, and
// which annotations belong to the slice on screen. No DOM here (volume-panel.ts draws the controls).
//
// A slice is an image of its own on the server: `/dzi/{id}:{plane}:{index}.dzi` (docs/volumes.md). Its
// display pixels are square, so coronal and sagittal slices are taller than the volume has slices.

import { isImageId, type AnnotationRecord, type ImageInfo } from "./api";

export type Plane = "axial" | "coronal" | "sagittal";
export const PLANES: readonly Plane[] = ["axial", "coronal", "sagittal"];
/** The button text of each plane. */
export const PLANE_LETTERS: Record<Plane, string> = { axial: "A", coronal: "C", sagittal: "S" };

/** A plane's display image: `width` × `height` pixels, `slices` positions of the slider. */
export interface PlaneSize {
  width: number;
  height: number;
  slices: number;
}

export interface VolumeInfo {
  /** Voxels [z, y, x]. */
  shape: [number, number, number];
  /** Voxel size [x, y, z] in mm. */
  spacing: [number, number, number];
  planes: Record<Plane, PlaneSize>;
}

function positive(value: unknown): value is number {
  return typeof value === "number" && Number.isInteger(value) && value > 0;
}

function planeSize(value: unknown): PlaneSize | null {
  if (typeof value !== "object" || value === null) return null;
  const { width, height, slices } = value as Record<string, unknown>;
  return positive(width) && positive(height) && positive(slices) ? { width, height, slices } : null;
}

/** The volume an image is (from its `volume` metadata, written by ingest), or null for a 2D image. */
export function volumeOf(image: Pick<ImageInfo, "reader"> & { meta?: Record<string, unknown> }): VolumeInfo | null {
  const meta = image.meta?.["volume"];
  if (image.reader !== "volume" || typeof meta !== "object" || meta === null) return null;
  const { shape, spacing, planes } = meta as Record<string, unknown>;
  if (!Array.isArray(shape) || shape.length !== 3 || !shape.every(positive)) return null;
  if (!Array.isArray(spacing) || spacing.length !== 3 || !spacing.every((s) => typeof s === "number" && s > 0)) {
    return null;
  }
  if (typeof planes !== "object" || planes === null) return null;
  const sizes: Partial<Record<Plane, PlaneSize>> = {};
  for (const plane of PLANES) {
    const size = planeSize((planes as Record<string, unknown>)[plane]);
    if (!size) return null;
    sizes[plane] = size;
  }
  return {
    shape: shape as [number, number, number],
    spacing: spacing as [number, number, number],
    planes: sizes as Record<Plane, PlaneSize>,
  };
}

/** `index` kept on the plane's slider: 0 .. slices - 1. */
export function clampSlice(index: number, size: PlaneSize): number {
  return Math.min(Math.max(Math.round(index), 0), size.slices - 1);
}

/** The slice the viewer opens a plane at: the middle one. */
export function middleSlice(size: PlaneSize): number {
  return Math.floor(size.slices / 2);
}

/** The Deep Zoom descriptor of slice `index` of `plane` of volume `id`. */
export function sliceDziUrl(id: string, plane: Plane, index: number): string {
  if (!isImageId(id) || !PLANES.includes(plane) || !Number.isSafeInteger(index) || index < 0) {
    throw new Error(`not a slice: ${id}:${plane}:${index}`);
  }
  return `/dzi/${id}:${plane}:${index}.dzi`;
}

/** How many slices a key press moves by (`,` / `.` and Page Up / Page Down; with Shift ten at a time), or
 * null when it is not a slice key. Keys with Ctrl, Cmd or Alt are not ours. */
export function sliceStep(event: Pick<KeyboardEvent, "key" | "ctrlKey" | "metaKey" | "altKey" | "shiftKey">): number | null {
  if (event.ctrlKey || event.metaKey || event.altKey) return null;
  const by = event.shiftKey ? 10 : 1;
  switch (event.key) {
    case ".":
    case ">": // Shift + . on most layouts
    case "PageDown":
      return by;
    case ",":
    case "<":
    case "PageUp":
      return -by;
    default:
      return null;
  }
}

/** The attributes an annotation drawn on this slice is stored with (annotations.VOLUME_ATTRIBUTES). */
export function sliceAttributes(plane: Plane, index: number): { plane: Plane; slice: number } {
  return { plane, slice: index };
}

function whole(value: unknown): number | null {
  const n = typeof value === "string" && value.trim() !== "" ? Number(value) : value;
  return typeof n === "number" && Number.isInteger(n) ? n : null;
}

/** Whether `record` is shown on slice `index` of `plane`: drawn on that slice, or a 3D box (`z0` ≤ index <
 * `z1` on the axial plane). Annotations that name no plane belong to no slice in particular: shown on all. */
export function onSlice(record: Pick<AnnotationRecord, "attributes">, plane: Plane, index: number): boolean {
  const attributes = record.attributes ?? {};
  const z0 = whole(attributes["z0"]);
  const z1 = whole(attributes["z1"]);
  const drawnOn = attributes["plane"] ?? (z0 !== null ? "axial" : undefined);
  if (drawnOn === undefined) return true;
  if (drawnOn !== plane) return false;
  if (z0 !== null && z1 !== null) return z0 <= index && index < z1;
  return whole(attributes["slice"]) === index;
}
