"""``ImageSource``: any image as a stack of levels, read window by window through a shared tile cache.

Readers implement ``_read_tile`` on a per-level tile grid; the base class assembles arbitrary windows
from cached tiles, so a viewer request or a training patch never decodes more than the tiles it touches.
``read_region`` reads a level-0 region at any resolution: the level and the resampling are decided once, in
``images.resolution``.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from gigavision.config import Limits
from gigavision.errors import InvalidImage, InvalidInput, LimitExceeded
from gigavision.geometry import Region
from gigavision.images.cache import DEFAULT_CACHE, TileCache
from gigavision.images.pixels import Resample
from gigavision.images.resolution import level_for, read_at, read_sized


@dataclass(frozen=True, slots=True)
class Level:
    """One resolution level. ``downsample`` is level-0 width over this level's width."""

    width: int
    height: int
    downsample: float
    tile_width: int
    tile_height: int

    @property
    def tiles_across(self) -> int:
        return math.ceil(self.width / self.tile_width)

    @property
    def tiles_down(self) -> int:
        return math.ceil(self.height / self.tile_height)


@dataclass(slots=True)
class ImageInfo:
    """What a reader knows about an image without decoding its pixels."""

    width: int
    height: int
    levels: list[Level]
    bands: int
    dtype: str
    reader: str
    format: str
    mpp_x: float | None = None
    mpp_y: float | None = None
    crs: str | None = None
    transform: tuple[float, float, float, float, float, float] | None = None  # GDAL order
    modality: str | None = None
    tiled: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def pixels(self) -> int:
        return self.width * self.height


_source_ids = itertools.count()


