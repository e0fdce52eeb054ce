"""COCO's representation of ``Annotations``: pycocotools inputs, masks as COCO RLE, the reference evaluator.

``evaluate_detection`` and pycocotools see the same objects through these helpers: the same image and class
order, the same areas and crowd flags, and for ``segm`` the very same RLEs (an image-sized frame at (0, 0):
``image_sizes`` or the extent of the image's objects).
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from gigavision.annotations import Annotations
from gigavision.errors import InvalidInput, LimitExceeded

IouType = Literal["bbox", "segm"]
ImageKey = Hashable
_RLE_LIMIT = 2**32  # COCO RLE run lengths are 32-bit


@dataclass(frozen=True)
class CocoInputs:
    """What pycocotools takes: ``dataset`` for ``COCO()`` (images, categories, ground truth) and ``results``
    for ``COCO.loadRes``. COCO image id ``i + 1`` is ``image_keys[i]``; category id ``k + 1`` is ``labels[k]``."""

    dataset: dict[str, Any]
    results: list[dict[str, Any]]
    image_keys: list[ImageKey]
    labels: list[str]


def image_keys(gt: Mapping[ImageKey, Annotations], pred: Mapping[ImageKey, Annotations]) -> list[ImageKey]:
    return list(gt.keys()) + [k for k in pred if k not in gt]


def check_shapes(ann: Annotations, key: ImageKey, what: str) -> None:
    if not isinstance(ann, Annotations):
        raise InvalidInput(f"{what}[{key!r}] must be an Annotations, got {type(ann).__name__}")
    bad = sorted({str(k) for k in ann.kind if k in ("tag", "point")})
    if bad:
        raise InvalidInput(
            f"{what}[{key!r}] has {', '.join(bad)} annotations, which have no extent for detection metrics: "
            f"select the shapes first (ann[(ann.kind != 'tag') & (ann.kind != 'point')])"
        )


def crowd_flags(ann: Annotations) -> np.ndarray:
    return np.array([bool(a.get("iscrowd", False)) for a in ann.attributes], dtype=bool)


def class_labels(gt: Mapping[ImageKey, Annotations], pred: Mapping[ImageKey, Annotations]) -> list[str]:
    """The labels seen in ground truth or predictions, sorted: class ``k`` is ``labels[k]``."""
    return sorted({str(v) for by in (gt, pred) for a in by.values() for v in a.label})


# -- segmentation masks as COCO RLE in an image frame -------------------------------------------------------
def frame_sizes(
    keys: Sequence[ImageKey],
    gt: Mapping[ImageKey, Annotations],
    pred: Mapping[ImageKey, Annotations],
    image_sizes: Mapping[ImageKey, tuple[int, int]] | None,
    rle_limit: bool = True,
) -> list[tuple[int, int]]:
    """(height, width) of each image's frame: its given size, else the extent of its objects (at least 1×1)."""
    out = []
    for key in keys:
        if image_sizes is not None and key in image_sizes:
            w, h = (int(v) for v in image_sizes[key])
        else:
            w = h = 1
            for ann in (gt.get(key), pred.get(key)):
                if ann is not None and len(ann):
                    w = max(w, math.ceil(float(ann.xyxy[:, 2].max())))
                    h = max(h, math.ceil(float(ann.xyxy[:, 3].max())))
        if w < 1 or h < 1:
            raise InvalidInput(f"image {key!r}: size must be at least 1×1 pixels, got {w}×{h}")
        if rle_limit and w * h >= _RLE_LIMIT:
            raise LimitExceeded(
                f"image {key!r}: segm evaluation rasterises objects in a {w}×{h} frame, over the 2^32 pixels a "
                "COCO RLE can hold; evaluate per region (crop the annotations) or use iou_type='bbox'"
            )
        out.append((h, w))
    return out


