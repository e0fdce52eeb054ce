"""The one way into prediction: a ``PredictRequest`` → ``resolve`` (against a workspace) → ``plan`` → ``predict``.

``gigavision predict``, ``POST /api/v1/predict`` and the ``predict`` job only translate their inputs into a
``PredictRequest`` and show what comes back, so the same request is refused with the same message
everywhere (CLI: one line and a non-zero exit; REST: 400; job: failed, the message as its error):

1. ``PredictRequest(...)`` checks what needs nothing else: the tiling options (``InferOptions.check``), the
   zoom-in spec, the Dask address, the runtime name, and combinations that cannot run together (``--zoom-in``
   with ``--dask``).
2. ``request.resolve(ws)`` → ``Prediction``: loads the model record (``model`` may be an alias such as
   ``production``: ``models.aliases.resolve`` names the model it points at now) and checks the request
   against it: the expected task, the runtime (``auto``: ONNX when the model has ``model.onnx`` and
   onnxruntime is installed, else torch; ``onnx`` on a model without the file is refused; ``variant`` int8
   runs ``model.int8.onnx``, and a model without one is a NotFound naming the export command), the window side
   of a patch model, the default overlap (64 px, at most a quarter of the window) and the workspace's Dask cluster.
3. ``prediction.plan(source)`` → whole or tiled, and why: tiled when any tiling option is given, the model was
   trained on patches, or the level the whole-image path reads (``images.resolution.whole_level``, as
   ``models.predict.read_for`` does) has more than ``MAX_PREDICT_PIXELS``; a tiled plan checks the level/mpp
   against the image and the task against the tiled engine.
4. ``prediction.predict()`` runs every image the way its plan says — whole (``run.predict_whole``), tiled
   (``run.predict_tiled``, with ``--zoom-in``'s coarse pass) or on Dask workers
   (``distributed.predict_distributed``) — and returns the results in input order.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gigavision.errors import InvalidInput
from gigavision.infer.engine import BATCH, DEFAULT_OVERLAP, OUTPUTS, InferOptions, InferResult, window_side
from gigavision.infer.zoom import ZoomSpec, parse_zoom

if TYPE_CHECKING:
    from gigavision.images.source import ImageSource
    from gigavision.models.predict import PredictItem, Predictor
    from gigavision.models.store import ModelInfo
    from gigavision.progress import Progress
    from gigavision.workspace import Workspace

RUNTIME_CHOICES = ("auto", "torch", "onnx")
MIN_FOREGROUND = 0.05


def task_message(model_id: str, task: str) -> str:
    return (
        f"model {model_id} has task {task!r}; tiled inference runs {', '.join(OUTPUTS)} models"
        f" (a {task} model answers small images whole: send one without tiling options)"
    )


def missing_onnx_message(model_id: str) -> str:
    from gigavision.models.store import ONNX_FILE

    return (
        f"model {model_id} has no {ONNX_FILE}: run 'gigavision export-model {model_id}', or predict with"
        " runtime torch (or auto)"
    )


def engine_task(info: ModelInfo) -> str:
    """The task the engines run for ``info``: its own; a pipeline runs as its detector, then its stages."""
    from gigavision.models.store import PIPELINE

    return "detect" if info.task == PIPELINE else info.task


def resolve_runtime(info: ModelInfo, asked: str, variant: str = "fp32") -> str:
    """``torch`` or ``onnx`` for ``asked`` (``auto``: ONNX when the model has its ONNX file and onnxruntime is
    installed, else torch); ``onnx`` on a model without the file is an ``InvalidInput``. A compressed
    ``variant`` (int8) is an ONNX file: ``auto`` is onnx, ``torch`` is refused, and a model without the
    file is a ``NotFound`` naming the export command (``models.quantize.variant_path``)."""
    if variant != "fp32":
        from gigavision.models.quantize import check_available

        if asked == "torch":
            raise InvalidInput(f"variant {variant} runs on onnxruntime: use runtime onnx or auto, not torch")
        check_available(info, variant)  # a pipeline: each stage's file
        return "onnx"
    has_onnx = info.has_onnx  # a pipeline: every stage's
    if asked == "auto":
        return "onnx" if has_onnx and importlib.util.find_spec("onnxruntime") is not None else "torch"
    if asked == "onnx" and not has_onnx:
        raise InvalidInput(missing_onnx_message(info.id))
    return asked


@dataclass(frozen=True)
class PredictRequest:
    """What to predict and how, as any front end says it. Sizes are pixels at the resolution read.

    ``images``: files or workspace images (id, unique prefix or name). ``task``: the task the model must
    have (a check). ``tile``/``overlap``/``level``/``mpp``/``skip_background``/``zoom``/``dask``: tiling
    options — any of them makes every image tiled; ``tiled``: tile even a small image (a ``predict`` job).
    ``workspace_dask``: run tiled images on the workspace's ``dask`` cluster when none is named (the CLI).
    ``via``: the front end, for messages that name a missing extra. ``variant``: the ONNX file to run,
    ``fp32`` (model.onnx) or ``int8`` (model.int8.onnx, ``export-model --quantize int8``).
    """

    model: str
    images: tuple[str, ...] = ()
    runtime: str = "auto"
    task: str | None = None
    tile: int | None = None
    overlap: int | None = None
    level: int | None = None
    mpp: float | None = None
    batch: int = BATCH
    skip_background: bool = False
    min_foreground: float = MIN_FOREGROUND
    merge: str = "nms"
    merge_threshold: float = 0.5
    min_score: float = 0.3
    on_error: str = "fail"
    side: Mapping[str, float] = field(default_factory=dict)
    zoom: str | None = None
    dask: str | None = None
    workspace_dask: bool = False
    store: bool = False
    out_dir: Path | None = None
    tiled: bool = False
    via: str = "gigavision predict"
    variant: str = "fp32"

    def __post_init__(self) -> None:
        from gigavision.models.quantize import check_variant

        if not self.model:
            raise InvalidInput("name a model id")
        if self.runtime not in RUNTIME_CHOICES:
            raise InvalidInput(f"runtime must be one of {', '.join(RUNTIME_CHOICES)}, got {self.runtime!r}")
        check_variant(self.variant)
        if self.variant != "fp32" and self.runtime == "torch":
            raise InvalidInput(f"variant {self.variant} runs on onnxruntime: use runtime onnx or auto, not torch")
        for key, value in self.side.items():
            if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
                raise InvalidInput(f"side feature {key!r} must be a finite number, got {value!r}")
        self.options(self.overlap if self.overlap is not None else 0).check()
        if self.zoom is not None and self.dask is not None:
            raise InvalidInput("--zoom-in and --dask cannot be combined yet; drop one of them")
        self.zoom_spec()  # a bad spec fails now
        if self.dask is not None:
            from gigavision.infer.distributed import local_workers

            local_workers(self.dask)  # a malformed address fails before anything is read

    # -- what it asks --------------------------------------------------------------------------------------
    @property
    def tiling_asked(self) -> bool:
        """Whether every image is tiled whatever its size."""
        asked = (self.tile, self.overlap, self.level, self.mpp, self.zoom, self.dask)
        return self.tiled or self.skip_background or any(v is not None for v in asked)

    def zoom_spec(self) -> ZoomSpec | None:
        return parse_zoom(self.zoom) if self.zoom is not None else None

    def options(self, overlap: int) -> InferOptions:
        """The engine's options with ``overlap`` (the resolved default when none was given)."""
        return InferOptions(
            tile=self.tile,
            overlap=overlap,
            batch=self.batch,
            level=self.level,
            mpp=self.mpp,
            skip_background=self.min_foreground if self.skip_background else None,
            merge=self.merge,
            merge_threshold=self.merge_threshold,
            min_score=self.min_score,
            on_error=self.on_error,
        )

    def feature(self, what: str) -> str:
        """How a missing-extra message names this request's ``what`` (``runtime onnx``, ``dask``)."""
        return f"{self.via} --{what}" if self.via.startswith("gigavision") else f"{self.via} with {what}"

    def require_extras(self) -> None:
        """Refuse now (``MissingExtra``) what this install cannot run, as far as it is known without the model."""
        from gigavision.extras import require
        from gigavision.models.predict import require_runtime

        if self.runtime != "auto":
            require_runtime(self.runtime, feature=self.feature(f"runtime {self.runtime}"))
        if self.dask is not None:
            require("dask", feature=self.feature("dask"))

    # -- against a workspace -------------------------------------------------------------------------------
    def resolve(self, ws: Workspace | None, info: ModelInfo | None = None) -> Prediction:
        """Check the request against its model (loaded from ``ws`` unless ``info`` is given)."""
        from gigavision.models.predict import require_runtime
        from gigavision.models.store import get_model

        self.require_extras()
        if info is None:
            if ws is None:
                raise InvalidInput(f"model {self.model}: predicting needs a workspace holding the model")
            from gigavision.models.aliases import resolve

            info = get_model(ws, resolve(ws, self.model))  # an alias (production) names the model it points at now
        if self.task is not None and info.task != self.task:
            raise InvalidInput(f"model {info.id} is a {info.task} model, not {self.task}; pick a {self.task} model")
        runtime = resolve_runtime(info, self.runtime, self.variant)
        if self.runtime == "auto":
            require_runtime(runtime, feature=self.feature(f"runtime {runtime}"))
        size = info.input.size
        patch = info.input.patch is not None
        tile = self.tile or size
        overlap = min(DEFAULT_OVERLAP, tile // 4) if self.overlap is None else self.overlap
        options = self.options(overlap)
        window_side(options, size, patch, info.id)
        if (self.tiling_asked or patch) and engine_task(info) not in OUTPUTS:
            raise InvalidInput(task_message(info.id, info.task))
        dask = self.dask
        if dask is None and self.workspace_dask and ws is not None and ws.settings.dask and self.zoom is None:
            dask = ws.settings.dask  # the workspace's cluster (gigavision.toml dask = ...) for tiled runs
        return Prediction(self, ws, info, runtime, options, self.zoom_spec(), dask)


@dataclass(frozen=True)
class Plan:
    """How one image is predicted: whole (one model input) or tiled (window by window), and why."""

    tiled: bool
    reason: str


@dataclass
class PredictOutcome:
    """The results of a request, in input order: ``PredictItem`` (whole) or ``InferResult`` (tiled)."""

    model: str
    runtime: str
    items: list[PredictItem | InferResult]
    stored: dict[str, Any] | None = None  # the whole-image predictions stored (tiled ones count in outputs)
    variant: str = "fp32"

    def as_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"model": self.model, "runtime": self.runtime, "items": [i.as_dict() for i in self.items]}
        if self.variant != "fp32":
            doc["variant"] = self.variant
        if self.stored is not None:
            doc["stored"] = self.stored
        return doc


