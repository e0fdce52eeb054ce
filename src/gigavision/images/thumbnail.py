"""Thumbnails and foreground (tissue) masks, made from a low pyramid level, never from level 0 of a big image."""

from __future__ import annotations

import math

import numpy as np

from gigavision.images.display import to_uint8
from gigavision.images.source import ImageSource

MAX_OVERVIEW_PIXELS = 16 * 1024 * 1024


def overview(source: ImageSource, max_side: int, window: tuple[float, float] | None = None) -> np.ndarray:
    """The whole image as 8-bit ``(h, w, 1|3)`` with its longest side ≤ ``max_side``."""
    from PIL import Image

    # the smallest level that is still at least max_side on its longest side (or the smallest level)
    level = len(source.levels) - 1
    for i, lvl in enumerate(source.levels):
        if max(lvl.width, lvl.height) >= max_side and lvl.width * lvl.height <= MAX_OVERVIEW_PIXELS:
            level = i
    lvl = source.levels[level]
    arr = to_uint8(source.read_window(level, 0, 0, lvl.width, lvl.height), window)
    scale = max_side / max(lvl.width, lvl.height)
    if scale < 1:
        size = (max(1, round(lvl.width * scale)), max(1, round(lvl.height * scale)))
        im = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)
        im = im.reduce(max(1, math.floor(1 / scale))) if 1 / scale >= 2 else im
        arr = np.asarray(im.resize(size, Image.Resampling.LANCZOS))
    return arr if arr.ndim == 3 else arr[:, :, None]


def foreground_mask(rgb: np.ndarray) -> np.ndarray:
    """Boolean mask of "something there" on a low-resolution overview ``(h, w, 1|3)`` uint8.

    Slides and scans have a bright, unsaturated background: Otsu on darkness plus saturation separates it.
    Scenes without such a background (photos, satellite) are all foreground except exact-zero no-data.
    """
    from scipy import ndimage
    from skimage.filters import threshold_otsu
    from skimage.morphology import disk, remove_small_objects

    img = rgb.astype(np.float32)
    grey = img.mean(axis=2)
    nodata = (img == 0).all(axis=2)
    saturation = (img.max(axis=2) - img.min(axis=2)) if img.shape[2] >= 3 else np.zeros_like(grey)
    valid = grey[~nodata]
    if valid.size == 0 or float(valid.max()) - float(valid.min()) < 1:
        return ~nodata
    threshold = float(threshold_otsu(valid))
    bright = valid[valid > threshold]
    has_background = bright.size > 0.05 * valid.size and float(bright.mean()) > 200 and float(np.median(bright)) > 210
    if not has_background:
        return ~nodata
    mask = ((grey < threshold) | (saturation > 25)) & ~nodata
    radius = max(1, round(min(mask.shape) / 256))
    mask = ndimage.binary_closing(ndimage.binary_opening(mask, disk(radius)), disk(radius))
    return np.asarray(remove_small_objects(mask, max_size=max(4, mask.size // 20000)), dtype=bool)
