"""Stitch per-window segmentation probabilities into a pyramidal label mask, in bounded memory.

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

The outputs (the read level's pixel grid: ``ceil(width / downsample) × ceil(height / downsample)``) are a label
mask at ``path`` and, when ``probabilities``, its foreground-probability file, in the format of
``infer.mask_file``; skipped windows are class 0. Files appear atomically (temp + ``files.publish``); a stitcher
that is never closed, or fails, leaves nothing at ``path``. ``infer.vectorize`` turns the mask into polygons.
"""

from __future__ import annotations

import contextlib
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

from gigavision.errors import InvalidInput
from gigavision.files import publish
from gigavision.infer.mask_file import (
    TILE,
    build_pyramid,
    mask_description,
    open_pages,
    probability_path,
    write_page,
)
from gigavision.infer.palette import class_colors
from gigavision.tiling.grid import level_extent

_EMIT_ROWS = 32  # rows finalised at a time: bounds the temporaries of argmax / division
_PROB_TOLERANCE = 1e-3


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
        self.probability_path = probability_path(self.path) if probabilities else None
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
            self._writers.append(open_pages(tmp))

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
                build_pyramid(pages, tmp, self.out_width, self.out_height, {**info, "kind": kind}, shrink, self.mpp)
                pages.unlink(missing_ok=True)
            # the label mask last: once it is at ``path``, its probability file is there too
            for (final, _, _), tmp in reversed(list(zip(outputs, self._final_tmp, strict=True))):
                publish(tmp, final)
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
            write_page(writer, page)
        self._page_rows = 0

    def _info(self) -> dict[str, Any]:
        return mask_description(
            self.classes,
            downsample=self.downsample,
            level0_width=self.width,
            level0_height=self.height,
            mpp=self.mpp,
            probability_file=self.probability_path.name if self.probability_path else None,
        )


def _discard(writers: list[Any], paths: list[Path]) -> None:
    for writer in writers:
        with contextlib.suppress(Exception):  # best effort: the file is deleted next
            writer.close()
    for p in paths:
        p.unlink(missing_ok=True)
