// Drawing a few annotation records over an OpenSeadragon viewer as one SVG overlay in level-0 coordinates
// (the review inbox's proposal, the adjudication screen's versions): no WebGL, nothing to load, and it
// follows pans and zooms exactly. Boxes and masks as their box, polygons with their holes, points as dots.

import OpenSeadragon from "openseadragon";

import type { AnnotationRecord, BBox, ImageInfo } from "./api";

const NS = "http://www.w3.org/2000/svg";
const DZI_TILE = 256; // server/render.py: DZI_TILE, no overlap, JPEG

/** The image's Deep Zoom source built from metadata already held: no descriptor request before its tiles. */
export function tileSourceOf(image: Pick<ImageInfo, "id" | "width" | "height">): { tileSource: OpenSeadragon.DziTileSource } {
  const source = new OpenSeadragon.DziTileSource(image.width, image.height, DZI_TILE, 0, `/dzi/${image.id}_files/`, "jpeg");
  return { tileSource: source };
}

/** The rings of a polygon record (every part's outer ring and holes). */
export function ringsOf(record: Pick<AnnotationRecord, "geometry">): [number, number][][] {
  const g = record.geometry;
  if (!g) return [];
  if (g.type === "Polygon") return g.coordinates as [number, number][][];
  if (g.type === "MultiPolygon") return (g.coordinates as [number, number][][][]).flat();
  return [];
}

/** The SVG path of rings ("M x,y L … Z" per ring). */
export function pathOf(rings: readonly (readonly (readonly number[])[])[]): string {
  return rings.map((ring) => `M${ring.map(([x, y]) => `${x},${y}`).join("L")}Z`).join("");
}

function union(boxes: BBox[]): BBox | null {
  if (boxes.length === 0) return null;
  return [
    Math.min(...boxes.map((b) => b[0])),
    Math.min(...boxes.map((b) => b[1])),
    Math.max(...boxes.map((b) => b[2])),
    Math.max(...boxes.map((b) => b[3])),
  ];
}

export interface DrawnShape {
  record?: Pick<AnnotationRecord, "kind" | "bbox" | "geometry" | "label">;
  /** A plain rectangle (a task's region) when there is no record. */
  box?: BBox;
  className: string;
  color?: string;
}

/** Adds one SVG overlay holding `shapes`; returns it (remove it with viewer.removeOverlay), or null if empty. */
export function drawShapes(viewer: OpenSeadragon.Viewer, shapes: DrawnShape[], testId: string): SVGSVGElement | null {
  const boxes = shapes.map((s) => s.record?.bbox ?? s.box).filter((b): b is BBox => Array.isArray(b));
  const all = union(boxes);
  if (!all) return null;
  const [x0, y0] = all;
  const w = Math.max(all[2] - x0, 1);
  const h = Math.max(all[3] - y0, 1);
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("viewBox", `${x0} ${y0} ${w} ${h}`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("class", "shapes-overlay");
  svg.setAttribute("data-testid", testId);
  for (const shape of shapes) {
    const record = shape.record;
    const rings = record ? ringsOf(record) : [];
    const box = record?.bbox ?? shape.box;
    let node: SVGElement;
    if (record?.kind === "point" && box) {
      node = document.createElementNS(NS, "circle");
      node.setAttribute("cx", String(box[0]));
      node.setAttribute("cy", String(box[1]));
      node.setAttribute("r", String(Math.max(w, h) / 100));
    } else if (rings.length > 0) {
      node = document.createElementNS(NS, "path");
      node.setAttribute("d", pathOf(rings));
      node.setAttribute("fill-rule", "evenodd");
    } else if (box) {
      node = document.createElementNS(NS, "rect");
      const [bx0, by0, bx1, by1] = box;
      for (const [k, v] of Object.entries({ x: bx0, y: by0, width: bx1 - bx0, height: by1 - by0 })) {
        node.setAttribute(k, String(v));
      }
    } else {
      continue;
    }
    node.setAttribute("class", shape.className);
    node.setAttribute("vector-effect", "non-scaling-stroke");
    if (shape.color) node.style.stroke = shape.color;
    if (record?.label) {
      const title = document.createElementNS(NS, "title");
      title.textContent = record.label;
      node.append(title);
    }
    svg.append(node);
  }
  viewer.addOverlay({ element: svg as unknown as HTMLElement, location: viewer.viewport.imageToViewportRectangle(x0, y0, w, h) });
  return svg;
}
