"""Coarse-to-fine zoom-in: look at the whole image at low resolution first, spend full-resolution compute only
where something may be (like a clinician, or Zoom-in-Net's proposals).

1. **Coarse pass.** A cheap classifier trained with the ``classify`` task on downsampled patches (``model=``;
   its objectness is 1 − P(``background``), else its top probability), or the same detector at a coarse
   level (``level=``, default the first level at least ``factor``× coarser), runs over the whole image.
2. **Scores per fine window.** Every full-resolution window gets the highest coarse score overlapping it
   (coarse windows for a classifier, detections for a detector), through a low-resolution score raster.
3. **Selection.** Windows scoring at least ``threshold``, and/or the ``topk`` best (both: the best ``topk`` of
   those above the threshold), are run at full resolution; the rest are reported as negative with their
   coarse score (``max_skipped_score``).

``gigavision predict … --zoom-in threshold=0.3`` / ``topk=4`` / ``model=ID,level=2,threshold=0.5``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gigavision.errors import InvalidInput
from gigavision.infer.engine import DEFAULT_OVERLAP, InferOptions, WindowPlan, infer_image
from gigavision.models.task import BACKGROUND

if TYPE_CHECKING:
    from gigavision.images.source import ImageSource
    from gigavision.models.predict import Predictor

ZOOM_KEYS = ("threshold", "topk", "model", "level", "factor")


@dataclass(frozen=True)
class ZoomSpec:
    """How to zoom in. Without ``threshold`` and ``topk``, ``threshold`` is 0.5."""

    threshold: float | None = None
    topk: int | None = None
    model: str | None = None
    level: int | None = None
    factor: float = 4.0

    def __post_init__(self) -> None:
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise InvalidInput(f"--zoom-in threshold must be in [0, 1], got {self.threshold}")
        if self.topk is not None and self.topk < 1:
            raise InvalidInput(f"--zoom-in topk must be ≥ 1, got {self.topk}")
        if self.level is not None and self.level < 0:
            raise InvalidInput(f"--zoom-in level must be ≥ 0, got {self.level}")
        if not (math.isfinite(self.factor) and self.factor > 1):
            raise InvalidInput(f"--zoom-in factor must be > 1, got {self.factor}")


def parse_zoom(text: str) -> ZoomSpec:
    """``threshold=0.3,topk=4,model=ID,level=2,factor=4`` as a ``ZoomSpec``."""
    fields: dict[str, Any] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in ZOOM_KEYS:
            raise InvalidInput(
                f"--zoom-in {text!r}: expected KEY=VALUE pairs with keys {', '.join(ZOOM_KEYS)}"
                " (e.g. threshold=0.3 or topk=4,model=slides-classify-2)"
            )
        try:
            if key in ("topk", "level"):
                fields[key] = int(value)
            elif key in ("threshold", "factor"):
                fields[key] = float(value)
            else:
                fields[key] = value.strip()
        except ValueError:
            raise InvalidInput(f"--zoom-in {key}={value!r}: not a number") from None
    return ZoomSpec(**fields)


def _coarse_level(source: ImageSource, fine_downsample: float, spec: ZoomSpec) -> int:
    if spec.level is not None:
        if spec.level >= len(source.levels):
            raise InvalidInput(
                f"{source.path.name} has levels 0..{len(source.levels) - 1};"
                f" --zoom-in level={spec.level} does not exist"
            )
        return spec.level
    from gigavision.images.resolution import coarser_level

    coarse = coarser_level([lv.downsample for lv in source.levels], fine_downsample * spec.factor)
    if coarse is None:
        raise InvalidInput(
            f"{source.path.name} has no pyramid level {spec.factor:g}× coarser than the one inferred;"
            " give --zoom-in level=N or a coarse model=ID (or ingest the image to build its pyramid)"
        )
    return coarse


def coarse_boxes(
    coarse: Predictor,
    source: ImageSource,
    fine: WindowPlan,
    spec: ZoomSpec,
    options: InferOptions,
    *,
    name: str,
    out_dir: Path,
    mask: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Level-0 boxes with an objectness score each, from the coarse pass, and what it ran."""
    task = coarse.task.name
    if task not in ("classify", "detect", "segment"):
        raise InvalidInput(f"--zoom-in model={coarse.info.id} is a {task} model; use a classify or detect model")
    # a coarse model trained on patches runs at its own resolution; otherwise a level ``factor``× coarser
    own = coarse.patch is not None and spec.level is None
    level = None if own else _coarse_level(source, fine.res.downsample, spec)
    side = coarse.size
    copts = replace(
        options,
        tile=None,
        overlap=side // 2 if task == "classify" else min(DEFAULT_OVERLAP, side // 2),
        level=level,
        mpp=None,
        merge="nms",
    )
    result = infer_image(coarse, source, name=f"{name} (coarse)", options=copts, out_dir=out_dir, mask=mask)
    info = {
        "coarse_model": coarse.info.id,
        "coarse_level": result.level,
        "coarse_downsample": result.downsample,
        "coarse_windows": result.tiles_run,
    }
    if task == "classify":
        if result.window_boxes is None or result.window_probs is None:
            return np.zeros((0, 4)), np.zeros(0), info
        classes = list(coarse.task.classes)
        probs = result.window_probs
        score = 1.0 - probs[:, classes.index(BACKGROUND)] if BACKGROUND in classes else probs.max(axis=1)
        # each coarse window speaks for its core: the half of the overlap on each side belongs to the neighbour
        # (scored whole, half-overlapping windows spread one object cell's score over its 8 neighbours)
        boxes = result.window_boxes.astype(np.float64)
        shrink = copts.overlap * result.downsample / 2  # overlap ≤ side / 2: the core keeps ≥ half the side
        return boxes + np.array([shrink, shrink, -shrink, -shrink]), score, info
    ann = result.annotations
    return ann.xyxy.astype(np.float64), np.nan_to_num(ann.score, nan=1.0), info


