"""Turning any pixel data (16-bit, float, 1/2/4+ bands) into 8-bit grey or RGB for thumbnails and tiles."""

from __future__ import annotations

import numpy as np


def display_window(sample: np.ndarray) -> tuple[float, float]:
    """Robust intensity range (0.5th-99.5th percentile) of a low-resolution sample, for non-8-bit data."""
    if sample.dtype == np.bool_:  # a 1-bit (bilevel) image: numpy cannot subtract booleans
        return 0.0, 1.0
    finite = sample[np.isfinite(sample)] if sample.dtype.kind == "f" else sample.ravel()
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, [0.5, 99.5])
    return float(lo), float(hi) if hi > lo else float(lo) + 1.0


def to_uint8(arr: np.ndarray, window: tuple[float, float] | None = None) -> np.ndarray:
    """``(H, W, C)`` of any dtype to ``(H, W, 1|3)`` uint8: first 3 bands (or 1), scaled through ``window``."""
    if arr.ndim == 2:
        arr = arr[:, :, None]
    arr = arr[:, :, :3] if arr.shape[2] >= 3 else arr[:, :, :1]
    if arr.dtype == np.uint8:
        return arr
    lo, hi = window if window is not None else display_window(arr)
    scaled = (arr.astype(np.float32) - lo) * (255.0 / (hi - lo))
    out: np.ndarray = np.clip(np.nan_to_num(scaled), 0, 255).astype(np.uint8)
    return out
