"""COCO-style detection metrics (mAP@0.5, mAP@0.5:0.95, per-class AP, AR, recall at IoU ≥ 0.6), torch-free.

The COCO protocol of ``pycocotools.cocoeval.COCOeval`` re-implemented in vectorised NumPy, with the same
numbers to 1e-6 (DESIGN.md §6; ``tests/test_metrics.py`` and ``benchmarks/bench_map.py`` check it):

- per (image, class), detections sorted by descending score with a stable sort (ties keep their row order),
  the top ``max_dets`` kept; IoU thresholds 0.50:0.05:0.95; 101 recall points;
- greedy matching in score order: each detection takes the unmatched ground truth of highest IoU ≥ the
  threshold (the later one on ties), preferring regular ground truth over ignored ones; crowd ground truth
  (``attributes["iscrowd"]`` truthy) is ignored, can absorb any number of detections and is compared by
  intersection over the detection's area; ground truth outside the area range is ignored, and so are unmatched
  detections outside it;
- per class over all images (ties across images in image order): cumulative TP/FP, the precision envelope,
  precision sampled at 101 recall points; AP = mean over IoU thresholds and recall points; classes without
  ground truth are left out of every mean (as COCO's -1).

The per-rank loop runs at most ``max_dets`` times, each step matching one detection in every (image, class)
at all ten thresholds at once. Boxes are compared with COCO's ``bbIou`` arithmetic (xywh), so a pair on a
threshold lands on the same side. ``iou_type="segm"`` compares polygons and masks through pycocotools' RLE
IoU (its rasterisation is the reference), in a frame of the image's size: ``image_sizes`` or the extent of
the image's objects.

Areas: ground truth uses ``Annotations.area`` (box w×h, exact polygon area, mask pixels), detections their box
(bbox) or rasterised mask (segm) area, as ``COCO.loadRes`` does. Points and tags have no extent: rejected.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gigavision.annotations import Annotations
from gigavision.errors import InvalidInput
from gigavision.metrics._common import jsonable
from gigavision.metrics.coco import (
    CocoInputs,
    ImageKey,
    IouType,
    check_shapes,
    class_labels,
    crowd_flags,
    evaluate_with_pycocotools,
    frame_sizes,
    image_keys,
    segm_rle,
    to_coco,
)

__all__ = [
    "COCO_AREA_RANGES",
    "IOU_THRESHOLDS",
    "RECALL_THRESHOLDS",
    "ClassDetection",
    "CocoInputs",
    "DetectionResult",
    "evaluate_detection",
    "evaluate_with_pycocotools",
    "to_coco",
]

#: IoU thresholds and recall points, built exactly as ``pycocotools.cocoeval.Params`` builds them.
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
#: COCO's object size ranges in pixels² (``all`` is the default and the one the headline numbers use).
COCO_AREA_RANGES: dict[str, tuple[float, float]] = {
    "all": (0.0, 1e5**2),
    "small": (0.0, 32.0**2),
    "medium": (32.0**2, 96.0**2),
    "large": (96.0**2, 1e5**2),
}
_PAIR_CHUNK = 4_000_000  # candidate (detection, ground truth) pairs scored per vectorised batch


@dataclass(frozen=True)
class ClassDetection:
    """One class: AP over IoU 0.50:0.95, at 0.50 and 0.75, AR (mean recall over the IoU thresholds at
    ``max_dets``), recall at IoU ≥ 0.6; None where the class has no (non-ignored) ground truth."""

    ap: float | None
    ap50: float | None
    ap75: float | None
    ar: float | None
    recall_iou60: float | None
    n_gt: int
    n_pred: int


@dataclass(frozen=True)
class DetectionResult:
    """COCO summary numbers (``map`` is COCO's AP, ``ar`` its AR@max_dets) plus per-class values and the
    interpolated PR curve of each class at IoU 0.5 (``pr_curves[label][i]`` = precision at recall
    ``RECALL_THRESHOLDS[i]``). ``precision`` ``(T, R, K, A)`` and ``recall`` ``(T, K, A)`` are COCO's
    accumulated arrays (-1 where undefined), axes: IoU threshold, recall point, class, area range."""

    iou_type: str
    map: float | None
    map50: float | None
    map75: float | None
    ar: float | None
    recall_iou60: float | None
    per_class: dict[str, ClassDetection]
    by_area: dict[str, dict[str, float | None]]
    pr_curves: dict[str, list[float]]
    n_images: int
    n_gt: int
    n_pred: int
    max_dets: int
    labels: list[str]
    area_ranges: dict[str, tuple[float, float]]
    precision: np.ndarray = field(repr=False)
    recall: np.ndarray = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (without the raw ``precision``/``recall`` arrays); undefined values are None."""
        out: dict[str, Any] = jsonable(self)
        out["recall_thresholds"] = [float(v) for v in RECALL_THRESHOLDS]
        return out


# -- input tables -------------------------------------------------------------------------------------------
@dataclass
class _Objects:
    """One row per object of all images: image index, class index, area, boxes as COCO xywh."""

    image: np.ndarray
    cat: np.ndarray
    area: np.ndarray
    xywh: np.ndarray
    crowd: np.ndarray
    score: np.ndarray
    source: list[tuple[int, int]]  # (image index, row) into the caller's Annotations


def _objects(
    by_image: Mapping[ImageKey, Annotations],
    keys: Sequence[ImageKey],
    cat_of: Mapping[str, int],
    what: str,
    is_pred: bool,
) -> _Objects:
    image: list[np.ndarray] = []
    cat: list[np.ndarray] = []
    area: list[np.ndarray] = []
    xywh: list[np.ndarray] = []
    crowd: list[np.ndarray] = []
    score: list[np.ndarray] = []
    source: list[tuple[int, int]] = []
    for i, key in enumerate(keys):
        ann = by_image.get(key)
        if ann is None or not len(ann):
            continue
        check_shapes(ann, key, what)
        n = len(ann)
        image.append(np.full(n, i, dtype=np.int64))
        cat.append(np.array([cat_of[str(lab)] for lab in ann.label], dtype=np.int64))
        box = ann.xyxy
        xywh.append(np.stack([box[:, 0], box[:, 1], box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]], axis=1))
        area.append(np.zeros(n) if is_pred else np.asarray(ann.area, dtype=np.float64))
        crowd.append(np.zeros(n, dtype=bool) if is_pred else crowd_flags(ann))
        s = np.asarray(ann.score, dtype=np.float64)
        if is_pred and not np.isfinite(s).all():
            raise InvalidInput(f"{what}[{key!r}]: every prediction needs a finite score (NaN/inf found)")
        score.append(s)
        source.extend((i, r) for r in range(n))
    if not image:
        return _Objects(
            np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), np.zeros((0, 4)), np.zeros(0, bool),
            np.zeros(0), [],
        )  # fmt: skip
    return _Objects(
        np.concatenate(image), np.concatenate(cat), np.concatenate(area), np.concatenate(xywh),
        np.concatenate(crowd), np.concatenate(score), source,
    )  # fmt: skip


