"""Model directories: ``<workspace>/models/<id>/``, complete or absent.

Training works in ``<workspace>/runs/<id>/`` (Lightning checkpoints for ``--resume``, logs) and publishes the
finished model with one ``rename`` into ``models/``, so a crash, a kill or a failed export never leaves a
half-written model there. A model directory holds:

- ``model.json``   the model card (``models/card.py``): id, task, arch, label map, input (size, mean, std,
                   patch, side features), dataset version (lineage), headline metric, created time, versions
- ``recipe.json``  the resolved recipe
- ``checkpoint.pt`` the network's ``state_dict`` (loadable with ``torch.load(weights_only=True)``)
- ``model.onnx``   the same network for onnxruntime
- ``model.int8.onnx`` (optional) its int8 copy, ``export-model --quantize int8`` (``models/quantize.py``)
- ``metrics.json`` and ``report.html`` from the test split
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gigavision import files
from gigavision.errors import InvalidInput, NotFound
from gigavision.files import atomic_path, write_text
from gigavision.models.card import MODEL_JSON as MODEL_JSON  # the file name, for readers of a model folder
from gigavision.models.card import ModelCard, ModelInput

if TYPE_CHECKING:
    from torch import nn

    from gigavision.models.recipe import Recipe
    from gigavision.models.task import Task
    from gigavision.workspace import Workspace

RECIPE_JSON = "recipe.json"
CHECKPOINT = "checkpoint.pt"
ONNX_FILE = "model.onnx"
METRICS_JSON = "metrics.json"
REPORT_HTML = "report.html"
PIPELINE = "pipeline"  # the task of a pipeline (models/pipeline.py): stage model folders under stages/<stage>/
STAGES_DIR = "stages"
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def models_dir(ws: Workspace) -> Path:
    path = Path(ws.root) / "models"
    path.mkdir(exist_ok=True)
    return path


def runs_dir(ws: Workspace) -> Path:
    path = Path(ws.root) / "runs"
    path.mkdir(exist_ok=True)
    return path


def check_model_id(model_id: str) -> str:
    if not _ID.match(model_id) or ".." in model_id:
        raise InvalidInput(f"model id {model_id!r} is not valid (letters, digits, '.', '_', '-'; ≤ 128 chars)")
    return model_id


def new_model_id(ws: Workspace, dataset_name: str, task: str) -> str:
    """``<dataset>-<task>-<k>``, k one more than any model or run of that dataset and task."""
    stem = re.sub(r"[^A-Za-z0-9._-]", "-", f"{dataset_name}-{task}")
    taken = {p.name for p in models_dir(ws).iterdir()} | {p.name for p in runs_dir(ws).iterdir()}
    numbers = [int(m.group(1)) for name in taken if (m := re.fullmatch(re.escape(stem) + r"-(\d+)", name))]
    return f"{stem}-{max(numbers, default=0) + 1}"


@dataclass(frozen=True)
class ModelInfo:
    """A published model: its folder and its card (``model.json``), and what predictors and ``evaluate`` need
    to rebuild the network."""

    path: Path
    card: ModelCard

    @property
    def id(self) -> str:
        return self.card.id

    @property
    def task(self) -> str:
        return self.card.task

    @property
    def arch(self) -> str:
        return self.card.arch

    @property
    def classes(self) -> list[str]:
        return self.card.classes

    @property
    def dataset(self) -> str:
        return self.card.dataset

    @property
    def input(self) -> ModelInput:
        return self.card.input

    @property
    def created_at(self) -> str:
        return self.card.created_at

    @property
    def headline(self) -> str | None:
        return self.card.headline

    @property
    def metrics(self) -> dict[str, Any]:
        return dict(self.card.metrics)

    @property
    def has_onnx(self) -> bool:
        """Whether onnxruntime can run it: its ``model.onnx`` (a pipeline: every stage's)."""
        if self.task == PIPELINE:
            stages = [p for p in (self.path / STAGES_DIR).glob("*") if p.is_dir()]
            return bool(stages) and all((p / ONNX_FILE).is_file() for p in stages)
        return (self.path / ONNX_FILE).is_file()

    def as_dict(self) -> dict[str, Any]:
        """The card and the folder's files (``models show --json``, the REST model record)."""
        files = sorted(p.name for p in self.path.iterdir()) if self.path.is_dir() else []
        return {**self.card.as_dict(), "files": files}

    @property
    def recipe_data(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.path / RECIPE_JSON).read_text(encoding="utf-8"))
        return data

    def recipe(self) -> Recipe:
        from gigavision.models.recipe import load_recipe

        return load_recipe(base=self.recipe_data)

    def task_instance(self) -> Task:
        """The task (label map, decode, evaluate; torch-free) with the state it learned besides the weights."""
        from gigavision.models.task import task_class

        task = task_class(self.task)(self.recipe(), self.classes)
        task.load_state(dict(self.card.task_state))
        return task

    def load_network(self, device: str = "cpu") -> tuple[Task, nn.Module]:
        """The task and its network with the model's weights, in eval mode (imports torch)."""
        import torch

        task = self.task_instance()
        net = task.build(init_weights=False)  # the checkpoint replaces them: no pretrained download or file
        path = self.path / CHECKPOINT
        try:
            state = torch.load(path, map_location=device, weights_only=True)
            net.load_state_dict(state.get("state_dict", state))
        except FileNotFoundError as exc:
            raise NotFound(f"model {self.id}: {CHECKPOINT} is missing") from exc
        except Exception as exc:  # truncated or foreign file: name it and the fix
            raise InvalidInput(
                f"model {self.id}: {path.name} is not a readable checkpoint ({type(exc).__name__}: {exc});"
                " retrain the model or restore the file"
            ) from exc
        return task, net.eval().to(device)


