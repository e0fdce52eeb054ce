// Number and size formatting shared by the list and the viewer.

const integer = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });

/** "40,000 × 25,000" */
export function formatSize(width: number, height: number): string {
  return `${integer.format(width)} × ${integer.format(height)}`;
}

/** "0.25 µm/px" (mpp_y shown only when it differs from mpp_x). */
export function formatMpp(mppX: number, mppY: number | null): string {
  const fmt = (v: number): string => String(Number(v.toPrecision(4)));
  if (mppY !== null && Math.abs(mppY - mppX) > 1e-9 * Math.max(mppX, mppY)) {
    return `${fmt(mppX)} × ${fmt(mppY)} µm/px`;
  }
  return `${fmt(mppX)} µm/px`;
}

/** "1.0 gigapixel" / "12.3 megapixels" — a sense of scale next to the exact size. */
export function formatPixels(width: number, height: number): string {
  const px = width * height;
  if (px >= 1e9) return `${(px / 1e9).toFixed(1)} gigapixels`;
  if (px >= 1e6) return `${(px / 1e6).toFixed(1)} megapixels`;
  return `${integer.format(px)} pixels`;
}
