"""Paired bootstrap of a metric difference: is model B better than model A on the same items, and by how much?

Both models are scored on the *same* items (test images), so the items are resampled together: each
resample draws n item indices with replacement and scores both models on that draw. The spread of
``candidate − baseline`` over the resamples gives a percentile confidence interval of the difference; pairing
removes the variation between items that both models share (an easy test split lifts both), which an interval
per model would count twice. Deterministic: the draws come from ``numpy.random.default_rng(seed)``.

``classification_bootstrap`` computes accuracy, balanced accuracy and macro F1 from per-item labels for all
resamples at once (NumPy); ``paired_bootstrap`` takes any ``score(indices) -> (baseline, candidate)`` (detection
mAP: the task's evaluation on the resampled images), one call per resample.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from gigavision.errors import InvalidInput
from gigavision.metrics._common import as_1d, check_same_length

DEFAULT_RESAMPLES = 2000
DEFAULT_CONFIDENCE = 0.95
CLASSIFICATION_METRICS = ("accuracy", "balanced_accuracy", "macro_f1")
_CELLS = 4_000_000  # index cells drawn at once: (resamples in a chunk) × n stays a few tens of MB


@dataclass(frozen=True)
class PairedBootstrap:
    """The difference ``candidate − baseline`` of ``metric`` on ``n`` paired items and its interval.

    ``low``/``high``: the ``confidence`` percentile interval over ``resamples`` draws; ``p_better``: the share
    of draws in which the candidate scores higher (ties count half).
    """

    metric: str
    n: int
    resamples: int
    confidence: float
    seed: int
    baseline: float
    candidate: float
    difference: float
    low: float
    high: float
    p_better: float

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def _check(n: int, resamples: int, confidence: float) -> None:
    if n < 1:
        raise InvalidInput("a paired bootstrap needs at least one item scored by both models")
    if resamples < 1:
        raise InvalidInput(f"resamples must be at least 1, got {resamples}")
    if not 0.0 < confidence < 1.0:
        raise InvalidInput(f"confidence must be between 0 and 1, got {confidence}")


def _draws(rng: np.random.Generator, n: int, resamples: int) -> Any:
    """Index matrices (chunk, n), ``resamples`` rows in all, drawn in order from ``rng``."""
    chunk = max(1, _CELLS // n)
    done = 0
    while done < resamples:
        k = min(chunk, resamples - done)
        yield rng.integers(0, n, size=(k, n))
        done += k


def _summary(
    metric: str,
    n: int,
    confidence: float,
    seed: int,
    full: tuple[float, float],
    baseline: np.ndarray,
    candidate: np.ndarray,
) -> PairedBootstrap:
    diffs = candidate - baseline
    ok = np.isfinite(diffs)
    if not ok.any():
        raise InvalidInput(f"{metric} is undefined on every resample (no item it can be computed on)")
    diffs = diffs[ok]
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(diffs, [alpha, 1.0 - alpha])
    p_better = float(np.mean(diffs > 0) + 0.5 * np.mean(diffs == 0))
    return PairedBootstrap(
        metric=metric,
        n=n,
        resamples=int(ok.sum()),
        confidence=confidence,
        seed=seed,
        baseline=float(full[0]),
        candidate=float(full[1]),
        difference=float(full[1] - full[0]),
        low=float(low),
        high=float(high),
        p_better=p_better,
    )


def paired_bootstrap(
    n: int,
    score: Callable[[np.ndarray], tuple[float, float]],
    *,
    metric: str,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> PairedBootstrap:
    """Bootstrap any paired metric: ``score(indices)`` returns (baseline, candidate) on the items ``indices``
    (with repeats). Undefined values (None, NaN) leave a resample out."""
    _check(n, resamples, confidence)
    full = score(np.arange(n))
    rng = np.random.default_rng(seed)
    base, cand = [], []
    for block in _draws(rng, n, resamples):
        for row in block:
            a, b = score(row)
            base.append(math.nan if a is None else float(a))
            cand.append(math.nan if b is None else float(b))
    return _summary(metric, n, confidence, seed, full, np.asarray(base), np.asarray(cand))


def _codes(*columns: np.ndarray) -> tuple[list[np.ndarray], int]:
    """The columns' labels as integer codes of one shared class list, and its length."""
    classes = sorted({str(v) for col in columns for v in col.tolist()})
    index = {c: i for i, c in enumerate(classes)}
    return [np.array([index[str(v)] for v in col.tolist()], dtype=np.int64) for col in columns], len(classes)


def _metric_rows(metric: str, y: np.ndarray, pred: np.ndarray, k: int, draws: np.ndarray) -> np.ndarray:
    """``metric`` of ``pred`` against ``y`` on every row of ``draws`` (resamples × n indices)."""
    correct = (pred == y).astype(np.float64)
    if metric == "accuracy":
        out: np.ndarray = correct[draws].mean(axis=1)
        return out
    per_class = np.full((draws.shape[0], k), np.nan)
    for c in range(k):
        is_c = y == c
        if metric == "balanced_accuracy":  # mean recall over the classes present in the draw
            support = is_c[draws].sum(axis=1)
            hits = (is_c & (pred == c))[draws].sum(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                per_class[:, c] = np.where(support > 0, hits / support, np.nan)
        else:  # macro F1 over the classes seen in the sample (truth or either prediction)
            tp = (is_c & (pred == c))[draws].sum(axis=1)
            fp = (~is_c & (pred == c))[draws].sum(axis=1)
            fn = (is_c & (pred != c))[draws].sum(axis=1)
            denominator = 2 * tp + fp + fn
            with np.errstate(invalid="ignore", divide="ignore"):
                per_class[:, c] = np.where(denominator > 0, 2 * tp / denominator, 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a draw without any class present: NaN, left out later
        result: np.ndarray = np.nanmean(per_class, axis=1)
    return result


def classification_bootstrap(
    y_true: Sequence[Any] | np.ndarray,
    baseline_pred: Sequence[Any] | np.ndarray,
    candidate_pred: Sequence[Any] | np.ndarray,
    *,
    metric: str = "accuracy",
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> PairedBootstrap:
    """Paired bootstrap of a single-label classification metric (``accuracy``, ``balanced_accuracy`` or
    ``macro_f1``) from the true label and each model's predicted label per item."""
    if metric not in CLASSIFICATION_METRICS:
        raise InvalidInput(f"metric {metric!r}: the paired bootstrap computes {', '.join(CLASSIFICATION_METRICS)}")
    y = as_1d(y_true, "y_true")
    a = as_1d(baseline_pred, "baseline_pred")
    b = as_1d(candidate_pred, "candidate_pred")
    check_same_length(y, a, "y_true", "baseline_pred")
    check_same_length(y, b, "y_true", "candidate_pred")
    n = len(y)
    _check(n, resamples, confidence)
    (yc, ac, bc), k = _codes(y, a, b)
    whole = np.arange(n)[None, :]
    full = (float(_metric_rows(metric, yc, ac, k, whole)[0]), float(_metric_rows(metric, yc, bc, k, whole)[0]))
    rng = np.random.default_rng(seed)
    base, cand = [], []
    for draws in _draws(rng, n, resamples):
        base.append(_metric_rows(metric, yc, ac, k, draws))
        cand.append(_metric_rows(metric, yc, bc, k, draws))
    return _summary(metric, n, confidence, seed, full, np.concatenate(base), np.concatenate(cand))
