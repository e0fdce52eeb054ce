"""Semantic segmentation metrics from label maps: per-class IoU (Jaccard) and Dice through a confusion matrix.

Feed any number of (truth, prediction) map pairs, tile by tile for big images, to one ``SegmentationMeter``:
only a ``(C, C)`` count table is kept. Pixels whose truth is ``ignore_index`` are left out. A class is
*present* when it occurs in the truth or the prediction of the evaluated pixels; means are over present
classes (an absent class has IoU/Dice None, a class only predicted scores 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gigavision.errors import InvalidInput
from gigavision.metrics._common import jsonable


@dataclass(frozen=True)
class SegmentationResult:
    """``confusion_matrix[i][j]``: pixels of class i predicted as j (ignored pixels left out)."""

    labels: list[str]
    iou: dict[str, float | None]
    dice: dict[str, float | None]
    mean_iou: float | None
    mean_dice: float | None
    pixel_accuracy: float | None
    n_pixels: int
    confusion_matrix: list[list[int]]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = jsonable(self)
        return out


class SegmentationMeter:
    """Accumulates a confusion matrix over label maps of ``num_classes`` classes (values ``0..C-1``)."""

    def __init__(self, num_classes: int, ignore_index: int | None = 255, labels: Sequence[str] | None = None) -> None:
        if num_classes < 1:
            raise InvalidInput(f"num_classes must be at least 1, got {num_classes}")
        if labels is not None and len(labels) != num_classes:
            raise InvalidInput(f"labels must name the {num_classes} classes, got {len(labels)} names")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.labels = [str(v) for v in labels] if labels is not None else [str(i) for i in range(num_classes)]
        self.confusion = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, truth: Any, pred: Any) -> None:
        """Add one pair of integer label maps of the same shape."""
        t, p = np.asarray(truth), np.asarray(pred)
        if t.shape != p.shape:
            raise InvalidInput(f"truth and prediction maps must have the same shape, got {t.shape} and {p.shape}")
        if not (np.issubdtype(t.dtype, np.integer) and np.issubdtype(p.dtype, np.integer)):
            raise InvalidInput(f"label maps must be integer arrays, got {t.dtype} and {p.dtype}")
        t, p = t.ravel().astype(np.int64), p.ravel().astype(np.int64)
        if self.ignore_index is not None:
            keep = t != self.ignore_index
            t, p = t[keep], p[keep]
        c = self.num_classes
        for name, arr in (("truth", t), ("prediction", p)):
            bad = (arr < 0) | (arr >= c)
            if bad.any():
                raise InvalidInput(
                    f"{name} map has class {int(arr[bad][0])} outside 0..{c - 1} (ignore_index={self.ignore_index})"
                )
        self.confusion += np.bincount(t * c + p, minlength=c * c).reshape(c, c)

    def compute(self) -> SegmentationResult:
        cm = self.confusion.astype(np.float64)
        tp = np.diag(cm)
        in_truth, in_pred = cm.sum(axis=1), cm.sum(axis=0)
        union = in_truth + in_pred - tp
        present = union > 0
        iou = np.divide(tp, union, out=np.full_like(tp, np.nan), where=present)
        dice = np.divide(2 * tp, in_truth + in_pred, out=np.full_like(tp, np.nan), where=present)
        total = int(cm.sum())
        return SegmentationResult(
            labels=list(self.labels),
            iou={lab: (float(iou[i]) if present[i] else None) for i, lab in enumerate(self.labels)},
            dice={lab: (float(dice[i]) if present[i] else None) for i, lab in enumerate(self.labels)},
            mean_iou=float(iou[present].mean()) if present.any() else None,
            mean_dice=float(dice[present].mean()) if present.any() else None,
            pixel_accuracy=float(tp.sum() / total) if total else None,
            n_pixels=total,
            confusion_matrix=self.confusion.tolist(),
        )


def evaluate_segmentation(
    pairs: Sequence[tuple[Any, Any]] | tuple[Any, Any],
    num_classes: int,
    *,
    ignore_index: int | None = 255,
    labels: Sequence[str] | None = None,
) -> SegmentationResult:
    """IoU/Dice of one ``(truth, prediction)`` pair of label maps or a sequence of pairs."""
    meter = SegmentationMeter(num_classes, ignore_index, labels)
    items = [pairs] if isinstance(pairs, tuple) and len(pairs) == 2 and np.ndim(pairs[0]) >= 2 else pairs
    for truth, pred in items:
        meter.update(truth, pred)
    return meter.compute()
