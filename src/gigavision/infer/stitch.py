"""Stitch per-window segmentation probabilities into a pyramidal label mask, in bounded memory; vectorise it.

The engine runs a segmentation model window by window (``tiling.grid.window_grid`` order: row-major, top
row first) and hands each window's class probabilities ``(C, h, w)`` to ``MaskStitcher``:

- **Seamless**: each window is weighted by a separable ``sin²`` ramp that rises from ~0 at a window side to 1
  over ``overlap`` pixels (only on sides that have a neighbour; image edges keep weight 1), and the sum is
  normalised by the summed weights. A model's predictions near a window border (where its receptive field
  is cut off) get almost no weight, so stitched output equals whole-image output within rounding. Two
  aligned ramps add up to exactly 1 (``sin² + cos²``).
- **Bounded memory**: windows arrive row-major, so when a window starts a new row every output row above it
  is final. Only one window-row band of float32 accumulators is kept: ``(C + 1) × window_height × width``
  values at the read level. Final rows are turned into uint8 labels (argmax) and probabilities and streamed
  to disk 256 rows at a time; libvips then builds the pyramid from that file, streaming too.

Outputs (the read level's pixel grid: ``ceil(width / downsample) × ceil(height / downsample)``):

- ``path``: labels, one uint8 class index per pixel (greyscale, so readers see the index itself), tiled 256²,
  deflate (lossless; never JPEG), pyramid levels shrunk by the *mode* so they stay class indices.
- ``<stem>.prob<suffix>`` when ``probabilities``: foreground probability ``round(255 × (1 − P(class 0)))``,
  pyramid levels shrunk by the mean. Class 0 is background by convention (skipped windows are class 0).

Both carry a JSON ImageDescription (``read_mask_info``) with the classes, their display colours (the palette:
``colorize``), ``downsample`` and level-0 size, so a reader maps pixels back to level 0; the resolution tags
hold the output's microns per pixel (``mpp × downsample``). Files appear atomically (temp + ``os.replace``);
a stitcher that is never closed, or fails, leaves nothing at ``path``.

``vectorize`` turns a label mask into polygons in level-0 coordinates, band by band: each band's 4-connected
components become exact pixel-edge polygons (holes kept), and only pieces touching a band border are unioned.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import uuid
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from gigavision.annotations import Annotations
from gigavision.errors import InvalidInput
from gigavision.tiling.grid import level_extent

FORMAT = "gigavision-segmentation/1"
TILE = 256  # tile side of the output TIFFs and the height of the pages streamed to disk
_EMIT_ROWS = 32  # rows finalised at a time: bounds the temporaries of argmax / division
_PROB_TOLERANCE = 1e-3

# Display colours per class index; class 0 (background) is black. Beyond the list, colours repeat.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0),
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (220, 190, 255),
    (170, 110, 40),
    (128, 0, 0),
    (170, 255, 195),
)


def class_colors(n: int) -> np.ndarray:
    """``(n, 3)`` uint8 display colours for class indices ``0..n-1`` (class 0 black)."""
    table = np.asarray(PALETTE, dtype=np.uint8)
    out: np.ndarray = np.concatenate([table[:1], np.resize(table[1:], (max(n - 1, 0), 3))])[:n]
    return out


def colorize(labels: np.ndarray, colors: np.ndarray | Sequence[Sequence[int]] | None = None) -> np.ndarray:
    """Labels ``(H, W)`` or ``(H, W, 1)`` uint8 → ``(H, W, 3)`` uint8 RGB for display."""
    lab = np.asarray(labels)
    if lab.ndim == 3:
        lab = lab[..., 0]
    table = class_colors(256) if colors is None else np.asarray(colors, dtype=np.uint8).reshape(-1, 3)
    if table.shape[0] < 256:
        table = np.concatenate([table, np.zeros((256 - table.shape[0], 3), dtype=np.uint8)])
    out: np.ndarray = table[lab]
    return out


def blend_ramp(length: int, overlap: int, *, start: bool, end: bool) -> np.ndarray:
    """1-D blending weight ``(length,)`` float32: ``sin²`` ramp over ``overlap`` pixels at each end that
    has a neighbour (``start``/``end``), 1 elsewhere. Never 0, so a pixel seen by one window keeps its value."""
    w = np.ones(length, dtype=np.float32)
    o = min(overlap, length)
    if o > 0:
        ramp = (np.sin(np.pi / 2 * (np.arange(o) + 0.5) / o) ** 2).astype(np.float32)
        if start:
            w[:o] = np.minimum(w[:o], ramp)
        if end:
            w[length - o :] = np.minimum(w[length - o :], ramp[::-1])
    return w


def _pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int | np.integer) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int | np.integer) and v >= 0 for v in pair):
        raise InvalidInput(f"{name} must be a non-negative int or a (width, height) pair of ints, got {value!r}")
    return int(pair[0]), int(pair[1])


@dataclass(frozen=True)
class StitchResult:
    """What ``MaskStitcher.close`` wrote. ``width``/``height`` are the mask's pixels (the read level)."""

    path: Path
    probability_path: Path | None
    width: int
    height: int
    downsample: float
    mpp: float | None  # microns per mask pixel (level-0 mpp × downsample), when known
    classes: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    pixel_counts: dict[str, int]  # mask pixels per class
    windows: int  # windows added
    skipped: int  # windows skipped (not run)

    @property
    def areas(self) -> dict[str, float]:
        """Area per class in level-0 pixels² (mask pixels × downsample²)."""
        return {name: count * self.downsample**2 for name, count in self.pixel_counts.items()}