def _window_to_rle(window: np.ndarray, ox: int, oy: int, height: int, width: int) -> dict[str, Any]:
    """COCO RLE, in a ``height × width`` frame, of a boolean ``window`` placed at ``(ox, oy)`` (clipped)."""
    import pycocotools.mask as rle

    x0, y0 = max(ox, 0), max(oy, 0)
    x1, y1 = min(ox + window.shape[1], width), min(oy + window.shape[0], height)
    runs: np.ndarray = np.zeros(0, dtype=np.int64)
    if x1 > x0 and y1 > y0:
        m = window[y0 - oy : y1 - oy, x0 - ox : x1 - ox].T  # (columns, rows): COCO RLE is column-major
        padded = np.zeros((m.shape[0], m.shape[1] + 2), dtype=np.int8)
        padded[:, 1:-1] = m
        edges = np.diff(padded, axis=1)
        cs, rs = np.nonzero(edges == 1)
        _, re = np.nonzero(edges == -1)
        starts = (x0 + cs).astype(np.int64) * height + y0 + rs
        ends = (x0 + cs).astype(np.int64) * height + y0 + re
        if len(starts) > 1:  # a run reaching a column's bottom continues at the next column's top
            joined = ends[:-1] == starts[1:]
            keep_start = np.r_[True, ~joined]
            keep_end = np.r_[~joined, True]
            starts, ends = starts[keep_start], ends[keep_end]
        runs = np.stack([starts, ends], axis=1).ravel()
    counts = np.diff(np.r_[0, runs, height * width])
    encoded = rle.frPyObjects({"size": [height, width], "counts": counts.tolist()}, height, width)
    return dict(encoded)


def _polygon_rle(geom: Any, height: int, width: int) -> dict[str, Any]:
    """A (Multi)Polygon rasterised as COCO rasterises polygon segmentations (parts merged; holes cut out)."""
    import pycocotools.mask as rle
    import shapely

    parts = list(geom.geoms) if isinstance(geom, shapely.MultiPolygon) else [geom]
    exteriors = [np.asarray(p.exterior.coords)[:-1] for p in parts if not p.is_empty]
    holes = [np.asarray(r.coords)[:-1] for p in parts if not p.is_empty for r in p.interiors]
    if not holes:
        encoded = rle.merge(rle.frPyObjects([ring.ravel().tolist() for ring in exteriors], height, width))
        return dict(encoded)
    minx, miny, maxx, maxy = geom.bounds
    ox, oy = math.floor(minx), math.floor(miny)
    wh, ww = math.ceil(maxy) - oy + 1, math.ceil(maxx) - ox + 1
    shift = np.array([ox, oy], dtype=np.float64)

    def raster(rings: list[np.ndarray]) -> np.ndarray:
        merged = rle.merge(rle.frPyObjects([(r - shift).ravel().tolist() for r in rings], wh, ww))
        return np.asarray(rle.decode(merged), dtype=bool)

    return _window_to_rle(raster(exteriors) & ~raster(holes), ox, oy, height, width)


def segm_rle(ann: Annotations, i: int, height: int, width: int) -> dict[str, Any]:
    """Row ``i`` (box, polygon or mask) as a compressed COCO RLE in a ``height × width`` frame at (0, 0).

    Boxes become the rectangle polygon ``COCO.loadRes`` makes of a box; masks are placed at their window.
    """
    import pycocotools.mask as rle

    kind = ann.kind[i]
    if kind == "box":
        x0, y0, x1, y1 = (float(v) for v in ann.xyxy[i])
        return dict(rle.merge(rle.frPyObjects([[x0, y0, x0, y1, x1, y1, x1, y0]], height, width)))
    if kind == "polygon":
        return _polygon_rle(ann.geometry[i], height, width)
    if kind == "mask":
        return _window_to_rle(ann.decode_mask(i), math.floor(ann.xyxy[i, 0]), math.floor(ann.xyxy[i, 1]), height, width)
    raise InvalidInput(f"a {kind} has no extent to rasterise")


