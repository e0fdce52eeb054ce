"""Compact, lossless storage of annotation geometries: each axis as integer deltas on its own 2^-k grid.

Annotation geometry is in level-0 pixels. WKB spends 16 bytes on every vertex (two float64) and repeats
each ring's first vertex at its end: a 20-vertex cell outline is 349 bytes. Real outlines carry far less
information than that. A contour traced from a pixel mask has integer or half-integer vertices, a model's
float32 output lies on a 2^-8 px grid at x ≈ 50,000, and neighbouring vertices are a few pixels apart: as
integer deltas on the coarsest grid that holds them exactly, such an outline takes 1-2 bytes per coordinate
(about 60-100 bytes for 20 vertices). Arbitrary float64 coordinates still round-trip, at about 6 bytes per
coordinate (about 250 bytes for 20 vertices), since their low mantissa bits carry no pattern to exploit.

Exactness (the contract)
    Lossless: every coordinate decodes to exactly the float64 that was encoded (only -0.0 comes back as
    0.0). Geometries this format cannot hold exactly (non-finite coordinates, a z, a ring under three
    vertices, an axis whose grid integers would pass 2^53, e.g. full-precision doubles on both sides of a
    power of two, and any type but Point / Polygon / MultiPolygon) are stored as WKB, unchanged.

Format (``TAG`` = 16; unsigned LEB128 varints throughout, so a blob is just a sequence of varints)::

    16  type  kx  ky  <structure>  <coordinates>

    type         the GEOS type id: 0 Point, 3 Polygon, 6 MultiPolygon
    kx, ky       each axis is stored on the grid 2^-k px, the coarsest holding all of its values exactly
                 (0 for integers, 1 for halves, 8 for float32 values near 50,000, up to ~37 for arbitrary
                 doubles there)
    structure    Point: nothing. Polygon: ring count, then each ring's vertex count. MultiPolygon: part
                 count, then per part its ring count and each ring's vertex count. A ring's vertex count
                 leaves out the closing vertex (it equals the first and is restored on decoding).
    coordinates  x0 y0 x1 y1 … of every stored vertex (rings and parts in order) as integers on the grids:
                 the first absolute, each later one as the difference from the previous vertex on the same
                 axis; all zigzag-mapped (0, -1, 1, -2 … → 0, 1, 2, 3 …).

A blob whose first byte is 0 or 1 is WKB (its byte-order mark): rows written before this codec, and the
fallback above. ``decode`` reads both.

Encoding and decoding are vectorised with NumPy over many geometries at once: the bulk insert encodes a
chunk of 10,000 polygons in a few calls, and a viewport query decodes all of its hits together.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

TAG = 16
LIMIT = 2**53  # grid integers stay below this, so they and their deltas are exact in float64 and int64
POINT, POLYGON, MULTIPOLYGON = 0, 3, 6
_HEADER = 6  # TAG, type, kx, ky, ring count (1), vertex count: the header of a polygon without holes


# -- varints --------------------------------------------------------------------------------------------
_CONTINUATION = np.array([0] + [(1 << (8 * (n - 1))) - 1 & 0x8080808080808080 for n in range(1, 9)], dtype=np.uint64)
_M = [np.uint64(m) for m in (0x00FFFFFFF0000000, 0x0FFFFFFF, 0x0FFFC0000FFFC000, 0x00003FFF00003FFF)]
_M += [np.uint64(m) for m in (0x3F803F803F803F80, 0x007F007F007F007F)]


def _varints(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """LEB128 bytes of ``values`` (uint64 below 2^56), all concatenated, and each value's byte count.

    Each value's 7-bit groups are spread into the bytes of one uint64 with three mask-and-shift steps,
    the continuation bits are ORed in, and the little-endian bytes that belong to it are kept.
    """
    bits = np.frexp(values.astype(np.float64))[1]  # bit length (may round up by one: still valid LEB128)
    lengths = np.maximum((bits + 6) // 7, 1).astype(np.int64)
    x = ((values & _M[0]) << np.uint64(4)) | (values & _M[1])
    x = ((x & _M[2]) << np.uint64(2)) | (x & _M[3])
    x = ((x & _M[4]) << np.uint64(1)) | (x & _M[5])
    x |= _CONTINUATION[lengths]
    keep = np.arange(8) < lengths[:, None]
    return x.astype("<u8").view(np.uint8).reshape(-1, 8)[keep], lengths


_KEEP = np.array([sum(0x7F << (8 * j) for j in range(n)) for n in range(9)], dtype=np.uint64)
_P = [np.uint64(m) for m in (0x7F007F007F007F00, 0x007F007F007F007F, 0x3FFF00003FFF0000, 0x00003FFF00003FFF)]
_P += [np.uint64(m) for m in (0x0FFFFFFF00000000, 0x000000000FFFFFFF)]


def _unvarints(buf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The values of concatenated LEB128 varints of up to 8 bytes (uint64), and the index of each one's
    last byte: the inverse of ``_varints``, reading each varint as one little-endian uint64."""
    ends = np.flatnonzero(buf < 0x80)
    if len(ends) == len(buf):  # every varint is one byte
        return buf.astype(np.uint64), ends
    starts = np.empty_like(ends)
    starts[:1] = 0
    starts[1:] = ends[:-1] + 1
    lengths = ends - starts + 1
    if len(buf) != (ends[-1] + 1 if len(ends) else 0) or lengths.max() > 8:
        raise ValueError("corrupt geometry: a varint is unterminated or longer than 8 bytes")
    padded = np.concatenate([buf, np.zeros(7, dtype=np.uint8)])
    words = np.lib.stride_tricks.sliding_window_view(padded, 8)[starts]  # (N, 8), a copy
    x = words.view("<u8").reshape(-1) & _KEEP[lengths]  # its own bytes, continuation bits dropped
    x = ((x & _P[0]) >> np.uint64(1)) | (x & _P[1])  # 7-bit groups back together: 14, 28, then 56 bits
    x = ((x & _P[2]) >> np.uint64(2)) | (x & _P[3])
    x = ((x & _P[4]) >> np.uint64(4)) | (x & _P[5])
    return x, ends


