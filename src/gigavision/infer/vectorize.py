"""Polygons of the classes of a stitched label mask (``infer.mask_file``), read band by band in bounded memory.

Each band's 4-connected components become exact pixel-edge polygons (holes kept); only pieces touching a band
border are unioned with the next band's. Outlines come from ``rasterio.features.shapes`` (GDAL's polygonizer,
3–5× faster) when the ``geo`` extra is installed, else from our own NumPy + shapely code. Neither keeps
collinear vertices (GDAL emits none; ours, and unions across band borders, have them dropped: a pixel outline
has one per pixel corner along a straight side), and every polygon is normalised, so both give identical
coordinates.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from gigavision.annotations import Annotations
from gigavision.errors import InvalidInput
from gigavision.infer.mask_file import TILE, read_mask_info
from gigavision.infer.stitch import StitchResult
from gigavision.tiling.grid import level_extent

Backend = Literal["auto", "rasterio", "numpy"]
_SUM_ROWS = 64  # rows per bincount when summing probabilities per component: bounds its float64 temporaries


@dataclass
class _Piece:
    """A polygon of class ``cls`` in mask pixels with the foreground-probability sum and pixel count under it
    (for its score)."""

    cls: int
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
    backend: Backend = "auto",
) -> Annotations:
    """Polygons (level-0 pixels) of each class's 4-connected regions in a stitched label mask, read band by band.

    ``classes``: the class names to outline (default: all but class 0, the background). ``min_area`` drops
    polygons smaller than that many level-0 pixels². Polygons follow pixel edges exactly (area = pixel count ×
    downsample²), keep holes and have no collinear vertices. ``score`` is the mean foreground probability inside
    the polygon when the probability file is there, else NaN. ``backend``: ``"rasterio"`` (needs the ``geo``
    extra), ``"numpy"`` (our own code) or ``"auto"`` (rasterio when installed); the polygons are the same.
    Memory: about ``15 × band_rows × width`` bytes (the band, its component labels, two tile rows of cache)
    plus the polygons.
    """
    from gigavision.images.cache import TileCache
    from gigavision.images.registry import open_image

    outline = _outliner(backend)
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
    cache = TileCache(4 * TILE * mask_width)
    labels = open_image(path, cache=cache)
    probs = open_image(prob_path, cache=cache) if prob_path is not None and prob_path.is_file() else None
    done: list[_Piece] = []
    border = _Border.empty()  # pieces reaching the previous band's last row
    width, height = labels.width, labels.height
    try:
        for y0 in range(0, height, band_rows):
            y1 = min(height, y0 + band_rows)
            band = labels.read_window(0, 0, y0, width, y1 - y0)[..., 0]
            fg = probs.read_window(0, 0, y0, width, y1 - y0)[..., 0] if probs is not None else None
            comp, owner = _components(band, ids)
            if not len(owner):
                done.extend(border.pieces())
                border = _Border.empty()
                continue
            geoms = outline(comp, len(owner), y0)
            pixels, prob_sums = _component_sums(comp, len(owner), fg)
            pieces = [
                _Piece(c, g, float(s), int(n))
                for c, g, s, n in zip(owner.tolist(), geoms, prob_sums, pixels, strict=True)
            ]
            pieces = border.join(comp[0], owner, pieces, done)
            reaching = np.unique(comp[-1]) if y1 < height else np.zeros(0, dtype=np.int32)
            reaching = reaching[reaching > 0]
            below = {id(pieces[k - 1]) for k in reaching.tolist()}
            done.extend({id(q): q for q in pieces if id(q) not in below}.values())
            border = _Border(comp[-1].copy(), owner, {k: pieces[k - 1] for k in reaching.tolist()})
        done.extend(border.pieces())
    finally:
        labels.close()
        if probs is not None:
            probs.close()

    import shapely

    kept = [p for p in done if p.geom.area * ds * ds >= min_area]
    if not kept:
        return Annotations.empty()
    polys = np.empty(len(kept), dtype=object)
    polys[:] = [p.geom for p in kept]
    polys = shapely.normalize(drop_collinear(polys))  # one vertex order and start, whichever backend traced it
    if ds != 1.0:
        polys = shapely.transform(polys, lambda xy: xy * ds)
    score = [p.prob_sum / p.pixels / 255.0 if probs is not None else math.nan for p in kept]
    columns: dict[str, Any] = {"score": np.asarray(score)}
    if source is not None:
        columns["source"] = [source] * len(kept)
    return Annotations.from_polygons(list(polys), [names[p.cls] for p in kept], **columns)


def drop_collinear(geoms: np.ndarray) -> np.ndarray:
    """Polygons whose rings are axis-parallel (pixel outlines) without the vertices where a ring goes straight on:
    both edges at a vertex horizontal, or both vertical. Exact (integer coordinates), vectorised over all rings,
    and it cannot change the shape, so validity is kept."""
    import shapely

    if not len(geoms):
        return geoms
    rings, owner = shapely.get_rings(geoms, return_index=True)
    xy, ring = shapely.get_coordinates(rings, return_index=True)
    last = np.r_[ring[1:] != ring[:-1], True]  # each ring's closing vertex (a repeat of its first)
    xy, ring = xy[~last], ring[~last]
    start = np.r_[True, ring[1:] != ring[:-1]]
    first = np.flatnonzero(start)
    end = np.r_[first[1:], len(ring)] - 1  # each ring's last open vertex
    prev = np.arange(len(ring)) - 1
    prev[first] = end
    nxt = np.arange(len(ring)) + 1
    nxt[end] = first
    straight = ((xy[prev] == xy) & (xy == xy[nxt])).any(axis=1)
    xy, ring = xy[~straight], ring[~straight]
    closing = np.flatnonzero(np.r_[True, ring[1:] != ring[:-1]])  # close each ring again on its (new) first vertex
    xy = np.insert(xy, np.r_[closing[1:], len(ring)], xy[closing], axis=0)
    ring = np.insert(ring, np.r_[closing[1:], len(ring)], ring[closing])
    lines = shapely.linearrings(xy, indices=ring)
    out: np.ndarray = shapely.polygons(lines, indices=owner)
    return out


# -- components ------------------------------------------------------------------------------------------
def _components(band: np.ndarray, ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """4-connected components of the wanted classes in one band: ``(int32 labels 1..n, 0 elsewhere; class of
    each label)``. Labels are unique across classes, so touching regions of two classes stay apart."""
    from scipy import ndimage

    comp = np.zeros(band.shape, dtype=np.int32)
    scratch = np.empty(band.shape, dtype=np.int32)
    owner: list[np.ndarray] = []
    n = 0
    for c in ids:
        found = band == c
        if not found.any():
            continue
        k = ndimage.label(found, output=scratch)  # 4-connectivity, like the pixel-edge polygons
        np.add(scratch, n, out=comp, where=found)
        owner.append(np.full(k, c, dtype=np.int64))
        n += k
    return comp, (np.concatenate(owner) if owner else np.zeros(0, dtype=np.int64))


def _component_sums(comp: np.ndarray, n: int, fg: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Pixels and foreground-probability sums per component (index ``k`` for label ``k + 1``), a few rows at a
    time so ``bincount``'s int64 / float64 copies stay small."""
    pixels = np.zeros(n + 1, dtype=np.int64)
    sums = np.zeros(n + 1, dtype=np.float64)
    for r0 in range(0, comp.shape[0], _SUM_ROWS):
        part = comp[r0 : r0 + _SUM_ROWS].ravel()
        pixels += np.bincount(part, minlength=n + 1)
        if fg is not None:
            sums += np.bincount(part, weights=fg[r0 : r0 + _SUM_ROWS].ravel(), minlength=n + 1)
    return pixels[1:], sums[1:]