@dataclass(frozen=True)
class Prediction:
    """A request checked against its model: ready to plan and run."""

    request: PredictRequest
    ws: Workspace | None
    info: ModelInfo
    runtime: str
    options: InferOptions  # the tiled engine's options, the default overlap resolved
    zoom: ZoomSpec | None
    dask: str | None

    @property
    def patch(self) -> bool:
        return self.info.input.patch is not None

    def predictor(self) -> Predictor:
        """The loaded model, from the process's predictor cache."""
        from gigavision.infer.predictors import loaded_predictor

        return loaded_predictor(self.info, self.runtime, batch=self.request.batch, variant=self.request.variant)

    def plan(self, source: ImageSource) -> Plan:
        """Whole or tiled for one opened image (see the module docstring); a tiled plan is checked against
        the image (level, mpp) and the task against the tiled engine."""
        if self.patch:
            plan = Plan(True, f"model {self.info.id} was trained on patches")
        elif self.request.tiling_asked:
            plan = Plan(True, "tiling options")
        else:
            from gigavision.images.resolution import whole_level, whole_pixels
            from gigavision.models.predict import MAX_PREDICT_PIXELS

            size = self.info.input.size
            pixels = whole_pixels(source, size)
            if pixels <= MAX_PREDICT_PIXELS:
                return Plan(False, f"level {whole_level(source, size)} ({pixels:,} pixels) fits a whole-image read")
            plan = Plan(True, f"{source.width}×{source.height} has no level small enough to predict whole")
        if engine_task(self.info) not in OUTPUTS:
            raise InvalidInput(task_message(self.info.id, self.info.task))
        if self.options.level is not None or self.options.mpp is not None:
            from gigavision.infer.reading import resolve_resolution

            resolve_resolution(source, level=self.options.level, mpp=self.options.mpp)
        return plan

    def _plans(self) -> list[bool]:
        """Per image, whether it is tiled: every image is opened and planned before any model is loaded, so a
        bad one (missing, not an image, lacking the level asked) fails the run before any work."""
        from gigavision.models.predict import open_input

        tiled = []
        for item in self.request.images:
            source, _, owned = open_input(self.ws, item)
            try:
                tiled.append(self.plan(source).tiled)
            finally:
                if owned:
                    source.close()
        return tiled

    def predict(self, progress: Progress | None = None) -> PredictOutcome:
        """Predict every image of the request the way its plan says; results in input order."""
        images = list(self.request.images)
        if not images:
            raise InvalidInput("name at least one image file or workspace image id")
        tiled = self._plans()
        whole_items = [item for item, t in zip(images, tiled, strict=True) if not t]
        tiled_items = [item for item, t in zip(images, tiled, strict=True) if t]
        whole: list[PredictItem] = []
        stored = None
        if whole_items:
            whole, stored = self.predict_whole(whole_items)
        many = self.predict_tiled(tiled_items, progress) if tiled_items else []
        by_input: list[PredictItem | InferResult] = []
        whole_iter, tiled_iter = iter(whole), iter(many)
        for t in tiled:
            by_input.append(next(tiled_iter) if t else next(whole_iter))
        return PredictOutcome(self.info.id, self.runtime, by_input, stored, self.request.variant)

    def predict_whole(self, items: list[str]) -> tuple[list[PredictItem], dict[str, Any] | None]:
        """Small images, each whole (``run.predict_whole``); the stored summary with ``store``."""
        from gigavision.infer.run import predict_whole

        r = self.request
        return predict_whole(self.predictor(), items, ws=self.ws, store=r.store, side=dict(r.side))

    def predict_tiled(self, items: list[str], progress: Progress | None = None) -> list[InferResult]:
        """Images window by window: here (with the zoom-in's coarse pass) or on the Dask cluster."""
        r = self.request
        if engine_task(self.info) not in OUTPUTS:
            raise InvalidInput(task_message(self.info.id, self.info.task))
        predictor = self.predictor()
        if self.dask is not None:
            from gigavision.extras import require
            from gigavision.infer.distributed import predict_distributed

            require("dask", feature=r.feature("dask") if r.dask else f"{r.via} (the workspace's dask = {self.dask!r})")

            return predict_distributed(
                predictor,
                items,
                self.options,
                address=self.dask,
                ws=self.ws,
                out_root=r.out_dir,
                store=r.store,
                side=dict(r.side),
                progress=progress,
            )
        from gigavision.infer.run import predict_tiled

        return predict_tiled(
            predictor,
            items,
            self.options,
            ws=self.ws,
            out_root=r.out_dir,
            store=r.store,
            side=dict(r.side),
            progress=progress,
            zoom=self.zoom,
        )
