"""Where to read and how: the resolution a model runs at, and windows read on reader threads ahead of the model.

Windows come from ``tiling.grid`` (level-0 ``[x0, y0, x1, y1]``, row-major). Pixels are read through
``ImageSource.read_region`` (only the tiles a window touches, through the shared tile cache) on a small thread
pool: while the model runs batch *k*, batches *k+1* and *k+2* are being decoded, so reading hides behind compute
and at most ``PREFETCH + 1`` batches of windows are in memory — never the image. ``ahead`` chains further
stages (preprocessing, the model call) on threads of their own, each at most ``depth`` batches ahead.
"""

from __future__ import annotations

import itertools
import math
import queue
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from gigavision.errors import InvalidInput
from gigavision.geometry import Region
from gigavision.images.resolution import Resolution as Resolution  # re-exported: engine, request
from gigavision.images.resolution import resolution_for_mpp
from gigavision.tiling.grid import level_extent

if TYPE_CHECKING:
    from gigavision.images.source import ImageSource

PREFETCH = 2  # batches read ahead of the one the model is running
BAND_PIXELS = 1 << 24  # pixels of a level read at once by ``read_bands`` (48 MB of RGB): a row band of windows
T = TypeVar("T")
U = TypeVar("U")
_END = object()


def resolve_resolution(source: ImageSource, *, level: int | None = None, mpp: float | None = None) -> Resolution:
    """``level`` as stored, or ``mpp`` µm/pixel (``images.resolution.resolution_for_mpp``: the level within
    its tolerance as stored, else the finest level above it resized to exactly ``mpp``)."""
    if level is not None and mpp is not None:
        raise InvalidInput("give --level or --mpp, not both")
    if level is not None:
        if not 0 <= level < len(source.levels):
            raise InvalidInput(
                f"{source.path.name} has levels 0..{len(source.levels) - 1}; level {level} does not exist"
            )
        return Resolution(level, float(source.levels[level].downsample))
    if mpp is None:
        return Resolution(0, 1.0)
    base = source.info.mpp_x
    if not (math.isfinite(mpp) and mpp > 0):
        raise InvalidInput(f"--mpp must be a positive number of microns per pixel, got {mpp}")
    if not base:
        raise InvalidInput(f"{source.path.name} has no microns-per-pixel; choose a --level instead of --mpp")
    return resolution_for_mpp([lv.downsample for lv in source.levels], base, mpp)


@dataclass
class Window:
    """One window: its level-0 box, its valid size in model pixels, and its pixels (or the read error)."""

    index: int
    xyxy: tuple[int, int, int, int]
    width: int
    height: int
    pixels: np.ndarray | None = None
    error: str | None = None


def read_window(source: ImageSource, res: Resolution, xyxy: Sequence[int], size: int) -> np.ndarray:
    """``(h, w, bands)`` pixels of a level-0 window at ``res`` — the window's part inside the image only."""
    x0, y0, x1, y1 = (int(v) for v in xyxy[:4])
    full_w, full_h = level_extent(source.width, source.height, res.downsample)
    lx0, ly0 = round(x0 / res.downsample), round(y0 / res.downsample)
    w, h = max(1, min(size, full_w - lx0)), max(1, min(size, full_h - ly0))
    region = Region(x0, y0, max(1, x1 - x0), max(1, y1 - y0))
    return source.read_region(region, res.level, downsample=res.downsample, size=(w, h))


def stream_windows(
    source: ImageSource,
    res: Resolution,
    windows: np.ndarray,
    size: int,
    *,
    batch: int,
    readers: int = 2,
) -> Iterator[list[Window]]:
    """Batches of read windows, in order; reads run on ``readers`` threads ``PREFETCH`` batches ahead.

    A window that fails to decode comes back with ``error`` set (the caller decides: skip or fail); nothing
    waits forever — a reader's exception is returned with its window, never lost in a thread.
    """
    full_w, full_h = level_extent(source.width, source.height, res.downsample)

    def read(i: int) -> Window:
        box = tuple(int(v) for v in windows[i])
        lx0, ly0 = round(box[0] / res.downsample), round(box[1] / res.downsample)
        win = Window(i, (box[0], box[1], box[2], box[3]), min(size, full_w - lx0), min(size, full_h - ly0))
        try:
            win.pixels = read_window(source, res, box, size)
        except Exception as exc:  # a corrupt tile names the region; the run decides whether to go on
            win.error = f"{type(exc).__name__}: {exc}"
        return win

    starts = range(0, len(windows), batch)
    with ThreadPoolExecutor(max_workers=max(1, readers), thread_name_prefix="gv-read") as pool:
        pending: deque[list[Future[Window]]] = deque()
        queue = iter(starts)

        def submit() -> None:
            start = next(queue, None)
            if start is not None:
                pending.append([pool.submit(read, i) for i in range(start, min(start + batch, len(windows)))])

        for _ in range(PREFETCH + 1):
            submit()
        while pending:
            futures = pending.popleft()
            submit()
            yield [f.result() for f in futures]


