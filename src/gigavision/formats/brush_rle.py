"""Label Studio's brush RLE (``brushlabels`` ``value.rle``), encoded and decoded without whole-image arrays.

Label Studio stores a brush mask as the RLE of the whole image's RGBA bytes (row-major, 4 values a pixel),
in thi.ng's rle-pack bit format, which label-studio-converter's ``brush.decode_rle`` also reads: a 32-bit
value count, a 5-bit word size - 1, four 4-bit run-length sizes - 1; then per token a repeat bit, a 2-bit
index into the sizes, the run length - 1 in that many bits, and one word (repeat) or run-length words
(literal). ``encode_brush`` writes 8-bit words with Label Studio's sizes (3, 4, 8, 16 bits) and 255 in all
four channels inside the mask (as the converter's ``mask2rle``); ``decode_brush`` keeps the pixels whose
alpha is > 0 (as the converter's ``decode_from_annotation`` reads channel 3). Both work on runs: only the
mask's own bounding window is ever an array.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gigavision.errors import InvalidInput
from gigavision.formats.rle import image_to_window

RLE_SIZES = (3, 4, 8, 16)


class _BitWriter:
    def __init__(self) -> None:
        self.out = bytearray()
        self.acc = 0
        self.bits = 0

    def write(self, value: int, bits: int) -> None:
        self.acc = (self.acc << bits) | value
        self.bits += bits
        while self.bits >= 8:
            self.bits -= 8
            self.out.append((self.acc >> self.bits) & 0xFF)
        self.acc &= (1 << self.bits) - 1

    def data(self) -> list[int]:
        tail = [(self.acc << (8 - self.bits)) & 0xFF] if self.bits else []
        return list(self.out) + tail


def encode_brush(window: np.ndarray, x0: int, y0: int, width: int, height: int) -> list[int]:
    """Label Studio's brush RLE of a ``width × height`` RGBA image that is 255 (all channels) where the
    boolean ``window`` placed at ``(x0, y0)`` is set, 0 elsewhere. Works on the window's row runs only."""
    h, w = window.shape
    padded = np.zeros((h, w + 2), dtype=np.int8)
    padded[:, 1:-1] = window
    edges = np.diff(padded, axis=1)
    rows_s, cols_s = np.nonzero(edges == 1)
    rows_e, cols_e = np.nonzero(edges == -1)
    starts = (y0 + rows_s.astype(np.int64)) * width + x0 + cols_s
    ends = (y0 + rows_e.astype(np.int64)) * width + x0 + cols_e
    if len(starts) > 1:  # a run to the end of a row that goes on at the start of the next one
        joined = starts[1:] == ends[:-1]
        starts, ends = starts[np.concatenate([[True], ~joined])], ends[np.concatenate([~joined, [True]])]
    total = width * height * 4
    out = _BitWriter()
    out.write(total, 32)
    out.write(8 - 1, 5)
    for size in RLE_SIZES:
        out.write(size - 1, 4)
    previous = 0
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        _write_run(out, 4 * (s - previous), 0)
        _write_run(out, 4 * (e - s), 255)
        previous = e
    _write_run(out, total - 4 * previous, 0)
    return out.data()


def _write_run(out: _BitWriter, length: int, value: int) -> None:
    longest = 1 << RLE_SIZES[-1]
    while length > 0:
        n = min(length, longest)
        index = next(k for k, size in enumerate(RLE_SIZES) if n - 1 < 1 << size)
        out.write(1, 1)
        out.write(index, 2)
        out.write(n - 1, RLE_SIZES[index])
        out.write(value, 8)
        length -= n


class _BitReader:
    def __init__(self, data: bytes) -> None:
        self.bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))
        self.pos = 0
        self.weights = np.left_shift(np.uint64(1), np.arange(63, -1, -1, dtype=np.uint64))

    def read(self, n: int) -> int:
        end = self.pos + n
        if end > len(self.bits):
            raise InvalidInput("brush RLE ends in the middle of a value")
        value = int(self.bits[self.pos : end] @ self.weights[64 - n :])
        self.pos = end
        return value

    def words(self, count: int, size: int) -> np.ndarray:
        end = self.pos + count * size
        if end > len(self.bits):
            raise InvalidInput("brush RLE ends in the middle of a value")
        values = self.bits[self.pos : end].reshape(count, size) @ self.weights[64 - size :]
        self.pos = end
        return np.asarray(values)


def decode_brush(rle: Any, width: int, height: int) -> tuple[np.ndarray, int, int]:
    """A brush RLE (``value.rle``) of a ``width × height`` RGBA image as ``(window, x0, y0)``: the tight
    boolean window of the pixels whose alpha is > 0. Decodes as label-studio-converter's ``decode_rle``
    (thi.ng rle-pack) does, keeping only the alpha runs, so no full-image array is made."""
    if not isinstance(rle, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in rle):
        raise InvalidInput("value.rle must be a list of byte values (0-255)")
    try:
        data = bytes(rle)
    except ValueError as exc:
        raise InvalidInput("value.rle must be a list of byte values (0-255)") from exc
    bits = _BitReader(data)
    total = bits.read(32)
    word = bits.read(5) + 1
    sizes = [bits.read(4) + 1 for _ in range(4)]
    if total != width * height * 4:
        raise InvalidInput(
            f"brush RLE holds {total} values; the {width}x{height} image's RGBA has {width * height * 4}"
        )
    starts: list[Any] = []
    ends: list[Any] = []
    i = 0
    while i < total:
        repeat = bits.read(1)
        j = i + 1 + bits.read(sizes[bits.read(2)])
        if repeat:
            if bits.read(word) and min(j, total) // 4 > i // 4:  # pixel p's alpha is value 4p + 3
                starts.append(np.array([i // 4]))
                ends.append(np.array([min(j, total) // 4]))
        else:
            values = bits.words(j - i, word)[: max(total - i, 0)]
            index = np.arange(i, i + len(values), dtype=np.int64)
            pixels = index[(index % 4 == 3) & (values > 0)] // 4
            starts.append(pixels)
            ends.append(pixels + 1)
        i = j
    s = np.concatenate(starts) if starts else np.zeros(0, dtype=np.int64)
    e = np.concatenate(ends) if ends else np.zeros(0, dtype=np.int64)
    if len(s) == 0:
        raise InvalidInput("brush mask is empty (no pixel with alpha > 0)")
    joined = s[1:] == e[:-1]
    s, e = s[np.concatenate([[True], ~joined])], e[np.concatenate([~joined, [True]])]
    bounds = np.empty(2 * len(s), dtype=np.int64)
    bounds[0::2], bounds[1::2] = s, e
    counts = np.diff(np.concatenate([[0], bounds, [width * height]])).tolist()
    # row-major runs of a width x height image are COCO's column-major runs of its transpose
    transposed, y0, x0 = image_to_window({"size": [width, height], "counts": counts})
    return np.ascontiguousarray(transposed.T), x0, y0
