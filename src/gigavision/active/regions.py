"""Region-level active learning: which windows of big images an expert should label next.

A gigapixel slide is not one labelling task: its value to the next training round is concentrated in the few
windows where the model is unsure. ``select_regions`` lays a grid of non-overlapping windows over each image
(default: the model's input side at the resolution it infers at, so a window is what the model sees at once),
skips the windows on background (the foreground mask ingest stored, ``tiling.grid.MaskIndex``; a window needs
``min_foreground`` of it), scores every other window from the model's tiled predictions and returns the
``budget`` best across all images, optionally as review tasks (reason ``selected``, the window as region).

Scores (``strategy``):

- ``uncertainty``: the predictions whose box centre lies in the window (each prediction counts in exactly one
  window, so one object never makes two neighbouring windows), aggregated from their
  ``attributes.uncertainty`` (``aggregate``: ``max``, the default, or ``sum``, the expected number of wrong
  calls), and the per-tile uncertainty the engine computes for window classifiers (tiles assigned by centre
  too). Ties (windows without predictions) go in a seeded random order, so no corner of the image is favoured.
- ``random``: foreground windows in a seeded random order (the baseline; the model is not run).

Windows never overlap (the grid has no overlap; the last row and column are clipped to the image), and
``spacing`` > 0 also keeps chosen windows at least that many windows apart (a wider spread over the slide).

``infer`` and ``active`` are sibling layers that may not import each other (pyproject's import-linter
contract), so the tiled engine reaches this module as a ``Predict`` callable:
``gigavision.cli.regions.engine_predict`` runs ``infer.request``'s tiled prediction (background windows not
run) and hands back each image's resolution, window side, foreground mask and predictions.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_args

import numpy as np

from gigavision.annotations import Annotations
from gigavision.errors import InvalidInput
from gigavision.tiling.grid import MaskIndex, window_grid

if TYPE_CHECKING:
    from gigavision.store.reviews import NewTask
    from gigavision.workspace import Workspace

Strategy = Literal["uncertainty", "random"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)
Aggregate = Literal["max", "sum"]
AGGREGATES: tuple[str, ...] = get_args(Aggregate)
MIN_FOREGROUND = 0.05  # as ``predict --skip-background``: a window with less is background
MIN_WINDOW = 8


@dataclass
class ImagePredictions:
    """What the model said about one image, and at which resolution it looked.

    ``downsample``: level-0 pixels per pixel read (``level``'s); ``tile``: the model's window side in pixels
    read. ``annotations``: level-0 predictions carrying ``attributes.uncertainty`` (None when the model was
    not run: strategy ``random``). ``tiles``/``tile_uncertainty``: ``(M, 4)`` level-0 boxes of the windows the
    engine ran and their uncertainty, for models that score whole windows (classify); None otherwise.
    ``mask``: the image's foreground mask (None: every pixel is foreground).
    """

    image_id: str
    width: int
    height: int
    level: int
    downsample: float
    tile: int
    annotations: Annotations | None = None
    tiles: np.ndarray | None = None
    tile_uncertainty: np.ndarray | None = None
    mask: np.ndarray | None = None


class Predict(Protocol):
    """Runs ``model_ref`` tiled over workspace images (``run``; else only says at which resolution and window
    side it would look, and loads each image's foreground mask), in ``image_ids`` order."""

    def __call__(
        self, model_ref: str, image_ids: Sequence[str], *, level: int | None, run: bool
    ) -> tuple[str, list[ImagePredictions]]:
        """(the model's id, one ``ImagePredictions`` per image)."""
        ...


@dataclass(frozen=True)
class Region:
    """One chosen window: level-0 ``xyxy`` (clipped to the image), its rank (1 = first) and why it was chosen."""

    image_id: str
    rank: int
    xyxy: tuple[int, int, int, int]
    score: float  # what the strategy ranked by (uncertainty: the aggregate; random: 0)
    max_uncertainty: float
    sum_uncertainty: float
    predictions: int  # predictions centred in the window
    label: str | None  # the label of its most uncertain prediction
    foreground: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "image_id": self.image_id,
            "rank": self.rank,
            "region": list(self.xyxy),
            "score": round(self.score, 6),
            "max_uncertainty": round(self.max_uncertainty, 6),
            "sum_uncertainty": round(self.sum_uncertainty, 6),
            "predictions": self.predictions,
            "label": self.label,
            "foreground": round(self.foreground, 4),
        }


@dataclass
class RegionSelection:
    """The outcome of ``select_regions``: the chosen windows, best first, and what was considered."""

    model: str
    strategy: str
    aggregate: str
    budget: int
    window: int  # side in pixels read
    regions: list[Region]
    windows: int  # windows of every image's grid
    background: int  # of them skipped as background
    tasks: int = 0  # review tasks created
    batch: str | None = None
    images: dict[str, dict[str, Any]] = field(default_factory=dict)  # per image: level, window (level-0), counts
    predictions: dict[str, ImagePredictions] = field(default_factory=dict)  # per image, for callers that evaluate

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "strategy": self.strategy,
            "aggregate": self.aggregate,
            "budget": self.budget,
            "window": self.window,
            "windows": self.windows,
            "background": self.background,
            "candidates": self.windows - self.background,
            "images": self.images,
            "tasks": self.tasks,
            "batch": self.batch,
            "regions": [r.as_dict() for r in self.regions],
        }