@dataclass
class _Border:
    """The previous band's last row of component labels, and the piece each label there belongs to."""

    row: np.ndarray
    owner: np.ndarray  # class of each label
    by_label: dict[int, _Piece]

    @classmethod
    def empty(cls) -> _Border:
        return cls(np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.int64), {})

    def pieces(self) -> list[_Piece]:
        return list({id(p): p for p in self.by_label.values()}.values())

    def join(self, top: np.ndarray, owner: np.ndarray, pieces: list[_Piece], done: list[_Piece]) -> list[_Piece]:
        """Union this band's pieces with the ones above that they share an edge with (same class, same column
        on both sides of the border), and only those: the groups are the connected components of the links.
        Returns the piece of each label (merged ones shared); pieces above that nothing continues go to
        ``done``."""
        import shapely
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        above = self.pieces()
        if not above:
            return pieces
        touch = (self.row > 0) & (top > 0)
        a, b = self.row[touch], top[touch]
        same = self.owner[a - 1] == owner[b - 1]
        links = np.unique(np.stack([a[same], b[same]], axis=1), axis=0)
        n = len(pieces)
        slot = {id(p): n + i for i, p in enumerate(above)}
        src = np.asarray([slot[id(self.by_label[int(k)])] for k in links[:, 0]], dtype=np.int64)
        size = n + len(above)
        graph = coo_matrix((np.ones(len(links)), (src, links[:, 1] - 1)), shape=(size, size))
        _, group = connected_components(graph, directed=False)
        nodes = pieces + above
        members: dict[int, list[int]] = {}
        for i, g in enumerate(group.tolist()):
            members.setdefault(g, []).append(i)
        out = list(pieces)
        for idx in members.values():
            if len(idx) == 1:
                if idx[0] >= n:  # a piece above that this band does not continue: complete
                    done.append(nodes[idx[0]])
                continue
            parts = [nodes[i] for i in idx]
            geom = shapely.union_all([q.geom for q in parts])
            merged = _Piece(parts[0].cls, geom, sum(q.prob_sum for q in parts), sum(q.pixels for q in parts))
            for i in idx:
                if i < n:
                    out[i] = merged
        return out


