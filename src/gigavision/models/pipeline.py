"""Pipelines: one model made of stages — a detector, then per detected box a crop classified, embedded or segmented.

Declared in YAML (``gigavision models pipeline create NAME --file pipeline.yaml``)::

    detect: roofs-detect-3            # a detect model: its id, a unique id prefix or an alias (production)
    stages:
      - name: material                # the attribute the stage's answer is stored under
        classify: roof-material-2     # exactly one of classify / embed / segment: a model of that task
        labels: [roof]                # only boxes the detector labels so (default: every box)
        padding: 0.1                  # of the box's width and height, added on each side (default 0)
        min_size: 8                   # boxes narrower or lower than this, in pixels read, are skipped (default 1)
        min_score: 0.3                # boxes the detector scores under this are skipped (default 0.3)
        attribute: material           # the truth attribute ``evaluate`` compares it with (default: name)

Publishing resolves every reference once (an alias names the model it points at now) and copies each stage
model's card, recipe, checkpoint and ONNX file into ``models/NAME/stages/<stage>/`` (the detector's under
``detect``): the pipeline is a model folder of task ``pipeline``, self-contained (removing a stage model or
moving an alias later changes nothing) and served like any model (aliases, ``predict``, the REST endpoint,
jobs). A stage model that is missing, of another task, a pipeline (pipelines do not nest, so none can reach
itself), trained on patches or with side features is refused then, naming the stage.

Running: ``PipelinePredictor`` *is* its detector's ``Predictor`` to the whole-image path and to the tiled
engine, so the boxes are exactly the detector's alone; its ``predict`` (whole images) and ``finish_image``
(the tiled engine, once an image's boxes are merged) then run the stages on crops read where the detector
looked — the pixels it was given, or the image at the resolution the engine read — each crop through the
stage's own ``Predictor`` (its preprocessing, batching and runtime). Per stage that ran on a box, its
``attributes`` get: classify — ``name`` (the label; a list for a multi-label model) and ``name_score``;
embed — ``name``, the vector; segment — ``name`` (the class covering most of the crop), ``name_score`` and
``name_geometry`` (that class's region, GeoJSON in level-0 pixels).
"""

from __future__ import annotations

import copy
import math
import os
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gigavision import files
from gigavision.annotations import PREDICTION_ATTRIBUTES, Annotations
from gigavision.errors import GigavisionError, InvalidInput
from gigavision.models import store
from gigavision.models.card import MODEL_JSON, ModelCard
from gigavision.models.predict import BATCH, Predictor
from gigavision.models.task import BACKGROUND

if TYPE_CHECKING:
    from gigavision.images.resolution import Resolution
    from gigavision.images.source import ImageSource
    from gigavision.workspace import Workspace

PIPELINE = store.PIPELINE
DETECTOR = "detect"  # the detector's stage folder (stages/detect/); no stage may take the name
StageKind = Literal["classify", "embed", "segment"]
STAGE_KINDS: tuple[str, ...] = ("classify", "embed", "segment")
LABELLED = ("classify", "segment")  # stages whose answer is a class: scored by ``evaluate``
DEFAULT_MIN_SCORE = 0.3  # the tiled engine's default: whole and tiled images send the same boxes on
MAX_STAGES = 16
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
_SUFFIXES = ("_score", "_geometry")
STAGE_FILES = (MODEL_JSON, store.RECIPE_JSON, store.CHECKPOINT, store.ONNX_FILE)


