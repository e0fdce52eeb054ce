"""Pixel helpers on NumPy arrays ``(H, W, C)``: one resize, 3-band uint8, letterbox. No torch.

Training, prediction, the tile server and the patch samplers all resize through ``resize``, so a patch, a
viewer tile and a model input made from the same pixels are made the same way.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Resample = Literal["bilinear", "display", "lanczos", "nearest"]
# Lanczos (the viewer's sharper filter) first shrinks by whole factors with a box filter while the remaining
# reduction stays above this gap: Pillow's fast path for big reductions, indistinguishable from plain Lanczos.
LANCZOS_REDUCING_GAP = 3.0


def _filter(resample: Resample) -> int:
    from PIL import Image

    return {
        "display": Image.Resampling.BOX,  # beyond 2x with a fractional box: Pillow's box is the area average
        "bilinear": Image.Resampling.BILINEAR,
        "lanczos": Image.Resampling.LANCZOS,
        "nearest": Image.Resampling.NEAREST,
    }[resample]


def resize(
    arr: np.ndarray,
    width: int,
    height: int,
    *,
    box: tuple[float, float, float, float] | None = None,
    resample: Resample = "bilinear",
) -> np.ndarray:
    """``(h, w, C)`` (or ``(h, w)``) resampled to ``(height, width, C)``, dtype kept (integers rounded, clipped).

    ``box``: the source rectangle ``(x0, y0, x1, y1)`` in ``arr``'s pixels, fractional allowed (default: all
    of it). Antialiased when shrinking (Pillow's filters widen with the scale). Bands are resampled
    independently, never as premultiplied alpha: a 4th band may be near-infrared as well as opacity.
    """
    from PIL import Image

    squeeze = arr.ndim == 2
    if squeeze:
        arr = arr[:, :, None]
    if arr.shape[:2] == (height, width) and (box is None or box == (0, 0, width, height)):
        return arr[:, :, 0] if squeeze else arr
    if resample == "display" and arr.dtype in (np.uint8, np.uint16, np.float32):
        out = _display(arr, width, height, box)
        if out is not None:
            return out[:, :, 0] if squeeze else out
    flt = _filter(resample)
    gap = LANCZOS_REDUCING_GAP if resample == "lanczos" else None

    def one(im: Image.Image) -> np.ndarray:
        return np.asarray(im.resize((width, height), flt, box=box, reducing_gap=gap))

    if arr.dtype == np.uint8 and arr.shape[2] in (1, 3):
        out = one(Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)).reshape(height, width, arr.shape[2])
    elif arr.dtype == np.uint8:
        out = np.stack([one(Image.fromarray(arr[:, :, b])) for b in range(arr.shape[2])], axis=2)
    else:
        planes = [one(Image.fromarray(arr[:, :, b].astype(np.float32), mode="F")) for b in range(arr.shape[2])]
        stacked = np.stack(planes, axis=2)
        if np.issubdtype(arr.dtype, np.integer):
            info = np.iinfo(arr.dtype)
            stacked = np.clip(np.rint(stacked), info.min, info.max)
        out = stacked.astype(arr.dtype)
    return out[:, :, 0] if squeeze else out


def _display(
    arr: np.ndarray, width: int, height: int, box: tuple[float, float, float, float] | None
) -> np.ndarray | None:
    """``resize``'s ``display`` filter, with OpenCV: bilinear while an output pixel spans under 2 source
    pixels (every source pixel still reaches the output, and it is how the browser itself draws a tile
    between levels), the area average beyond. Measured against a float Lanczos resize of five scikit-image
    photographs at 1.25x, 1.5x and 1.9x, after a Q85 encode: within 0.4 dB of the area average and above
    Pillow's bilinear, in 0.11 ms instead of Lanczos's 2.5 ms (384² → 256²). None: left to Pillow's box
    (beyond 2x with a fractional box)."""
    import cv2

    x0, y0, x1, y1 = box if box is not None else (0.0, 0.0, float(arr.shape[1]), float(arr.shape[0]))
    sx, sy = (x1 - x0) / width, (y1 - y0) / height
    if sx < 2 and sy < 2:
        # output pixel centres mapped onto the source: the same convention as Pillow's and cv2.resize
        m = np.array([[sx, 0, x0 + 0.5 * sx - 0.5], [0, sy, y0 + 0.5 * sy - 0.5]])
        flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        planes = [arr[:, :, b : b + 4] for b in range(0, arr.shape[2], 4)]  # warpAffine takes ≤ 4 channels
        out = [cv2.warpAffine(p, m, (width, height), flags=flags, borderMode=cv2.BORDER_REPLICATE) for p in planes]
        return np.concatenate([o.reshape(height, width, -1) for o in out], axis=2)
    if not all(float(v).is_integer() for v in (x0, y0, x1, y1)):
        return None
    crop = arr[int(y0) : int(y1), int(x0) : int(x1)]
    return cv2.resize(crop, (width, height), interpolation=cv2.INTER_AREA).reshape(height, width, arr.shape[2])


def to_rgb_uint8(pixels: np.ndarray) -> np.ndarray:
    """``(H, W, C)`` of any band count and integer/float dtype as 3-band uint8 (grey repeated, alpha dropped)."""
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.dtype != np.uint8:
        if np.issubdtype(pixels.dtype, np.integer):
            top = float(np.iinfo(pixels.dtype).max)
        else:
            top = float(np.nanmax(pixels)) if pixels.size and np.nanmax(pixels) > 1.0 else 1.0
        pixels = np.clip(np.rint(pixels.astype(np.float32) * (255.0 / top)), 0, 255).astype(np.uint8)
    bands = pixels.shape[2]
    if bands == 1:
        return np.repeat(pixels, 3, axis=2)
    if bands == 2:  # grey + alpha
        return np.repeat(pixels[:, :, :1], 3, axis=2)
    return np.ascontiguousarray(pixels[:, :, :3])


def letterbox(pixels: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """Resize to fit a ``size`` square (isotropic) and pad right/bottom with zeros; returns (square, scale)."""
    h, w = pixels.shape[:2]
    scale = size / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    out = np.zeros((size, size, pixels.shape[2]), dtype=pixels.dtype)
    out[:nh, :nw] = resize(pixels, nw, nh)
    return out, scale


__all__ = ["Resample", "letterbox", "resize", "to_rgb_uint8"]