# -- outlines --------------------------------------------------------------------------------------------
_Outliner = Callable[[np.ndarray, int, int], list[Any]]  # (labels, n, band top) -> n polygons, mask pixels


def _outliner(backend: Backend) -> _Outliner:
    from gigavision.extras import installed, require

    if backend not in ("auto", "rasterio", "numpy"):
        raise InvalidInput(f"backend must be 'auto', 'rasterio' or 'numpy', got {backend!r}")
    if backend == "rasterio":
        require("geo", "rasterio", feature="vectorize(backend='rasterio')")
    if backend == "rasterio" or (backend == "auto" and installed("rasterio")):
        return _outlines_rasterio
    return _outlines_numpy


def _outlines_rasterio(comp: np.ndarray, n: int, y0: int) -> list[Any]:
    """GDAL's polygonizer over the component labels: one polygon per label (4-connected, so never split), with
    no collinear vertices and valid rings where they touch at a corner. Built by vectorised shapely calls, not
    one per ring."""
    import shapely
    from rasterio.features import shapes
    from rasterio.transform import Affine

    rings: list[Any] = []
    ring_polygon: list[int] = []  # polygon (component index) of each ring, shell first
    for geom, value in shapes(comp, mask=comp > 0, connectivity=4, transform=Affine(1, 0, 0, 0, 1, y0)):
        rings.extend(geom["coordinates"])
        ring_polygon.extend([int(value) - 1] * len(geom["coordinates"]))
    if not rings:
        return []
    sizes = [len(r) for r in rings]
    coords = np.asarray(list(itertools.chain.from_iterable(rings)), dtype=np.float64)
    lines = shapely.linearrings(coords, indices=np.repeat(np.arange(len(rings)), sizes))
    order = np.argsort(ring_polygon, kind="stable")  # rings grouped by polygon, each shell still first
    polys = shapely.polygons(lines[order], indices=np.asarray(ring_polygon)[order])
    if len(polys) != n:
        raise AssertionError(f"GDAL gave {len(polys)} polygons for {n} components")
    return list(polys)


def _outlines_numpy(comp: np.ndarray, n: int, y0: int) -> list[Any]:
    """Our own outlines: each component's horizontal runs as boxes, unioned (with a vertex at every pixel
    corner along a straight side: about 30 % of them are collinear, dropped at the end)."""
    from scipy import ndimage

    return [
        _pixel_polygon(comp[sl] == k, sl[1].start, y0 + sl[0].start)
        for k, sl in enumerate(ndimage.find_objects(comp, n), start=1)
    ]


def _pixel_polygon(mask: np.ndarray, ox: int, oy: int) -> Any:
    """Exact pixel-edge outline of a boolean mask placed at ``(ox, oy)``: union of its horizontal runs."""
    import shapely

    padded = np.zeros((mask.shape[0], mask.shape[1] + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    edges = np.diff(padded, axis=1)  # +1 where a run starts, -1 one past where it ends
    rows, starts = np.nonzero(edges == 1)
    _, ends = np.nonzero(edges == -1)
    return shapely.union_all(shapely.box(ox + starts, oy + rows, ox + ends, oy + rows + 1))
