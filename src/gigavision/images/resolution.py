"""How to read an image at a resolution: which pyramid level, and a level-0 window at any scale.

One rule chooses a level everywhere (tile server, patch samplers, training, prediction, tiled inference):
**the coarsest level whose downsample is at most the one asked for**, within ``TOLERANCE``. A read at a
level's own downsample returns its stored pixels; any other scale is resampled once from the chosen level
(``images.pixels.resize``), never from level 0 of a big image.

Two ways to say the scale:

- a **downsample** (level-0 pixels per output pixel; from a level, an mpp, or a model's input): the output's
  top-left is the chosen level's pixel nearest the window's top-left, so reading at a level's own downsample
  never resamples (patches, tiled inference);
- an **output size**: the region is resampled exactly onto it, sub-pixel box included (IIIF, Deep Zoom).

``ImageSource.read_region`` is the entry point; the functions here also serve callers that know an image's
level downsamples from the database without opening the file (the patch samplers, whole-image training).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from gigavision.errors import InvalidInput
from gigavision.images.pixels import Resample, resize

if TYPE_CHECKING:
    from gigavision.geometry import Region
    from gigavision.images.source import ImageSource

# A level within 2 % of the scale asked for is read as stored. Why 2 %: stored scales are never exact — a
# level's downsample is level-0 width over a width rounded up (1/width off a power of two: 1 % at 100 px),
# vendors report 4.0003 or 15.98, and scanners sold as 0.25 / 0.5 µm/px measure 0.2475–0.2527 / 0.499–0.504.
# A tighter rule reads the level below (4× the pixels) and shrinks it by a percent; at 2 % the level is read
# as is (a patch covers ≤ 2 % more or less tissue) or upsampled by ≤ 2 % (invisible in a tile, within the
# augmentation a model is trained with). Two real levels are ≥ 2× apart, so this never confuses two levels.
# tests/test_patches.py pins an mpp 1 % off a level to that level.
TOLERANCE = 0.02


@dataclass(frozen=True, slots=True)
class Resolution:
    """The pyramid ``level`` read and ``downsample``: level-0 pixels per output pixel (the level's own, or a
    scale between levels, then the level's pixels are resampled)."""

    level: int
    downsample: float


def level_for(downsamples: Sequence[float], downsample: float) -> int:
    """The coarsest level whose downsample is at most ``downsample`` (within ``TOLERANCE``); level 0 when
    even that is coarser (an upsampled read)."""
    limit = downsample * (1 + TOLERANCE)
    return max((k for k, d in enumerate(downsamples) if d <= limit), default=0)


def coarser_level(downsamples: Sequence[float], downsample: float) -> int | None:
    """The finest level at least ``downsample`` coarse (within ``TOLERANCE``), or None when none is."""
    limit = downsample * (1 - TOLERANCE)
    return next((k for k, d in enumerate(downsamples) if d >= limit), None)


def resolution_for(downsamples: Sequence[float], downsample: float) -> Resolution:
    """``level_for`` that level, at the level's own downsample when it is within ``TOLERANCE`` of the one
    asked for (read as stored), else at exactly ``downsample`` (resampled)."""
    if not (math.isfinite(downsample) and downsample > 0):
        raise InvalidInput(f"downsample must be a positive number, got {downsample}")
    level = level_for(downsamples, downsample)
    stored = float(downsamples[level])
    return Resolution(level, stored if abs(stored / downsample - 1) <= TOLERANCE else float(downsample))


def resolution_for_mpp(downsamples: Sequence[float], base_mpp: float, mpp: float) -> Resolution:
    """The resolution for ``mpp`` microns per output pixel of an image whose level 0 has ``base_mpp``."""
    return resolution_for(downsamples, mpp / base_mpp)


def level_for_side(downsamples: Sequence[float], width: int, height: int, side: int) -> int:
    """The level a whole ``width × height`` image is read at to be shown ``side`` pixels across (letterboxed
    model inputs): the coarsest still ``side`` across, within ``TOLERANCE``."""
    return level_for(downsamples, max(width, height) / side)


def whole_level(source: ImageSource, side: int) -> int:
    """``level_for_side`` of an open image: the level whole-image training and prediction read. Its pixel
    count, ``source.levels[k].width * .height``, is what a whole-image read decodes."""
    return level_for_side([lv.downsample for lv in source.levels], source.width, source.height, side)


def whole_pixels(source: ImageSource, side: int) -> int:
    """Pixels a whole-image read at ``side`` decodes (``whole_level``'s width × height): what a caller
    checks against a limit before choosing the whole-image path over tiles."""
    lvl = source.levels[whole_level(source, side)]
    return lvl.width * lvl.height


def read_level(source: ImageSource, level: int) -> np.ndarray:
    """A whole level as stored, ``(h, w, bands)`` (check its size first: this decodes all of it)."""
    lvl = source.levels[level]
    return source.read_window(level, 0, 0, lvl.width, lvl.height)


def _read_box(
    source: ImageSource,
    level: int,
    box: tuple[float, float, float, float],
    width: int,
    height: int,
    resample: Resample,
) -> np.ndarray:
    """``box`` in ``level`` pixels (fractional allowed) resampled onto ``width × height``; the stored pixels
    when the box is whole pixels of that size. Only the tiles under the box are decoded."""
    fx0, fy0, fx1, fy1 = box
    ix0, iy0 = math.floor(fx0), math.floor(fy0)
    ix1, iy1 = max(ix0 + 1, math.ceil(fx1)), max(iy0 + 1, math.ceil(fy1))
    arr = source.read_window(level, ix0, iy0, ix1 - ix0, iy1 - iy0)
    local = (fx0 - ix0, fy0 - iy0, fx1 - ix0, fy1 - iy0)
    return resize(arr, width, height, box=local, resample=resample)


def read_at(
    source: ImageSource,
    x: int,
    y: int,
    width: int,
    height: int,
    downsample: float,
    *,
    level: int | None = None,
    resample: Resample = "bilinear",
) -> np.ndarray:
    """``(height, width, bands)`` output pixels at ``downsample`` whose top-left is level-0 ``(x, y)``,
    snapped to the read level's pixel grid. ``level``: the level to read (default ``level_for``); at its own
    downsample the stored pixels come back, otherwise they are resampled. Parts outside the image are zero."""
    if not (math.isfinite(downsample) and downsample > 0):
        raise InvalidInput(f"downsample must be a positive number, got {downsample}")
    if width <= 0 or height <= 0:
        raise InvalidInput(f"window size must be positive, got {width}x{height}")
    if level is None:
        level = level_for([lv.downsample for lv in source.levels], downsample)
    lds = float(source._level(level).downsample)
    lx, ly = round(x / lds), round(y / lds)
    k = downsample / lds  # level pixels per output pixel
    if abs(k - 1) < 1e-9:
        return source.read_window(level, lx, ly, width, height)
    return _read_box(source, level, (lx, ly, lx + width * k, ly + height * k), width, height, resample)


def read_sized(
    source: ImageSource,
    region: Region | tuple[float, float, float, float],
    width: int,
    height: int,
    *,
    level: int | None = None,
    resample: Resample = "bilinear",
) -> np.ndarray:
    """Level-0 ``region`` (a ``Region``, or a fractional ``(x0, y0, x1, y1)``) resampled exactly onto
    ``width × height``, from ``level`` (default: ``level_for`` the finer of the two axes' scales)."""
    if width <= 0 or height <= 0:
        raise InvalidInput(f"output size must be positive, got {width}x{height}")
    if isinstance(region, tuple):
        x0, y0, x1, y1 = (float(v) for v in region)
    else:
        x0, y0, x1, y1 = float(region.x), float(region.y), float(region.x1), float(region.y1)
    if not (x1 > x0 and y1 > y0):
        raise InvalidInput(f"region must have a positive size, got {region}")
    if level is None:
        level = level_for([lv.downsample for lv in source.levels], min((x1 - x0) / width, (y1 - y0) / height))
    lvl = source._level(level)
    lds = float(lvl.downsample)
    # the far edges stop at the level's own edge: a tiny level's height, rounded up from a downsample
    # measured on the width, may be shorter than height / downsample
    fx0, fy0 = x0 / lds, y0 / lds
    fx1, fy1 = min(x1 / lds, max(lvl.width, fx0 + 1e-6)), min(y1 / lds, max(lvl.height, fy0 + 1e-6))
    return _read_box(source, level, (fx0, fy0, fx1, fy1), width, height, resample)


__all__ = [
    "TOLERANCE",
    "Resolution",
    "coarser_level",
    "level_for",
    "level_for_side",
    "read_at",
    "read_level",
    "read_sized",
    "resolution_for",
    "resolution_for_mpp",
    "whole_level",
    "whole_pixels",
]
