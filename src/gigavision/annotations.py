"""``Annotations``: the one exchange type for "what is in this image" (DESIGN.md §3).

Columnar like ``supervision.Detections``: N rows held as NumPy columns, validated on construction,
boolean/integer indexable, mergeable. Geometry is always in level-0 pixel coordinates of one image.

Columns
    kind        (N,) str   tag | box | polygon | mask | point
    label       (N,) str   class name from the label schema
    xyxy        (N, 4) float64  bounding box [x0, y0, x1, y1]; NaN for image-level tags
    geometry    (N,) object  shapely Polygon/MultiPolygon (polygons), Point (points), else None
    mask        (N,) object  COCO RLE ``{"size": [h, w], "counts": str}`` of the bbox window
                             ``[floor(x0), floor(y0)]`` + size, for masks; else None
    score       (N,) float64  model confidence; NaN for human labels
    source      (N,) str   who said it: ``user:<name>`` or ``model:<id>@<version>``
    status      (N,) str   proposed | accepted | rejected | adjudicated
    attributes  (N,) object  dict of attribute name -> value (e.g. {"overhang": "low"})
    id          (N,) int64  store id, -1 when not stored
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from gigavision.errors import InvalidInput

KINDS = ("tag", "box", "polygon", "mask", "point")
STATUSES = ("proposed", "accepted", "rejected", "adjudicated")
GEOMETRY_TYPES = {"polygon": ("Polygon", "MultiPolygon"), "point": ("Point",)}
PREDICTION_ATTRIBUTES = ("model", "uncertainty", "score", "prediction", "review_task")
"""Attributes every model prediction carries: the model id, and how unsure it is (0 = sure, 1 = unsure); and
those an expert's answer to a review task adds to link its label to the prediction (``store.reviews``): the
prediction's id and score, the task. Any class accepts them without declaring them in the label schema (a
declared one keeps its allowed values)."""

VOLUME_ATTRIBUTES = ("plane", "slice", "z0", "z1")
"""Attributes of annotations on 3D volumes (docs/volumes.md): the ``plane`` (axial, coronal, sagittal) and
``slice`` a shape was drawn on, its geometry in that slice's display pixels; a 3D box is a ``box`` on the
axial plane with ``z0``/``z1``, the axial slices ``z0 <= z < z1`` it spans. Any class accepts them without
declaring them (``images.volumes.Grid.voxel_box`` turns them into voxel boxes)."""


@dataclass(frozen=True, slots=True)
class Canvas:
    """What an annotation written from outside (import, REST) must fit: its image's level-0 size and the caps.

    ``max_vertices``: most coordinates in one geometry; ``max_mask_pixels``: the largest RLE window (h × w) a
    mask may declare (None: no cap).
    """

    width: int
    height: int
    max_vertices: int
    max_mask_pixels: int | None = None


def shape_problem(
    kind: str, box: Sequence[float] | None, geometry: Any, mask_size: tuple[int, int] | None, canvas: Canvas
) -> str | None:
    """Why an annotation cannot be stored on the canvas's image (None when it can): the one check of import
    and REST writes.

    Coordinates finite, non-negative and inside the image (its edges included, no tolerance); boxes and masks
    with an area; a geometry of its kind's type with at most ``max_vertices`` coordinates; polygons valid
    (not self-intersecting) and with an area. A mask's declared RLE ``size`` ``[h, w]`` must be the window of
    its box and at most ``max_mask_pixels``: it is checked from the declaration, before anything is decoded,
    so a 125-byte mask cannot make the server allocate gigabytes. ``box`` is optional for polygons and points
    (checked when given), ``geometry`` for boxes and masks (ignored).
    """
    import shapely

    if kind not in KINDS:
        return f"kind must be one of {', '.join(KINDS)}, got {kind!r:.40}"
    if kind == "tag":
        return None
    if kind in ("box", "mask"):
        if box is None:
            return f"a {kind} needs a bbox"
        problem = _check_bounds(box, canvas, kind, need_area=True)
        if problem or kind == "box":
            return problem
        if mask_size is None:
            return "a mask needs an RLE mask"
        h, w = mask_size
        x0, y0, x1, y1 = (float(v) for v in box)
        bh, bw = math.ceil(y1) - math.floor(y0), math.ceil(x1) - math.floor(x0)
        if (h, w) != (bh, bw):
            return f"mask size [{h}, {w}] is not [{bh}, {bw}], the pixel window of its box {_shown(box)}"
        if canvas.max_mask_pixels is not None and h * w > canvas.max_mask_pixels:
            return f"mask of {w}x{h} = {h * w:,} pixels is more than the {canvas.max_mask_pixels:,} allowed"
        return None
    if geometry is None or geometry.is_empty:
        return f"empty {kind}"
    n = int(shapely.get_num_coordinates(geometry))
    if n > canvas.max_vertices:
        return _too_many_vertices(kind, n, canvas)
    coords = shapely.get_coordinates(geometry)
    if not np.isfinite(coords).all():
        return "NaN or infinite coordinates"
    if box is not None:
        problem = _check_bounds(box, canvas, "bbox", need_area=False)
        if problem:
            return problem
    if kind == "point":
        if geometry.geom_type != "Point":
            return f"a point must be a Point, got {geometry.geom_type}"
        x, y = coords[0]
        return _check_bounds((x, y, x, y), canvas, "point", need_area=False)
    problem = _check_bounds(tuple(geometry.bounds), canvas, "polygon", need_area=False)
    if problem:
        return problem
    if geometry.geom_type not in GEOMETRY_TYPES["polygon"]:
        return f"a polygon must be a Polygon or MultiPolygon, got {geometry.geom_type}"
    if not shapely.is_valid(geometry):
        reason = shapely.is_valid_reason(geometry)
        what = "self-intersecting polygon" if "intersection" in reason.lower() else "invalid polygon"
        return f"{what} ({reason})"
    if geometry.area <= 0:
        return "polygon has zero area"
    return None


def _too_many_vertices(kind: str, n: int, canvas: Canvas) -> str:
    return f"{kind} has {n} vertices, more than max_vertices {canvas.max_vertices}"


def _geojson_vertices(geometry: Any) -> int:
    """How many positions a GeoJSON geometry declares, counted without building it (0 when it is not one
    of the shapes annotations use: ``shapely.geometry.shape`` then says what is wrong)."""
    if not isinstance(geometry, Mapping):
        return 0
    coords, kind = geometry.get("coordinates"), geometry.get("type")
    if kind == "Point":
        return 1
    if kind == "Polygon" and isinstance(coords, list):
        return sum(len(ring) for ring in coords if isinstance(ring, list))
    if kind == "MultiPolygon" and isinstance(coords, list):
        return sum(len(ring) for part in coords if isinstance(part, list) for ring in part if isinstance(ring, list))
    return 0


def _shown(box: Sequence[float]) -> str:
    return "[" + ", ".join(f"{float(v):g}" for v in box) + "]"


def _check_bounds(box: Sequence[float], canvas: Canvas, what: str, *, need_area: bool) -> str | None:
    if len(box) != 4:
        return f"{what} must be four numbers [x0, y0, x1, y1], got {len(box)}"
    x0, y0, x1, y1 = (float(v) for v in box)
    shown = _shown(box)
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        return f"NaN or infinite coordinates in {what} {shown}"
    if min(x0, y0, x1, y1) < 0:
        return f"negative coordinates in {what} {shown}"
    if x1 < x0 or y1 < y0:
        return f"{what} {shown} must have x1 >= x0 and y1 >= y0"
    if need_area and (x1 == x0 or y1 == y0):
        return f"{what} {shown} has zero width or height"
    if x1 > canvas.width or y1 > canvas.height:
        return f"{what} {shown} extends outside the {canvas.width}x{canvas.height} image"
    return None


def _object_column(values: Sequence[Any], n: int) -> np.ndarray:
    out = np.empty(n, dtype=object)
    for i, v in enumerate(values):
        out[i] = v
    return out


def _str_column(values: Any, n: int, name: str) -> np.ndarray:
    if isinstance(values, str):
        values = [values] * n
    arr = np.asarray(list(values), dtype=object)
    if arr.shape != (n,):
        raise InvalidInput(f"{name} must have one entry per annotation ({n}), got shape {arr.shape}")
    for v in arr:
        if not isinstance(v, str):
            raise InvalidInput(f"{name} entries must be text, got {type(v).__name__}: {v!r}")
    return arr


@dataclass(eq=False)
class Annotations:
    """N annotations of one image. Build with the ``from_*`` constructors; index with masks or ints."""

    kind: np.ndarray
    label: np.ndarray
    xyxy: np.ndarray
    geometry: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=object))
    mask: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=object))
    score: np.ndarray = field(default_factory=lambda: np.empty(0))
    source: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=object))
    status: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=object))
    attributes: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=object))
    id: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))

    def __post_init__(self) -> None:
        n = len(self.kind)
        self.kind = _str_column(self.kind, n, "kind")
        bad = sorted({k for k in self.kind if k not in KINDS})
        if bad:
            raise InvalidInput(f"kind must be one of {', '.join(KINDS)}, got {bad}")
        self.label = _str_column(self.label, n, "label")
        self.xyxy = np.asarray(self.xyxy, dtype=np.float64).reshape(-1, 4) if n else np.zeros((0, 4))
        if self.xyxy.shape != (n, 4):
            raise InvalidInput(f"xyxy must have shape ({n}, 4), got {self.xyxy.shape}")
        spatial = self.kind != "tag"
        boxes = self.xyxy[spatial]
        if not np.isfinite(boxes).all():
            raise InvalidInput("xyxy must be finite for boxes, polygons, masks and points (NaN/inf found)")
        if (boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any():
            raise InvalidInput("xyxy must have x1 >= x0 and y1 >= y0")
        self.geometry = self._optional(self.geometry, n, "geometry")
        self.mask = self._optional(self.mask, n, "mask")
        self.score = np.full(n, np.nan) if len(self.score) == 0 and n else np.asarray(self.score, dtype=np.float64)
        if self.score.shape != (n,):
            raise InvalidInput(f"score must have shape ({n},), got {self.score.shape}")
        self.source = _str_column(self.source if len(self.source) else ["unknown"] * n, n, "source")
        self.status = _str_column(self.status if len(self.status) else ["proposed"] * n, n, "status")
        bad = sorted({s for s in self.status if s not in STATUSES})
        if bad:
            raise InvalidInput(f"status must be one of {', '.join(STATUSES)}, got {bad}")
        attrs = list(self.attributes) if len(self.attributes) else [{} for _ in range(n)]
        if len(attrs) != n or not all(isinstance(a, Mapping) for a in attrs):
            raise InvalidInput(f"attributes must be one mapping per annotation ({n})")
        self.attributes = _object_column([dict(a) for a in attrs], n)
        self.id = np.full(n, -1, dtype=np.int64) if len(self.id) == 0 and n else np.asarray(self.id, dtype=np.int64)
        if self.id.shape != (n,):
            raise InvalidInput(f"id must have shape ({n},), got {self.id.shape}")
        for i in range(n):
            k, g, m = self.kind[i], self.geometry[i], self.mask[i]
            if k in ("polygon", "point") and g is None:
                raise InvalidInput(f"annotation {i}: a {k} needs a geometry")
            if k == "mask" and m is None:
                raise InvalidInput(f"annotation {i}: a mask needs an RLE mask")

    @staticmethod
    def _optional(values: Any, n: int, name: str) -> np.ndarray:
        vals = list(values) if len(values) else [None] * n
        if len(vals) != n:
            raise InvalidInput(f"{name} must have one entry per annotation ({n}), got {len(vals)}")
        return _object_column(vals, n)

    # -- constructors ------------------------------------------------------------------------------------
    @classmethod
    def empty(cls) -> Annotations:
        return cls(kind=np.empty(0, dtype=object), label=np.empty(0, dtype=object), xyxy=np.zeros((0, 4)))

    @classmethod
    def from_boxes(cls, xyxy: Any, labels: Sequence[str] | str, **columns: Any) -> Annotations:
        boxes = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
        return cls(kind=_text(["box"] * len(boxes)), label=_labels(labels, len(boxes)), xyxy=boxes, **columns)

    @classmethod
    def from_polygons(cls, polygons: Sequence[Any], labels: Sequence[str] | str, **columns: Any) -> Annotations:
        """Polygons as shapely geometries or ``[(x, y), ...]`` rings (exterior only)."""
        import shapely

        geoms = np.empty(len(polygons), dtype=object)
        geoms[:] = [p if isinstance(p, shapely.Geometry) else shapely.Polygon(p) for p in polygons]
        ok = np.isin(shapely.get_type_id(geoms), (3, 6)) & ~shapely.is_empty(geoms)  # Polygon, MultiPolygon
        if not ok.all():
            i = int(np.nonzero(~ok)[0][0])
            raise InvalidInput(f"polygon {i}: not a non-empty Polygon or MultiPolygon ({geoms[i].geom_type})")
        xyxy = shapely.bounds(geoms).reshape(-1, 4)
        n = len(geoms)
        return cls(kind=_text(["polygon"] * n), label=_labels(labels, n), xyxy=xyxy, geometry=geoms, **columns)

    @classmethod
    def from_points(cls, xy: Any, labels: Sequence[str] | str, **columns: Any) -> Annotations:
        import shapely

        pts = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        geoms = [shapely.Point(float(x), float(y)) for x, y in pts]
        xyxy = np.concatenate([pts, pts], axis=1)
        n = len(pts)
        return cls(
            kind=_text(["point"] * n), label=_labels(labels, n), xyxy=xyxy, geometry=_object_column(geoms, n), **columns
        )

    @classmethod
    def from_tags(cls, labels: Sequence[str], **columns: Any) -> Annotations:
        """Image-level labels (binary, multi-class or multi-label classification)."""
        n = len(labels)
        return cls(kind=_text(["tag"] * n), label=_text(labels), xyxy=np.full((n, 4), np.nan), **columns)

    @classmethod
    def from_masks(
        cls,
        masks: Sequence[np.ndarray],
        offsets: Sequence[tuple[int, int]],
        labels: Sequence[str] | str,
        **columns: Any,
    ) -> Annotations:
        """Binary masks ``(h, w)`` placed at level-0 ``(x, y)`` offsets; stored as COCO RLE of the mask window.

        The box is the tight box of the set pixels (the mask is cropped to it).
        """
        import pycocotools.mask as rle

        rles, boxes = [], []
        for i, (m, (ox, oy)) in enumerate(zip(masks, offsets, strict=True)):
            m = np.asarray(m, dtype=bool)
            if m.ndim != 2 or not m.any():
                raise InvalidInput(f"mask {i}: needs a 2-D boolean array with at least one set pixel")
            ys, xs = np.nonzero(m)
            y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
            encoded = rle.encode(np.asfortranarray(m[y0:y1, x0:x1].astype(np.uint8)))
            rles.append({"size": [y1 - y0, x1 - x0], "counts": encoded["counts"].decode("ascii")})
            boxes.append([ox + x0, oy + y0, ox + x1, oy + y1])
        n = len(rles)
        return cls(
            kind=_text(["mask"] * n),
            label=_labels(labels, n),
            xyxy=np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
            mask=_object_column(rles, n),
            **columns,
        )

    # -- access ------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.kind)

    def __getitem__(self, index: Any) -> Annotations:
        """Rows selected by a boolean mask, an int array, a slice or one int (``a[a.label == "cell"]``)."""
        if isinstance(index, int | np.integer):
            index = [int(index)]
        return Annotations(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.to_records())

    def __repr__(self) -> str:
        kinds = {k: int((self.kind == k).sum()) for k in KINDS if (self.kind == k).any()}
        return f"Annotations(n={len(self)}, kinds={kinds})"

    @staticmethod
    def merge(parts: Sequence[Annotations]) -> Annotations:
        """Concatenate annotations of the same image."""
        parts = [p for p in parts if len(p)]
        if not parts:
            return Annotations.empty()
        return Annotations(
            **{f.name: np.concatenate([getattr(p, f.name) for p in parts], axis=0) for f in fields(Annotations)}
        )

    def shapes(self) -> list[Any]:
        """Each row as a shapely geometry in level-0 pixels (boxes and masks as polygons; tags as None)."""
        import shapely

        out: list[Any] = []
        for i in range(len(self)):
            k = self.kind[i]
            if k in ("polygon", "point"):
                out.append(self.geometry[i])
            elif k == "box":
                out.append(shapely.box(*self.xyxy[i]))
            elif k == "mask":
                out.append(mask_to_polygon(self.mask[i], self.xyxy[i]))
            else:
                out.append(None)
        return out

    def decode_mask(self, i: int) -> np.ndarray:
        """The boolean mask of row ``i`` over its bbox window (``(h, w)``, origin at ``floor(x0), floor(y0)``)."""
        import pycocotools.mask as rle

        m = self.mask[i]
        if m is None:
            raise InvalidInput(f"annotation {i} is a {self.kind[i]}, not a mask")
        return np.asarray(rle.decode({"size": m["size"], "counts": m["counts"].encode("ascii")}), dtype=bool)

    @property
    def area(self) -> np.ndarray:
        """Area in level-0 pixels² (polygons: exact; masks: set pixels; boxes: w×h; points and tags: 0)."""
        import pycocotools.mask as rle

        out = np.zeros(len(self))
        for i in range(len(self)):
            k = self.kind[i]
            if k == "polygon":
                out[i] = self.geometry[i].area
            elif k == "box":
                x0, y0, x1, y1 = self.xyxy[i]
                out[i] = (x1 - x0) * (y1 - y0)
            elif k == "mask":
                m = self.mask[i]
                out[i] = float(rle.area({"size": m["size"], "counts": m["counts"].encode("ascii")}))
        return out

    # -- windows and levels ------------------------------------------------------------------------------
    def crop(self, x0: float, y0: float, x1: float, y1: float, min_visible: float = 0.0) -> Annotations:
        """The annotations seen through the window ``[x0, x1) × [y0, y1)``, shifted so its top-left is (0, 0).

        Boxes are clipped; polygons are intersected with the window (holes kept, results without area
        dropped); points are kept when inside; masks are cut to the window's pixels (its corners rounded to
        whole pixels) and re-encoded around what is left; tags are kept as they are. ``min_visible`` drops
        objects whose remaining area is below that fraction of their full area (points inside count as 1).
        """
        import shapely

        if not (x1 > x0 and y1 > y0):
            raise InvalidInput(f"crop window must have x1 > x0 and y1 > y0, got ({x0}, {y0}, {x1}, {y1})")
        if not 0.0 <= min_visible <= 1.0:
            raise InvalidInput(f"min_visible must be in [0, 1], got {min_visible}")
        b = self.xyxy
        spatial = self.kind != "tag"
        with np.errstate(invalid="ignore"):
            near = (b[:, 0] <= x1) & (b[:, 2] >= x0) & (b[:, 1] <= y1) & (b[:, 3] >= y0)
        sub = self[np.nonzero(~spatial | (spatial & near))[0]]
        n = len(sub)
        xyxy, geometry, masks = sub.xyxy.copy(), sub.geometry.copy(), sub.mask.copy()
        visible = np.ones(n)
        alive = np.ones(n, dtype=bool)
        shift = np.array([x0, y0])

        rows = np.nonzero(sub.kind == "box")[0]
        if len(rows):
            ob = xyxy[rows]
            cb = np.column_stack(
                [
                    np.clip(ob[:, 0], x0, x1),
                    np.clip(ob[:, 1], y0, y1),
                    np.clip(ob[:, 2], x0, x1),
                    np.clip(ob[:, 3], y0, y1),
                ]
            )
            full = (ob[:, 2] - ob[:, 0]) * (ob[:, 3] - ob[:, 1])
            seen = (cb[:, 2] - cb[:, 0]) * (cb[:, 3] - cb[:, 1])
            inside = (ob[:, 0] >= x0) & (ob[:, 2] <= x1) & (ob[:, 1] >= y0) & (ob[:, 3] <= y1)
            visible[rows] = np.where(full > 0, seen / np.where(full > 0, full, 1.0), inside.astype(np.float64))
            xyxy[rows] = cb - np.concatenate([shift, shift])

        rows = np.nonzero(sub.kind == "point")[0]
        if len(rows):
            p = xyxy[rows, :2]
            visible[rows] = ((p[:, 0] >= x0) & (p[:, 0] < x1) & (p[:, 1] >= y0) & (p[:, 1] < y1)).astype(np.float64)
            geometry[rows] = shapely.transform(geometry[rows], lambda c: c - shift)
            xyxy[rows] -= np.concatenate([shift, shift])

        rows = np.nonzero(sub.kind == "polygon")[0]
        if len(rows):
            shapes = geometry[rows].copy()
            broken = ~shapely.is_valid(shapes)  # self-intersecting drawings: repair before intersecting
            shapes[broken] = _polygonal(shapely.make_valid(shapes[broken]))
            clipped = _polygonal(shapely.intersection(shapes, shapely.box(x0, y0, x1, y1)))
            full = shapely.area(geometry[rows])
            seen = shapely.area(clipped)
            visible[rows] = np.where(full > 0, seen / np.where(full > 0, full, 1.0), (seen > 0).astype(np.float64))
            alive[rows] = seen > 0
            moved = shapely.transform(clipped, lambda c: c - shift)
            geometry[rows] = moved
            xyxy[rows] = shapely.bounds(moved)

        ix0, iy0, ix1, iy1 = (round(v) for v in (x0, y0, x1, y1))
        for i in np.nonzero(sub.kind == "mask")[0]:
            m = sub.decode_mask(int(i))
            ox, oy = math.floor(xyxy[i, 0]), math.floor(xyxy[i, 1])
            cx0, cy0 = max(0, ix0 - ox), max(0, iy0 - oy)
            cx1, cy1 = min(m.shape[1], ix1 - ox), min(m.shape[0], iy1 - oy)
            total = int(m.sum())
            cut = m[cy0:cy1, cx0:cx1] if cx1 > cx0 and cy1 > cy0 else np.zeros((0, 0), dtype=bool)
            tight = _tight_rle(cut, ox + cx0 - ix0, oy + cy0 - iy0)
            if tight is None:
                visible[i], alive[i] = 0.0, False
                continue
            masks[i], xyxy[i] = tight
            visible[i] = int(cut.sum()) / total if total else 0.0

        alive &= visible > 0
        alive &= visible >= min_visible
        return sub._with(xyxy=xyxy, geometry=geometry, mask=masks, rows=np.nonzero(alive)[0])

    def scale(self, factor: float) -> Annotations:
        """Coordinates multiplied by ``factor`` (``1 / downsample`` takes level-0 pixels to a level's pixels).

        Masks are resampled by nearest neighbour on the new pixel grid; an object smaller than one new
        pixel keeps the pixel under its centre, so nothing vanishes. Tags are unchanged.
        """
        import shapely

        if not (math.isfinite(factor) and factor > 0):
            raise InvalidInput(f"scale factor must be a positive finite number, got {factor}")
        xyxy, geometry, masks = self.xyxy * factor, self.geometry.copy(), self.mask.copy()
        rows = np.nonzero(np.isin(self.kind, ("polygon", "point")))[0]
        if len(rows):
            geometry[rows] = shapely.transform(geometry[rows], lambda c: c * factor)
        for i in np.nonzero(self.kind == "mask")[0]:
            m = self.decode_mask(int(i))
            ox, oy = math.floor(self.xyxy[i, 0]), math.floor(self.xyxy[i, 1])
            nx0, ny0 = math.floor(ox * factor), math.floor(oy * factor)
            nx1 = max(nx0 + 1, math.ceil((ox + m.shape[1]) * factor))
            ny1 = max(ny0 + 1, math.ceil((oy + m.shape[0]) * factor))
            src_x = np.floor((np.arange(nx0, nx1) + 0.5) / factor).astype(np.int64) - ox
            src_y = np.floor((np.arange(ny0, ny1) + 0.5) / factor).astype(np.int64) - oy
            ok_x, ok_y = (src_x >= 0) & (src_x < m.shape[1]), (src_y >= 0) & (src_y < m.shape[0])
            out = np.zeros((ny1 - ny0, nx1 - nx0), dtype=bool)
            out[np.ix_(ok_y, ok_x)] = m[np.ix_(src_y[ok_y], src_x[ok_x])]
            if not out.any():
                ys, xs = np.nonzero(m)
                cx = min(nx1 - 1, max(nx0, math.floor((ox + xs.mean() + 0.5) * factor)))
                cy = min(ny1 - 1, max(ny0, math.floor((oy + ys.mean() + 0.5) * factor)))
                out[cy - ny0, cx - nx0] = True
            tight = _tight_rle(out, nx0, ny0)
            if tight is not None:  # always: at least one pixel is set
                masks[i], xyxy[i] = tight
        return self._with(xyxy=xyxy, geometry=geometry, mask=masks)

    def translate(self, dx: float, dy: float) -> Annotations:
        """Coordinates shifted by ``(dx, dy)`` (a window's predictions placed at the window's origin).

        Masks are anchored at whole pixels, so a shift that moves masks must be whole pixels. Tags are unchanged.
        """
        import shapely

        if not (math.isfinite(dx) and math.isfinite(dy)):
            raise InvalidInput(f"translation must be finite, got ({dx}, {dy})")
        has_masks = bool((self.kind == "mask").any())
        if has_masks and (dx != round(dx) or dy != round(dy)):
            raise InvalidInput(f"masks move by whole pixels only, got ({dx}, {dy})")
        spatial = self.kind != "tag"
        xyxy = self.xyxy.copy()
        xyxy[spatial] += np.array([dx, dy, dx, dy])
        geometry = self.geometry.copy()
        rows = np.nonzero(np.isin(self.kind, ("polygon", "point")))[0]
        if len(rows):
            shift = np.array([dx, dy])
            geometry[rows] = shapely.transform(geometry[rows], lambda c: c + shift)
        return self._with(xyxy=xyxy, geometry=geometry)

    def _with(self, rows: np.ndarray | None = None, **columns: Any) -> Annotations:
        """A copy with some columns replaced, keeping ``rows`` (all when None) before validation."""
        picked = {f.name: columns.get(f.name, getattr(self, f.name)) for f in fields(self)}
        if rows is not None:
            picked = {name: column[rows] for name, column in picked.items()}
        return Annotations(**picked)

    # -- converters --------------------------------------------------------------------------------------
    def to_records(self) -> list[dict[str, Any]]:
        """JSON-able dicts, one per row (the REST and database representation); geometry as GeoJSON."""
        import shapely

        records = []
        for i in range(len(self)):
            g = self.geometry[i]
            score = float(self.score[i])
            records.append(
                {
                    "id": int(self.id[i]) if self.id[i] >= 0 else None,
                    "kind": str(self.kind[i]),
                    "label": str(self.label[i]),
                    "bbox": None if self.kind[i] == "tag" else [float(v) for v in self.xyxy[i]],
                    "geometry": shapely.geometry.mapping(g) if g is not None else None,
                    "mask": self.mask[i],
                    "score": None if math.isnan(score) else score,
                    "source": str(self.source[i]),
                    "status": str(self.status[i]),
                    "attributes": dict(self.attributes[i]),
                }
            )
        return records

    @classmethod
    def from_records(
        cls, records: Sequence[Mapping[str, Any]], *, canvas: Canvas | None = None, max_records: int | None = None
    ) -> Annotations:
        """Inverse of ``to_records``; raises ``InvalidInput`` naming the first bad record (its index).

        Records from outside (REST) name their image's ``canvas``: each is checked by ``shape_problem`` before
        its mask is decoded, and more than ``max_records`` of them are refused before any is read.
        """
        import shapely

        if max_records is not None and len(records) > max_records:
            raise InvalidInput(
                f"annotation record {max_records}: more than {max_records} records in one request "
                "(max_records_per_request); send them in several requests"
            )
        cols: dict[str, list[Any]] = {
            k: []
            for k in ("kind", "label", "xyxy", "geometry", "mask", "score", "source", "status", "attributes", "id")
        }
        for i, r in enumerate(records):
            try:
                kind = r["kind"]
                if canvas is not None and r.get("geometry"):  # before building it: a huge one costs seconds
                    declared = _geojson_vertices(r["geometry"])
                    if declared > canvas.max_vertices:
                        raise InvalidInput(_too_many_vertices(kind, declared, canvas))
                geom = shapely.geometry.shape(r["geometry"]) if r.get("geometry") else None
                if geom is not None and kind in GEOMETRY_TYPES and geom.geom_type not in GEOMETRY_TYPES[kind]:
                    raise InvalidInput(
                        f"a {kind} needs a {' or '.join(GEOMETRY_TYPES[kind])} geometry, got {geom.geom_type}"
                    )
                if kind == "tag":
                    box = [math.nan] * 4
                elif r.get("bbox") is not None:
                    box = [float(v) for v in r["bbox"]]
                elif geom is not None:
                    box = list(geom.bounds)
                else:
                    raise InvalidInput(f"a {kind} needs a bbox or a geometry")
                if canvas is not None:  # from the declared values: nothing decoded yet
                    size = _mask_size(r["mask"]) if kind == "mask" and r.get("mask") is not None else None
                    problem = shape_problem(kind, box, geom, size, canvas)
                    if problem:
                        raise InvalidInput(problem)
                cols["kind"].append(kind)
                cols["label"].append(r["label"])
                cols["xyxy"].append(box)
                cols["geometry"].append(geom)
                cols["mask"].append(_record_mask(r.get("mask")) if kind == "mask" else None)
                cols["score"].append(math.nan if r.get("score") is None else float(r["score"]))
                cols["source"].append(r.get("source") or "unknown")
                cols["status"].append(r.get("status") or "proposed")
                cols["attributes"].append(r.get("attributes") or {})
                cols["id"].append(-1 if r.get("id") is None else int(r["id"]))
            except InvalidInput as exc:
                raise InvalidInput(f"annotation record {i}: {exc}") from exc
            except (KeyError, TypeError, ValueError, shapely.errors.GEOSException) as exc:
                raise InvalidInput(f"annotation record {i}: {type(exc).__name__}: {exc}") from exc
        n = len(cols["kind"])
        if n == 0:
            return cls.empty()
        return cls(
            kind=_text(cols["kind"]),
            label=_text(cols["label"]),
            xyxy=np.asarray(cols["xyxy"], dtype=np.float64),
            geometry=_object_column(cols["geometry"], n),
            mask=_object_column(cols["mask"], n),
            score=np.asarray(cols["score"]),
            source=_text(cols["source"]),
            status=_text(cols["status"]),
            attributes=_object_column(cols["attributes"], n),
            id=np.asarray(cols["id"], dtype=np.int64),
        )


def _mask_size(value: Any) -> tuple[int, int]:
    """The ``[h, w]`` a record's mask declares (``InvalidInput`` unless two positive integers); nothing decoded."""
    size = value.get("size") if isinstance(value, Mapping) else None
    if not (
        isinstance(size, Sequence)
        and len(size) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)
    ):
        raise InvalidInput(f"a mask must be a COCO RLE {{'size': [h, w], 'counts': ...}} of its box, got {value!r:.80}")
    return int(size[0]), int(size[1])