def _zigzag(v: np.ndarray) -> np.ndarray:
    return ((v << 1) ^ (v >> 63)).view(np.uint64)


def _unzigzag(z: np.ndarray) -> np.ndarray:
    return ((z >> np.uint64(1)).view(np.int64)) ^ -((z & np.uint64(1)).view(np.int64))


# -- encoding -------------------------------------------------------------------------------------------
def _grid(coords: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vertices (V, 2) of geometries starting at ``starts`` → the integers of each axis on its grid,
    the grid exponents (G, 2), and whether each geometry can be stored exactly."""
    finite = np.isfinite(coords)
    c = np.where(finite, coords, 0.0)
    mant, exp = np.frexp(c)  # c = mant * 2^exp, 0.5 <= |mant| < 1
    m = (mant * 2.0**53).astype(np.int64)  # c = m * 2^(exp - 53), m an integer
    low = m & -m  # the lowest set bit of m
    tz = np.frexp(low.astype(np.float64))[1] - 1
    need = np.where(m != 0, 53 - exp - tz, 0)  # c * 2^need is an integer (need may be negative)
    k = np.maximum(np.maximum.reduceat(need, starts), 0)  # per geometry and axis
    counts = np.diff(np.append(starts, len(coords)))
    with np.errstate(over="ignore"):  # an axis too wide for its grid overflows here and is refused below
        scaled = np.ldexp(c, np.repeat(k, counts, axis=0))
    inside = finite & (np.abs(scaled) < LIMIT)
    ok = np.logical_and.reduceat(inside[:, 0] & inside[:, 1], starts)
    n = np.where(inside, scaled, 0.0).astype(np.int64)
    return n, k, ok


def _assemble(headers: list[np.ndarray], header_lengths: np.ndarray, n: np.ndarray, counts: np.ndarray) -> list[bytes]:
    """Blobs from per-geometry header ints and grid vertices ``n`` (V, 2), ``counts`` vertices each."""
    geoms = len(counts)
    starts = np.cumsum(counts) - counts
    deltas = n.copy()
    deltas[1:] -= n[:-1]
    deltas[starts] = n[starts]
    coord_values = _zigzag(deltas.reshape(-1))
    total = header_lengths + 2 * counts
    offsets = np.cumsum(total) - total
    values = np.empty(int(total.sum()), dtype=np.uint64)
    is_header = np.zeros(len(values), dtype=bool)
    header_pos = np.repeat(offsets, header_lengths) + (
        np.arange(int(header_lengths.sum())) - np.repeat(np.cumsum(header_lengths) - header_lengths, header_lengths)
    )
    values[header_pos] = np.concatenate(headers).astype(np.uint64) if headers else []
    is_header[header_pos] = True
    values[~is_header] = coord_values
    buf, lengths = _varints(values)
    byte_ends = np.cumsum(np.add.reduceat(lengths, offsets)) if geoms else np.zeros(0, dtype=np.int64)
    data = buf.tobytes()
    out: list[bytes] = []
    prev = 0
    for end in byte_ends.tolist():
        out.append(data[prev:end])
        prev = end
    return out


def _encode_simple(geoms: np.ndarray) -> tuple[list[bytes | None], np.ndarray]:
    """Polygons without holes, all at once; returns the blobs and which ones could be encoded."""
    import shapely

    coords, index = shapely.get_coordinates(geoms, return_index=True)
    with_closing = np.bincount(index, minlength=len(geoms))
    keep = np.ones(len(coords), dtype=bool)
    keep[np.cumsum(with_closing) - 1] = False  # drop each ring's closing vertex
    coords = coords[keep]
    counts = with_closing - 1
    starts = np.cumsum(counts) - counts
    n, k, ok = _grid(coords, starts)
    g = len(geoms)
    headers = np.stack([np.full(g, TAG), np.full(g, POLYGON), k[:, 0], k[:, 1], np.ones(g, np.int64), counts], axis=1)
    blobs: list[bytes | None] = list(
        _assemble([headers.reshape(-1)], np.full(len(geoms), _HEADER, np.int64), n, counts)
    )
    return blobs, ok


def _encode_one(geom: Any) -> bytes | None:
    """A Point, a Polygon with holes or a MultiPolygon (the rare cases), or None when it must stay WKB."""
    import shapely

    type_id = int(shapely.get_type_id(geom))
    if type_id == POINT:
        structure: list[int] = []
        coords = shapely.get_coordinates(geom)
    elif type_id in (POLYGON, MULTIPOLYGON):
        polygons = list(geom.geoms) if type_id == MULTIPOLYGON else [geom]
        structure = [len(polygons)] if type_id == MULTIPOLYGON else []
        rings: list[np.ndarray] = []
        for p in polygons:
            ring_list = [p.exterior, *p.interiors]
            structure.append(len(ring_list))
            for r in ring_list:
                xy = shapely.get_coordinates(r)[:-1]
                if len(xy) < 3:
                    return None
                structure.append(len(xy))
                rings.append(xy)
        coords = np.concatenate(rings) if rings else np.zeros((0, 2))
    else:
        return None
    if len(coords) == 0:
        return None
    n, k, ok = _grid(coords, np.zeros(1, dtype=np.int64))
    if not ok[0]:
        return None
    header = np.array([TAG, type_id, int(k[0, 0]), int(k[0, 1]), *structure], dtype=np.int64)
    return _assemble([header], np.array([len(header)]), n, np.array([len(coords)]))[0]


def encode(geometries: Sequence[Any] | np.ndarray) -> list[bytes | None]:
    """Stored bytes of each geometry (None stays None): lossless, see the module docstring."""
    import shapely

    geoms = np.asarray(geometries, dtype=object).reshape(-1)
    out: list[bytes | None] = [None] * len(geoms)
    if not len(geoms):
        return out
    present = ~shapely.is_missing(geoms)
    type_id = shapely.get_type_id(geoms)
    plain = present & ~shapely.has_z(geoms) & ~shapely.is_empty(geoms)
    simple = plain & (type_id == POLYGON)
    simple[simple] = shapely.get_num_interior_rings(geoms[simple]) == 0
    fallback = present & ~simple
    where = np.flatnonzero(simple)
    if len(where):
        blobs, ok = _encode_simple(geoms[where])
        for i, b, good in zip(where.tolist(), blobs, ok.tolist(), strict=True):
            if good:
                out[i] = b
            else:
                fallback[i] = True
    for i in np.flatnonzero(fallback).tolist():
        blob = _encode_one(geoms[i]) if plain[i] else None
        out[i] = blob if blob is not None else shapely.to_wkb(geoms[i])
    return out


def from_wkb(wkb: bytes | None) -> bytes | None:
    """Stored bytes for a WKB geometry (stored bytes pass through unchanged)."""
    if wkb is None or wkb[:1] == bytes([TAG]):
        return wkb
    import shapely

    return encode([shapely.from_wkb(wkb)])[0]


# -- decoding -------------------------------------------------------------------------------------------
class _Decoded:
    """Stored blobs decoded in bulk: polygons without holes as coordinate arrays, the rest as shapely."""

    def __init__(self, blobs: Sequence[bytes | None]) -> None:
        import shapely

        n = len(blobs)
        self.n = n
        self.simple = np.zeros(n, dtype=bool)
        self.start = np.zeros(n, dtype=np.int64)  # first vertex (in self.xy) of each simple polygon
        self.count = np.zeros(n, dtype=np.int64)  # its vertex count, without the closing vertex
        self.xy = np.zeros((0, 2))
        self.other: dict[int, Any] = {}  # index -> shapely geometry (everything that is not simple)
        compact = [i for i, b in enumerate(blobs) if b is not None and b[:1] == bytes([TAG])]
        for i, b in enumerate(blobs):
            if b is not None and b[:1] != bytes([TAG]):
                self.other[i] = shapely.from_wkb(b)
        if not compact:
            return
        parts = [blobs[i] for i in compact]
        buf = np.frombuffer(b"".join(parts), dtype=np.uint8)  # type: ignore[arg-type]
        values, ends = _unvarints(buf)
        byte_start = np.cumsum([0] + [len(p) for p in parts[:-1] if p is not None])
        first = np.searchsorted(ends, byte_start)  # index of each blob's first value
        last = np.append(first[1:], len(values))
        kind = values[first + 1]
        at = np.minimum(first + 5, len(values) - 1)  # ring count at first + 4, vertex count at first + 5
        fast = (kind == POLYGON) & (values[at - 1] == 1)
        fast &= last - first == _HEADER + 2 * values[at].astype(np.int64)
        idx = np.asarray(compact)
        for j in np.flatnonzero(~fast).tolist():
            self.other[int(idx[j])] = _decode_general(values[first[j] : last[j]])
        if not fast.any():
            return
        f_first = first[fast]
        f_count = values[f_first + 5].astype(np.int64)
        f_k = np.stack([values[f_first + 2], values[f_first + 3]], axis=1).astype(np.int64)
        lengths = 2 * f_count
        pos = np.repeat(f_first + _HEADER - (np.cumsum(lengths) - lengths), lengths) + np.arange(int(lengths.sum()))
        deltas = _unzigzag(values[pos]).reshape(-1, 2)
        v_start = np.cumsum(f_count) - f_count
        total = np.cumsum(deltas, axis=0)  # wraps modulo 2^64 where needed; differences stay exact
        before = np.zeros((len(f_count), 2), dtype=np.int64)
        has_before = v_start > 0
        before[has_before] = total[v_start[has_before] - 1]
        grid = total - np.repeat(before, f_count, axis=0)
        self.xy = np.ldexp(grid.astype(np.float64), -np.repeat(f_k, f_count, axis=0))
        rows = idx[fast]
        self.simple[rows] = True
        self.start[rows] = v_start
        self.count[rows] = f_count

    def geometries(self) -> np.ndarray:
        """Shapely geometries (None where the blob was None)."""
        import shapely

        out = np.empty(self.n, dtype=object)
        rows = np.flatnonzero(self.simple)
        if len(rows):
            counts = self.count[rows]
            starts = self.start[rows]
            closed = counts + 1  # each ring: its vertices, then its first vertex again
            offs = np.cumsum(closed) - closed
            order = np.repeat(starts - offs, closed) + np.arange(int(closed.sum()))
            order[offs + counts] = starts
            ring_offsets = np.append(offs, int(closed.sum()))
            polys = shapely.from_ragged_array(
                shapely.GeometryType.POLYGON, self.xy[order], (ring_offsets, np.arange(len(rows) + 1))
            )
            out[rows] = polys
        for i, g in self.other.items():
            out[i] = g
        return out

    def geojson(self) -> list[dict[str, Any] | None]:
        """GeoJSON-like dicts, equal to ``shapely.geometry.mapping`` of each geometry."""
        import shapely

        out: list[dict[str, Any] | None] = [None] * self.n
        flat = self.xy.reshape(-1).tolist()
        for i, s, c in zip(
            np.flatnonzero(self.simple).tolist(),
            self.start[self.simple].tolist(),
            self.count[self.simple].tolist(),
            strict=True,
        ):
            pairs = iter(flat[2 * s : 2 * (s + c)])
            ring = tuple(zip(pairs, pairs, strict=True))
            out[i] = {"type": "Polygon", "coordinates": ((*ring, ring[0]),)}
        for i, g in self.other.items():
            out[i] = shapely.geometry.mapping(g)
        return out


def _decode_general(values: np.ndarray) -> Any:
    import shapely

    v = values.astype(np.int64).tolist()
    type_id, k = v[1], np.array(v[2:4])
    pos = 4
    if type_id == POINT:
        structure: list[list[int]] = []
    else:
        n_parts = 1
        if type_id == MULTIPOLYGON:
            n_parts, pos = v[pos], pos + 1
        structure = []
        for _ in range(n_parts):
            n_rings, pos = v[pos], pos + 1
            structure.append(v[pos : pos + n_rings])
            pos += n_rings
    deltas = _unzigzag(values[pos:].astype(np.uint64)).reshape(-1, 2)
    xy = np.ldexp(np.cumsum(deltas, axis=0).astype(np.float64), -k)
    if type_id == POINT:
        return shapely.Point(xy[0])
    polygons = []
    at = 0
    for rings in structure:
        coords = []
        for count in rings:
            ring = xy[at : at + count]
            coords.append(np.concatenate([ring, ring[:1]]))
            at += count
        polygons.append(shapely.Polygon(coords[0], coords[1:]))
    return shapely.MultiPolygon(polygons) if type_id == MULTIPOLYGON else polygons[0]


def decode(blobs: Sequence[bytes | None]) -> np.ndarray:
    """Shapely geometries of stored blobs (compact or WKB), None for None."""
    return _Decoded(blobs).geometries()


def decode_geojson(blobs: Sequence[bytes | None]) -> list[dict[str, Any] | None]:
    """``shapely.geometry.mapping`` of each stored geometry, without building shapely objects where avoidable."""
    return _Decoded(blobs).geojson()


def to_wkb(blob: bytes | None) -> bytes | None:
    """WKB of one stored blob (WKB passes through unchanged)."""
    if blob is None or blob[:1] != bytes([TAG]):
        return blob
    import shapely

    return bytes(shapely.to_wkb(decode([blob])[0]))