# -- pure parts: grids, scores, ranking --------------------------------------------------------------------
def region_windows(width: int, height: int, side: int, downsample: float = 1.0) -> np.ndarray:
    """Non-overlapping level-0 windows ``(N, 4)`` of ``side`` pixels read at ``downsample``, row-major, the
    last row and column clipped to the image (``tiling.grid.window_grid`` with edge ``pad``)."""
    windows = window_grid(width, height, side, downsample=downsample, edge="pad")
    windows[:, 2] = np.minimum(windows[:, 2], width)
    windows[:, 3] = np.minimum(windows[:, 3], height)
    return windows


def foreground(windows: np.ndarray, mask: np.ndarray | None, width: int, height: int) -> np.ndarray:
    """Foreground fraction of each window under ``mask`` (all 1 without a mask)."""
    if mask is None:
        return np.ones(len(windows))
    return MaskIndex(mask, width, height).fractions(windows)


def _window_of(windows: np.ndarray, cx: np.ndarray, cy: np.ndarray) -> np.ndarray:
    """Index of the window (of a ``region_windows`` grid) holding each point; -1 outside every window."""
    xs, ys = np.unique(windows[:, 0]), np.unique(windows[:, 1])
    col = np.searchsorted(xs, cx, side="right") - 1
    row = np.searchsorted(ys, cy, side="right") - 1
    right, bottom = windows[:, 2].max(), windows[:, 3].max()
    ok = (col >= 0) & (row >= 0) & (cx < right) & (cy < bottom) & np.isfinite(cx) & np.isfinite(cy)
    return np.where(ok, row * len(xs) + col, -1)


@dataclass(frozen=True)
class WindowScores:
    """Per window: the max and sum of the uncertainty of what is centred in it, how many predictions are, and
    the row (in ``annotations``) of the most uncertain one (-1: none)."""

    max: np.ndarray
    sum: np.ndarray
    count: np.ndarray
    top: np.ndarray