def _record_mask(value: Any) -> dict[str, Any] | None:
    """A record's mask as ``{"size": [h, w], "counts": str}``; uncompressed ``counts`` (a list) compressed.

    Anything else is ``InvalidInput`` here, so a malformed mask is never stored (exporters decode it later).
    """
    import pycocotools.mask as rle

    if value is None:
        return None
    h, w = _mask_size(value)
    counts = value.get("counts")
    if isinstance(counts, list):
        if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
            raise InvalidInput("mask counts must be a COCO counts string or a list of non-negative integers")
        if sum(counts) != h * w:
            raise InvalidInput(f"mask counts cover {sum(counts)} pixels, its {w}x{h} window has {h * w}")
        encoded = rle.frPyObjects({"size": [h, w], "counts": counts}, h, w)
        return {"size": [h, w], "counts": encoded["counts"].decode("ascii")}
    if not isinstance(counts, str) or not counts.isascii():
        raise InvalidInput("mask counts must be a COCO counts string or a list of non-negative integers")
    try:
        rle.decode({"size": [h, w], "counts": counts.encode("ascii")})
    except ValueError as exc:
        raise InvalidInput(f"mask counts are not a valid COCO RLE string: {exc}") from exc
    return {"size": [h, w], "counts": counts}


def _labels(labels: Sequence[str] | str, n: int) -> np.ndarray:
    return _text([labels] * n if isinstance(labels, str) else list(labels))


