"""Coarse-to-fine zoom-in: look at the whole image at low resolution first, spend full-resolution compute only
where something may be (like a clinician, or Zoom-in-Net's proposals).

1. **Coarse pass.** A cheap classifier trained with the ``classify`` task on downsampled patches (``model=``;
   its objectness is 1 − P(``background``), else its top probability), or the same detector at a coarse
   level (``level=``, default the first level at least ``factor``× coarser), runs over the whole image.
   A classifier's windows tile the coarse level without overlap, read a row band at a time and run in big
   batches (``_classify_coarse``); only their probabilities are kept.
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

from gigavision.errors import InvalidImage, InvalidInput
from gigavision.infer.engine import (
    DEFAULT_OVERLAP,
    STAGE_DEPTH,
    InferOptions,
    WindowPlan,
    infer_image,
    plan_windows,
)
from gigavision.infer.reading import Cut, ahead, read_bands
from gigavision.models.task import BACKGROUND

if TYPE_CHECKING:
    from gigavision.images.source import ImageSource
    from gigavision.models.predict import Predictor

ZOOM_KEYS = ("threshold", "topk", "model", "level", "factor")
COARSE_BATCH_PIXELS = 256 * 32 * 32  # network input pixels per coarse classifier call: 256 windows of 32²


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
    # a classifier's windows tile the image without overlap: each speaks for its own area, and the score raster
    # hands its score to every fine window overlapping it, so overlapping windows only cost more network calls
    # (half overlap: 4× the windows; measured: same recall with objects on and astride the coarse grid)
    copts = replace(
        options,
        tile=None,
        overlap=0 if task == "classify" else min(DEFAULT_OVERLAP, side // 2),
        level=level,
        mpp=None,
        merge="nms",
    )
    if task == "classify":
        return _classify_coarse(coarse, source, copts, name=name, mask=mask)
    result = infer_image(coarse, source, name=f"{name} (coarse)", options=copts, out_dir=out_dir, mask=mask)
    info = {
        "coarse_model": coarse.info.id,
        "coarse_level": result.level,
        "coarse_downsample": result.downsample,
        "coarse_windows": result.tiles_run,
    }
    ann = result.annotations
    return ann.xyxy.astype(np.float64), np.nan_to_num(ann.score, nan=1.0), info


def _classify_coarse(
    coarse: Predictor, source: ImageSource, copts: InferOptions, *, name: str, mask: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The coarse pass of a classifier: the objectness of every window of its grid, nothing else.

    The coarse level is small (a 16k² image's level 2 is 4k²), so it is read a row band at a time
    (``reading.read_bands``) and cut into windows with NumPy instead of one read per window, normalised in
    one pass per batch (``Predictor.prepare_batch``) and run ``COARSE_BATCH_PIXELS`` of input per call; the
    heatmap, uncertainty and annotations of a full ``infer_image`` are not made (only probabilities are used).
    """
    plan = plan_windows(coarse, source, copts, name=name, mask=mask)
    run = np.nonzero(plan.keep)[0]
    side = coarse.size
    batch = max(copts.batch, COARSE_BATCH_PIXELS // (side * side))

    def prepare(cut: Cut) -> tuple[np.ndarray, np.ndarray | None]:
        if cut.failed and copts.on_error == "fail":
            k, error = cut.failed[0]
            raise InvalidImage(f"{name}: window {plan.windows[run[k]].tolist()} could not be read: {error}")
        if not len(cut.indices):
            return cut.indices, None
        full = (cut.valid == side).all(axis=1)
        x = np.empty((len(cut.indices), 3, side, side), dtype=np.float32)
        x[full] = coarse.prepare_batch(cut.pixels[full])
        for i in np.flatnonzero(~full):  # a window past the image's edge: letterboxed or padded like any
            w, h = (int(v) for v in cut.valid[i])
            x[i] = coarse.prepare(cut.pixels[i, :h, :w], f"{name} window {plan.windows[run[cut.indices[i]]]}")[0]
        return cut.indices, x

    done: list[np.ndarray] = []
    probs: list[np.ndarray] = []
    no_side: list[dict[str, Any]] = [{}]  # no image metadata here: a model needing side features says so
    cuts = read_bands(source, plan.res, plan.windows[run], plan.tile, batch=batch)
    staged = ahead(cuts, prepare, depth=STAGE_DEPTH, name="gv-coarse")
    try:
        for indices, x in staged:
            if x is not None:
                metas = no_side * len(x) if coarse.side_names else None
                side_batch = coarse.side_batch(metas, [name] * len(x))
                probs.append(np.asarray(coarse.run(x, side_batch)[0], dtype=np.float64))
                done.append(indices)
    finally:
        staged.close()
    info = {
        "coarse_model": coarse.info.id,
        "coarse_level": plan.res.level,
        "coarse_downsample": plan.res.downsample,
        "coarse_windows": int(sum(len(i) for i in done)),
    }
    if not done:
        return np.zeros((0, 4)), np.zeros(0), info
    p = np.concatenate(probs)
    classes = list(coarse.task.classes)
    score = 1.0 - p[:, classes.index(BACKGROUND)] if BACKGROUND in classes else p.max(axis=1)
    return plan.windows[run[np.concatenate(done)]].astype(np.float64), score, info


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
        # end-exclusive, at least one cell: a box ending on a cell border does not reach into the next cell
        # (with floor + 1, fine windows merely touching a scored box were run too: 5,344 windows instead of
        # 3,326 for the 640 busy cells of the 16k² benchmark scene)
        c[:, 2:] = np.maximum(np.ceil(b[:, 2:] / cell).astype(np.int64), c[:, :2] + 1)
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
