"""COCO run-length encoding between our window masks and whole-image RLE, without whole-image arrays.

``Annotations`` keep a mask as the COCO RLE of its bbox window; COCO files hold the RLE of the whole image
(column-major runs, first run = zeros). Converting through a decoded ``(H, W)`` array would need gigabytes
for a slide, so runs are translated arithmetically; only the object's own window is ever decoded.
The compressed ``counts`` string is COCO's (``maskApi.c`` ``rleToString`` / ``rleFrString``), implemented
here because pycocotools exposes neither direction to Python.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from gigavision.errors import InvalidInput


def counts_to_string(counts: Sequence[int]) -> str:
    """COCO's compressed text form of run lengths (LEB128-like, 5 bits a character, deltas after the 2nd)."""
    out: list[str] = []
    for i, value in enumerate(counts):
        x = int(value)
        if i > 2:
            x -= int(counts[i - 2])
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def counts_from_string(text: str) -> list[int]:
    """Inverse of ``counts_to_string``; ``InvalidInput`` for characters outside COCO's alphabet."""
    counts: list[int] = []
    p, n = 0, len(text)
    while p < n:
        x, k, more = 0, 0, True
        while more:
            if p >= n:
                raise InvalidInput("RLE counts string ends in the middle of a number")
            c = ord(text[p]) - 48
            if not 0 <= c < 64:
                raise InvalidInput(f"RLE counts string has an invalid character {text[p]!r}")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def decode_window(rle: Mapping[str, Any]) -> np.ndarray:
    """Our stored window RLE (``{"size": [h, w], "counts": str}``) as a boolean ``(h, w)`` array."""
    import pycocotools.mask as mask_api

    return np.asarray(mask_api.decode({"size": list(rle["size"]), "counts": rle["counts"].encode("ascii")}), dtype=bool)


def encode_window(window: np.ndarray) -> dict[str, Any]:
    import pycocotools.mask as mask_api

    encoded = mask_api.encode(np.asfortranarray(window.astype(np.uint8)))
    return {"size": [int(window.shape[0]), int(window.shape[1])], "counts": encoded["counts"].decode("ascii")}


def window_to_image(window: np.ndarray, x0: int, y0: int, height: int, width: int) -> dict[str, Any]:
    """The whole-image COCO RLE (compressed counts) of a boolean ``window`` placed at level-0 ``(x0, y0)``.

    The window must lie inside the ``height × width`` image.
    """
    h, w = window.shape
    if x0 < 0 or y0 < 0 or x0 + w > width or y0 + h > height:
        raise InvalidInput(f"mask window {w}x{h} at ({x0}, {y0}) is outside the {width}x{height} image")
    padded = np.zeros((h + 2, w), dtype=np.int8)
    padded[1:-1] = window
    edges = np.diff(padded, axis=0).T  # (w, h + 1): column-major order, like COCO
    cols_s, rows_s = np.nonzero(edges == 1)
    _, rows_e = np.nonzero(edges == -1)
    starts = (x0 + cols_s.astype(np.int64)) * height + y0 + rows_s
    ends = (x0 + cols_s.astype(np.int64)) * height + y0 + rows_e
    if len(starts) > 1:  # a run that fills a column to the bottom continues at the top of the next one
        joined = starts[1:] == ends[:-1]
        keep_start = np.concatenate([[True], ~joined])
        keep_end = np.concatenate([~joined, [True]])
        starts, ends = starts[keep_start], ends[keep_end]
    counts: list[int] = []
    previous = 0
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        counts += [s - previous, e - s]
        previous = e
    total = height * width
    if previous < total or not counts:
        counts.append(total - previous)
    return {"size": [height, width], "counts": counts_to_string(counts)}


def image_to_window(rle: Mapping[str, Any]) -> tuple[np.ndarray, int, int]:
    """A whole-image COCO RLE (compressed string or uncompressed list ``counts``) as ``(window, x0, y0)``.

    The window is the tight box of the set pixels. ``InvalidInput`` for malformed RLE or an empty mask.
    """
    size = rle.get("size")
    if not (isinstance(size, Sequence) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
        raise InvalidInput(f"RLE size must be [height, width] of positive integers, got {size!r}")
    height, width = int(size[0]), int(size[1])
    raw = rle.get("counts")
    if isinstance(raw, str):
        counts = counts_from_string(raw)
    elif isinstance(raw, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in raw):
        counts = raw
    else:
        raise InvalidInput("RLE counts must be a COCO counts string or a list of integers")
    if any(c < 0 for c in counts):
        raise InvalidInput("RLE counts must not be negative")
    if sum(counts) != height * width:
        raise InvalidInput(f"RLE counts cover {sum(counts)} pixels, the {width}x{height} image has {height * width}")
    bounds = np.cumsum(np.asarray([0, *counts], dtype=np.int64))
    run_start, run_end = bounds[1:-1:2], bounds[2::2]  # runs of ones: odd positions in counts
    nonempty = run_end > run_start
    run_start, run_end = run_start[nonempty], run_end[nonempty]
    if len(run_start) == 0:
        raise InvalidInput("RLE mask has no set pixels")
    col0, col1 = run_start // height, (run_end - 1) // height
    pieces = (col1 - col0 + 1).astype(np.int64)
    run = np.repeat(np.arange(len(run_start)), pieces)
    col = col0[run] + (np.arange(int(pieces.sum())) - np.repeat(np.cumsum(pieces) - pieces, pieces))
    top = np.where(col == col0[run], run_start[run] - col * height, 0)
    bottom = np.where(col == col1[run], run_end[run] - col * height, height)
    x0, x1 = int(col.min()), int(col.max()) + 1
    y0, y1 = int(top.min()), int(bottom.max())
    marks = np.zeros((y1 - y0 + 1, x1 - x0), dtype=np.int32)
    np.add.at(marks, (top - y0, col - x0), 1)
    np.add.at(marks, (bottom - y0, col - x0), -1)
    window = np.cumsum(marks, axis=0)[:-1] > 0
    return window, x0, y0


def rasterize_polygon(geometry: Any) -> tuple[np.ndarray, int, int]:
    """A (Multi)Polygon with holes as a boolean window at ``(x0, y0)`` (COCO's polygon rasterizer, holes cut)."""
    import pycocotools.mask as mask_api

    bx0, by0, bx1, by1 = geometry.bounds
    ox, oy = math.floor(bx0), math.floor(by0)
    w, h = max(math.ceil(bx1) - ox, 1), max(math.ceil(by1) - oy, 1)

    def fill(rings: list[Any]) -> np.ndarray:
        if not rings:
            return np.zeros((h, w), dtype=bool)
        flat = [(np.asarray(r.coords)[:-1] - (ox, oy)).ravel().tolist() for r in rings]
        merged = mask_api.merge(mask_api.frPyObjects(flat, h, w))
        return np.asarray(mask_api.decode(merged), dtype=bool)

    parts = list(geometry.geoms) if geometry.geom_type == "MultiPolygon" else [geometry]
    window = np.zeros((h, w), dtype=bool)
    for part in parts:
        window |= fill([part.exterior]) & ~fill(list(part.interiors))
    return window, ox, oy


def mask_outline(rle: Mapping[str, Any], xyxy: Any) -> Any:
    """A stored mask's exact pixel outline as a (Multi)Polygon without collinear vertices (holes kept)."""
    from gigavision.annotations import mask_to_polygon

    return mask_to_polygon(rle, xyxy).simplify(0)