def _info(path: Path) -> ModelInfo:
    return ModelInfo(path=path, card=ModelCard.read(path))


def get_model(ws: Workspace, model_id: str) -> ModelInfo:
    """The published model ``model_id``; NotFound lists what exists."""
    check_model_id(model_id)
    path = models_dir(ws) / model_id
    if not (path / MODEL_JSON).is_file():
        known = [p.name for p in sorted(models_dir(ws).iterdir()) if (p / MODEL_JSON).is_file()]
        hint = f"; models: {', '.join(known[:10])}" if known else "; there are no models yet (gigavision train …)"
        raise NotFound(f"no model {model_id!r}{hint}")
    return _info(path)


def list_models(ws: Workspace) -> list[ModelInfo]:
    """Published models, newest first."""
    infos = [_info(p) for p in models_dir(ws).iterdir() if (p / MODEL_JSON).is_file()]
    return sorted(infos, key=lambda m: (m.created_at, m.id), reverse=True)


def output_file(path: Path, default_name: str | None = None) -> Path:
    """The file a user-named output ``path`` (``--out``) stands for, with its folder created.

    An existing folder holds ``default_name`` (without one, a folder is refused); missing parent folders
    are made (``deploy/model.onnx`` without ``deploy/``). A path that cannot be a file (a parent is a file)
    is an ``InvalidInput`` naming it, not a traceback.
    """
    target = path
    if path.is_dir():
        if default_name is None:
            raise InvalidInput(f"{path} is a folder; name a file to write")
        target = path / default_name
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidInput(f"cannot create the folder of {target}: {exc.strerror or exc}") from exc
    return target


def write_json(path: Path, data: Any) -> None:
    """Write JSON through a temporary file and a rename (never a half-written file); the folder is created."""
    write_text(output_file(path), json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def copy_file(source: Path, path: Path) -> Path:
    """Copy ``source`` to ``path`` (``output_file``: a folder gets the source's name) through a temporary file
    and a rename; returns where it went."""
    target = output_file(path, source.name)
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
    return target


def publish(ws: Workspace, staging: Path, model_id: str) -> ModelInfo:
    """Move a complete model folder into ``models/`` in one rename (same file system)."""
    target = models_dir(ws) / check_model_id(model_id)
    if target.exists():
        raise InvalidInput(f"model {model_id} already exists; choose another id")
    files.publish(staging, target)
    return _info(target)


def remove_model(ws: Workspace, model_id: str) -> None:
    info = get_model(ws, model_id)
    trash = info.path.with_name(f".deleting-{info.id}")
    os.replace(info.path, trash)
    shutil.rmtree(trash, ignore_errors=True)
