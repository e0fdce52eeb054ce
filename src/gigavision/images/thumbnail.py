"""Thumbnails and foreground (tissue) masks, made from a low pyramid level, never from level 0 of a big image."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from gigavision.images.display import to_uint8
from gigavision.images.pixels import resize
from gigavision.images.resolution import read_level
from gigavision.images.source import ImageSource

MAX_OVERVIEW_PIXELS = 16 * 1024 * 1024
MASK_SIDE = 1024  # longest side of a foreground mask (ingest stores one; others are computed at this size)


def overview(source: ImageSource, max_side: int, window: tuple[float, float] | None = None) -> np.ndarray:
    """The whole image as 8-bit ``(h, w, 1|3)`` with its longest side ≤ ``max_side``.

    Not ``images.resolution.level_for``: an overview is read whole, so its level is bounded by pixels too
    (``MAX_OVERVIEW_PIXELS``), and it is never upsampled (a level just under ``max_side`` would give a
    smaller thumbnail). Stored thumbnails and foreground masks depend on this choice.
    """
    # the smallest level that is still at least max_side on its longest side (or the smallest level)
    level = len(source.levels) - 1
    for i, lvl in enumerate(source.levels):
        if max(lvl.width, lvl.height) >= max_side and lvl.width * lvl.height <= MAX_OVERVIEW_PIXELS:
            level = i
    return shrink(to_uint8(read_level(source, level), window), max_side)


def shrink(arr: np.ndarray, max_side: int) -> np.ndarray:
    """8-bit ``(h, w, 1|3)`` resized (aspect kept, Lanczos) so its longest side is at most ``max_side``."""
    h, w = arr.shape[:2]
    scale = max_side / max(w, h)
    if scale < 1:
        arr = resize(arr, max(1, round(w * scale)), max(1, round(h * scale)), resample="lanczos")
    out: np.ndarray = arr if arr.ndim == 3 else arr[:, :, None]
    return out


def load_foreground(stored: Path | None, source: Callable[[], ImageSource]) -> np.ndarray:
    """An image's boolean foreground mask: the PNG ingest stored at ``stored`` when it exists, else one
    computed from a ``MASK_SIDE`` overview of ``source()`` (opened only then: files never ingested)."""
    if stored is not None and stored.exists():
        from PIL import Image

        with Image.open(stored) as im:
            return np.asarray(im.convert("L")) > 127
    return foreground_mask(overview(source(), MASK_SIDE))


def foreground_mask(rgb: np.ndarray) -> np.ndarray:
    """Boolean mask of "something there" on a low-resolution overview ``(h, w, 1|3)`` uint8.

    Slides and scans sit on a bright, unsaturated background. We estimate its colour from the brightest
    pixels and split the distance to it with Otsu, so pale counterstained tissue counts as tissue (plain
    Otsu on grey separates dark stain from pale tissue instead). Scenes without such a background
    (photos, satellite) are all foreground except exact-zero no-data.

    Per-pixel maxima over the channels are taken channel by channel, and the opening and closing run in
    OpenCV (same disk, same zero border as ``scipy.ndimage``): the same mask, ~4× faster at ``MASK_SIDE``.
    """
    import cv2
    from scipy import ndimage
    from skimage.filters import threshold_otsu
    from skimage.morphology import disk, remove_small_objects

    img = rgb.astype(np.float32)
    channels = [img[:, :, c] for c in range(img.shape[2])]
    nodata: np.ndarray = _channel_max(channels) == 0  # uint8 input: all channels exactly 0
    valid = ~nodata
    grey = (sum(channels[1:], channels[0]) / len(channels))[valid]
    if grey.shape[0] < 16:
        return valid
    brightest = np.stack([c[valid] for c in channels], axis=1)[grey >= np.percentile(grey, 95)]
    background = np.median(brightest, axis=0)
    bg_saturation = float(background.max() - background.min())
    distance = _channel_max([np.abs(c - b) for c, b in zip(channels, background, strict=True)])
    spread = distance[valid]
    near = float((spread < 12).mean())
    if float(background.mean()) < 200 or bg_saturation > 25 or near < 0.05:
        return valid  # no slide-like background to remove
    threshold = max(12.0, float(threshold_otsu(spread))) if float(spread.max()) > 12 else 12.0
    mask = ((distance > min(threshold, 40.0)) & valid).astype(np.uint8)
    footprint = disk(max(1, round(min(mask.shape) / 256))).astype(np.uint8)
    for op in (cv2.MORPH_OPEN, cv2.MORPH_CLOSE):  # a zero border, as scipy's border_value=0: edges erode
        mask = np.asarray(cv2.morphologyEx(mask, op, footprint, borderType=cv2.BORDER_CONSTANT, borderValue=0))
    filled = ndimage.binary_fill_holes(mask.astype(bool))
    return np.asarray(remove_small_objects(filled, max_size=max(4, filled.size // 20000)), dtype=bool)


def _channel_max(channels: list[np.ndarray]) -> np.ndarray:
    """Element-wise maximum of same-shaped planes (a reduction over a short last axis is several times slower)."""
    out = channels[0].copy()
    for c in channels[1:]:
        np.maximum(out, c, out=out)
    return out