class ImageSource(ABC):
    """A leveled, tile-cached view of one image file. Thread-safe: readers guard their own handles."""

    name: ClassVar[str] = "base"

    def __init__(self, path: Path, *, limits: Limits | None = None, cache: TileCache | None = None) -> None:
        self.path = Path(path)
        self.limits = limits if limits is not None else Limits()
        self.cache = cache if cache is not None else DEFAULT_CACHE
        self._key = next(_source_ids)  # cache namespace: unique per open source
        self._lock = threading.Lock()
        self.info = self._checked(self._probe)

    def _checked(self, probe: Callable[[], ImageInfo]) -> ImageInfo:
        """The reader's ``probe``, with any failure of its own (a header that lies trips the reader's
        arithmetic: a tuple where a number belongs, a zero tile size) turned into ``InvalidImage`` naming the
        file, and the levels checked to hold pixels and tiles: found by benchmarks/fuzz_files.py as 500s."""
        try:
            info = probe()
        except (InvalidImage, LimitExceeded):
            raise
        except Exception as exc:
            with contextlib.suppress(Exception):
                self.close()
            raise InvalidImage(f"{self.path.name}: malformed header ({type(exc).__name__}: {exc})") from exc
        problem = None
        if not info.levels or any(
            min(lvl.width, lvl.height, lvl.tile_width, lvl.tile_height) < 1 for lvl in info.levels
        ):
            problem = "a level or its tiles have no pixels"
        elif info.bands < 1:
            problem = f"{info.bands} bands"
        else:
            try:  # e.g. DICOM's BitsAllocated 12 made "uint12"
                np.dtype(info.dtype)
            except TypeError:
                problem = f"pixel type {info.dtype!r}"
        if problem is not None:
            with contextlib.suppress(Exception):
                self.close()
            raise InvalidImage(f"{self.path.name}: malformed header ({problem})")
        return info

    # -- reader interface -------------------------------------------------------------------------------
    @abstractmethod
    def _probe(self) -> ImageInfo:
        """Read the header and return the levels and metadata; raise ``InvalidImage`` when malformed."""

    @abstractmethod
    def _read_tile(self, level: int, tx: int, ty: int) -> np.ndarray:
        """Decode tile (tx, ty) of ``level`` as ``(h, w, bands)``; edge tiles may be larger than the image."""

    def raw_jpeg_tile(self, level: int, tx: int, ty: int) -> bytes | None:
        """A complete JPEG of the stored tile, when one exists that a browser can decode as is; else None."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release file handles."""

    # -- public API -------------------------------------------------------------------------------------
    @property
    def levels(self) -> list[Level]:
        return self.info.levels

    @property
    def width(self) -> int:
        return self.info.width

    @property
    def height(self) -> int:
        return self.info.height

    def level_for_downsample(self, downsample: float) -> int:
        """The coarsest level whose downsample is at most ``downsample`` (``images.resolution.level_for``)."""
        return level_for([lvl.downsample for lvl in self.levels], downsample)

    def read_window(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        """Pixels ``[y:y+height, x:x+width]`` of ``level`` in that level's coordinates, ``(H, W, bands)``.

        Parts outside the image are zero. Never decodes tiles the window does not touch.
        """
        lvl = self._level(level)
        if width <= 0 or height <= 0:
            raise InvalidInput(f"window size must be positive, got {width}x{height}")
        out = np.zeros((height, width, self.info.bands), dtype=self.info.dtype)
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + width, lvl.width), min(y + height, lvl.height)
        if x1 <= x0 or y1 <= y0:
            return out
        tw, th = lvl.tile_width, lvl.tile_height
        for ty in range(y0 // th, (y1 - 1) // th + 1):
            for tx in range(x0 // tw, (x1 - 1) // tw + 1):
                tile = self.tile(level, tx, ty)
                # intersection of the tile and the request, in level coordinates
                ix0, iy0 = max(x0, tx * tw), max(y0, ty * th)
                ix1, iy1 = min(x1, tx * tw + tw), min(y1, ty * th + th)
                out[iy0 - y : iy1 - y, ix0 - x : ix1 - x] = tile[
                    iy0 - ty * th : iy1 - ty * th, ix0 - tx * tw : ix1 - tx * tw
                ]
        return out

    def read_region(
        self,
        region: Region,
        level: int | None = None,
        *,
        downsample: float | None = None,
        size: tuple[int, int] | None = None,
        resample: Resample = "bilinear",
    ) -> np.ndarray:
        """Pixels of a level-0 ``region``, ``(h, w, bands)``, at any resolution (``images.resolution``).

        - neither ``downsample`` nor ``size``: as stored at ``level`` (default 0), covering the region;
        - ``downsample``: ``downsample`` level-0 pixels per output pixel, from the region's top-left snapped
          to the read level's grid; ``size`` pixels (default: the region's extent at that scale);
        - ``size`` alone: the region resampled exactly onto ``size`` (width, height).

        Without ``level`` the coarsest level fine enough is read (``level_for``); a read at a level's own
        downsample is its stored pixels, anything else is resampled once (``resample`` filter).
        """
        if downsample is None and size is None:
            level = level or 0
            scaled = region.scaled(1.0 / self._level(level).downsample)
            return self.read_window(level, scaled.x, scaled.y, scaled.width, scaled.height)
        if downsample is None:
            assert size is not None
            return read_sized(self, region, size[0], size[1], level=level, resample=resample)
        if size is None:
            size = (
                max(1, math.ceil(region.width / downsample - 1e-6)),
                max(1, math.ceil(region.height / downsample - 1e-6)),
            )
        return read_at(self, region.x, region.y, size[0], size[1], downsample, level=level, resample=resample)

    def tile(self, level: int, tx: int, ty: int) -> np.ndarray:
        """One decoded tile, through the shared LRU cache."""
        lvl = self._level(level)
        if not (0 <= tx < lvl.tiles_across and 0 <= ty < lvl.tiles_down):
            raise InvalidInput(
                f"tile ({tx}, {ty}) is outside level {level} ({lvl.tiles_across}x{lvl.tiles_down} tiles)"
            )
        key = (self._key, level, tx, ty)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        try:
            tile = self._read_tile(level, tx, ty)
        except (InvalidImage, LimitExceeded):
            raise
        except Exception as exc:  # a codec error deep inside a pyramid names the tile, not a traceback
            raise InvalidImage(f"{self.path.name}: cannot decode tile ({tx}, {ty}) of level {level}: {exc}") from exc
        if tile.ndim == 2:
            tile = tile[:, :, None]
        # a header that lies about sizes or bands decodes to a tile that cannot fill its place in the grid
        need_h = min(lvl.tile_height, lvl.height - ty * lvl.tile_height)
        need_w = min(lvl.tile_width, lvl.width - tx * lvl.tile_width)
        if tile.ndim != 3 or tile.shape[0] < need_h or tile.shape[1] < need_w or tile.shape[2] != self.info.bands:
            raise InvalidImage(
                f"{self.path.name}: malformed: tile ({tx}, {ty}) of level {level} decodes to {tile.shape}, the header "
                f"promises {need_h}x{need_w} pixels of {self.info.bands} band(s)"
            )
        self.cache.put(key, tile)
        return tile

    def _level(self, level: int) -> Level:
        if not 0 <= level < len(self.levels):
            raise InvalidInput(f"level {level} does not exist; {self.path.name} has levels 0..{len(self.levels) - 1}")
        return self.levels[level]

    def __enter__(self) -> ImageSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path.name!r}, {self.width}x{self.height}, levels={len(self.levels)})"


def halving_levels(width: int, height: int, tile: int, min_side: int = 1) -> list[Level]:
    """Virtual levels (each half the previous, rounded up) for sources that can shrink on the fly."""
    levels = [Level(width, height, 1.0, tile, tile)]
    w, h = width, height
    while max(w, h) > max(tile, min_side):
        w, h = math.ceil(w / 2), math.ceil(h / 2)
        levels.append(Level(w, h, width / w, tile, tile))
    return levels