def score_windows(
    windows: np.ndarray,
    annotations: Annotations | None,
    tiles: np.ndarray | None = None,
    tile_uncertainty: np.ndarray | None = None,
) -> WindowScores:
    """Aggregate the predictions' ``attributes.uncertainty`` (and per-tile uncertainties) per window, each
    counted in the window holding its centre. Image-level tags (no box) count in no window; a prediction
    without an uncertainty counts as 0.5 (as unsure as a coin toss)."""
    n = len(windows)
    top_u = np.full(n, -1.0)
    out = WindowScores(np.zeros(n), np.zeros(n), np.zeros(n, dtype=np.int64), np.full(n, -1, dtype=np.int64))
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (boxes, uncertainty, annotation row or -1)
    if annotations is not None and len(annotations):
        values = np.array([_uncertainty(a) for a in annotations.attributes], dtype=np.float64)
        parts.append((np.asarray(annotations.xyxy, dtype=np.float64), values, np.arange(len(annotations))))
    if tiles is not None and tile_uncertainty is not None and len(tiles):
        boxes = np.asarray(tiles, dtype=np.float64).reshape(-1, 4)
        values = np.asarray(tile_uncertainty, dtype=np.float64)
        if len(values) != len(boxes):
            raise InvalidInput(f"{len(boxes)} tiles but {len(values)} tile uncertainties")
        parts.append((boxes, values, np.full(len(boxes), -1)))
    for boxes, values, rows in parts:
        idx = _window_of(windows, (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2)
        ok = idx >= 0
        idx, values, rows = idx[ok], np.clip(np.nan_to_num(values[ok], nan=0.5), 0.0, 1.0), rows[ok]
        np.maximum.at(out.max, idx, values)
        np.add.at(out.sum, idx, values)
        np.add.at(out.count, idx, 1)
        for i, v, r in zip(idx.tolist(), values.tolist(), rows.tolist(), strict=True):
            if r >= 0 and v > top_u[i]:
                top_u[i], out.top[i] = v, r
    return out


def _uncertainty(attributes: Any) -> float:
    value = attributes.get("uncertainty") if isinstance(attributes, dict) else None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.5


def pick(
    order: np.ndarray, cols: np.ndarray, rows: np.ndarray, groups: np.ndarray, budget: int, spacing: int
) -> list[int]:
    """The first ``budget`` of ``order`` (window indices, best first) keeping chosen windows of one group (an
    image) more than ``spacing`` windows apart (Chebyshev distance on the grid); ``spacing`` 0 takes them as
    ranked."""
    if spacing <= 0:
        return [int(i) for i in order[:budget]]
    chosen: list[int] = []
    taken: dict[int, set[tuple[int, int]]] = {}
    for i in order.tolist():
        g, c, r = int(groups[i]), int(cols[i]), int(rows[i])
        near = taken.setdefault(g, set())
        if (c, r) in near:
            continue
        chosen.append(i)
        near.update((c + dc, r + dr) for dc in range(-spacing, spacing + 1) for dr in range(-spacing, spacing + 1))
        if len(chosen) == budget:
            break
    return chosen


def rank(scores: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices by ``scores``, highest first; ties in a random order from ``rng``."""
    jitter = rng.permutation(len(scores))
    return np.lexsort((jitter, -np.asarray(scores, dtype=np.float64)))


# -- the selection ------------------------------------------------------------------------------------------
def select_regions(
    ws: Workspace,
    model_ref: str,
    image_ids: Sequence[str],
    budget: int,
    window: int | None = None,
    strategy: str = "uncertainty",
    *,
    predict: Predict,
    level: int | None = None,
    aggregate: str = "max",
    min_foreground: float = MIN_FOREGROUND,
    spacing: int = 0,
    seed: int = 0,
    create_tasks: bool = False,
    actor: str = "cli",
    batch: str | None = None,
) -> RegionSelection:
    """The ``budget`` most informative windows of ``image_ids`` (workspace images: ids, prefixes or names) for
    ``model_ref`` (see the module docstring); ``create_tasks`` adds them as review tasks (reason
    ``selected``, priority = the score, or the reverse rank for ``random``) in ``batch`` (default: a new id).

    ``window``: side in pixels at the resolution the model reads (default its input side); ``level``: read
    at this pyramid level instead of the model's own. Everything is checked before the model runs: the
    strategy, the budget against the foreground windows, the window side, the images.
    """
    if strategy not in STRATEGIES:
        raise InvalidInput(f"strategy must be one of {', '.join(STRATEGIES)} for regions, got {strategy!r}")
    if aggregate not in AGGREGATES:
        raise InvalidInput(f"aggregate must be one of {', '.join(AGGREGATES)}, got {aggregate!r}")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise InvalidInput(f"budget must be a whole number of windows ≥ 1, got {budget!r}")
    if window is not None and window < MIN_WINDOW:
        raise InvalidInput(f"window must be at least {MIN_WINDOW} pixels, got {window}")
    if not 0.0 <= min_foreground <= 1.0:
        raise InvalidInput(f"min_foreground must be a fraction in [0, 1], got {min_foreground}")
    if spacing < 0:
        raise InvalidInput(f"spacing must be ≥ 0 windows, got {spacing}")
    refs = list(dict.fromkeys(image_ids))
    if not refs:
        raise InvalidInput("name at least one workspace image to select regions of")
    found = ws.find_images(refs)
    ids = list(dict.fromkeys(found[r] for r in refs))

    model_id, planned = predict(model_ref, ids, level=level, run=False)
    grids = [_grid(p, window, min_foreground) for p in planned]
    candidates = sum(int(g[2].sum()) for g in grids)
    total = sum(len(g[0]) for g in grids)
    if candidates == 0:
        raise InvalidInput(
            f"no foreground windows in {len(ids)} image(s): every window has less than {min_foreground:g}"
            " foreground under the image's mask"
        )
    if budget > candidates:
        raise InvalidInput(
            f"budget {budget} is larger than the {candidates} foreground windows of {len(ids)} image(s)"
            f" ({total - candidates} of {total} windows are background); ask for at most {candidates}"
        )
    if strategy == "uncertainty":
        _, predicted = predict(model_ref, ids, level=level, run=True)
    else:
        predicted = planned

    rng = np.random.default_rng(seed)
    keys: list[np.ndarray] = []  # per candidate: image index, window index
    all_scores: list[np.ndarray] = []
    per_image: list[WindowScores] = []
    for k, (p, (windows, _, keep)) in enumerate(zip(predicted, grids, strict=True)):
        ws_scores = score_windows(windows, p.annotations, p.tiles, p.tile_uncertainty)
        per_image.append(ws_scores)
        idx = np.flatnonzero(keep)
        keys.append(np.stack([np.full(len(idx), k), idx], axis=1))
        if strategy == "random":
            all_scores.append(np.zeros(len(idx)))
        else:
            all_scores.append((ws_scores.max if aggregate == "max" else ws_scores.sum)[idx])
    key = np.concatenate(keys)
    scores = np.concatenate(all_scores)
    order = rank(scores, rng)
    cols, rows = np.zeros(len(key), dtype=np.int64), np.zeros(len(key), dtype=np.int64)
    for k, (windows, _, _) in enumerate(grids):
        at = key[:, 0] == k
        w = windows[key[at, 1]]
        cols[at] = np.searchsorted(np.unique(windows[:, 0]), w[:, 0])
        rows[at] = np.searchsorted(np.unique(windows[:, 1]), w[:, 1])
    chosen = pick(order, cols, rows, key[:, 0], budget, spacing)

    regions = []
    for r, c in enumerate(chosen, start=1):
        k, i = int(key[c, 0]), int(key[c, 1])
        p, (windows, fractions, _), s = predicted[k], grids[k], per_image[k]
        top = int(s.top[i])
        label = str(p.annotations.label[top]) if p.annotations is not None and top >= 0 else None
        x0, y0, x1, y1 = (int(v) for v in windows[i])
        regions.append(
            Region(
                image_id=p.image_id,
                rank=r,
                xyxy=(x0, y0, x1, y1),
                score=float(scores[c]),
                max_uncertainty=float(s.max[i]),
                sum_uncertainty=float(s.sum[i]),
                predictions=int(s.count[i]),
                label=label,
                foreground=float(fractions[i]),
            )
        )
    side = window or planned[0].tile
    selection = RegionSelection(
        model=model_id,
        strategy=strategy,
        aggregate=aggregate,
        budget=budget,
        window=side,
        regions=regions,
        windows=total,
        background=total - candidates,
        images={
            p.image_id: {
                "level": p.level,
                "window_level0": round((window or p.tile) * p.downsample),
                "windows": len(g[0]),
                "background": int((~g[2]).sum()),
                "chosen": sum(1 for reg in regions if reg.image_id == p.image_id),
            }
            for p, g in zip(predicted, grids, strict=True)
        },
        predictions={p.image_id: p for p in predicted},
    )
    if create_tasks and regions:
        selection.batch = batch or f"regions-{uuid.uuid4().hex[:12]}"
        selection.tasks = ws.reviews.add(_tasks(selection), actor=actor, batch=selection.batch)
    return selection


def _grid(p: ImagePredictions, window: int | None, min_foreground: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(windows, foreground fractions, kept) of one image."""
    windows = region_windows(p.width, p.height, window or p.tile, p.downsample)
    fractions = foreground(windows, p.mask, p.width, p.height)
    keep = fractions >= min_foreground if min_foreground > 0 else fractions > 0
    return windows, fractions, keep


def _tasks(selection: RegionSelection) -> list[NewTask]:
    from gigavision.store.reviews import NewTask

    n = len(selection.regions)
    return [
        NewTask(
            image_id=r.image_id,
            reason="selected",
            region=(float(r.xyxy[0]), float(r.xyxy[1]), float(r.xyxy[2]), float(r.xyxy[3])),
            model_id=selection.model,
            label=r.label,
            uncertainty=r.max_uncertainty if selection.strategy == "uncertainty" else None,
            priority=r.score if selection.strategy == "uncertainty" else float(n - r.rank + 1) / n,
            details={
                "kind": "region",
                "strategy": selection.strategy,
                "aggregate": selection.aggregate,
                "rank": r.rank,
                "window": list(r.xyxy),
                "window_side": selection.window,
                "level": selection.images[r.image_id]["level"],
                "score": round(r.score, 6),
                "predictions": r.predictions,
            },
        )
        for r in selection.regions
    ]