# -- the declaration -----------------------------------------------------------------------------------------
class StageSpec(BaseModel):
    """One stage as declared: its name, its model (under the key of its kind) and which boxes it crops how."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    classify: str | None = Field(None, min_length=1)
    embed: str | None = Field(None, min_length=1)
    segment: str | None = Field(None, min_length=1)
    labels: list[str] | None = Field(None, min_length=1, description="only boxes the detector labels so")
    padding: float = Field(0.0, ge=0.0, le=4.0, description="of the box's width/height, added on each side")
    min_size: int = Field(1, ge=1, description="boxes with a side under this many pixels read are skipped")
    min_score: float = Field(DEFAULT_MIN_SCORE, ge=0.0, le=1.0, description="boxes scoring under this are skipped")
    attribute: str | None = Field(None, min_length=1, description="the truth attribute evaluate compares with")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("a stage name is a letter, then letters, digits, '_' or '-' (≤ 64 characters)")
        if value == DETECTOR or value in PREDICTION_ATTRIBUTES:
            raise ValueError(f"{value!r} is reserved ({', '.join((DETECTOR, *PREDICTION_ATTRIBUTES))})")
        return value

    @model_validator(mode="after")
    def _one_model(self) -> StageSpec:
        given = [k for k in STAGE_KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(STAGE_KINDS)} (the stage's model), got {given or 'none'}")
        return self

    @property
    def kind(self) -> StageKind:
        kind: StageKind = "classify" if self.classify is not None else "embed" if self.embed is not None else "segment"
        return kind

    @property
    def ref(self) -> str:
        ref = getattr(self, self.kind)
        assert isinstance(ref, str)  # _one_model: the kind's key holds the reference
        return ref


class PipelineSpec(BaseModel):
    """A pipeline as declared in its YAML file (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    detect: str = Field(min_length=1, description="the detect model: id, unique prefix or alias")
    stages: list[StageSpec] = Field(min_length=1, max_length=MAX_STAGES)

    @model_validator(mode="after")
    def _distinct(self) -> PipelineSpec:
        names = [s.name for s in self.stages]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"stage names must differ (they name the attributes): {', '.join(twice)} twice")
        keys = {f"{n}{suffix}" for n in names for suffix in _SUFFIXES}
        clash = sorted(set(names) & keys)
        if clash:
            raise ValueError(f"stage {clash[0]} would share its attribute with another stage's {clash[0]!r}")
        return self


class Stage(BaseModel):
    """A stage as published (in the pipeline's card): the declaration with the model id the reference named."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    kind: StageKind
    ref: str = Field(description="the reference as declared (an alias, a prefix or the id)")
    model: str = Field(description="the model it named at publish time, copied into stages/<name>/")
    labels: list[str] | None = None
    padding: float = 0.0
    min_size: int = 1
    min_score: float = DEFAULT_MIN_SCORE
    attribute: str | None = None

    @property
    def truth_key(self) -> str:
        return self.attribute or self.name

    def applies_to(self, label: str) -> bool:
        return self.labels is None or label in self.labels


class Pipeline(BaseModel):
    """What a pipeline's ``model.json`` holds under ``pipeline``: the detector and the stages, resolved."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    detect_ref: str
    detector: str
    stages: list[Stage]