def _text(values: Sequence[Any]) -> np.ndarray:
    return _object_column(list(values), len(values))


def _polygonal(geoms: np.ndarray) -> np.ndarray:
    """Keep only the areal part of each geometry (an intersection may add edge lines or corner points)."""
    import shapely

    out = np.asarray(geoms, dtype=object).copy()
    for i in np.nonzero(~np.isin(shapely.get_type_id(out), (3, 6)))[0]:
        parts = [p for p in shapely.get_parts(out[i]) if p.geom_type == "Polygon" and p.area > 0]
        out[i] = parts[0] if len(parts) == 1 else shapely.MultiPolygon(parts) if parts else shapely.Polygon()
    return out


def _tight_rle(m: np.ndarray, ox: int, oy: int) -> tuple[dict[str, Any], np.ndarray] | None:
    """COCO RLE of the set pixels' tight box of a mask placed at ``(ox, oy)``, and that box; None if empty."""
    import pycocotools.mask as rle

    if m.size == 0 or not m.any():
        return None
    ys, xs = np.nonzero(m)
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    encoded = rle.encode(np.asfortranarray(m[y0:y1, x0:x1].astype(np.uint8)))
    box = np.array([ox + x0, oy + y0, ox + x1, oy + y1], dtype=np.float64)
    return {"size": [y1 - y0, x1 - x0], "counts": encoded["counts"].decode("ascii")}, box


def mask_to_polygon(rle_mask: Mapping[str, Any], xyxy: np.ndarray) -> Any:
    """The outline of an RLE mask as a shapely (Multi)Polygon in level-0 pixels, exact to pixel edges.

    Each horizontal run of set pixels becomes one rectangle; their union is the outline (holes kept).
    """
    import pycocotools.mask as rle
    import shapely

    m = np.asarray(rle.decode({"size": rle_mask["size"], "counts": rle_mask["counts"].encode("ascii")}), dtype=bool)
    ox, oy = math.floor(xyxy[0]), math.floor(xyxy[1])
    padded = np.zeros((m.shape[0], m.shape[1] + 2), dtype=np.int8)
    padded[:, 1:-1] = m
    edges = np.diff(padded, axis=1)  # +1 where a run starts, -1 one past where it ends
    rows_s, starts = np.nonzero(edges == 1)
    _, ends = np.nonzero(edges == -1)
    boxes = shapely.box(ox + starts, oy + rows_s, ox + ends, oy + rows_s + 1)
    return shapely.union_all(boxes) if len(boxes) else shapely.Polygon()
