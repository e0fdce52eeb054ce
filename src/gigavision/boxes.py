"""Axis-aligned boxes as ``(N, 4)`` xyxy arrays in level-0 pixels: area, IoU and non-maximum suppression.

The one IoU and the one NMS rule of gigavision (NumPy only): detection decoding, the cross-tile merge,
annotation agreement and reports use these. IoU is torchvision's arithmetic, ``inter / (area_a + area_b -
inter)``, with 0 where the union is empty; NMS is torchvision's: in score order (ties by index), a kept box
suppresses every lower-ranked box whose IoU with it is ``> threshold``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _as_boxes(boxes: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4)


def box_area(boxes: np.ndarray) -> np.ndarray:
    """Area of each xyxy box."""
    area: np.ndarray = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    return area


def iou_of(inter: np.ndarray, area_a: np.ndarray, area_b: np.ndarray) -> np.ndarray:
    """IoU from intersection areas and the two boxes' areas (broadcast); 0 where the union is empty."""
    inter = np.asarray(inter, dtype=np.float64)
    union = area_a + area_b - inter
    out: np.ndarray = np.divide(inter, union, out=np.zeros(np.broadcast(inter, union).shape), where=union > 0)
    return out


def _intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter: np.ndarray = iw * ih
    return inter


def box_iou(a: np.ndarray | Sequence[Sequence[float]], b: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """``(N, M)`` IoU of every box of ``a`` with every box of ``b`` (as ``torchvision.ops.box_iou``)."""
    a, b = _as_boxes(a), _as_boxes(b)
    return iou_of(_intersection(a[:, None, :], b[None, :, :]), box_area(a)[:, None], box_area(b)[None, :])


def paired_iou(a: np.ndarray | Sequence[Sequence[float]], b: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """``(k,)`` IoU of aligned rows: ``a[i]`` with ``b[i]``."""
    a, b = _as_boxes(a), _as_boxes(b)
    return iou_of(_intersection(a, b), box_area(a), box_area(b))


def nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    iou: float,
    limit: int | None = None,
    codes: np.ndarray | None = None,
) -> np.ndarray:
    """Greedy non-maximum suppression: indices kept, best first, at most ``limit``.

    ``codes`` (N,) ints: boxes suppress only boxes of the same code (per-class NMS, as
    ``torchvision.ops.batched_nms``). Each kept box is compared with the rest in one array operation, and the
    loop stops at ``limit`` kept boxes (what keeps decoding an untrained network's 1000 candidates cheap).
    For very many sparse boxes with their overlapping pairs known, ``suppress`` gives the same answer.
    """
    boxes = _as_boxes(boxes)
    order = np.argsort(-np.asarray(scores), kind="stable")
    ranked = boxes[order]
    area = box_area(ranked)
    code = None if codes is None else np.asarray(codes)[order]
    alive = np.ones(len(order), dtype=bool)
    keep: list[int] = []
    for k in range(len(order)):
        if not alive[k]:
            continue
        keep.append(int(order[k]))
        if limit is not None and len(keep) >= limit:
            break
        rest = ranked[k + 1 :]
        over = iou_of(_intersection(ranked[k], rest), area[k], area[k + 1 :]) > iou
        if code is not None:
            over &= code[k + 1 :] == code[k]
        alive[k + 1 :] &= ~over
    return np.asarray(keep, dtype=np.int64)


def suppress(rank: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Greedy NMS over sparse pairs: ``(i, j)`` are the pairs whose IoU is above the threshold, ``rank`` each
    row's place in score order (0 = best). Returns each row's owner: itself when kept, else the kept row that
    suppressed it. The kept rows are those ``nms`` keeps; here no N×N comparison is ever made."""
    n = len(rank)
    first = rank[i] < rank[j]
    src, dst = np.where(first, i, j), np.where(first, j, i)
    by = np.lexsort((rank[dst], rank[src]))  # by suppressor in score order, then its neighbours in score order
    src, dst = src[by], dst[by]
    starts = np.flatnonzero(np.r_[True, src[1:] != src[:-1]]) if len(src) else np.zeros(0, dtype=np.int64)
    ends = np.r_[starts[1:], len(src)]
    owner = list(range(n))
    sources, targets = src.tolist(), dst.tolist()
    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
        s = sources[a]
        if owner[s] != s:
            continue  # suppressed before its turn: suppresses nothing
        for d in targets[a:b]:
            if owner[d] == d:
                owner[d] = s
    return np.asarray(owner, dtype=np.int64)