def _fields(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "top level"
        msg = "unknown field (check the spelling)" if err["type"] == "extra_forbidden" else err["msg"]
        parts.append(f"{where}: {msg.removeprefix('Value error, ')}")
    return "; ".join(parts)


def parse_spec(data: Any, where: str = "pipeline") -> PipelineSpec:
    """The declaration in ``data`` (parsed YAML or JSON); InvalidInput names ``where`` and each bad field."""
    if not isinstance(data, Mapping):
        raise InvalidInput(f"{where}: the top level must be a mapping with 'detect' and 'stages'")
    try:
        return PipelineSpec.model_validate(dict(data))
    except ValidationError as exc:
        raise InvalidInput(f"{where}: {_fields(exc)}") from exc


def read_spec(path: Path) -> PipelineSpec:
    """The declaration in the YAML (or JSON) file ``path``."""
    import yaml

    where = f"pipeline file {path}"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidInput(f"{where}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{where}: unreadable ({exc})") from exc
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{where}: not valid YAML: {exc}".replace("\n", " ")) from exc
    return parse_spec(data, where)


# -- publishing ----------------------------------------------------------------------------------------------
def _stage_model(ws: Workspace, pipeline: str, stage: str, ref: str, kind: str) -> store.ModelInfo:
    """The published model ``ref`` names, checked to be able to run as stage ``stage`` of kind ``kind``."""
    from gigavision.models.aliases import resolve

    what = f"pipeline {pipeline}: stage {stage}"
    if ref == pipeline:
        raise InvalidInput(f"{what}: refers to the pipeline {pipeline} itself")
    try:
        info = store.get_model(ws, resolve(ws, ref))
    except GigavisionError as exc:  # NotFound, Ambiguous, InvalidInput: the same kind, the stage named
        raise type(exc)(f"{what}: {exc}") from exc
    if info.task == PIPELINE:
        raise InvalidInput(
            f"{what}: model {info.id} is a pipeline; a stage is a trained {kind} model"
            " (pipelines do not nest, so no pipeline can reach itself through another)"
        )
    if info.task != kind:
        raise InvalidInput(f"{what}: model {info.id} is a {info.task} model, not {kind}; name a {kind} model")
    if kind != "detect" and info.input.patch is not None:
        raise InvalidInput(
            f"{what}: model {info.id} was trained on patches; a stage sees whole crops (train it on whole images)"
        )
    if kind != "detect" and info.input.side_features:
        raise InvalidInput(
            f"{what}: model {info.id} takes side features ({', '.join(info.input.side_features)}); crops have none"
        )
    has = {name for name in STAGE_FILES if (info.path / name).is_file()}
    if store.RECIPE_JSON not in has or not has & {store.CHECKPOINT, store.ONNX_FILE}:
        raise InvalidInput(f"{what}: model {info.id} lacks its recipe or its weights (gigavision fsck names them)")
    return info


def _copy_model(info: store.ModelInfo, folder: Path) -> None:
    """The files a ``Predictor`` needs (every ONNX variant too), hard-linked when the file system allows
    (published files never change: a re-export replaces a file by a rename), else copied."""
    folder.mkdir(parents=True)
    onnx = sorted(p.name for p in info.path.glob("*.onnx"))  # model.onnx and any compressed variant of it
    for name in dict.fromkeys([*STAGE_FILES, *onnx]):
        source = info.path / name
        if not source.is_file():
            continue
        try:
            os.link(source, folder / name)
        except OSError:
            shutil.copyfile(source, folder / name)


def publish_pipeline(ws: Workspace, name: str, spec: PipelineSpec) -> store.ModelInfo:
    """Publish ``spec`` as the model ``name`` (task ``pipeline``): every reference resolved and checked, the stage
    models copied in, the folder renamed into ``models/`` whole (see the module docstring)."""
    from gigavision import __version__

    store.check_model_id(name)
    if (store.models_dir(ws) / name).exists():
        raise InvalidInput(f"model {name} already exists; choose another name (gigavision models list)")
    detector = _stage_model(ws, name, DETECTOR, spec.detect, "detect")
    resolved: list[tuple[Stage, store.ModelInfo]] = []
    for s in spec.stages:
        info = _stage_model(ws, name, s.name, s.ref, s.kind)
        unknown = sorted(set(s.labels or ()) - set(detector.classes))
        if unknown:
            raise InvalidInput(
                f"pipeline {name}: stage {s.name}: labels {', '.join(unknown)} are not classes of detector"
                f" {detector.id} ({', '.join(detector.classes[:20])})"
            )
        stage = Stage(
            name=s.name,
            kind=s.kind,
            ref=s.ref,
            model=info.id,
            labels=s.labels,
            padding=s.padding,
            min_size=s.min_size,
            min_score=s.min_score,
            attribute=s.attribute,
        )
        resolved.append((stage, info))
    declared = Pipeline(detect_ref=spec.detect, detector=detector.id, stages=[s for s, _ in resolved])
    staging = files.temp_beside(store.models_dir(ws) / name)
    try:
        _copy_model(detector, staging / store.STAGES_DIR / DETECTOR)
        for stage, info in resolved:
            _copy_model(info, staging / store.STAGES_DIR / stage.name)
        card = ModelCard.model_validate(
            {
                "id": name,
                "task": PIPELINE,
                "arch": " → ".join([DETECTOR, *(s.kind for s in declared.stages)]),
                "classes": detector.classes,
                "dataset": detector.dataset,
                "dataset_hash": detector.card.dataset_hash,
                "input": detector.input.model_dump(mode="json"),
                "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "gigavision_version": __version__,
                "pipeline": declared.model_dump(mode="json"),
            }
        )
        card.write(staging)
        return store.publish(ws, staging, name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone after a publish; a failed one leaves nothing


def read_pipeline(info: store.ModelInfo) -> Pipeline:
    """The stages of the pipeline model ``info``."""
    if info.task != PIPELINE:
        raise InvalidInput(f"model {info.id} is a {info.task} model, not a pipeline")
    try:
        return Pipeline.model_validate((info.card.model_extra or {}).get("pipeline"))
    except ValidationError as exc:
        raise InvalidInput(f"model {info.id}: {MODEL_JSON} holds no valid pipeline ({_fields(exc)})") from exc


def stage_info(info: store.ModelInfo, stage: str) -> store.ModelInfo:
    """The model folder of one stage of the pipeline ``info`` (``DETECTOR`` for its detector)."""
    path = info.path / store.STAGES_DIR / stage
    if not (path / MODEL_JSON).is_file():
        raise InvalidInput(f"model {info.id}: stage {stage} is missing from its folder (gigavision fsck)")
    return store.ModelInfo(path=path, card=ModelCard.read(path))


# -- crops ---------------------------------------------------------------------------------------------------
Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Crops:
    """Where a pipeline reads its crops: the pixels the detector saw, ``width × height`` at ``scale`` level-0
    pixels per pixel (x, y), through ``read`` (a box in those pixels → ``(h, w, bands)``)."""

    width: int
    height: int
    scale: tuple[float, float]
    read: Callable[[Box], np.ndarray]

    def box(self, xyxy: Sequence[float], padding: float, min_size: int) -> Box | None:
        """The crop of a level-0 box: in the pixels read, grown by ``padding`` × its width/height on each side,
        out to whole pixels, clipped to the image; None when a side is under ``min_size`` pixels."""
        sx, sy = self.scale
        x0, y0, x1, y1 = xyxy[0] / sx, xyxy[1] / sy, xyxy[2] / sx, xyxy[3] / sy
        w, h = x1 - x0, y1 - y0
        if w < min_size or h < min_size:
            return None
        px, py = w * padding, h * padding
        box = (
            max(0, math.floor(x0 - px + 1e-6)),
            max(0, math.floor(y0 - py + 1e-6)),
            min(self.width, math.ceil(x1 + px - 1e-6)),
            min(self.height, math.ceil(y1 + py - 1e-6)),
        )
        return box if box[2] > box[0] and box[3] > box[1] else None

    @classmethod
    def of_array(cls, pixels: np.ndarray, size: tuple[int, int]) -> Crops:
        """Crops of ``pixels``, an image of level-0 ``size`` (height, width) read at a coarser level or as is."""
        h, w = int(pixels.shape[0]), int(pixels.shape[1])
        return cls(w, h, (size[1] / w, size[0] / h), lambda b: pixels[b[1] : b[3], b[0] : b[2]])

    @classmethod
    def of_source(cls, source: ImageSource, res: Resolution) -> Crops:
        """Crops of an image read at ``res`` (the tiled engine's resolution: a level, or a scale between levels),
        each reading only the tiles under it."""
        from gigavision.geometry import Region
        from gigavision.tiling.grid import level_extent

        ds = res.downsample
        width, height = level_extent(source.width, source.height, ds)

        def read(b: Box) -> np.ndarray:
            region = Region(
                round(b[0] * ds), round(b[1] * ds), max(1, round((b[2] - b[0]) * ds)), max(1, round((b[3] - b[1]) * ds))
            )
            return source.read_region(region, res.level, downsample=ds, size=(b[2] - b[0], b[3] - b[1]))

        return cls(width, height, (ds, ds), read)


# -- running -------------------------------------------------------------------------------------------------
class PipelinePredictor(Predictor):
    """A pipeline loaded for prediction: its detector's ``Predictor`` (what the whole-image path and the tiled
    engine run), with a ``Predictor`` per stage run on the crops of its boxes. Predictions are stamped with
    the pipeline's id (``model:<pipeline>``)."""

    def __init__(
        self,
        info: store.ModelInfo,
        runtime: str = "torch",
        device: str = "cpu",
        batch: int = BATCH,
        variant: str = "fp32",
    ) -> None:
        self.pipeline = read_pipeline(info)
        super().__init__(stage_info(info, DETECTOR), runtime=runtime, device=device, batch=batch, variant=variant)
        self.detector = self.info
        self.info = info
        self.source_name = f"model:{info.id}"
        self.stages = [
            (
                stage,
                Predictor(stage_info(info, stage.name), runtime=runtime, device=device, batch=batch, variant=variant),
            )
            for stage in self.pipeline.stages
        ]

    def predict(
        self,
        images: Sequence[np.ndarray],
        sizes: Sequence[tuple[int, int]] | None = None,
        names: Sequence[str] | None = None,
        side: Sequence[Mapping[str, Any]] | None = None,
    ) -> list[Annotations]:
        """The detector's boxes per image (``Predictor.predict``), each with the stages' answers on its crop,
        read from the pixels given (the detector's resolution); the crops of all the images in batches."""
        found = super().predict(images, sizes, names, side)
        pairs = []
        for i, (pixels, ann) in enumerate(zip(images, found, strict=True)):
            array = np.asarray(pixels)
            size = (int(sizes[i][0]), int(sizes[i][1])) if sizes is not None else (array.shape[0], array.shape[1])
            pairs.append((ann, Crops.of_array(array, size)))
        return self.run_stages(pairs)

    def finish_image(self, ann: Annotations, source: ImageSource, res: Resolution) -> Annotations:
        """The tiled engine's merged boxes of an image with the stages' answers, crops read at ``res``."""
        return self.run_stages([(ann, Crops.of_source(source, res))])[0]

    def run_stages(self, images: Sequence[tuple[Annotations, Crops]]) -> list[Annotations]:
        """Each image's boxes (level-0 ``Annotations`` and where its crops are read) with each stage's answer in
        the attributes of the boxes it takes; a stage sees the crops of all the images, a batch at a time."""
        answered: list[dict[int, dict[str, Any]]] = [{} for _ in images]  # per image: row -> new attributes
        for stage, predictor in self.stages:
            todo: list[tuple[int, int, Box]] = []  # (image, row, crop box)
            for k, (ann, crops) in enumerate(images):
                take = (ann.kind != "tag") & ~(ann.score < stage.min_score)  # a box without a score is taken
                if stage.labels is not None:
                    take &= np.isin(ann.label, stage.labels)
                for r in np.flatnonzero(take).tolist():
                    box = crops.box(ann.xyxy[r], stage.padding, stage.min_size)
                    if box is not None:
                        todo.append((k, r, box))
            for start in range(0, len(todo), predictor.batch):  # crops in memory: one batch at a time
                part = todo[start : start + predictor.batch]
                pixels = [images[k][1].read(box) for k, _, box in part]
                names = [f"{self.info.id} stage {stage.name}, box {r}" for _, r, _ in part]
                for (k, r, box), answer in zip(part, predictor.predict(pixels, names=names), strict=True):
                    row = answered[k].setdefault(r, dict(images[k][0].attributes[r]))
                    row.update(_answer(stage, predictor, answer, box, images[k][1].scale))
        return [_with_attributes(ann, rows) for (ann, _), rows in zip(images, answered, strict=True)]


def _with_attributes(ann: Annotations, rows: Mapping[int, dict[str, Any]]) -> Annotations:
    """``ann`` with the attributes of ``rows`` replaced (a copy; ``ann`` is left as it was). Only the attribute
    column changes, with mappings as before, so the other columns are not validated again (a whole-image
    detector returns ~100 boxes per image; rebuilding each image's ``Annotations`` cost ~5 % of a pipeline)."""
    if not rows:
        return ann
    column = ann.attributes.copy()
    for r, attrs in rows.items():
        column[r] = attrs
    out = copy.copy(ann)
    out.attributes = column
    return out


def _answer(
    stage: Stage, predictor: Predictor, answer: Annotations, box: Box, scale: tuple[float, float]
) -> dict[str, Any]:
    """A stage's answer on one crop (``box`` in the pixels read) as the box's attributes."""
    name = stage.name
    if stage.kind == "classify":
        labels, scores = [str(v) for v in answer.label], [float(v) for v in answer.score]
        if getattr(predictor.task, "multi_label", False):
            return {name: labels, f"{name}_score": scores}
        return {name: labels[0], f"{name}_score": scores[0]} if labels else {}
    if stage.kind == "embed":
        return {name: list(answer.attributes[0]["embedding"])} if len(answer) else {}
    if not len(answer):  # segment: nothing but background in the crop
        return {name: BACKGROUND}
    import shapely

    k = int(np.argmax(answer.area))
    origin = np.array([box[0], box[1]], dtype=np.float64)
    factor = np.array(scale, dtype=np.float64)
    shape = shapely.transform(answer.shapes()[k], lambda c: (c + origin) * factor)  # crop → level-0 pixels
    geometry = shapely.geometry.mapping(shape)
    return {name: str(answer.label[k]), f"{name}_score": float(answer.score[k]), f"{name}_geometry": geometry}
