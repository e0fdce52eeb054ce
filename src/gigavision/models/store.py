"""Model directories: ``<workspace>/models/<id>/``, complete or absent.

Training works in ``<workspace>/runs/<id>/`` (Lightning checkpoints for ``--resume``, logs) and publishes the
finished model with one ``rename`` into ``models/``, so a crash, a kill or a failed export never leaves a
half-written model there. A model directory holds:

- ``model.json``   id, task, arch, label map, input (size, mean, std, patch), dataset version (lineage),
                   headline metric, created time, gigavision version
- ``recipe.json``  the resolved recipe
- ``checkpoint.pt`` the network's ``state_dict`` (loadable with ``torch.load(weights_only=True)``)
- ``model.onnx``   the same network for onnxruntime
- ``metrics.json`` and ``report.html`` from the test split
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gigavision.errors import InvalidInput, NotFound

if TYPE_CHECKING:
    from torch import nn

    from gigavision.models.task import Task
    from gigavision.train.recipe import Recipe
    from gigavision.workspace import Workspace

MODEL_JSON = "model.json"
RECIPE_JSON = "recipe.json"
CHECKPOINT = "checkpoint.pt"
ONNX_FILE = "model.onnx"
METRICS_JSON = "metrics.json"
REPORT_HTML = "report.html"
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


@dataclass
class ModelInfo:
    """What ``models list/show`` prints and what predictors and ``evaluate`` need to rebuild the network."""

    id: str
    path: Path
    task: str
    arch: str
    classes: list[str]
    dataset: str
    input: dict[str, Any]
    created_at: str
    headline: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "task": self.task,
            "arch": self.arch,
            "classes": self.classes,
            "dataset": self.dataset,
            "input": self.input,
            "created_at": self.created_at,
            "headline": self.headline,
            "metrics": self.metrics,
            "files": sorted(p.name for p in self.path.iterdir()) if self.path.is_dir() else [],
            **self.extra,
        }

    @property
    def recipe_data(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.path / RECIPE_JSON).read_text(encoding="utf-8"))
        return data

    def recipe(self) -> Recipe:
        from gigavision.train.recipe import load_recipe

        return load_recipe(base=self.recipe_data)

    def task_instance(self) -> Task:
        from gigavision.models.task import task_class

        task = task_class(self.task)(self.recipe(), self.classes)
        task.load_state(dict(self.extra.get("task_state") or {}))
        return task

    def load_network(self, device: str = "cpu") -> tuple[Task, nn.Module]:
        """The task and its network with the model's weights, in eval mode."""
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
    try:
        data = json.loads((path / MODEL_JSON).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"model {path.name}: {MODEL_JSON} is unreadable ({exc})") from exc
    known = {"id", "task", "arch", "classes", "dataset", "input", "created_at", "headline", "metrics"}
    return ModelInfo(
        id=data["id"],
        path=path,
        task=data["task"],
        arch=data["arch"],
        classes=list(data["classes"]),
        dataset=data["dataset"],
        input=dict(data["input"]),
        created_at=data["created_at"],
        headline=data.get("headline"),
        metrics=dict(data.get("metrics") or {}),
        extra={k: v for k, v in data.items() if k not in known},
    )


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
    path = output_file(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def copy_file(source: Path, path: Path) -> Path:
    """Copy ``source`` to ``path`` (``output_file``: a folder gets the source's name) through a temporary file
    and a rename; returns where it went."""
    target = output_file(path, source.name)
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.copyfile(source, tmp)
    os.replace(tmp, target)
    return target


def publish(ws: Workspace, staging: Path, model_id: str) -> ModelInfo:
    """Move a complete model folder into ``models/`` in one rename (same file system)."""
    target = models_dir(ws) / check_model_id(model_id)
    if target.exists():
        raise InvalidInput(f"model {model_id} already exists; choose another id")
    os.replace(staging, target)
    return _info(target)


def remove_model(ws: Workspace, model_id: str) -> None:
    info = get_model(ws, model_id)
    trash = info.path.with_name(f".deleting-{info.id}")
    os.replace(info.path, trash)
    shutil.rmtree(trash, ignore_errors=True)
