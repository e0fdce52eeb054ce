// Keeping several OpenSeadragon viewers of one image on the same view (the adjudication screen's panes).
//
// On every `viewport-change` of a viewer (each animation frame of a pan or zoom, whoever started it: mouse,
// keys, buttons), the others jump to its current zoom and centre at once. They are then equal, so their own
// `viewport-change` on the next frame finds nothing to copy back: no ping-pong, no leader to designate, and
// the last viewer moved wins. Zoom in OpenSeadragon is relative to the viewer's width, so panes of one size
// show the same level-0 rectangle.

export interface Point {
  x: number;
  y: number;
}

/** What syncing needs of an OpenSeadragon viewer (a fake one in the unit tests). */
export interface SyncedViewer {
  viewport: {
    getZoom(current?: boolean): number;
    getCenter(current?: boolean): Point;
    zoomTo(zoom: number, refPoint?: undefined, immediately?: boolean): unknown;
    panTo(center: Point, immediately?: boolean): unknown;
  };
  addHandler(event: "viewport-change", handler: () => void): unknown;
  removeHandler(event: "viewport-change", handler: () => void): unknown;
}

/** Relative difference below which two views are the same (float noise of the springs). */
const SAME = 1e-9;

function close(a: number, b: number): boolean {
  return Math.abs(a - b) <= SAME * Math.max(1, Math.abs(a), Math.abs(b));
}

/** Whether `b` shows what `a` shows now (current, not target, values). */
export function sameView(a: SyncedViewer, b: SyncedViewer): boolean {
  const ca = a.viewport.getCenter(true);
  const cb = b.viewport.getCenter(true);
  return close(a.viewport.getZoom(true), b.viewport.getZoom(true)) && close(ca.x, cb.x) && close(ca.y, cb.y);
}

/** Moves every other viewer with whichever one moves; returns the function that stops it. */
export function syncViewers(viewers: readonly SyncedViewer[]): () => void {
  let copying = false;
  const handlers = viewers.map((source) => {
    const handler = (): void => {
      if (copying) return; // a viewer being moved by us
      copying = true;
      try {
        const zoom = source.viewport.getZoom(true);
        const center = source.viewport.getCenter(true);
        for (const other of viewers) {
          if (other === source || sameView(source, other)) continue;
          other.viewport.zoomTo(zoom, undefined, true);
          other.viewport.panTo(center, true);
        }
      } finally {
        copying = false;
      }
    };
    source.addHandler("viewport-change", handler);
    return handler;
  });
  return () => viewers.forEach((viewer, i) => viewer.removeHandler("viewport-change", handlers[i] as () => void));
}