class MaskStitcher:
    """Blend window probabilities into a pyramidal uint8 label TIFF (and a probability TIFF), row band by band.

    ``width``/``height`` are the image's level-0 size; ``window``/``overlap`` are in pixels of the level read
    (``downsample`` level-0 pixels each), as given to ``window_grid``; ``mpp`` is the level-0 microns per pixel.
    Windows must come in row-major order (a window may not start above one already added); within a row,
    any order. Not thread-safe: call from one thread. Use as a context manager, or call ``abort`` on failure:
    leaving the block without ``close`` discards everything.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        width: int,
        height: int,
        classes: Sequence[str],
        *,
        window: int | tuple[int, int],
        overlap: int | tuple[int, int],
        downsample: float = 1.0,
        probabilities: bool = True,
        mpp: float | None = None,
    ) -> None:
        import tifffile

        self.path = Path(path)
        if self.path.is_dir():
            raise InvalidInput(f"{self.path}: is a directory; give the label mask's file name (e.g. mask.tif)")
        if width <= 0 or height <= 0:
            raise InvalidInput(f"image size must be positive, got {width}x{height}")
        names = tuple(classes)
        if not 1 <= len(names) <= 256:
            raise InvalidInput(f"classes must name 1 to 256 classes (uint8 labels), got {len(names)}")
        if not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
            raise InvalidInput(f"classes must be distinct non-empty names, got {list(names)!r}")
        if not (math.isfinite(downsample) and downsample > 0):
            raise InvalidInput(f"downsample must be a positive number, got {downsample}")
        if mpp is not None and not (math.isfinite(mpp) and mpp > 0):
            raise InvalidInput(f"mpp must be a positive number of microns per pixel, got {mpp}")
        self._win = _pair(window, "window")
        self._ovl = _pair(overlap, "overlap")
        if min(self._win) <= 0 or self._ovl[0] >= self._win[0] or self._ovl[1] >= self._win[1]:
            raise InvalidInput(f"need 0 <= overlap < window, got window {window!r}, overlap {overlap!r}")

        self.width, self.height = width, height
        self.classes = names
        self.downsample = float(downsample)
        self.mpp = mpp * self.downsample if mpp is not None else None
        self.out_width, self.out_height = level_extent(width, height, self.downsample)
        self.probability_path = (
            self.path.with_name(f"{self.path.stem}.prob{self.path.suffix or '.tif'}") if probabilities else None
        )
        n, lw, band = len(names), self.out_width, self._win[1]
        self._acc = np.zeros((n, band, lw), dtype=np.float32)  # weighted probability sums
        self._wsum = np.zeros((band, lw), dtype=np.float32)  # summed weights
        self._top = 0  # mask row held in accumulator row 0; every row above it is written
        self._filled = 0  # accumulator rows [0, _filled) may hold data
        self._page = np.zeros((TILE, lw), dtype=np.uint8)
        self._page_prob = np.zeros((TILE, lw), dtype=np.uint8) if probabilities else None
        self._page_rows = 0
        self._counts = np.zeros(n, dtype=np.int64)
        self._added = self._skipped = 0
        self._closed = False

        self.path.parent.mkdir(parents=True, exist_ok=True)
        tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        outputs = [self.path] + ([self.probability_path] if self.probability_path else [])
        self._pages_tmp = [p.with_name(f".{p.name}.pages-{tag}") for p in outputs]
        self._final_tmp = [p.with_name(f".{p.name}.tmp-{tag}") for p in outputs]
        self._writers: list[Any] = []
        self._cleanup = weakref.finalize(self, _discard, self._writers, self._pages_tmp + self._final_tmp)
        for tmp in self._pages_tmp:
            self._writers.append(tifffile.TiffWriter(tmp, bigtiff=True))

    # -- public ------------------------------------------------------------------------------------------
    def add(self, xyxy_level0: Sequence[float] | np.ndarray, probs: np.ndarray) -> None:
        """Blend one window's probabilities ``(C, h, w)`` (float, at the read level) into the mask."""
        self._check_open()
        lx0, ly0 = self._place(xyxy_level0)
        p = self._check_probs(probs, xyxy_level0)
        self._advance(ly0)
        ww, wh = self._win
        cw, ch = min(ww, self.out_width - lx0), min(wh, self.out_height - ly0)  # windows may reach past the edge
        wy = blend_ramp(wh, self._ovl[1], start=ly0 > 0, end=ly0 + wh < self.out_height)[:ch]
        wx = blend_ramp(ww, self._ovl[0], start=lx0 > 0, end=lx0 + ww < self.out_width)[:cw]
        weight = wy[:, None] * wx[None, :]
        r0 = ly0 - self._top
        self._acc[:, r0 : r0 + ch, lx0 : lx0 + cw] += p[:, :ch, :cw] * weight
        self._wsum[r0 : r0 + ch, lx0 : lx0 + cw] += weight
        self._filled = max(self._filled, r0 + ch)
        self._added += 1

    def skip(self, xyxy_level0: Sequence[float] | np.ndarray) -> None:
        """Record a window that was not run (background). It adds no prediction: pixels no run window covers
        are class 0 with probability 0, and a skipped window does not dilute a neighbour's prediction."""
        self._check_open()
        _, ly0 = self._place(xyxy_level0)
        self._advance(ly0)
        self._skipped += 1

    def close(self) -> StitchResult:
        """Finish the remaining rows, build both pyramids and move them to their paths atomically."""
        self._check_open()
        try:
            self._advance(self.out_height)
            if self._page_rows:
                self._write_page()
            for writer in self._writers:
                writer.close()
            info = self._info()
            outputs = [(self.path, "labels", "mode")]
            if self.probability_path is not None:
                outputs.append((self.probability_path, "foreground_probability", "mean"))
            for (_, kind, shrink), pages, tmp in zip(outputs, self._pages_tmp, self._final_tmp, strict=True):
                _build_pyramid(pages, tmp, self.out_width, self.out_height, {**info, "kind": kind}, shrink, self.mpp)
                pages.unlink(missing_ok=True)
            # the label mask last: once it is at ``path``, its probability file is there too
            for (final, _, _), tmp in reversed(list(zip(outputs, self._final_tmp, strict=True))):
                os.replace(tmp, final)
        except BaseException:
            self.abort()
            raise
        self._closed = True
        self._cleanup.detach()
        return StitchResult(
            path=self.path,
            probability_path=self.probability_path,
            width=self.out_width,
            height=self.out_height,
            downsample=self.downsample,
            mpp=self.mpp,
            classes=self.classes,
            colors=tuple((int(r), int(g), int(b)) for r, g, b in class_colors(len(self.classes))),
            pixel_counts={name: int(c) for name, c in zip(self.classes, self._counts, strict=True)},
            windows=self._added,
            skipped=self._skipped,
        )

    def abort(self) -> None:
        """Discard everything written so far (temporary files); nothing is left at ``path``. Idempotent."""
        self._closed = True
        self._cleanup()

    def __enter__(self) -> MaskStitcher:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self._closed:
            self.abort()

    @property
    def nbytes(self) -> int:
        """Bytes held by the row band and page buffers (the stitcher's memory bound)."""
        pages = self._page.nbytes + (self._page_prob.nbytes if self._page_prob is not None else 0)
        return int(self._acc.nbytes + self._wsum.nbytes + pages)

    # -- internals ---------------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise InvalidInput(f"{self.path.name}: the stitcher is closed (close or abort was called)")

    def _place(self, xyxy: Sequence[float] | np.ndarray) -> tuple[int, int]:
        """Validate a level-0 window and return its top-left in mask pixels."""
        box = np.asarray(xyxy, dtype=np.float64).reshape(-1)
        if box.shape != (4,) or not np.isfinite(box).all():
            raise InvalidInput(f"window must be 4 level-0 numbers [x0, y0, x1, y1], got {xyxy!r}")
        x0, y0, x1, y1 = (float(v) for v in box)
        if x1 <= x0 or y1 <= y0 or x0 < 0 or y0 < 0 or x0 >= self.width or y0 >= self.height:
            raise InvalidInput(
                f"window [{x0:g}, {y0:g}, {x1:g}, {y1:g}] lies outside the {self.width}x{self.height} image "
                "(or is empty); windows come from window_grid in level-0 pixels"
            )
        ds, (ww, wh) = self.downsample, self._win
        if abs((x1 - x0) / ds - ww) > 1 or abs((y1 - y0) / ds - wh) > 1:
            raise InvalidInput(
                f"window [{x0:g}, {y0:g}, {x1:g}, {y1:g}] is {(x1 - x0) / ds:g}x{(y1 - y0) / ds:g} pixels at "
                f"downsample {ds:g}, but the stitcher was made for {ww}x{wh} windows"
            )
        lx0 = min(round(x0 / ds), self.out_width - 1)
        ly0 = min(round(y0 / ds), self.out_height - 1)
        if ly0 < self._top:
            raise InvalidInput(
                f"window [{x0:g}, {y0:g}, {x1:g}, {y1:g}] starts at mask row {ly0}, above rows already written "
                f"(up to {self._top}); windows must come in row-major order, as window_grid yields them"
            )
        return lx0, ly0

    def _check_probs(self, probs: np.ndarray, xyxy: Sequence[float] | np.ndarray) -> np.ndarray:
        p = np.asarray(probs)
        expected = (len(self.classes), self._win[1], self._win[0])
        if p.ndim != 3 or p.shape[0] != expected[0]:
            raise InvalidInput(
                f"probs must be (C, h, w) with C = {expected[0]} classes {list(self.classes)}, got shape {p.shape}"
            )
        if p.shape != expected:
            raise InvalidInput(
                f"probs for window {np.asarray(xyxy).tolist()} must have shape {expected}, got {p.shape}"
            )
        if p.dtype.kind != "f":
            raise InvalidInput(f"probs must be floating-point probabilities (softmax output), got dtype {p.dtype}")
        p = p.astype(np.float32, copy=False)
        lo, hi = float(p.min()), float(p.max())
        if not (lo >= -_PROB_TOLERANCE and hi <= 1 + _PROB_TOLERANCE):  # also catches NaN
            raise InvalidInput(
                f"probs must lie in [0, 1] (apply softmax/sigmoid first), got values in [{lo:g}, {hi:g}]"
            )
        return p

    def _advance(self, row: int) -> None:
        """Write every mask row above ``row`` (no window still to come can reach them) and slide the band."""
        row = min(row, self.out_height)
        n = row - self._top
        if n <= 0:
            return
        band = self._acc.shape[1]
        from_band = min(n, band)
        self._emit_band(from_band)
        keep = self._filled - from_band  # rows below the written ones that already hold data (the overlap)
        for r0 in range(0, max(keep, 0), _EMIT_ROWS):  # forward, in chunks: overlapping temporaries stay small
            r1 = min(keep, r0 + _EMIT_ROWS)
            self._acc[:, r0:r1] = self._acc[:, from_band + r0 : from_band + r1]
            self._wsum[r0:r1] = self._wsum[from_band + r0 : from_band + r1]
        start = max(keep, 0)
        self._acc[:, start : self._filled] = 0
        self._wsum[start : self._filled] = 0
        self._filled = start
        for done in range(0, n - from_band, _EMIT_ROWS):  # rows no window covered at all: background
            k = min(_EMIT_ROWS, n - from_band - done)
            zeros = np.zeros((k, self.out_width), dtype=np.uint8)
            self._emit(zeros, zeros if self._page_prob is not None else None)
        self._top = row

    def _emit_band(self, rows: int) -> None:
        """Turn accumulator rows ``[0, rows)`` into labels (argmax) and foreground probabilities."""
        for r0 in range(0, rows, _EMIT_ROWS):
            r1 = min(rows, r0 + _EMIT_ROWS)
            acc, wsum = self._acc[:, r0:r1], self._wsum[r0:r1]
            labels = np.argmax(acc, axis=0).astype(np.uint8)  # no weight: all zero -> class 0
            prob = None
            if self._page_prob is not None:
                p0 = np.divide(acc[0], wsum, out=np.ones_like(wsum), where=wsum > 0)
                prob = np.rint(np.clip(1.0 - p0, 0.0, 1.0) * 255.0).astype(np.uint8)
            self._emit(labels, prob)

    def _emit(self, labels: np.ndarray, prob: np.ndarray | None) -> None:
        """Append final rows to the 256-row page; write the page when full."""
        self._counts += np.bincount(labels.ravel(), minlength=len(self.classes))[: len(self.classes)]
        done = 0
        while done < len(labels):
            k = min(len(labels) - done, TILE - self._page_rows)
            self._page[self._page_rows : self._page_rows + k] = labels[done : done + k]
            if self._page_prob is not None and prob is not None:
                self._page_prob[self._page_rows : self._page_rows + k] = prob[done : done + k]
            self._page_rows += k
            done += k
            if self._page_rows == TILE:
                self._write_page()

    def _write_page(self) -> None:
        """One 256-row page (zero-padded at the bottom) per write; libvips reads the pages as one tall image."""
        pages = [self._page] + ([self._page_prob] if self._page_prob is not None else [])
        for page in pages:
            page[self._page_rows :] = 0
        for writer, page in zip(self._writers, pages, strict=True):
            writer.write(
                page,
                tile=(TILE, TILE),
                compression="zlib",
                compressionargs={"level": 1},
                photometric="minisblack",
                metadata=None,
            )
        self._page_rows = 0

    def _info(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "classes": list(self.classes),
            "colors": class_colors(len(self.classes)).tolist(),
            "downsample": self.downsample,
            "level0_width": self.width,
            "level0_height": self.height,
            "mpp": self.mpp,
            "probability_file": self.probability_path.name if self.probability_path else None,
            "probability": "uint8 round(255 * (1 - P(classes[0])))",
        }


