"""Embedding metrics: retrieval recall@k and face-verification style ROC (TAR at a FAR), torch-free.

Similarity is cosine (embeddings L2-normalised) or negative Euclidean distance. Distances are computed in
blocks of queries, so memory stays ``O(block × N)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from gigavision.errors import InvalidInput
from gigavision.metrics._common import as_1d, check_same_length, jsonable

Metric = Literal["cosine", "euclidean"]
_BLOCK = 1024


@dataclass(frozen=True)
class RetrievalResult:
    """``recall_at_k[k]``: share of queries with a same-label item among their k nearest others.

    Queries whose label has no other item cannot be answered and are left out (``n_queries`` counts the rest).
    """

    recall_at_k: dict[int, float | None]
    n_queries: int
    n_items: int
    metric: str

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = jsonable(self)
        return out


@dataclass(frozen=True)
class VerificationResult:
    """ROC of "same label?" decided by thresholding pair similarity.

    ``tar_at_far[f]``: true-accept rate at the threshold whose false-accept rate is at most ``f``;
    ``roc``: the curve (x = FAR, y = TAR), thinned.
    """

    auc: float | None
    tar_at_far: dict[float, float | None]
    threshold_at_far: dict[float, float | None]
    n_same: int
    n_different: int
    roc: dict[str, list[float]]
    metric: str

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = jsonable(self)
        return out


def _prepare(embeddings: Any, labels: Sequence[Any], metric: Metric) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or not np.isfinite(x).all():
        raise InvalidInput(f"embeddings must be a finite (n_items, dim) array, got shape {x.shape}")
    y = as_1d(np.asarray(list(labels)), "labels")
    check_same_length(x, y, "embeddings", "labels")
    if metric == "cosine":
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        x = np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)
    elif metric != "euclidean":
        raise InvalidInput(f"metric must be 'cosine' or 'euclidean', got {metric!r}")
    return x, y


def _similarity(a: np.ndarray, b: np.ndarray, metric: Metric) -> np.ndarray:
    if metric == "cosine":
        out: np.ndarray = a @ b.T
        return out
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    dist: np.ndarray = np.sqrt(np.maximum(sq, 0.0))
    return -dist


def recall_at_k(
    embeddings: Any, labels: Sequence[Any], ks: Sequence[int] = (1, 5, 10), metric: Metric = "cosine"
) -> RetrievalResult:
    """Recall@k of every item as a query against all the others (its own match excluded)."""
    x, y = _prepare(embeddings, labels, metric)
    n = len(x)
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise InvalidInput(f"ks must be positive integers, got {ks}")
    kmax = min(ks[-1], n - 1)
    _, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    answerable = counts[inverse] > 1
    first_hit = np.full(n, np.iinfo(np.int64).max)
    if kmax >= 1:
        for start in range(0, n, _BLOCK):
            stop = min(start + _BLOCK, n)
            sim = _similarity(x[start:stop], x, metric)
            sim[np.arange(stop - start), np.arange(start, stop)] = -np.inf  # never retrieve yourself
            top = np.argpartition(-sim, kmax - 1, axis=1)[:, :kmax]
            top_sim = np.take_along_axis(sim, top, axis=1)
            order = np.argsort(-top_sim, axis=1, kind="stable")
            ranked = np.take_along_axis(top, order, axis=1)
            same = inverse[ranked] == inverse[start:stop, None]
            hit = same.any(axis=1)
            first_hit[start:stop] = np.where(hit, same.argmax(axis=1), first_hit[start:stop])
    q = int(answerable.sum())
    return RetrievalResult(
        recall_at_k={k: (float((first_hit[answerable] < k).mean()) if q else None) for k in ks},
        n_queries=q,
        n_items=n,
        metric=metric,
    )


def verification_roc(
    embeddings: Any,
    labels: Sequence[Any],
    *,
    pairs: Any = None,
    far_targets: Sequence[float] = (1e-3, 1e-2, 1e-1),
    metric: Metric = "cosine",
    max_pairs: int = 5_000_000,
) -> VerificationResult:
    """AUC and TAR at FAR of deciding "same label" from pair similarity.

    ``pairs``: ``(P, 2)`` item indices; by default every pair ``i < j`` (refused past ``max_pairs``: pass a
    sample of pairs instead).
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    x, y = _prepare(embeddings, labels, metric)
    n = len(x)
    if pairs is None:
        if n * (n - 1) // 2 > max_pairs:
            raise InvalidInput(
                f"{n} items make {n * (n - 1) // 2:,} pairs, over max_pairs={max_pairs:,}: pass pairs=(P, 2) indices"
            )
        i, j = np.triu_indices(n, k=1)
    else:
        pr = np.asarray(pairs, dtype=np.int64)
        if pr.ndim != 2 or pr.shape[1] != 2 or (pr < 0).any() or (pr >= n).any():
            raise InvalidInput(f"pairs must be (P, 2) indices into the {n} items")
        i, j = pr[:, 0], pr[:, 1]
    sim = np.einsum("ij,ij->i", x[i], x[j]) if metric == "cosine" else -np.linalg.norm(x[i] - x[j], axis=1)
    same = y[i] == y[j]
    n_same, n_diff = int(same.sum()), int((~same).sum())
    if not n_same or not n_diff:
        return VerificationResult(None, {f: None for f in far_targets}, {f: None for f in far_targets},
                                  n_same, n_diff, {"x": [], "y": []}, metric)  # fmt: skip
    fpr, tpr, thr = roc_curve(same, sim)
    tar: dict[float, float | None] = {}
    at: dict[float, float | None] = {}
    for f in far_targets:
        ok = np.flatnonzero(fpr <= f)
        best = ok[-1]  # fpr is non-decreasing: the last point within the FAR has the highest TAR
        tar[float(f)], at[float(f)] = float(tpr[best]), (float(thr[best]) if np.isfinite(thr[best]) else None)
    keep = np.unique(np.r_[np.linspace(0, len(fpr) - 1, min(len(fpr), 200)).round().astype(int), len(fpr) - 1])
    return VerificationResult(
        auc=float(roc_auc_score(same, sim)),
        tar_at_far=tar,
        threshold_at_far=at,
        n_same=n_same,
        n_different=n_diff,
        roc={"x": [float(v) for v in fpr[keep]], "y": [float(v) for v in tpr[keep]]},
        metric=metric,
    )