# -- pycocotools interop ------------------------------------------------------------------------------------
def to_coco(
    gt: Mapping[ImageKey, Annotations],
    pred: Mapping[ImageKey, Annotations],
    *,
    iou_type: IouType = "bbox",
    image_sizes: Mapping[ImageKey, tuple[int, int]] | None = None,
) -> CocoInputs:
    """The same data as pycocotools inputs: a COCO dataset dict for the ground truth and a results list.

    Ids are 1-based in image / class order (``CocoInputs.image_keys`` / ``labels``); bboxes are xywh in
    level-0 pixels; for ``segm`` every object carries a compressed RLE (counts as text) in the image frame
    that ``evaluate_detection`` uses, and results carry no bbox (so ``loadRes`` takes the mask area).
    """
    if iou_type not in ("bbox", "segm"):
        raise InvalidInput(f"iou_type must be 'bbox' or 'segm', got {iou_type!r}")
    keys = image_keys(gt, pred)
    labels = class_labels(gt, pred)
    cat_of = {lab: k + 1 for k, lab in enumerate(labels)}
    frames = frame_sizes(keys, gt, pred, image_sizes, rle_limit=iou_type == "segm")
    images = [
        {"id": i + 1, "file_name": str(k), "height": h, "width": w}
        for i, (k, (h, w)) in enumerate(zip(keys, frames, strict=True))
    ]
    annotations: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for i, key in enumerate(keys):
        h, w = frames[i]
        for by, out, is_pred in ((gt, annotations, False), (pred, results, True)):
            ann = by.get(key)
            if ann is None or not len(ann):
                continue
            check_shapes(ann, key, "pred" if is_pred else "gt")
            areas = ann.area
            crowd = crowd_flags(ann)
            for r in range(len(ann)):
                x0, y0, x1, y1 = (float(v) for v in ann.xyxy[r])
                item: dict[str, Any] = {"image_id": i + 1, "category_id": cat_of[str(ann.label[r])]}
                if iou_type == "segm":
                    encoded = segm_rle(ann, r, h, w)
                    item["segmentation"] = {"size": encoded["size"], "counts": encoded["counts"].decode("ascii")}
                if is_pred:
                    if iou_type == "bbox":
                        item["bbox"] = [x0, y0, x1 - x0, y1 - y0]
                    score = float(ann.score[r])
                    if not math.isfinite(score):
                        raise InvalidInput(f"pred[{key!r}]: every prediction needs a finite score (NaN/inf found)")
                    item["score"] = score
                else:
                    item.update(
                        id=len(annotations) + 1,
                        bbox=[x0, y0, x1 - x0, y1 - y0],
                        area=float(areas[r]),
                        iscrowd=int(crowd[r]),
                    )
                out.append(item)
    dataset = {
        "images": images,
        "categories": [{"id": k + 1, "name": lab} for k, lab in enumerate(labels)],
        "annotations": annotations,
    }
    return CocoInputs(dataset=dataset, results=results, image_keys=keys, labels=labels)


def evaluate_with_pycocotools(inputs: CocoInputs, iou_type: IouType = "bbox", max_dets: int = 100) -> Any:
    """Run ``pycocotools.cocoeval.COCOeval`` on ``to_coco`` output (quietly) and return it, evaluated and
    accumulated, with ``stats`` summarised. The reference that ``evaluate_detection`` is checked against.

    COCO's four area ranges; ``maxDets`` is ``[1, 10, max_dets]`` (so ``max_dets`` must exceed 10).
    """
    import copy

    if max_dets <= 10:
        raise InvalidInput(f"evaluate_with_pycocotools needs max_dets > 10 (COCO's maxDets [1, 10, N]), got {max_dets}")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(inputs.dataset)
        coco_gt.createIndex()
        if inputs.results:
            coco_dt = coco_gt.loadRes(copy.deepcopy(inputs.results))
        else:  # loadRes cannot take an empty list
            coco_dt = COCO()
            coco_dt.dataset = {"images": list(inputs.dataset["images"]), "categories": [], "annotations": []}
            coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, iouType=iou_type)
        ev.params.maxDets = [1, 10, max_dets]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev
