"""How unsure a model is, per prediction and per image/region: what the review queue routes on.

All scores are in [0, 1], 1 = most unsure, so one threshold means the same across tasks:

- classes (``probs`` rows summing to 1, or independent sigmoid scores): ``entropy`` (normalised by log C),
  ``margin`` (1 − (top1 − top2)) or ``least_confidence`` (1 − top1, rescaled so a uniform row is 1);
- boxes and masks (one score per object): the binary entropy of the score in bits, highest at 0.5 — a
  detection at 0.5 is as likely a false positive as a real object, one at 0.95 or 0.05 is settled;
- aggregates over an image or region: max, mean and the fraction of predictions above 0.5.

Each prediction carries its score as ``attributes.uncertainty`` (``with_uncertainty``), whether it came from
the tiled engine or from a whole-image prediction (``prediction_uncertainty``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal, get_args

import numpy as np

from gigavision.annotations import Annotations
from gigavision.errors import InvalidInput

ClassMethod = Literal["entropy", "margin", "least_confidence"]
CLASS_METHODS: tuple[str, ...] = get_args(ClassMethod)
_EPS = 1e-12


def class_uncertainty(probs: np.ndarray, method: str = "entropy") -> np.ndarray:
    """``(N,)`` uncertainty of ``(N, C)`` class probabilities."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 1:
        raise InvalidInput(f"class probabilities must be (N, C), got shape {p.shape}")
    if method not in CLASS_METHODS:
        raise InvalidInput(f"uncertainty method must be one of {', '.join(CLASS_METHODS)}, got {method!r}")
    n, c = p.shape
    if n == 0:
        return np.zeros(0)
    if c == 1:
        return binary_uncertainty(p[:, 0])
    if method == "entropy":
        q = np.clip(p / np.maximum(p.sum(axis=1, keepdims=True), _EPS), _EPS, 1.0)
        out = -(q * np.log(q)).sum(axis=1) / np.log(c)
    elif method == "margin":
        top = np.sort(p, axis=1)[:, ::-1]
        out = 1.0 - (top[:, 0] - top[:, 1])
    else:
        out = (1.0 - p.max(axis=1)) * c / (c - 1)
    return np.asarray(np.clip(out, 0.0, 1.0))


def binary_uncertainty(scores: np.ndarray) -> np.ndarray:
    """``(N,)`` binary entropy (bits) of per-object scores: 1 at 0.5, 0 at 0 or 1."""
    s = np.clip(np.asarray(scores, dtype=np.float64), _EPS, 1 - _EPS)
    out = -(s * np.log2(s) + (1 - s) * np.log2(1 - s))
    return np.asarray(np.clip(out, 0.0, 1.0))


def aggregate(values: np.ndarray) -> dict[str, float | int]:
    """Per-image/region summary: ``max``, ``mean``, ``n`` and ``unsure`` (fraction above 0.5)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if not len(v):
        return {"max": 0.0, "mean": 0.0, "n": 0, "unsure": 0.0}
    return {
        "max": round(float(v.max()), 6),
        "mean": round(float(v.mean()), 6),
        "n": len(v),
        "unsure": round(float((v > 0.5).mean()), 6),
    }


def with_uncertainty(ann: Annotations, values: np.ndarray) -> Annotations:
    """``ann`` with ``attributes.uncertainty`` set row by row from ``values`` (rounded to 6 decimals)."""
    attrs = np.empty(len(ann), dtype=object)
    attrs[:] = [{**a, "uncertainty": round(float(u), 6)} for a, u in zip(ann.attributes, values, strict=True)]
    return replace(ann, attributes=attrs)


def prediction_uncertainty(ann: Annotations, method: str = "entropy") -> np.ndarray:
    """``(N,)`` uncertainty of one image's whole-image predictions, by the tiled engine's definitions.

    A tag holding the class probabilities it was chosen from (classify's ``attributes.scores``) gets
    ``class_uncertainty`` of them (the image's row, as the engine's pooled row); any other prediction the
    binary entropy of its score (a missing score counts as 0.5, as for the engine's polygons).
    """
    out = np.zeros(len(ann))
    objects = np.ones(len(ann), dtype=bool)
    for i, attrs in enumerate(ann.attributes):
        scores = attrs.get("scores") if isinstance(attrs, dict) else None
        if ann.kind[i] == "tag" and isinstance(scores, dict) and scores:
            out[i] = class_uncertainty(np.asarray([list(scores.values())], dtype=np.float64), method)[0]
            objects[i] = False
    if objects.any():
        score = np.clip(np.nan_to_num(np.asarray(ann.score[objects], dtype=np.float64), nan=0.5), 0.0, 1.0)
        out[objects] = binary_uncertainty(score)
    return out