# -- IoU --------------------------------------------------------------------------------------------------
def _box_iou_pairs(dt: np.ndarray, gt: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """IoU of aligned xywh pairs with pycocotools' ``bbIou`` arithmetic (crowd: intersection / detection area)."""
    da = dt[:, 2] * dt[:, 3]
    ga = gt[:, 2] * gt[:, 3]
    w = np.minimum(dt[:, 2] + dt[:, 0], gt[:, 2] + gt[:, 0]) - np.maximum(dt[:, 0], gt[:, 0])
    h = np.minimum(dt[:, 3] + dt[:, 1], gt[:, 3] + gt[:, 1]) - np.maximum(dt[:, 1], gt[:, 1])
    inter = w * h
    union = np.where(crowd, da, da + ga - inter)
    ok = (w > 0) & (h > 0)
    out: np.ndarray = np.divide(inter, union, out=np.zeros_like(inter), where=ok)
    return out


def _pairs_dense(
    det_group: np.ndarray, gt_start: np.ndarray, gt_count: np.ndarray, lo: int, hi: int
) -> tuple[np.ndarray, np.ndarray]:
    """All (detection, ground truth) index pairs of the same (image, class) for detections ``lo:hi``."""
    counts = gt_count[det_group[lo:hi]]
    total = int(counts.sum())
    det = np.repeat(np.arange(lo, hi), counts)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    gti = np.repeat(gt_start[det_group[lo:hi]], counts) + (np.arange(total) - first)
    return det, gti


# -- evaluation -------------------------------------------------------------------------------------------
def evaluate_detection(
    gt: Mapping[ImageKey, Annotations],
    pred: Mapping[ImageKey, Annotations],
    *,
    iou_type: IouType = "bbox",
    max_dets: int = 100,
    area_ranges: Mapping[str, tuple[float, float]] | None = None,
    image_sizes: Mapping[ImageKey, tuple[int, int]] | None = None,
) -> DetectionResult:
    """COCO detection metrics of ``pred`` (with scores) against ``gt``, both ``{image_id: Annotations}``.

    Images are the keys of ``gt`` then the others of ``pred`` (an image missing from ``gt`` has no objects);
    classes are the labels seen in either (a class with no ground truth has None, not 0). ``iou_type``:
    ``"bbox"`` compares boxes (every kind's ``xyxy``), ``"segm"`` polygons/masks (boxes as rectangles).
    ``area_ranges`` defaults to COCO's ``all``; pass ``COCO_AREA_RANGES`` for small/medium/large too
    (``by_area``). ``image_sizes``: ``{image_id: (width, height)}`` frames for segm (default: object extent).
    """
    if iou_type not in ("bbox", "segm"):
        raise InvalidInput(f"iou_type must be 'bbox' or 'segm', got {iou_type!r}")
    if max_dets < 1:
        raise InvalidInput(f"max_dets must be at least 1, got {max_dets}")
    ranges = dict(area_ranges) if area_ranges is not None else {"all": COCO_AREA_RANGES["all"]}
    if "all" not in ranges:
        raise InvalidInput(f"area_ranges must include 'all' (the headline numbers), got {sorted(ranges)}")
    keys = image_keys(gt, pred)
    labels = class_labels(gt, pred)
    cat_of = {lab: k for k, lab in enumerate(labels)}
    g = _objects(gt, keys, cat_of, "gt", is_pred=False)
    d = _objects(pred, keys, cat_of, "pred", is_pred=True)
    n_img, n_cat = len(keys), len(labels)
    n_thr = len(IOU_THRESHOLDS)

    # ground truth grouped by (class, image), row order kept; detections by (class, image, -score) stable
    g_order = np.lexsort((np.arange(len(g.cat)), g.image, g.cat))
    g_group = (g.cat * n_img + g.image)[g_order]
    g_area, g_crowd, g_xywh = g.area[g_order], g.crowd[g_order], g.xywh[g_order]
    g_src = [g.source[i] for i in g_order]
    d_order = np.lexsort((np.arange(len(d.cat)), -d.score, d.image, d.cat))
    d_group_all = (d.cat * n_img + d.image)[d_order]
    starts = np.flatnonzero(np.r_[True, np.diff(d_group_all) != 0]) if len(d_order) else np.zeros(0, np.int64)
    rank_all = np.arange(len(d_order)) - np.repeat(starts, np.diff(np.r_[starts, len(d_order)]))
    keep = rank_all < max_dets
    d_order, d_group, d_rank = d_order[keep], d_group_all[keep], rank_all[keep]
    d_score, d_xywh = d.score[d_order], d.xywh[d_order]
    d_cat, d_image = d.cat[d_order], d.image[d_order]

    n_groups = n_cat * n_img
    gt_count = np.bincount(g_group, minlength=n_groups)
    gt_start = np.cumsum(gt_count) - gt_count

    # candidate pairs with IoU ≥ the lowest threshold (lower ones can never match)
    min_thr = min(float(IOU_THRESHOLDS[0]), 1 - 1e-10)
    if iou_type == "bbox":
        d_area = d_xywh[:, 2] * d_xywh[:, 3]
        pair_d, pair_g, pair_iou = [], [], []
        per_det = gt_count[d_group]
        cum = np.cumsum(per_det)
        lo = 0
        while lo < len(d_group):
            hi = int(np.searchsorted(cum, (cum[lo - 1] if lo else 0) + _PAIR_CHUNK, side="right"))
            hi = max(hi, lo + 1)
            det, gti = _pairs_dense(d_group, gt_start, gt_count, lo, hi)
            iou = _box_iou_pairs(d_xywh[det], g_xywh[gti], g_crowd[gti])
            ok = iou >= min_thr
            pair_d.append(det[ok])
            pair_g.append(gti[ok])
            pair_iou.append(iou[ok])
            lo = hi
        pd = np.concatenate(pair_d) if pair_d else np.zeros(0, np.int64)
        pg = np.concatenate(pair_g) if pair_g else np.zeros(0, np.int64)
        piou = np.concatenate(pair_iou) if pair_iou else np.zeros(0)
    else:
        pd, pg, piou, d_area = _segm_pairs(
            gt, pred, keys, image_sizes, g_group, g_src, g_crowd, gt_start, gt_count, d_group,
            [d.source[i] for i in d_order], min_thr,
        )  # fmt: skip

    # pairs ordered by (detection rank, detection, ground truth): one slice per rank
    order = np.lexsort((pg, pd, d_rank[pd]))
    pd, pg, piou = pd[order], pg[order], piou[order]
    rank_bounds = np.searchsorted(d_rank[pd], np.arange(max_dets + 1), side="left")
    thr = np.minimum(IOU_THRESHOLDS, 1 - 1e-10)[:, None]

    n_det = len(d_group)
    precision = -np.ones((n_thr, len(RECALL_THRESHOLDS), n_cat, len(ranges)))
    recall = -np.ones((n_thr, n_cat, len(ranges)))
    for a, (lo_area, hi_area) in enumerate(ranges.values()):
        g_ignore = g_crowd | (g_area < lo_area) | (g_area > hi_area)
        d_out = (d_area < lo_area) | (d_area > hi_area)
        gt_taken = np.zeros((n_thr, len(g_group)), dtype=bool)
        match = np.full((n_thr, n_det), -1, dtype=np.int64)
        for r in range(max_dets):
            s0, s1 = int(rank_bounds[r]), int(rank_bounds[r + 1])
            if s0 == s1:
                continue
            _match_step(pd[s0:s1], pg[s0:s1], piou[s0:s1], thr, g_ignore, g_crowd, gt_taken, match)
        matched = match >= 0
        g_ignore_of = g_ignore[np.maximum(match, 0)] if len(g_ignore) else np.zeros(match.shape, dtype=bool)
        d_ignore = np.where(matched, g_ignore_of, d_out[None, :])
        _accumulate(a, d_cat, d_image, d_rank, d_score, matched, d_ignore, g.cat, g_order, g_ignore,
                    n_cat, precision, recall)  # fmt: skip
    return _result(iou_type, labels, ranges, precision, recall, g.cat, d.cat, n_img, max_dets)


def _segm_pairs(
    gt: Mapping[ImageKey, Annotations],
    pred: Mapping[ImageKey, Annotations],
    keys: Sequence[ImageKey],
    image_sizes: Mapping[ImageKey, tuple[int, int]] | None,
    g_group: np.ndarray,
    g_src: list[tuple[int, int]],
    g_crowd: np.ndarray,
    gt_start: np.ndarray,
    gt_count: np.ndarray,
    d_group: np.ndarray,
    d_src: list[tuple[int, int]],
    min_thr: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mask IoU pairs per (image, class) through pycocotools' RLE IoU, and the detections' mask areas."""
    import pycocotools.mask as rle

    frames = frame_sizes(keys, gt, pred, image_sizes)
    d_rles = [segm_rle(pred[keys[i]], r, *frames[i]) for i, r in d_src]
    g_rles = [segm_rle(gt[keys[i]], r, *frames[i]) for i, r in g_src]
    d_area = np.asarray(rle.area(d_rles), dtype=np.float64) if d_rles else np.zeros(0)
    pair_d, pair_g, pair_iou = [], [], []
    d_starts = np.flatnonzero(np.r_[True, np.diff(d_group) != 0]) if len(d_group) else np.zeros(0, np.int64)
    for s, e in zip(d_starts, np.r_[d_starts[1:], len(d_group)], strict=True):
        grp = d_group[s]
        g0, gn = int(gt_start[grp]), int(gt_count[grp])
        if gn == 0:
            continue
        ious = np.asarray(
            rle.iou(d_rles[s:e], g_rles[g0 : g0 + gn], [int(c) for c in g_crowd[g0 : g0 + gn]]), dtype=np.float64
        ).reshape(e - s, gn)
        di, gi = np.nonzero(ious >= min_thr)
        pair_d.append(di + s)
        pair_g.append(gi + g0)
        pair_iou.append(ious[di, gi])
    if not pair_d:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), d_area
    return np.concatenate(pair_d), np.concatenate(pair_g), np.concatenate(pair_iou), d_area


def _match_step(
    pd: np.ndarray,
    pg: np.ndarray,
    piou: np.ndarray,
    thr: np.ndarray,
    g_ignore: np.ndarray,
    g_crowd: np.ndarray,
    gt_taken: np.ndarray,
    match: np.ndarray,
) -> None:
    """Match the detections of one rank (one per (image, class)) at every threshold, in place.

    A detection takes, among the ground truth it may still claim (IoU ≥ threshold, not taken unless crowd),
    a regular one if any, else an ignored one; of those the highest IoU, the later one on ties.
    """
    seg_start = np.flatnonzero(np.r_[True, pd[1:] != pd[:-1]])
    seg_id = np.cumsum(np.r_[False, pd[1:] != pd[:-1]])
    eligible = (piou[None, :] >= thr) & ~(gt_taken[:, pg] & ~g_crowd[pg][None, :])
    regular = ~g_ignore[pg]
    has_regular = np.logical_or.reduceat(eligible & regular[None, :], seg_start, axis=1)
    candidate = eligible & (regular[None, :] | ~has_regular[:, seg_id])
    key = np.where(candidate, piou[None, :], -1.0)
    best = np.maximum.reduceat(key, seg_start, axis=1)
    hit = candidate & (key == best[:, seg_id])
    position = np.where(hit, np.arange(len(pd))[None, :], -1)
    chosen = np.maximum.reduceat(position, seg_start, axis=1)
    t_idx, s_idx = np.nonzero(chosen >= 0)
    p = chosen[t_idx, s_idx]
    match[t_idx, pd[p]] = pg[p]
    gt_taken[t_idx, pg[p]] = True


def _accumulate(
    a: int,
    d_cat: np.ndarray,
    d_image: np.ndarray,
    d_rank: np.ndarray,
    d_score: np.ndarray,
    matched: np.ndarray,
    d_ignore: np.ndarray,
    g_cat: np.ndarray,
    g_order: np.ndarray,
    g_ignore: np.ndarray,
    n_cat: int,
    precision: np.ndarray,
    recall: np.ndarray,
) -> None:
    """COCO's ``accumulate`` for area range ``a``: per class, PR over all images, 101-point precision."""
    n_regular = np.bincount(g_cat[g_order][~g_ignore], minlength=n_cat)
    # per class, detections in (image, rank) order, then a stable sort on -score (COCO's mergesort)
    order = np.lexsort((d_rank, d_image, d_cat))
    bounds = np.searchsorted(d_cat[order], np.arange(n_cat + 1), side="left")
    eps = np.spacing(1)
    for k in range(n_cat):
        npig = int(n_regular[k])
        if npig == 0:
            continue
        idx = order[bounds[k] : bounds[k + 1]]
        idx = idx[np.argsort(-d_score[idx], kind="mergesort")]
        nd = len(idx)
        if nd == 0:
            recall[:, k, a] = 0.0
            precision[:, :, k, a] = 0.0
            continue
        m, ig = matched[:, idx], d_ignore[:, idx]
        tp = np.cumsum(m & ~ig, axis=1).astype(float)
        fp = np.cumsum(~m & ~ig, axis=1).astype(float)
        rc = tp / npig
        pr = tp / (fp + tp + eps)
        pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
        recall[:, k, a] = rc[:, -1]
        for t in range(len(IOU_THRESHOLDS)):
            inds = np.searchsorted(rc[t], RECALL_THRESHOLDS, side="left")
            q = np.zeros(len(RECALL_THRESHOLDS))
            valid = inds < nd
            q[valid] = pr[t, inds[valid]]
            precision[t, :, k, a] = q


def _mean_defined(values: np.ndarray) -> float | None:
    """COCO's summary: the mean of the entries > -1, None when there are none."""
    defined = values[values > -1]
    return float(np.mean(defined)) if defined.size else None


def _result(
    iou_type: str,
    labels: list[str],
    ranges: dict[str, tuple[float, float]],
    precision: np.ndarray,
    recall: np.ndarray,
    g_cat: np.ndarray,
    d_cat: np.ndarray,
    n_img: int,
    max_dets: int,
) -> DetectionResult:
    a = list(ranges).index("all")
    i50 = int(np.argmin(np.abs(IOU_THRESHOLDS - 0.5)))
    i60 = int(np.argmin(np.abs(IOU_THRESHOLDS - 0.6)))
    i75 = int(np.argmin(np.abs(IOU_THRESHOLDS - 0.75)))
    n_gt = np.bincount(g_cat, minlength=len(labels))
    n_pred = np.bincount(d_cat, minlength=len(labels))
    per_class: dict[str, ClassDetection] = {}
    pr_curves: dict[str, list[float]] = {}
    for k, lab in enumerate(labels):
        p, r = precision[:, :, k, a], recall[:, k, a]
        per_class[lab] = ClassDetection(
            ap=_mean_defined(p),
            ap50=_mean_defined(p[i50]),
            ap75=_mean_defined(p[i75]),
            ar=_mean_defined(r),
            recall_iou60=_mean_defined(r[i60 : i60 + 1]),
            n_gt=int(n_gt[k]),
            n_pred=int(n_pred[k]),
        )
        if (p[i50] > -1).any():
            pr_curves[lab] = [float(v) for v in p[i50]]
    by_area = {
        name: {"map": _mean_defined(precision[:, :, :, j]), "ar": _mean_defined(recall[:, :, j])}
        for j, name in enumerate(ranges)
    }
    return DetectionResult(
        iou_type=iou_type,
        map=_mean_defined(precision[:, :, :, a]),
        map50=_mean_defined(precision[i50, :, :, a]),
        map75=_mean_defined(precision[i75, :, :, a]),
        ar=_mean_defined(recall[:, :, a]),
        recall_iou60=_mean_defined(recall[i60, :, a]),
        per_class=per_class,
        by_area=by_area,
        pr_curves=pr_curves,
        n_images=n_img,
        n_gt=len(g_cat),
        n_pred=len(d_cat),
        max_dets=max_dets,
        labels=labels,
        area_ranges=dict(ranges),
        precision=precision,
        recall=recall,
    )
