"""Classification metrics from labels and scores: binary, multi-class and multi-label, through scikit-learn.

Labels may be ints or text; ``labels`` fixes the class order (confusion matrix rows/columns, score columns),
by default the sorted labels seen. Scores are per-class probabilities or logits ``(N, C)`` in that order, or
for binary problems one score per sample for the positive class. Results are frozen dataclasses whose
``to_dict()`` is plain JSON (undefined values, e.g. the AUC of a class with no positives, are None).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gigavision.errors import InvalidInput
from gigavision.metrics._common import as_1d, check_same_length, jsonable

Label = int | str
_CURVE_POINTS = 200  # curves kept in results (and drawn in reports) are thinned to about this many points


@dataclass(frozen=True)
class ClassScores:
    """Precision, recall, F1 and support (number of true samples) of one class or one average."""

    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class OperatingPoint:
    """A binary classifier at one threshold (``score >= threshold`` is positive)."""

    threshold: float
    positive: Label
    sensitivity: float | None  # TP / (TP + FN), recall of the positive class
    specificity: float | None  # TN / (TN + FP)
    precision: float | None  # TP / (TP + FP), positive predictive value
    npv: float | None  # TN / (TN + FN)
    tp: int
    fp: int
    tn: int
    fn: int


@dataclass(frozen=True)
class ClassificationResult:
    """Single-label classification. ``confusion_matrix[i][j]``: samples of ``labels[i]`` predicted ``labels[j]``.

    ``roc_auc``: binary AUC of the positive class, or the one-vs-rest macro AUC over the classes that have
    both positives and negatives; ``roc_curves`` / ``pr_curves``: per class (binary: the positive class).
    """

    labels: list[Label]
    n_samples: int
    accuracy: float
    balanced_accuracy: float
    per_class: dict[str, ClassScores]
    macro: ClassScores
    micro: ClassScores
    weighted: ClassScores
    confusion_matrix: list[list[int]]
    roc_auc: float | None = None
    roc_auc_per_class: dict[str, float | None] | None = None
    operating_point: OperatingPoint | None = None
    roc_curves: dict[str, dict[str, list[float]]] | None = None
    pr_curves: dict[str, dict[str, list[float]]] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = jsonable(self)
        return out


@dataclass(frozen=True)
class MultiLabelResult:
    """Multi-label classification: each class decided on its own with its own threshold."""

    labels: list[Label]
    n_samples: int
    thresholds: dict[str, float]
    per_class: dict[str, ClassScores]
    micro: ClassScores
    macro: ClassScores
    roc_auc_per_class: dict[str, float | None]
    pr_curves: dict[str, dict[str, list[float]]]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = jsonable(self)
        return out


# -- helpers ----------------------------------------------------------------------------------------------
def _labels_array(values: Any, name: str) -> np.ndarray:
    """Labels as an int64 or a text array (what scikit-learn recognises as class labels)."""
    items = [v.item() if isinstance(v, np.generic) else v for v in as_1d(np.asarray(list(values), dtype=object), name)]
    if all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        return np.asarray(items, dtype=np.int64)
    if all(isinstance(v, str) for v in items):
        return np.asarray(items, dtype=str)
    bad = next(v for v in items if not isinstance(v, str))
    raise InvalidInput(f"{name} must hold all-int or all-text labels, got {type(bad).__name__}: {bad!r}")


def _class_order(labels: Sequence[Label] | None, *seen: np.ndarray) -> list[Label]:
    if labels is not None:
        order = [v.item() if isinstance(v, np.generic) else v for v in labels]
        if len(set(order)) != len(order):
            raise InvalidInput(f"labels must be distinct, got {order}")
    else:
        found = {v.item() if isinstance(v, np.generic) else v for arr in seen for v in arr}
        try:
            order = sorted(found)
        except TypeError as exc:
            raise InvalidInput("labels mix ints and text: pass labels=[...] to fix their order") from exc
    known = set(order)
    for arr in seen:
        unknown = sorted({str(v) for v in arr if v not in known})
        if unknown:
            raise InvalidInput(f"labels {unknown} are not among the classes {order}")
    return order


def _scores(values: Any, n: int, name: str = "scores") -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim not in (1, 2) or arr.shape[0] != n:
        raise InvalidInput(f"{name} must have shape ({n},) or ({n}, n_classes), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise InvalidInput(f"{name} must be finite (NaN/inf found)")
    return arr


def _thin(x: np.ndarray, y: np.ndarray) -> dict[str, list[float]]:
    """At most about ``_CURVE_POINTS`` points of a curve, first and last kept."""
    if len(x) > _CURVE_POINTS:
        keep = np.unique(np.r_[np.linspace(0, len(x) - 1, _CURVE_POINTS).round().astype(int), len(x) - 1])
        x, y = x[keep], y[keep]
    return {"x": [float(v) for v in x], "y": [float(v) for v in y]}


def _binary_curves(
    positive: np.ndarray, score: np.ndarray
) -> tuple[float, dict[str, list[float]], dict[str, list[float]]] | None:
    """AUC, ROC curve (x = FPR, y = TPR) and PR curve (x = recall, y = precision) of one class."""
    from sklearn.metrics import precision_recall_curve, roc_auc_score, roc_curve

    if positive.all() or not positive.any():
        return None
    fpr, tpr, _ = roc_curve(positive, score)
    precision, recall, _ = precision_recall_curve(positive, score)
    return float(roc_auc_score(positive, score)), _thin(fpr, tpr), _thin(recall[::-1], precision[::-1])


def _averages(y_true: Any, y_pred: Any, labels: Sequence[Any]) -> dict[str, ClassScores]:
    from sklearn.metrics import precision_recall_fscore_support

    out = {}
    for average in ("macro", "micro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, average=average, zero_division=0)
        out[average] = ClassScores(float(p), float(r), float(f), int(np.asarray(y_true).shape[0]))
    return out


# -- single-label -----------------------------------------------------------------------------------------
def operating_point(y_true: Sequence[Label], scores: Any, threshold: float, positive: Label) -> OperatingPoint:
    """Sensitivity, specificity, PPV and NPV of a binary classifier at ``threshold`` (``score >= threshold``)."""
    from sklearn.metrics import confusion_matrix

    truth = _labels_array(y_true, "y_true")
    score = _scores(scores, len(truth))
    if score.ndim != 1:
        raise InvalidInput(f"operating_point needs one positive-class score per sample, got shape {score.shape}")
    if not math.isfinite(threshold):
        raise InvalidInput(f"threshold must be a finite number, got {threshold}")
    tn, fp, fn, tp = (
        int(v) for v in confusion_matrix(truth == positive, score >= threshold, labels=[False, True]).ravel()
    )

    def ratio(a: int, b: int) -> float | None:
        return a / (a + b) if a + b else None

    return OperatingPoint(
        threshold=float(threshold),
        positive=positive,
        sensitivity=ratio(tp, fn),
        specificity=ratio(tn, fp),
        precision=ratio(tp, fp),
        npv=ratio(tn, fn),
        tp=tp,
        fp=fp,
        tn=tn,
        fn=fn,
    )


def evaluate_classification(
    y_true: Sequence[Label],
    y_pred: Sequence[Label] | None = None,
    *,
    scores: Any = None,
    labels: Sequence[Label] | None = None,
    positive: Label | None = None,
    threshold: float = 0.5,
) -> ClassificationResult:
    """Accuracy, balanced accuracy, per-class and averaged precision/recall/F1, confusion matrix; with
    ``scores`` also ROC-AUC (binary, or one-vs-rest macro), ROC/PR curves and, for binary problems, the
    sensitivity/specificity at ``threshold``.

    ``scores``: ``(N, C)`` in ``labels`` order, or ``(N,)`` positive-class scores for two classes (``positive``,
    default the second label). Without ``y_pred`` predictions come from the scores: the top class, or for
    binary problems ``score >= threshold``.
    """
    from sklearn.metrics import (
        accuracy_score,
        balanced_accuracy_score,
        confusion_matrix,
        precision_recall_fscore_support,
    )

    truth = _labels_array(y_true, "y_true")
    if not len(truth):
        raise InvalidInput("evaluate_classification needs at least one sample")
    pred = None if y_pred is None else _labels_array(y_pred, "y_pred")
    if pred is not None:
        check_same_length(truth, pred, "y_true", "y_pred")
    order = _class_order(labels, truth, *([] if pred is None else [pred]))
    score = None if scores is None else _scores(scores, len(truth))
    if score is not None and score.ndim == 2 and score.shape[1] != len(order):
        raise InvalidInput(
            f"scores have {score.shape[1]} columns but there are {len(order)} classes {order}: pass labels=[...] "
            "naming the class of each column"
        )
    binary = len(order) == 2
    if positive is not None and positive not in order:
        raise InvalidInput(f"positive {positive!r} is not among the classes {order}")
    pos = positive if positive is not None else (order[1] if binary else None)
    pos_score = None
    if score is not None and binary and pos is not None:
        pos_score = score if score.ndim == 1 else score[:, order.index(pos)]
    elif score is not None and score.ndim == 1:
        raise InvalidInput(f"one score per sample needs exactly two classes, got {len(order)}: pass (N, C) scores")
    if pred is None:
        if score is None:
            raise InvalidInput("evaluate_classification needs y_pred or scores")
        if pos_score is not None:
            neg = order[0] if pos == order[1] else order[1]
            pred = _labels_array([pos if s >= threshold else neg for s in pos_score], "y_pred")
        else:
            pred = _labels_array([order[i] for i in np.argmax(score, axis=1)], "y_pred")

    p, r, f, support = precision_recall_fscore_support(truth, pred, labels=order, zero_division=0)
    per_class = {
        str(lab): ClassScores(float(p[i]), float(r[i]), float(f[i]), int(support[i])) for i, lab in enumerate(order)
    }
    avg = _averages(truth, pred, order)
    result: dict[str, Any] = {}
    if score is not None:
        auc_per_class: dict[str, float | None] = {}
        roc_curves, pr_curves = {}, {}
        columns = [(pos, pos_score)] if pos_score is not None else list(zip(order, score.T, strict=True))
        for lab, col in columns:
            curves = _binary_curves(np.asarray(truth == lab), np.asarray(col))
            auc_per_class[str(lab)] = None if curves is None else curves[0]
            if curves is not None:
                roc_curves[str(lab)], pr_curves[str(lab)] = curves[1], curves[2]
        defined = [v for v in auc_per_class.values() if v is not None]
        result.update(
            roc_auc=float(np.mean(defined)) if defined else None,
            roc_auc_per_class=auc_per_class,
            roc_curves=roc_curves,
            pr_curves=pr_curves,
        )
        if pos_score is not None and pos is not None:
            result["operating_point"] = operating_point(list(truth), pos_score, threshold, pos)
    with warnings.catch_warnings():  # a predicted class absent from y_true: sklearn warns, the number is right
        warnings.simplefilter("ignore", UserWarning)
        balanced = float(balanced_accuracy_score(truth, pred))
    return ClassificationResult(
        labels=list(order),
        n_samples=len(truth),
        accuracy=float(accuracy_score(truth, pred)),
        balanced_accuracy=balanced,
        per_class=per_class,
        macro=avg["macro"],
        micro=avg["micro"],
        weighted=avg["weighted"],
        confusion_matrix=confusion_matrix(truth, pred, labels=order).tolist(),
        **result,
    )


# -- multi-label ------------------------------------------------------------------------------------------
def _indicator(y_true: Any, labels: Sequence[Label] | None, n_columns: int | None) -> tuple[np.ndarray, list[Label]]:
    """``(N, C)`` 0/1 matrix from a 0/1 array or from one collection of labels per sample."""
    arr = np.asarray(y_true, dtype=object) if not isinstance(y_true, np.ndarray) else y_true
    if arr.ndim == 2 and all(v in (0, 1, True, False) for v in arr.ravel()):
        matrix = arr.astype(np.int64)
        order: list[Label] = list(labels) if labels is not None else list(range(matrix.shape[1]))
        if len(order) != matrix.shape[1]:
            raise InvalidInput(f"labels name {len(order)} classes but y_true has {matrix.shape[1]} columns")
        return matrix, order
    from sklearn.preprocessing import MultiLabelBinarizer

    sets: list[Collection[Label]] = [list(s) for s in y_true]
    order = _class_order(labels, np.asarray([v for s in sets for v in s], dtype=object))
    if n_columns is not None and labels is None and len(order) != n_columns:
        raise InvalidInput(f"scores have {n_columns} columns but y_true names {len(order)} labels: pass labels=[...]")
    return np.asarray(MultiLabelBinarizer(classes=order).fit_transform(sets), dtype=np.int64), order


def tune_thresholds(y_true: Any, scores: Any, labels: Sequence[Label] | None = None) -> np.ndarray:
    """Per-class thresholds ``(C,)`` that maximise each class's F1 on validation data (``score >= t``).

    Each is a score seen in that class's column (the highest one on ties: the fewest positives for the same
    F1); a class with no positives, whose F1 is undefined, keeps 0.5.
    """
    from sklearn.metrics import precision_recall_curve

    score = np.asarray(scores, dtype=np.float64)
    if score.ndim != 2:
        raise InvalidInput(f"scores must have shape (n_samples, n_classes), got {score.shape}")
    truth, _ = _indicator(y_true, labels, score.shape[1])
    if truth.shape != score.shape:
        raise InvalidInput(f"y_true {truth.shape} and scores {score.shape} must have the same shape")
    out = np.full(score.shape[1], 0.5)
    for c in range(score.shape[1]):
        if not truth[:, c].any():
            continue
        precision, recall, thresholds = precision_recall_curve(truth[:, c], score[:, c])
        p, r = precision[:-1], recall[:-1]
        f1 = np.divide(2 * p * r, p + r, out=np.zeros_like(p), where=(p + r) > 0)
        best = len(f1) - 1 - int(np.argmax(f1[::-1]))
        out[c] = float(thresholds[best])
    return out


def evaluate_multilabel(
    y_true: Any,
    scores: Any,
    *,
    labels: Sequence[Label] | None = None,
    thresholds: float | Sequence[float] | np.ndarray = 0.5,
) -> MultiLabelResult:
    """Per-class precision/recall/F1 at per-class thresholds, micro and macro averages, per-class ROC-AUC and PR
    curves. ``y_true``: ``(N, C)`` 0/1 or one collection of labels per sample; ``scores``: ``(N, C)``."""
    from sklearn.metrics import precision_recall_fscore_support

    score = np.asarray(scores, dtype=np.float64)
    if score.ndim != 2 or not np.isfinite(score).all():
        raise InvalidInput(f"scores must be a finite (n_samples, n_classes) array, got shape {score.shape}")
    truth, order = _indicator(y_true, labels, score.shape[1])
    if truth.shape != score.shape:
        raise InvalidInput(f"y_true {truth.shape} and scores {score.shape} must have the same shape")
    thr = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (score.shape[1],))
    pred = (score >= thr[None, :]).astype(np.int64)
    p, r, f, support = precision_recall_fscore_support(truth, pred, average=None, zero_division=0)
    per_class = {
        str(lab): ClassScores(float(p[i]), float(r[i]), float(f[i]), int(support[i])) for i, lab in enumerate(order)
    }
    avg = {}
    for average in ("micro", "macro"):
        ap, ar, af, _ = precision_recall_fscore_support(truth, pred, average=average, zero_division=0)
        avg[average] = ClassScores(float(ap), float(ar), float(af), int(truth.sum()))
    auc: dict[str, float | None] = {}
    pr_curves = {}
    for i, lab in enumerate(order):
        curves = _binary_curves(truth[:, i].astype(bool), score[:, i])
        auc[str(lab)] = None if curves is None else curves[0]
        if curves is not None:
            pr_curves[str(lab)] = curves[2]
    return MultiLabelResult(
        labels=list(order),
        n_samples=int(truth.shape[0]),
        thresholds={str(lab): float(thr[i]) for i, lab in enumerate(order)},
        per_class=per_class,
        micro=avg["micro"],
        macro=avg["macro"],
        roc_auc_per_class=auc,
        pr_curves=pr_curves,
    )
