"""Training recipes: one pydantic model, read from TOML/YAML, overridden by CLI options, saved resolved.

Unknown fields and wrong types are errors that name the field (``extra="forbid"``), so a typo in a recipe
never trains silently with a default. The resolved recipe (file + overrides + defaults) is written next to the
model (``recipe.json``), so a model can always be retrained exactly. Recipes live here, below training, because
a published model's task is rebuilt from its recipe by code that must not import training (deployment).
"""

from __future__ import annotations

import json
import math
import statistics
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gigavision.errors import InvalidInput

TaskName = Literal["classify", "detect", "segment", "embed", "probe"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PatchConfig(_Strict):
    """Train on patches read from the pyramid instead of whole images (big images, slides, scenes)."""

    size: int = Field(256, ge=16, le=4096, description="Patch side in pixels at the sampled resolution.")
    level: int | None = Field(None, ge=0, description="Pyramid level to read (default 0 unless mpp is set).")
    mpp: float | None = Field(None, gt=0, description="Microns per patch pixel (alternative to level).")
    sampler: Literal["random", "balanced", "centred", "grid"] = Field(
        "random", description="Where training patches come from (validation and test always use the grid)."
    )
    per_epoch: int = Field(512, ge=1, description="Training patches per epoch (random and balanced samplers).")
    min_foreground: float = Field(0.5, ge=0.0, le=1.0, description="Random sampler: least foreground fraction.")
    min_visible: float = Field(0.25, ge=0.0, le=1.0, description="Drop objects cut by the patch edge below this.")

    @model_validator(mode="after")
    def _one_resolution(self) -> PatchConfig:
        if self.level is not None and self.mpp is not None:
            raise ValueError("give patch.level or patch.mpp, not both")
        return self


class AugmentConfig(_Strict):
    """Training-time augmentation (torchvision.transforms.v2; boxes and masks follow the image)."""

    hflip: bool = True
    vflip: bool = False
    rotate90: bool = False
    scale: tuple[float, float] = Field((1.0, 1.0), description="Random resized crop scale range (1,1 = off).")
    color: float = Field(0.0, ge=0.0, le=1.0, description="Brightness/contrast/saturation jitter strength.")
    stain: float = Field(0.0, ge=0.0, le=1.0, description="H&E stain jitter strength (pathology).")

    @field_validator("scale")
    @classmethod
    def _scale(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 < v[0] <= v[1] <= 1:
            raise ValueError("scale must be (low, high) with 0 < low <= high <= 1")
        return v


class Recipe(_Strict):
    """Everything that decides a training run. Defaults suit a small dataset on a CPU."""

    task: TaskName
    dataset: str = Field(description="Dataset version NAME@N (NAME alone: the latest version).")
    arch: str | None = Field(None, description="Backbone/architecture; default: the task's default.")
    pretrained: bool = Field(False, description="Start from the library's pretrained weights (must be cached).")
    weights: str | None = Field(None, description="Local weights file (safetensors or a weights_only checkpoint).")
    image_size: int | None = Field(
        None,
        ge=8,
        le=4096,
        description="Whole images are letterboxed to this square side; default: derived from the dataset when "
        "training starts (the median longest image side rounded up to a multiple of 32, within 32..224; "
        "patch.size with patches).",
    )
    epochs: int = Field(10, ge=1, le=10_000)
    batch_size: int = Field(32, ge=1, le=4096)
    lr: float = Field(1e-3, gt=0, le=10)
    weight_decay: float = Field(1e-4, ge=0)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    warmup_epochs: int = Field(0, ge=0)
    patience: int | None = Field(None, ge=1, description="Early stopping: epochs without improvement.")
    seed: int = 0
    devices: int = Field(1, ge=1, description="GPUs to use (DDP when > 1); CPU runs use one process.")
    accelerator: Literal["auto", "cpu", "gpu"] = "auto"
    precision: Literal["32", "16-mixed", "bf16-mixed"] = "32"
    num_workers: int = Field(0, ge=0, le=64, description="DataLoader worker processes.")
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"
    augment: AugmentConfig = AugmentConfig()
    patch: PatchConfig | None = None
    # classify
    multi_label: bool = Field(False, description="classify: an image may carry several classes (sigmoid).")
    loss: Literal["ce", "focal"] = Field("ce", description="classify: cross-entropy or focal loss.")
    class_weights: bool = Field(False, description="classify: weight classes by inverse frequency.")
    center_loss: float = Field(0.0, ge=0.0, description="classify: weight of the center loss (0 = off).")
    side_features: list[str] = Field(
        default_factory=list,
        max_length=256,
        description="classify: numeric image metadata keys fused with the image embedding (e.g. md, psd).",
    )
    # embed
    embedding_dim: int = Field(128, ge=2, le=4096, description="embed: output dimension.")
    margin: float = Field(0.2, gt=0, description="embed: triplet margin.")
    # detect / segment
    score_threshold: float = Field(0.05, ge=0.0, le=1.0, description="detect: keep detections above this score.")
    # probe
    backbone_model: str | None = Field(None, description="probe: a trained model id whose backbone to use.")

    @field_validator("dataset")
    @classmethod
    def _dataset(cls, v: str) -> str:
        if not v or v.strip() != v:
            raise ValueError("dataset must be NAME or NAME@N")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Recipe:
        if self.multi_label and self.task != "classify":
            raise ValueError("multi_label is a classify option")
        if self.side_features and self.task != "classify":
            raise ValueError("side_features is a classify option")
        if len(set(self.side_features)) != len(self.side_features) or not all(self.side_features):
            raise ValueError("side_features must be distinct, non-empty metadata keys")
        return self

    def resolved(self) -> dict[str, Any]:
        """Every field, defaults included (what is saved next to the model)."""
        return self.model_dump(mode="json")

    @property
    def input_size(self) -> int:
        """The network's square input side: ``patch.size`` with patches, else ``image_size``."""
        if self.patch is not None:
            return self.patch.size
        if self.image_size is None:
            raise InvalidInput(
                "image_size is not set: training derives it from the dataset (resolve_image_size); "
                "set image_size to build a task outside training"
            )
        return self.image_size


IMAGE_SIZE_STEP = 32  # derived sizes are multiples of 32 (segmentation encoders downsample 32×)
IMAGE_SIZE_MIN = 32
IMAGE_SIZE_MAX = 224  # ImageNet's side: big photos are still letterboxed to it unless image_size says otherwise


def image_size_for(sides: Iterable[int]) -> int:
    """The default ``image_size`` for images whose longest sides are ``sides`` (level-0 pixels): the median,
    rounded up to a multiple of 32 (small images are never shrunk), within 32..224. 8-pixel digits train at
    32, 100-pixel crops at 128, phone photos at 224. No images: 224."""
    values = [int(v) for v in sides]
    if not values:
        return IMAGE_SIZE_MAX
    stepped = math.ceil(statistics.median(values) / IMAGE_SIZE_STEP) * IMAGE_SIZE_STEP
    return min(IMAGE_SIZE_MAX, max(IMAGE_SIZE_MIN, stepped))


def resolve_image_size(recipe: Recipe, sides: Iterable[int]) -> Recipe:
    """``recipe`` with ``image_size`` decided: as set; ``patch.size`` when training on patches; else
    ``image_size_for(sides)`` over the longest sides of the training images. The one place the default is
    decided (train, sweep trials and the REST train job all go through ``train``)."""
    if recipe.image_size is not None:
        return recipe
    size = recipe.patch.size if recipe.patch is not None else image_size_for(sides)
    return recipe.model_copy(update={"image_size": size})


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise InvalidInput(f"recipe {path}: no such file")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".toml":
            data: Any = tomllib.loads(text)
        elif path.suffix.lower() in {".yaml", ".yml"}:
            data = yaml.safe_load(text)
        elif path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            raise InvalidInput(f"recipe {path}: use .toml, .yaml/.yml or .json")
    except (tomllib.TOMLDecodeError, yaml.YAMLError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"recipe {path}: not valid {path.suffix[1:].upper()}: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InvalidInput(f"recipe {path}: the top level must be a table of fields")
    return data


def _describe(exc: ValidationError, where: str) -> str:
    parts = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "recipe"
        msg = "unknown field (check the spelling)" if err["type"] == "extra_forbidden" else err["msg"]
        parts.append(f"{field}: {msg}")
    return f"{where}: " + "; ".join(parts)


def set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    """``data["a"]["b"] = value`` for ``dotted="a.b"`` (creating tables on the way)."""
    keys = dotted.split(".")
    for key in keys[:-1]:
        node = data.setdefault(key, {})
        if not isinstance(node, dict):
            raise InvalidInput(f"recipe override {dotted}: {key} is not a table")
        data = node
    data[keys[-1]] = value


def parse_assignment(text: str) -> tuple[str, Any]:
    """``--set key=value``: the value is read as YAML (numbers, booleans, lists), else kept as text."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise InvalidInput(f"--set {text!r}: expected FIELD=VALUE (e.g. lr=0.01 or augment.vflip=true)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def load_recipe(
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    base: Mapping[str, Any] | None = None,
) -> Recipe:
    """Recipe from ``base`` (e.g. a resumed run), then a file, then ``overrides`` (dotted keys, None = unset)."""
    data: dict[str, Any] = json.loads(json.dumps(dict(base))) if base else {}
    where = "recipe"
    if path is not None:
        where = f"recipe {path}"
        for key, value in _read(Path(path)).items():
            data[key] = value
    for key, value in (overrides or {}).items():
        if value is not None:
            set_path(data, key, value)
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(_describe(exc, where)) from exc
