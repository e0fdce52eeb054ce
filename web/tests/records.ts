import type { AnnotationRecord, BBox } from "../src/api";

/** A stored box annotation as the API returns it (version 1 unless given), for the unit tests. */
export function boxRecord(id: number, bbox: BBox, version = 1): AnnotationRecord {
  return {
    id,
    version,
    kind: "box",
    label: "cell",
    bbox,
    geometry: null,
    mask: null,
    score: null,
    source: "test",
    status: "proposed",
    attributes: {},
  };
}
