"""Window grids over a big image: where to read, never how (pure NumPy, no pixels touched).

A grid is laid out in the pixels of the level it will be read at (``downsample`` level-0 pixels per pixel), so
patches come out exactly ``size`` pixels and neighbouring windows overlap by a whole number of those pixels.
Windows are returned in level-0 pixels as an ``(N, 4)`` int64 array of ``[x0, y0, x1, y1]``, row-major
(top row first, left to right): the same order every time.

Edges, when the extent is not a whole number of strides:

- ``shift``: the last window of a row/column is moved back so it ends on the image edge (overlaps its
  neighbour more; no padding, every pixel real). Images smaller than one window get one padded window.
- ``pad``: windows keep the regular stride; the last one reaches past the edge (reads fill it with zeros).
- ``drop``: only windows wholly inside the image; a strip narrower than a window at the edge is not covered.

A low-resolution foreground mask (ingest stores one per image) filters windows by their tissue fraction,
computed for all windows at once from a summed-area table of the mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from gigavision.errors import InvalidInput

EdgeMode = Literal["shift", "pad", "drop"]
EDGE_MODES: tuple[str, ...] = get_args(EdgeMode)


def _pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int | np.integer) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int | np.integer) for v in pair):
        raise InvalidInput(f"{name} must be an int or a (width, height) pair of ints, got {value!r}")
    return int(pair[0]), int(pair[1])


def axis_starts(extent: int, size: int, stride: int, edge: EdgeMode = "shift") -> np.ndarray:
    """Window starts along one axis of ``extent`` pixels (int64, increasing)."""
    if size <= 0 or stride <= 0 or extent <= 0:
        raise InvalidInput(f"extent, size and stride must be positive, got {extent}, {size}, {stride}")
    if edge not in EDGE_MODES:
        raise InvalidInput(f"edge must be one of {', '.join(EDGE_MODES)}, got {edge!r}")
    if extent <= size:
        return np.zeros(0 if edge == "drop" and extent < size else 1, dtype=np.int64)
    if edge == "pad":
        return np.arange(math.ceil((extent - size) / stride) + 1, dtype=np.int64) * stride
    starts = np.arange(0, extent - size + 1, stride, dtype=np.int64)
    if edge == "shift" and starts[-1] + size < extent:
        starts = np.append(starts, extent - size)
    return starts


def level_extent(width: int, height: int, downsample: float) -> tuple[int, int]:
    """Size in pixels of a ``width × height`` (level-0) image seen at ``downsample``."""
    if downsample <= 0:
        raise InvalidInput(f"downsample must be positive, got {downsample}")
    return max(1, math.ceil(width / downsample - 1e-6)), max(1, math.ceil(height / downsample - 1e-6))


def window_grid(
    width: int,
    height: int,
    size: int | tuple[int, int],
    *,
    stride: int | tuple[int, int] | None = None,
    overlap: int | tuple[int, int] = 0,
    downsample: float = 1.0,
    edge: EdgeMode = "shift",
) -> np.ndarray:
    """Level-0 windows ``(N, 4)`` int64 ``[x0, y0, x1, y1]`` covering a ``width × height`` image, row-major.

    ``size``, ``stride`` and ``overlap`` are in pixels of the level read (``downsample`` level-0 pixels each);
    ``stride`` defaults to ``size - overlap``.
    """
    sw, sh = _pair(size, "size")
    ow, oh = _pair(overlap, "overlap")
    tw, th = _pair(stride, "stride") if stride is not None else (sw - ow, sh - oh)
    if tw <= 0 or th <= 0:
        raise InvalidInput(f"overlap {ow}x{oh} must be smaller than the patch size {sw}x{sh}")
    lw, lh = level_extent(width, height, downsample)
    xs = axis_starts(lw, sw, tw, edge)
    ys = axis_starts(lh, sh, th, edge)
    gy, gx = np.meshgrid(ys, xs, indexing="ij")
    starts = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float64)
    ends = starts + np.array([sw, sh], dtype=np.float64)
    return np.rint(np.concatenate([starts, ends], axis=1) * downsample).astype(np.int64).reshape(-1, 4)


class MaskIndex:
    """A low-resolution boolean mask of a ``width × height`` image, for fast window fractions.

    The mask may have any resolution (ingest stores ~1024 px on the long side); each mask cell stands for
    ``width / mask_width × height / mask_height`` level-0 pixels.
    """

    def __init__(self, mask: np.ndarray, width: int, height: int) -> None:
        mask = np.asarray(mask)
        if mask.ndim == 3:
            mask = mask[:, :, 0]
        if mask.ndim != 2 or mask.size == 0:
            raise InvalidInput(f"mask must be a non-empty 2-D array, got shape {mask.shape}")
        self.shape = mask.shape
        self.scale = (mask.shape[1] / width, mask.shape[0] / height)
        table = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=np.int64)
        table[1:, 1:] = (mask > 0).cumsum(axis=0).cumsum(axis=1)
        self._table = table

    @property
    def nbytes(self) -> int:
        return int(self._table.nbytes)

    def fractions(self, windows: np.ndarray) -> np.ndarray:
        """Foreground fraction ``(N,)`` of level-0 windows ``(N, 4)``; parts outside the image count as background.

        A window covers the mask cells its edges touch, so small windows still see at least one cell.
        """
        w = np.asarray(windows, dtype=np.float64).reshape(-1, 4)
        sx, sy = self.scale
        mh, mw = self.shape
        cx0, cy0 = np.floor(w[:, 0] * sx), np.floor(w[:, 1] * sy)
        cx1 = np.maximum(np.ceil(w[:, 2] * sx), cx0 + 1)
        cy1 = np.maximum(np.ceil(w[:, 3] * sy), cy0 + 1)
        area = (cx1 - cx0) * (cy1 - cy0)
        ix0, ix1 = np.clip(cx0, 0, mw).astype(np.int64), np.clip(cx1, 0, mw).astype(np.int64)
        iy0, iy1 = np.clip(cy0, 0, mh).astype(np.int64), np.clip(cy1, 0, mh).astype(np.int64)
        t = self._table
        inside = t[iy1, ix1] - t[iy0, ix1] - t[iy1, ix0] + t[iy0, ix0]
        out: np.ndarray = inside / area
        return out


def foreground_fractions(windows: np.ndarray, mask: np.ndarray, width: int, height: int) -> np.ndarray:
    """Foreground fraction of each level-0 window under a low-resolution ``mask`` of a ``width × height`` image."""
    return MaskIndex(mask, width, height).fractions(windows)


@dataclass(frozen=True, slots=True)
class GridSpec:
    """How to tile an image: patch size, stride or overlap (pixels of the level read), edges, tissue filter.

    ``min_foreground`` > 0 keeps only windows whose foreground fraction under the image's mask is at least that.
    """

    size: int | tuple[int, int] = 512
    stride: int | tuple[int, int] | None = None
    overlap: int | tuple[int, int] = 0
    edge: EdgeMode = "shift"
    min_foreground: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_foreground <= 1.0:
            raise InvalidInput(f"min_foreground must be in [0, 1], got {self.min_foreground}")
        if self.edge not in EDGE_MODES:
            raise InvalidInput(f"edge must be one of {', '.join(EDGE_MODES)}, got {self.edge!r}")

    def windows(
        self, width: int, height: int, downsample: float = 1.0, mask: np.ndarray | MaskIndex | None = None
    ) -> np.ndarray:
        """Level-0 windows ``(N, 4)`` int64 over a ``width × height`` image, filtered by ``mask`` when asked."""
        out = window_grid(
            width, height, self.size, stride=self.stride, overlap=self.overlap, downsample=downsample, edge=self.edge
        )
        if self.min_foreground > 0 and len(out):
            if mask is None:
                raise InvalidInput("min_foreground needs a foreground mask of the image")
            index = mask if isinstance(mask, MaskIndex) else MaskIndex(mask, width, height)
            out = out[index.fractions(out) >= self.min_foreground]
        return out
