"""The big-image inference engine: any trained model over an image of any size, in bounded memory.

``infer_image`` lays a window grid over the image at the model's resolution (``tiling.grid``), drops windows
on empty background (the foreground mask from ingest), reads the rest on reader threads ahead of the model
(``infer.reading``), runs the torch or onnxruntime ``Predictor`` batch by batch and streams each batch's result
into the task's output (``OUTPUTS``, by task name). Reading, preprocessing (letterbox, normalise) and the model
call are pipeline stages on threads of their own (``reading.ahead``), so the model's native code (which
releases the GIL) overlaps the NumPy work before and after it; outputs take batches in grid order on the
caller's thread, as do progress callbacks:

- ``detect``: boxes of every window, moved to level-0 pixels, merged across tile borders by a
  ``tiling.merge`` strategy (``ios`` joins objects cut by borders; ``nms``/``soft_nms``/``wbf``);
- ``segment``: class probabilities blended into a pyramidal label mask (and a probability mask) written
  row band by row band (``infer.stitch``), then vectorised into polygons;
- ``classify``: one prediction per window, stitched into a heatmap pyramid, pooled into the image-level
  classes (``max``: an image is positive when any window is; ``mean``).

Every prediction carries an uncertainty (``metrics.uncertainty``) in its attributes, and the result an
aggregate, for the review queue. Never is a full-resolution array of the image in memory: at most
``PREFETCH + 1`` batches of read windows, ``STAGE_DEPTH`` prepared batches and ``STAGE_DEPTH`` batches of
network outputs, plus one row band of the stitched mask.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np

from gigavision.annotations import Annotations
from gigavision.errors import InvalidImage, InvalidInput
from gigavision.infer.reading import Resolution, Window, ahead, resolve_resolution, stream_windows
from gigavision.metrics.uncertainty import aggregate, binary_uncertainty, class_uncertainty, with_uncertainty
from gigavision.progress import Progress
from gigavision.registry import Registry
from gigavision.tiling.grid import MaskIndex, window_grid

if TYPE_CHECKING:
    from gigavision.images.source import ImageSource
    from gigavision.models.predict import Predictor

OnError = Literal["fail", "skip"]
ON_ERROR: tuple[str, ...] = get_args(OnError)
Pooling = Literal["max", "mean"]
POOLINGS: tuple[str, ...] = get_args(Pooling)
CUT_MARGIN = 2  # pixels from a window side within which a detection counts as cut by it
BATCH = 16  # windows per model call: the default of every tiled path (CLI, REST, jobs, Dask, zoom-in)
HEATMAP_CELLS = 16  # heatmap pixels per window side: enough to see the blend, tiny next to the image
DEFAULT_OVERLAP = 64
STAGE_DEPTH = 2  # batches a pipeline stage (preprocess, model) may run ahead of the next


@dataclass(frozen=True)
class InferOptions:
    """How to tile and what to do with the results. Sizes are pixels at the resolution read.

    ``tile``: window side (default: the model's input side); ``overlap`` between neighbouring windows;
    ``level``/``mpp``: resolution (default: the model's training resolution for patch models, else level 0);
    ``skip_background``: windows with less foreground than this fraction are not run (None: run all);
    ``merge``/``merge_threshold``: detect's cross-tile strategy, over the detections scoring at least
    ``min_score`` (merging low-score clutter grows union boxes, and keeping it floods the store — a detector
    keeps ~100 candidates per window for mAP). The default, ``nms`` with ``drop_cut``, drops detections
    touching a window side inside the image (a neighbour sees that object whole when the overlap is wider
    than the objects) and suppresses the whole duplicates; ``ios`` merges the pieces instead, for objects
    larger than the overlap. ``pooling``: classify's image-level pooling;
    ``on_error``: a window that fails to decode fails the run (``fail``) or is reported and left out (``skip``).
    """

    tile: int | None = None
    overlap: int = DEFAULT_OVERLAP
    batch: int = BATCH
    level: int | None = None
    mpp: float | None = None
    skip_background: float | None = None
    merge: str = "nms"
    merge_threshold: float = 0.5
    min_score: float = 0.3
    drop_cut: bool = True
    pooling: str = "max"
    uncertainty: str = "entropy"
    readers: int = 2
    on_error: str = "fail"
    min_area: float = 0.0
    probabilities: bool = True

    def check(self) -> None:
        from gigavision.tiling.merge import MERGERS

        if self.tile is not None and self.tile < 8:
            raise InvalidInput(f"--tile must be at least 8 pixels, got {self.tile}")
        if self.overlap < 0:
            raise InvalidInput(f"--overlap must be ≥ 0, got {self.overlap}")
        if self.tile is not None and self.overlap >= self.tile:
            raise InvalidInput(f"--overlap {self.overlap} must be smaller than --tile {self.tile}")
        if self.batch < 1:
            raise InvalidInput(f"--batch must be ≥ 1, got {self.batch}")
        if self.skip_background is not None and not 0.0 <= self.skip_background <= 1.0:
            raise InvalidInput(f"--skip-background must be a foreground fraction in [0, 1], got {self.skip_background}")
        if self.merge not in MERGERS:
            raise InvalidInput(f"--merge must be one of {', '.join(MERGERS)}, got {self.merge!r}")
        if not 0.0 <= self.min_score <= 1.0:
            raise InvalidInput(f"--min-score must be in [0, 1], got {self.min_score}")
        if not 0.0 < self.merge_threshold <= 1.0:
            raise InvalidInput(f"--merge-threshold must be in (0, 1], got {self.merge_threshold}")
        if self.pooling not in POOLINGS:
            raise InvalidInput(f"--pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")
        if self.on_error not in ON_ERROR:
            raise InvalidInput(f"--on-error must be one of {', '.join(ON_ERROR)}, got {self.on_error!r}")
        if self.readers < 1:
            raise InvalidInput(f"--readers must be ≥ 1, got {self.readers}")


@dataclass
class InferResult:
    """One image's inference: the merged annotations (level-0 pixels), tile accounting and files written."""

    input: str
    image_id: str | None
    model: str
    task: str
    width: int
    height: int
    level: int
    downsample: float
    tile: int
    overlap: int
    annotations: Annotations
    tiles_total: int
    tiles_run: int
    tiles_skipped: int
    failed_regions: list[dict[str, Any]] = field(default_factory=list)
    image_scores: dict[str, float] = field(default_factory=dict)
    uncertainty: dict[str, float | int] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    zoom: dict[str, Any] = field(default_factory=dict)
    # classify: the level-0 box and class probabilities of every window run (zoom-in's coarse scores)
    window_boxes: np.ndarray | None = None
    window_probs: np.ndarray | None = None

    def as_dict(self, with_annotations: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "input": self.input,
            "image_id": self.image_id,
            "model": self.model,
            "task": self.task,
            "width": self.width,
            "height": self.height,
            "level": self.level,
            "downsample": self.downsample,
            "tile": self.tile,
            "overlap": self.overlap,
            "tiles": {
                "total": self.tiles_total,
                "run": self.tiles_run,
                "skipped_background": self.tiles_skipped,
                "failed": len(self.failed_regions),
            },
            "failed_regions": self.failed_regions,
            "image_scores": self.image_scores,
            "uncertainty": self.uncertainty,
            "outputs": self.outputs,
            "zoom": self.zoom,
            "n_annotations": len(self.annotations),
            "seconds": round(self.seconds, 3),
        }
        if with_annotations:
            out["annotations"] = self.annotations.to_records()
        return out


def model_resolution(predictor: Predictor, source: ImageSource, options: InferOptions) -> Resolution:
    """The options' level/mpp, else the resolution a patch model was trained at, else level 0."""
    if options.level is not None or options.mpp is not None:
        return resolve_resolution(source, level=options.level, mpp=options.mpp)
    patch = predictor.patch
    if patch is not None and patch.mpp is not None and source.info.mpp_x:
        return resolve_resolution(source, mpp=patch.mpp)
    if patch is not None and patch.level is not None and patch.level < len(source.levels):
        return resolve_resolution(source, level=patch.level)
    return Resolution(0, 1.0)


def tile_size(predictor: Predictor, options: InferOptions) -> int:
    """The window side: ``--tile`` or the model's input side; patch models never see bigger windows."""
    return window_side(options, predictor.size, predictor.patch is not None, predictor.info.id)


def window_side(options: InferOptions, size: int, patch: bool, model_id: str) -> int:
    """``tile_size`` from the model record alone (``size``: its input side; ``patch``: trained on patches)."""
    tile = options.tile or size
    if patch and tile > size:
        raise InvalidInput(
            f"--tile {tile} is larger than the {size}×{size} patches model {model_id}"
            f" was trained on; use --tile {size} or less"
        )
    if options.overlap >= tile:
        raise InvalidInput(f"--overlap {options.overlap} must be smaller than the tile ({tile})")
    return tile


class _Output:
    """What a task does with each batch of window predictions, and at the end; one per task in ``OUTPUTS``,
    all built from the same arguments."""

    def __init__(
        self, predictor: Predictor, plan: WindowPlan, options: InferOptions, out_dir: Path, source: ImageSource
    ) -> None:
        raise NotImplementedError

    def add(self, windows: list[Window], outputs: list[np.ndarray]) -> None:
        raise NotImplementedError

    def add_slice(self, windows: list[Window], outputs: list[np.ndarray], start: int, stop: int) -> int:
        """``add`` windows[start:stop] with their rows of every output; returns ``stop``, the next start."""
        if stop > start:
            self.add(windows[start:stop], [o[start:stop] for o in outputs])
        return stop

    def skip(self, xyxy: tuple[int, int, int, int]) -> None:
        """A window not run (background or failed)."""

    def finish(self) -> tuple[Annotations, dict[str, float], dict[str, float | int], dict[str, str]]:
        raise NotImplementedError

    def abort(self) -> None:
        """Discard partial files after a failure."""


class _Detections(_Output):
    def __init__(
        self, predictor: Predictor, plan: WindowPlan, options: InferOptions, out_dir: Path, source: ImageSource
    ) -> None:
        self.predictor, self.res, self.options = predictor, plan.res, options
        self.neighbours = plan.run_neighbours()  # per grid window: does the neighbour on each side run
        self.merge = True
        # pieces of objects cut by a window side are dropped when the overlap lets a neighbour see them whole;
        # ios instead merges the pieces (objects larger than the overlap), so it keeps them
        self.drop_cut = options.drop_cut and options.overlap > 0 and options.merge != "ios"
        self.parts: list[Annotations] = []

    def add(self, windows: list[Window], outputs: list[np.ndarray]) -> None:
        p = self.predictor
        sizes = [(p.size, p.size) if p.patch is not None else (w.height, w.width) for w in windows]
        # decode only what min_score keeps (outputs: dense boxes, per-class scores): the per-class NMS in
        # decoding is a Python loop over candidates, and the recipe's 0.05 threshold hands it ~100 per window
        # (measured: 2.7 ms per window against 0.8 ms for the network)
        scores = np.asarray(outputs[1])
        outputs = [outputs[0], np.where(scores >= self.options.min_score, scores, 0.0), *outputs[2:]]
        if p.patch is not None:  # padded patches: boxes on the padding are cropped away, window by window
            for win, ann in zip(windows, p.task.decode(outputs, sizes), strict=True):
                ann = ann.crop(0, 0, win.width, win.height)
                ann = ann[ann.score >= self.options.min_score]
                if self.drop_cut and len(ann):
                    ann = ann[~_touches_inner_edge(ann.xyxy, win, self.neighbours[win.index])]
                if len(ann):
                    self.parts.append(ann.scale(self.res.downsample).translate(win.xyxy[0], win.xyxy[1]))
            return
        # the batch's boxes as arrays, filtered and placed per window, then ONE Annotations for the batch: the
        # same rows, in the same order, as an Annotations per window (whose construction cost more than NMS)
        from gigavision.models.detect import DetectTask

        task = p.task
        assert isinstance(task, DetectTask)  # OUTPUTS gives detect models this output
        boxes, classes, kept, origins = [], [], [], []
        for win, (xyxy, cls, score) in zip(windows, task.decode_boxes(outputs, sizes), strict=True):
            keep = score >= self.options.min_score
            if self.drop_cut and keep.any():
                keep &= ~_touches_inner_edge(xyxy, win, self.neighbours[win.index])
            if keep.any():
                boxes.append(xyxy[keep])
                classes.append(cls[keep])
                kept.append(score[keep])
                origins.append(np.repeat([[win.xyxy[0], win.xyxy[1]] * 2], int(keep.sum()), axis=0))
        if boxes:
            # as Annotations.scale then .translate: level-0 = window pixels × downsample + the window's origin
            placed = np.concatenate(boxes) * self.res.downsample + np.concatenate(origins)
            labels = np.asarray(task.classes, dtype=object)[np.concatenate(classes)]
            n = len(placed)
            self.parts.append(
                Annotations.from_boxes(placed, list(labels), score=np.concatenate(kept), source=["model"] * n)
            )

    def finish(self) -> tuple[Annotations, dict[str, float], dict[str, float | int], dict[str, str]]:
        found = Annotations.merge(self.parts)
        if self.merge:
            found = merge_detections(found, self.options)
        unsure = binary_uncertainty(found.score)
        return with_uncertainty(found, unsure), {}, aggregate(unsure), {}


def merge_detections(ann: Annotations, options: InferOptions) -> Annotations:
    """Detections of all windows of an image (level-0 pixels) merged across tile borders by ``options.merge``."""
    from gigavision.tiling.merge import merge_annotations

    return merge_annotations(ann, options.merge, options.merge_threshold, per_class=True)


class _Segmentation(_Output):
    def __init__(
        self, predictor: Predictor, plan: WindowPlan, options: InferOptions, out_dir: Path, source: ImageSource
    ) -> None:
        from gigavision.infer.stitch import MaskStitcher

        self.predictor, self.options, self.tile = predictor, options, plan.tile
        self.stitcher = MaskStitcher(
            out_dir / "mask.tif",
            source.width,
            source.height,
            predictor.task.classes,
            window=plan.tile,
            overlap=options.overlap,
            downsample=plan.res.downsample,
            probabilities=options.probabilities,
            mpp=source.info.mpp_x,
        )

    def add(self, windows: list[Window], outputs: list[np.ndarray]) -> None:
        probs = np.asarray(outputs[0], dtype=np.float32)
        size = self.predictor.size
        if self.predictor.patch is None and self.tile == size and all(w.width == w.height == size for w in windows):
            # whole windows at the network's side (the usual grid): ``_window_probs``' renormalisation for the
            # batch at once, summed over the same contiguous class axis, so the same float32 numbers
            seen = np.ascontiguousarray(probs.transpose(0, 2, 3, 1))
            ready = (seen / np.maximum(seen.sum(axis=3, keepdims=True), 1e-12)).transpose(0, 3, 1, 2)
            for win, p in zip(windows, ready, strict=True):
                self.stitcher.add(win.xyxy, p)
            return
        for win, p in zip(windows, probs, strict=True):
            self.stitcher.add(win.xyxy, _window_probs(self.predictor, win, p, self.tile))

    def skip(self, xyxy: tuple[int, int, int, int]) -> None:
        self.stitcher.skip(xyxy)

    def finish(self) -> tuple[Annotations, dict[str, float], dict[str, float | int], dict[str, str]]:
        from gigavision.infer.vectorize import vectorize

        result = self.stitcher.close()
        ann = vectorize(result, min_area=self.options.min_area, source=self.predictor.source_name)
        unsure = binary_uncertainty(np.nan_to_num(ann.score, nan=0.5))
        outputs = {"mask": str(result.path)}
        if result.probability_path is not None:
            outputs["probability"] = str(result.probability_path)
        areas = {k: float(v) for k, v in result.areas.items()}
        return with_uncertainty(ann, unsure), {f"area:{k}": v for k, v in areas.items()}, aggregate(unsure), outputs

    def abort(self) -> None:
        self.stitcher.abort()


def _window_probs(predictor: Predictor, win: Window, p: np.ndarray, tile: int) -> np.ndarray:
    """A window's ``(C, tile, tile)`` class probabilities in read pixels from the network's ``(C, S, S)``."""
    from gigavision.images.pixels import resize

    if predictor.patch is not None:
        out = np.zeros((p.shape[0], tile, tile), dtype=np.float32)
        out[:, : win.height, : win.width] = p[:, : win.height, : win.width]
        out[0, win.height :, :] = 1.0  # outside the image: background (the stitcher ignores it anyway)
        out[0, :, win.width :] = 1.0
        return out
    scale = predictor.size / max(win.width, win.height)  # letterbox: network pixels per window pixel
    vh, vw = max(1, round(win.height * scale)), max(1, round(win.width * scale))
    seen = np.ascontiguousarray(p[:, :vh, :vw].transpose(1, 2, 0))
    back = resize(seen, win.width, win.height).transpose(2, 0, 1)
    out = np.zeros((p.shape[0], tile, tile), dtype=np.float32)
    out[0] = 1.0
    out[:, : win.height, : win.width] = back / np.maximum(back.sum(axis=0, keepdims=True), 1e-12)
    return out


class _Classes(_Output):
    def __init__(
        self, predictor: Predictor, plan: WindowPlan, options: InferOptions, out_dir: Path, source: ImageSource
    ) -> None:
        from gigavision.infer.stitch import MaskStitcher

        self.predictor, self.options = predictor, options
        tile = plan.tile
        self.classes = list(predictor.task.classes)
        self.rows: list[np.ndarray] = []
        self.boxes: list[tuple[int, int, int, int]] = []
        # the heatmap: each window painted with its probabilities, HEATMAP_CELLS pixels a side, blended
        self.cells = HEATMAP_CELLS
        cell_overlap = min(self.cells - 1, round(options.overlap * self.cells / tile))
        self.heat_ds = plan.res.downsample * tile / self.cells
        self.background = 0 if self.classes[0] == "background" else None
        classes = self.classes if self.background == 0 else ["none", *self.classes]
        self.heatmap = MaskStitcher(
            out_dir / "heatmap.tif",
            source.width,
            source.height,
            classes,
            window=self.cells,
            overlap=cell_overlap,
            downsample=self.heat_ds,
            probabilities=True,
        )

    def add(self, windows: list[Window], outputs: list[np.ndarray]) -> None:
        probs = np.asarray(outputs[0], dtype=np.float64)
        for win, row in zip(windows, probs, strict=True):
            self.rows.append(row)
            self.boxes.append(win.xyxy)
            cells = row if self.background == 0 else np.concatenate([[max(0.0, 1.0 - row.max())], row])
            block = np.broadcast_to(cells[:, None, None], (len(cells), self.cells, self.cells))
            self.heatmap.add(self._heat_window(win.xyxy), np.ascontiguousarray(block, dtype=np.float32))

    def _heat_window(self, xyxy: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        x0, y0 = xyxy[0], xyxy[1]
        side = round(self.cells * self.heat_ds)
        return x0, y0, x0 + side, y0 + side

    def skip(self, xyxy: tuple[int, int, int, int]) -> None:
        self.heatmap.skip(self._heat_window(xyxy))

    def finish(self) -> tuple[Annotations, dict[str, float], dict[str, float | int], dict[str, str]]:
        result = self.heatmap.close()
        outputs = {"heatmap": str(result.path)}
        if result.probability_path is not None:
            outputs["heatmap_probability"] = str(result.probability_path)
        if not self.rows:
            return Annotations.empty(), {}, aggregate(np.zeros(0)), outputs
        probs = np.stack(self.rows)
        pooled = probs.max(axis=0) if self.options.pooling == "max" else probs.mean(axis=0)
        if self.background is not None and self.options.pooling == "max":
            # an image is background only if every window is: "no object anywhere"
            pooled[self.background] = probs[:, self.background].min()
        if not self.predictor.task.recipe.multi_label:
            pooled = pooled / max(float(pooled.sum()), 1e-12)
        ann = self.predictor.task.decode([pooled[None].astype(np.float32)], [(1, 1)])[0]
        unsure_tiles = class_uncertainty(probs, self.options.uncertainty)
        image_unsure = class_uncertainty(pooled[None], self.options.uncertainty)
        ann = with_uncertainty(ann, np.full(len(ann), float(image_unsure[0])))
        scores = {c: round(float(v), 6) for c, v in zip(self.classes, pooled, strict=True)}
        return ann, scores, aggregate(unsure_tiles), outputs

    def abort(self) -> None:
        self.heatmap.abort()


# the tasks tiled inference runs, and what each makes of the windows' predictions
OUTPUTS: Registry[type[_Output]] = Registry("tiled-inference task")
OUTPUTS.add("detect", _Detections)
OUTPUTS.add("segment", _Segmentation)
OUTPUTS.add("classify", _Classes)


def _touches_inner_edge(xyxy: np.ndarray, win: Window, run_neighbour: np.ndarray) -> np.ndarray:
    """Rows (window pixels) within ``CUT_MARGIN`` of a window side across which a neighbouring window runs:
    objects this window cut that the neighbour (with an overlap wider than the objects) sees whole. Sides on
    the image edge, or next to a window not run (background, not zoomed into), keep what they cut."""
    m = CUT_MARGIN
    left, top, right, bottom = (bool(v) for v in run_neighbour)
    cut = np.zeros(len(xyxy), dtype=bool)
    if left:
        cut |= xyxy[:, 0] <= m
    if top:
        cut |= xyxy[:, 1] <= m
    if right:
        cut |= xyxy[:, 2] >= win.width - m
    if bottom:
        cut |= xyxy[:, 3] >= win.height - m
    return cut


def run_neighbours(windows: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """``(N, 4)`` bool: whether the grid neighbour to the left, above, right and below each window runs."""
    xs, ys = np.unique(windows[:, 0]), np.unique(windows[:, 1])
    ix, iy = np.searchsorted(xs, windows[:, 0]), np.searchsorted(ys, windows[:, 1])
    grid = np.zeros((len(ys) + 2, len(xs) + 2), dtype=bool)  # a frame of "no window" around the grid
    grid[iy + 1, ix + 1] = keep
    return np.stack([grid[iy + 1, ix], grid[iy, ix + 1], grid[iy + 1, ix + 2], grid[iy + 2, ix + 1]], axis=1)


@dataclass
class WindowPlan:
    """Which windows of an image to run: the resolution, window side, the whole grid (level-0 boxes) and a
    ``keep`` flag per window (False: background, or left to another process or the zoom-in planner)."""

    res: Resolution
    tile: int
    windows: np.ndarray
    keep: np.ndarray
    # (N, 4) bool: whether each window's left/top/right/bottom neighbour runs anywhere (this process or
    # another); None: exactly the kept windows run (``run_neighbours(windows, keep)``)
    neighbours: np.ndarray | None = None

    def subset(self, indices: np.ndarray) -> WindowPlan:
        """The same grid with only ``indices`` (of kept windows) to run; the others are not run at all."""
        keep = np.zeros(len(self.windows), dtype=bool)
        keep[np.asarray(indices, dtype=np.int64)] = True
        return WindowPlan(self.res, self.tile, self.windows, keep & self.keep)

    def part(self, indices: np.ndarray) -> WindowPlan:
        """``indices`` (of kept windows) to run here while the other kept windows run in other processes
        (Dask regions): a detection cut at a side whose neighbour runs elsewhere is still dropped, so the
        parts' unmerged detections together are the whole plan's."""
        return replace(self.subset(indices), neighbours=self.run_neighbours())

    def run_neighbours(self) -> np.ndarray:
        """``(N, 4)`` bool: whether the neighbour to the left, above, right and below each window runs."""
        return self.neighbours if self.neighbours is not None else run_neighbours(self.windows, self.keep)


def plan_windows(
    predictor: Predictor, source: ImageSource, options: InferOptions, *, name: str, mask: np.ndarray | None = None
) -> WindowPlan:
    """The window grid at the model's resolution, with background windows (under ``mask``) not kept."""
    options.check()
    task = predictor.task.name
    if task not in OUTPUTS:
        *rest, last = OUTPUTS
        raise InvalidInput(
            f"model {predictor.info.id} is a {task} model; tiled inference runs {', '.join(rest)} and {last} models"
        )
    res = model_resolution(predictor, source, options)
    tile = tile_size(predictor, options)
    windows = window_grid(source.width, source.height, tile, overlap=options.overlap, downsample=res.downsample)
    keep = np.ones(len(windows), dtype=bool)
    if options.skip_background is not None:
        if mask is None:
            raise InvalidInput(f"{name}: --skip-background needs the image's foreground mask (ingest it first)")
        fractions = MaskIndex(mask, source.width, source.height).fractions(windows)
        keep = fractions >= options.skip_background if options.skip_background > 0 else fractions > 0
    return WindowPlan(res, tile, windows, keep)


def infer_image(
    predictor: Predictor,
    source: ImageSource,
    *,
    name: str,
    options: InferOptions,
    out_dir: Path,
    image_id: str | None = None,
    mask: np.ndarray | None = None,
    side: dict[str, Any] | None = None,
    progress: Progress | None = None,
    plan: WindowPlan | None = None,
    merge: bool = True,
) -> InferResult:
    """Run ``predictor`` over the planned windows of ``source``; see the module docstring.

    ``plan``: the windows to run (default ``plan_windows``: every foreground window). ``merge=False``
    (detect only) returns the windows' detections unmerged, for a caller that runs parts of one image in
    several processes and merges them all at once (``merge_detections``).
    """
    options.check()
    started = time.monotonic()
    task = predictor.task.name
    if plan is None:
        plan = plan_windows(predictor, source, options, name=name, mask=mask)
    if not merge and task != "detect":
        raise InvalidInput("unmerged partial results (merge=False) are for detect models only")
    res, tile, windows, keep = plan.res, plan.tile, plan.windows, plan.keep
    run = np.nonzero(keep)[0]
    out_dir.mkdir(parents=True, exist_ok=True)
    output = OUTPUTS[task](predictor, plan, options, out_dir, source)
    if isinstance(output, _Detections):
        output.merge = merge
    failed: list[dict[str, Any]] = []
    done = 0
    # a pipeline: reader threads → preprocess thread → model thread → this thread (decode, merge, stitch,
    # progress), each stage a few batches ahead of the next, so the model never waits for NumPy work
    read = stream_windows(source, res, windows[run], tile, batch=options.batch, readers=options.readers)

    def prepare(batch: list[Window]) -> Prepared:
        return _prepare_batch(predictor, batch, run, side, name, options)

    prepared = ahead(read, prepare, depth=STAGE_DEPTH, name="gv-prep")
    ran = ahead(prepared, lambda item: _run_prepared(predictor, item), depth=STAGE_DEPTH, name="gv-model")
    try:
        pending_skips = [int(i) for i in np.nonzero(~keep)[0]]
        skip_at = 0
        for batch, good, outputs in ran:
            failed.extend({"xyxy": list(win.xyxy), "error": win.error} for win in batch if win.error is not None)
            # keep the stitchers' row-major order: a batch spans rows, so the windows skipped (background or
            # unreadable) between its windows are reported in their place, not before or after the batch
            start = stop = 0  # good[start:stop] are read and not yet handed to the output
            for win in batch:
                if skip_at < len(pending_skips) and pending_skips[skip_at] < win.index:
                    start = output.add_slice(good, outputs, start, stop)
                    while skip_at < len(pending_skips) and pending_skips[skip_at] < win.index:
                        output.skip(_box(windows[pending_skips[skip_at]]))
                        skip_at += 1
                if win.error is None:
                    stop += 1
                else:
                    start = output.add_slice(good, outputs, start, stop)
                    output.skip(win.xyxy)
            output.add_slice(good, outputs, start, stop)
            done += len(batch)
            if progress is not None:
                progress(done, len(run), f"{name}: windows")
        for i in pending_skips[skip_at:]:
            output.skip(_box(windows[i]))
        ann, scores, unsure, files = output.finish()
    except BaseException:
        output.abort()
        raise
    finally:
        ran.close()  # stops the stage threads (each after its current batch) and joins them
    ann = predictor.stamp(ann)
    if merge:  # a pipeline's later stages, on the merged boxes (unmerged parts are merged by the caller first)
        ann = predictor.finish_image(ann, source, res)
    boxes = probs = None
    if isinstance(output, _Classes) and output.rows:
        boxes, probs = np.asarray(output.boxes, dtype=np.int64), np.stack(output.rows)
    return InferResult(
        window_boxes=boxes,
        window_probs=probs,
        input=name,
        image_id=image_id,
        model=predictor.info.id,
        task=task,
        width=source.width,
        height=source.height,
        level=res.level,
        downsample=res.downsample,
        tile=tile,
        overlap=options.overlap,
        annotations=ann,
        tiles_total=len(windows),
        tiles_run=len(run) - len(failed),
        tiles_skipped=int((~keep).sum()),
        failed_regions=failed,
        image_scores=scores,
        uncertainty=unsure,
        outputs=files,
        seconds=time.monotonic() - started,
    )


def _box(row: np.ndarray) -> tuple[int, int, int, int]:
    return int(row[0]), int(row[1]), int(row[2]), int(row[3])


Prepared = tuple[list[Window], list[Window], np.ndarray | None, np.ndarray | None]


def _prepare_batch(
    predictor: Predictor,
    batch: list[Window],
    run: np.ndarray,
    side: dict[str, Any] | None,
    name: str,
    options: InferOptions,
) -> Prepared:
    """The preprocess stage: a read batch as (windows, the readable ones, their normalised ``(N, 3, S, S)``
    network input — padded patches or letterboxed windows —, side features). ``batch``'s indices become grid
    indices (``run[i]``); an unreadable window fails the run here (``on_error`` fail), in its batch's turn."""
    from gigavision.images.pixels import to_rgb_uint8

    good = []
    for win in batch:
        win.index = int(run[win.index])
        if win.error is None:
            good.append(win)
        elif options.on_error == "fail":
            raise InvalidImage(f"{name}: window {list(win.xyxy)} could not be read: {win.error}")
    if not good:
        return batch, good, None, None
    size = predictor.size
    squares: list[np.ndarray] = []  # windows of the network's side: normalised together (prepare_batch)
    others: dict[int, np.ndarray] = {}  # smaller (image edge) or bigger (--tile) ones: padded or letterboxed
    for k, win in enumerate(good):
        assert win.pixels is not None
        pixels = to_rgb_uint8(win.pixels)[: win.height, : win.width]
        if pixels.shape[:2] == (size, size):
            squares.append(pixels)
        else:
            others[k] = predictor.prepare(pixels, f"{name} window {list(win.xyxy)}")[0]
        win.pixels = None  # read pixels are not needed past here: only the network input travels on
    if not others:
        x = predictor.prepare_batch(np.stack(squares))
    else:
        x = np.empty((len(good), 3, size, size), dtype=np.float32)
        rest = [k for k in range(len(good)) if k not in others]
        if rest:
            x[rest] = predictor.prepare_batch(np.stack(squares))
        for k, one in others.items():
            x[k] = one
    metas = [side or {}] * len(good) if predictor.side_names else None
    side_batch = predictor.side_batch(metas, [name] * len(good))
    return batch, good, x, side_batch


def _run_prepared(predictor: Predictor, item: Prepared) -> tuple[list[Window], list[Window], list[np.ndarray]]:
    """The model stage: the network's outputs for a prepared batch (none for a batch of unreadable windows)."""
    batch, good, x, side_batch = item
    return batch, good, (predictor.run(x, side_batch) if x is not None else [])