def _discard(writers: list[Any], paths: list[Path]) -> None:
    for writer in writers:
        with contextlib.suppress(Exception):  # best effort: the file is deleted next
            writer.close()
    for p in paths:
        p.unlink(missing_ok=True)


def _build_pyramid(
    pages: Path, out: Path, width: int, height: int, info: dict[str, Any], shrink: str, mpp: float | None
) -> None:
    """Stack the 256-row pages into one image, crop the padding and save a tiled deflate pyramid (streamed)."""
    import pyvips

    image = pyvips.Image.new_from_file(str(pages), n=-1, access="sequential").crop(0, 0, width, height).copy()
    for name in ("page-height", "n-pages"):
        if image.get_typeof(name):
            image.remove(name)
    image.set_type(pyvips.GValue.gstr_type, "image-description", json.dumps(info))
    # libvips takes resolution in pixels per millimetre, whatever unit it writes
    resolution = {"resunit": "cm", "xres": 1000.0 / mpp, "yres": 1000.0 / mpp} if mpp else {}
    image.tiffsave(
        str(out),
        tile=True,
        tile_width=TILE,
        tile_height=TILE,
        pyramid=True,
        compression="deflate",
        region_shrink=shrink,
        bigtiff=True,
        **resolution,
    )


def read_mask_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON description of a mask written by ``MaskStitcher`` (classes, colours, downsample, ...)."""
    import tifffile

    p = Path(path)
    try:
        with tifffile.TiffFile(p) as tif:
            text = tif.pages.first.description
        info = json.loads(text)
    except (OSError, ValueError, IndexError, AttributeError, tifffile.TiffFileError) as exc:  # no pages: IndexError
        raise InvalidInput(f"{p.name}: not a gigavision segmentation mask ({type(exc).__name__}: {exc})") from exc
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise InvalidInput(f"{p.name}: not a gigavision segmentation mask (no {FORMAT} description)")
    return info


@dataclass
class _Piece:
    """A polygon in mask pixels with the foreground-probability sum and pixel count under it (for its score)."""

    geom: Any
    prob_sum: float
    pixels: int


def vectorize(
    mask: str | os.PathLike[str] | StitchResult,
    *,
    classes: Sequence[str] | None = None,
    min_area: float = 0.0,
    band_rows: int = 512,
    source: str | None = None,
) -> Annotations:
    """Polygons (level-0 pixels) of each class's 4-connected regions in a stitched label mask, read band by band.

    ``classes``: the class names to outline (default: all but class 0, the background). ``min_area`` drops
    polygons smaller than that many level-0 pixels². Polygons follow pixel edges exactly (area = pixel count ×
    downsample²) and keep holes. ``score`` is the mean foreground probability inside the polygon when the
    probability file is there, else NaN. Memory: about ``15 × band_rows × width`` bytes (the band, its
    component labels, a component's temporaries, two tile rows of cache) plus the polygons.
    """
    from scipy import ndimage

    from gigavision.images.cache import LRUCache
    from gigavision.images.registry import open_image

    path = mask.path if isinstance(mask, StitchResult) else Path(mask)
    info = read_mask_info(path)
    names: list[str] = list(info["classes"])
    wanted = names[1:] if classes is None else list(classes)
    unknown = [c for c in wanted if c not in names]
    if unknown:
        raise InvalidInput(f"unknown classes {unknown}; the mask has {names}")
    if band_rows <= 0:
        raise InvalidInput(f"band_rows must be positive, got {band_rows}")
    ids = [names.index(c) for c in wanted]
    ds = float(info["downsample"])
    prob_name = info.get("probability_file")
    prob_path = path.with_name(prob_name) if prob_name else None

    # private, and just big enough that a tile row cut by a band border is decoded once (the shared cache
    # would be flooded by full-width bands)
    mask_width = level_extent(int(info["level0_width"]), int(info["level0_height"]), ds)[0]
    cache = LRUCache[np.ndarray](4 * TILE * mask_width)
    labels = open_image(path, cache=cache)
    probs = open_image(prob_path, cache=cache) if prob_path is not None and prob_path.is_file() else None
    pending: dict[int, list[_Piece]] = {c: [] for c in ids}  # pieces touching the current band's top
    done: list[tuple[int, _Piece]] = []
    width, height = labels.width, labels.height
    try:
        for y0 in range(0, height, band_rows):
            y1 = min(height, y0 + band_rows)
            band = labels.read_window(0, 0, y0, width, y1 - y0)[..., 0]
            fg = probs.read_window(0, 0, y0, width, y1 - y0)[..., 0] if probs is not None else None
            for c in ids:
                found = band == c
                if not found.any() and not pending[c]:
                    continue
                comp, _ = ndimage.label(found)  # 4-connectivity, like the pixel-edge polygons
                at_top, nxt = [], []
                for i, sl in enumerate(ndimage.find_objects(comp), start=1):
                    own = comp[sl] == i
                    geom = _pixel_polygon(own, sl[1].start, y0 + sl[0].start)
                    prob_sum = float(fg[sl][own].sum(dtype=np.int64)) if fg is not None else 0.0
                    piece = _Piece(geom, prob_sum, int(own.sum()))
                    if y0 > 0 and sl[0].start == 0:
                        at_top.append(piece)
                    elif y1 < height and sl[0].stop == y1 - y0:
                        nxt.append(piece)
                    else:
                        done.append((c, piece))
                if pending[c] or at_top:
                    for merged in _union_pieces(pending[c] + at_top):
                        if y1 < height and merged.geom.bounds[3] >= y1:
                            nxt.append(merged)
                        else:
                            done.append((c, merged))
                pending[c] = nxt
    finally:
        labels.close()
        if probs is not None:
            probs.close()

    import shapely

    kept = [(c, p) for c, p in done if p.geom.area * ds * ds >= min_area]
    if not kept:
        return Annotations.empty()
    geoms = np.empty(len(kept), dtype=object)
    geoms[:] = [p.geom for _, p in kept]
    if ds != 1.0:
        geoms = shapely.transform(geoms, lambda xy: xy * ds)
    score = [p.prob_sum / p.pixels / 255.0 if probs is not None else math.nan for _, p in kept]
    columns: dict[str, Any] = {"score": np.asarray(score)}
    if source is not None:
        columns["source"] = [source] * len(kept)
    return Annotations.from_polygons(list(geoms), [names[c] for c, _ in kept], **columns)


def _pixel_polygon(mask: np.ndarray, ox: int, oy: int) -> Any:
    """Exact pixel-edge outline of a boolean mask placed at ``(ox, oy)``: union of its horizontal runs."""
    import shapely

    padded = np.zeros((mask.shape[0], mask.shape[1] + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    edges = np.diff(padded, axis=1)  # +1 where a run starts, -1 one past where it ends
    rows, starts = np.nonzero(edges == 1)
    _, ends = np.nonzero(edges == -1)
    return shapely.union_all(shapely.box(ox + starts, oy + rows, ox + ends, oy + rows + 1))


def _union_pieces(pieces: list[_Piece]) -> list[_Piece]:
    """Union pieces that share an edge (across a band border); each part keeps the stats of its pieces."""
    import shapely

    merged = shapely.union_all([p.geom for p in pieces])
    parts = list(shapely.get_parts(merged))
    if len(parts) == 1:
        return [_Piece(parts[0], sum(p.prob_sum for p in pieces), sum(p.pixels for p in pieces))]
    tree = shapely.STRtree(parts)
    out = [_Piece(g, 0.0, 0) for g in parts]
    points = shapely.point_on_surface([p.geom for p in pieces])
    for piece, point in zip(pieces, points, strict=True):
        hits = tree.query(point, predicate="intersects")
        target = out[int(hits[0])] if len(hits) else out[0]
        target.prob_sum += piece.prob_sum
        target.pixels += piece.pixels
    return out