def window_scores(windows: np.ndarray, boxes: np.ndarray, scores: np.ndarray, width: int, height: int) -> np.ndarray:
    """The highest score of the ``boxes`` overlapping each window (0 where none does), via a score raster of
    cells a quarter of the smallest window side (so 100k windows and boxes stay well under a second)."""
    if not len(windows):
        return np.zeros(0)
    side = float(np.min(np.minimum(windows[:, 2] - windows[:, 0], windows[:, 3] - windows[:, 1])))
    cell = max(1.0, side / 4)
    gw, gh = math.ceil(width / cell) + 1, math.ceil(height / cell) + 1
    raster = np.zeros((gh, gw), dtype=np.float64)

    def cells(b: np.ndarray) -> np.ndarray:
        c = np.floor(b / cell).astype(np.int64)
        c[:, 2:] = np.maximum(c[:, 2:] + 1, c[:, :2] + 1)  # end-exclusive, at least one cell
        c[:, 0::2] = np.clip(c[:, 0::2], 0, gw)
        c[:, 1::2] = np.clip(c[:, 1::2], 0, gh)
        return c

    for (x0, y0, x1, y1), s in zip(cells(np.asarray(boxes, dtype=np.float64)), scores, strict=True):
        region = raster[y0:y1, x0:x1]
        np.maximum(region, s, out=region)
    out = np.empty(len(windows))
    for i, (x0, y0, x1, y1) in enumerate(cells(np.asarray(windows, dtype=np.float64))):
        region = raster[y0:y1, x0:x1]
        out[i] = region.max() if region.size else 0.0
    return out


def zoom_plan(
    predictor: Predictor,
    coarse: Predictor,
    source: ImageSource,
    plan: WindowPlan,
    spec: ZoomSpec,
    options: InferOptions,
    *,
    name: str,
    out_dir: Path,
    mask: np.ndarray | None = None,
) -> tuple[WindowPlan, dict[str, Any]]:
    """The fine plan narrowed to the windows the coarse pass points at, and the zoom report."""
    started = time.monotonic()
    boxes, scores, info = coarse_boxes(
        coarse, source, plan, spec, options, name=name, out_dir=out_dir / "coarse", mask=mask
    )
    fine = window_scores(plan.windows, boxes, scores, source.width, source.height)
    candidates = np.nonzero(plan.keep)[0]
    threshold = spec.threshold if spec.threshold is not None or spec.topk is not None else 0.5
    picked = candidates if threshold is None else candidates[fine[candidates] >= threshold]
    if spec.topk is not None and len(picked) > spec.topk:
        order = np.lexsort((picked, -fine[picked]))  # best first, ties by position
        picked = np.sort(picked[order[: spec.topk]])
    skipped = np.setdiff1d(candidates, picked)
    info.update(
        {
            "threshold": threshold,
            "topk": spec.topk,
            "exhaustive": len(candidates),
            "selected": len(picked),
            "fraction": round(len(picked) / max(1, len(candidates)), 6),
            "max_skipped_score": round(float(fine[skipped].max()), 6) if len(skipped) else None,
            "coarse_seconds": round(time.monotonic() - started, 3),
        }
    )
    return plan.subset(picked), info