@dataclass
class Cut:
    """Windows cut from a band (``read_bands``): their indices, ``(n, size, size, 3)`` uint8 pixels (zero past
    the window's part inside the image), valid ``(n, 2)`` width and height, and the windows that failed."""

    indices: np.ndarray
    pixels: np.ndarray
    valid: np.ndarray
    failed: list[tuple[int, str]]


def read_bands(
    source: ImageSource,
    res: Resolution,
    windows: np.ndarray,
    size: int,
    *,
    batch: int,
    band_pixels: int = BAND_PIXELS,
) -> Iterator[Cut]:
    """The pixels of ``windows`` (level-0 boxes of a row-major grid) in batches of at most ``batch``, as 3-band
    uint8, read a row band of the level at a time through ``ImageSource.read_region`` and cut with NumPy.

    For small windows on a coarse level (zoom-in's coarse pass: 32 px windows, thousands of them) one read per
    band costs a fraction of a read per window. Each window's pixels are those ``read_window`` gives (same
    top-left snapping); a band at most ``band_pixels`` large is in memory at a time (at least one window row).
    A band that fails to decode is read again window by window; windows that still fail are in ``failed``.
    """
    from gigavision.images.pixels import to_rgb_uint8

    full_w, full_h = level_extent(source.width, source.height, res.downsample)
    lx = np.rint(windows[:, 0] / res.downsample).astype(np.int64)  # as ``read_window``: round(x0 / downsample)
    ly = np.rint(windows[:, 1] / res.downsample).astype(np.int64)
    valid = np.stack([np.minimum(size, full_w - lx), np.minimum(size, full_h - ly)], axis=1)
    band_rows = max(size, band_pixels // max(1, full_w))  # level rows a band may span
    bounds = [0]  # the first window of each band: bands hold whole window rows
    for row in np.flatnonzero(np.r_[False, ly[1:] != ly[:-1]]).tolist():
        if ly[row] + size - ly[bounds[-1]] > band_rows:
            bounds.append(row)
    bounds.append(len(windows))
    for start, stop in itertools.pairwise(bounds):
        top = int(ly[start])
        height = int(ly[stop - 1]) + size - top
        width = max(full_w, int(lx[start:stop].max()) + size)
        band = np.zeros((height, width, 3), dtype=np.uint8)  # zero past the image, as a window read pads
        failed: list[tuple[int, str]] = []
        ok = np.ones(stop - start, dtype=bool)
        try:
            h = max(1, min(height, full_h - top))
            region = Region(0, int(windows[start, 1]), source.width, max(1, round(h * res.downsample)))
            band[:h, :full_w] = to_rgb_uint8(
                source.read_region(region, res.level, downsample=res.downsample, size=(full_w, h))
            )
        except Exception:  # a corrupt tile: the windows that do not touch it still read
            for k in range(start, stop):
                try:
                    pixels = to_rgb_uint8(read_window(source, res, windows[k], size))
                    band[ly[k] - top : ly[k] - top + pixels.shape[0], lx[k] : lx[k] + pixels.shape[1]] = pixels
                except Exception as exc:
                    failed.append((k, f"{type(exc).__name__}: {exc}"))
                    ok[k - start] = False
        view = np.lib.stride_tricks.sliding_window_view(band, (size, size), axis=(0, 1))  # (y, x, 3, S, S)
        for first in range(start, stop, batch):
            last = min(first + batch, stop)
            sel = first + np.flatnonzero(ok[first - start : last - start])
            pixels = np.ascontiguousarray(view[ly[sel] - top, lx[sel]].transpose(0, 2, 3, 1))
            yield Cut(sel, pixels, valid[sel], [f for f in failed if first <= f[0] < last])


def ahead(items: Iterator[T], fn: Callable[[T], U], *, depth: int = 2, name: str = "gv-stage") -> Generator[U]:
    """``fn`` of each item, in order, computed on a thread of its own at most ``depth`` results ahead of the
    consumer — a pipeline stage, so NumPy work overlaps the model's native code (which releases the GIL).

    An exception raised by ``items`` or ``fn`` reaches the consumer as it was raised (same type and message),
    after the results before it. Closing the generator (the consumer stopped: an error, a cancelled run) stops
    the thread after the item it is working on and joins it; the thread closes ``items`` itself (it is the one
    iterating them), so a chain of stages shuts down stage by stage and no thread outlives the run.
    """
    results: queue.SimpleQueue[Any] = queue.SimpleQueue()  # never blocks a put: ``slots`` bounds it
    slots = threading.Semaphore(max(1, depth))  # results computed and not yet taken
    stop = threading.Event()

    def work() -> None:
        try:
            for item in items:
                slots.acquire()
                if stop.is_set():
                    return
                results.put((True, fn(item)))
            results.put(_END)
        except BaseException as exc:  # handed to the consumer, in order
            results.put((False, exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=work, name=name, daemon=True)
    thread.start()
    try:
        while True:
            got = results.get()
            if got is _END:
                return
            ok, value = got
            if not ok:
                raise value
            slots.release()
            yield value
    finally:
        stop.set()
        slots.release()  # wakes the thread if it waits for a slot; it then sees ``stop``
        thread.join()
