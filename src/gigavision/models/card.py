"""The model card: ``model.json``, typed. Written once by the trainer, read by the model store.

A card says what a published model is (task, architecture, label map), what it expects as input (square side,
normalisation, patch resolution, side features), where it came from (the dataset version and its content
hash: lineage) and how good it is (the headline metric and the test split's numbers). Files written before
the card existed load unchanged: they have the same keys; optional fields missing from old files take their
defaults, and keys this version does not know are kept (``extra="allow"``) and written back as they were.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gigavision.errors import InvalidInput
from gigavision.models.recipe import PatchConfig

MODEL_JSON = "model.json"


class ModelInput(BaseModel):
    """What the network is fed: a ``size`` square (letterboxed whole images, or ``patch`` windows read at the
    patch's resolution), normalised with ``mean``/``std`` per channel, with ``side_features`` as a second input."""

    model_config = ConfigDict(extra="allow", frozen=True)

    size: int = Field(ge=1)
    mean: tuple[float, ...] = Field(min_length=3, max_length=3)
    std: tuple[float, ...] = Field(min_length=3, max_length=3)
    patch: PatchConfig | None = None
    side_features: list[str] = Field(default_factory=list)


class VariantCard(BaseModel):
    """A compressed copy of the network beside ``model.onnx`` (``gigavision export-model ID --quantize int8``):
    how it was made and what it weighs. ``method``: ``static`` (weights and activations int8, activation
    ranges calibrated on ``calibration_samples`` inputs of the training split) or ``dynamic`` (int8 weights,
    activation ranges computed per batch at run time); ``reason`` says why that method was chosen."""

    model_config = ConfigDict(extra="allow", frozen=True)

    file: str
    method: str
    reason: str
    calibration_samples: int = 0
    calibration_data: str | None = Field(None, description="NAME@N/split the activation ranges were measured on.")
    op_types: list[str] | None = Field(None, description="The operator types quantised (None: every supported one).")
    per_channel: bool = True
    bytes: int
    fp32_bytes: int
    fidelity_db: float | None = Field(
        None, description="Worst output signal-to-quantisation-noise ratio vs model.onnx on the calibration inputs."
    )
    created_at: str
    onnxruntime_version: str | None = None


class ModelCard(BaseModel):
    """The contents of ``model.json``."""

    model_config = ConfigDict(extra="allow", frozen=True)

    id: str
    task: str
    arch: str
    classes: list[str]
    dataset: str = Field(description="The dataset version NAME@N the model was trained on (lineage).")
    dataset_hash: str | None = None
    input: ModelInput
    created_at: str
    headline: str | None = Field(None, description="The metric models are ranked by (higher is better).")
    metrics: dict[str, float | int | str | None] = Field(default_factory=dict)
    evaluated_on: str | None = Field(None, description="The split the metrics come from.")
    task_state: dict[str, Any] = Field(default_factory=dict, description="What Task.state() returned.")
    onnx_max_abs_diff: float | None = None
    variants: dict[str, VariantCard] = Field(
        default_factory=dict, description="Compressed copies of model.onnx by name (int8), from export-model."
    )
    gigavision_version: str | None = None
    train_seconds: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """The JSON document (the card's fields, then any unknown keys an older or newer version wrote);
        ``variants`` only once a model has one, so cards without them stay the documents they were."""
        data = self.model_dump(mode="json")
        if not self.variants:
            data.pop("variants", None)
        return data

    def write(self, folder: Path) -> Path:
        """Write ``folder/model.json`` atomically (temporary file and rename)."""
        from gigavision.models.store import write_json

        path = folder / MODEL_JSON
        write_json(path, self.as_dict())
        return path

    @classmethod
    def read(cls, folder: Path) -> ModelCard:
        """The card of the model folder ``folder``; InvalidInput names the folder and what is wrong."""
        try:
            data = json.loads((folder / MODEL_JSON).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise InvalidInput(f"model {folder.name}: {MODEL_JSON} is unreadable ({exc})") from exc
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            fields = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'card'}: {e['msg']}" for e in exc.errors())
            raise InvalidInput(f"model {folder.name}: {MODEL_JSON} is not a model card ({fields})") from exc
