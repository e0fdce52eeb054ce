"""model.json as a typed card: files written before the card existed still load, and the card round-trips."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import gigavision as gv
from gigavision.errors import InvalidInput
from gigavision.models import store
from gigavision.models.card import ModelCard

# what train/trainer.py wrote before the card (a dict literal), key for key, for a patch classifier
OLD_LAYOUT = {
    "id": "slides-classify-3",
    "task": "classify",
    "arch": "resnet18",
    "classes": ["background", "tumour"],
    "dataset": "slides@2",
    "dataset_hash": "9f2c1e",
    "input": {
        "size": 64,
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "patch": {
            "size": 64,
            "level": 1,
            "mpp": None,
            "sampler": "balanced",
            "per_epoch": 512,
            "min_foreground": 0.5,
            "min_visible": 0.25,
        },
        "side_features": ["age"],
    },
    "created_at": "2026-11-02T10:00:00+00:00",
    "headline": "balanced_accuracy",
    "metrics": {"accuracy": 0.9, "balanced_accuracy": 0.85, "roc_auc": None, "n_samples": 40},
    "evaluated_on": "test",
    "task_state": {"thresholds": [0.4, 0.6]},
    "onnx_max_abs_diff": 2.5e-7,
    "gigavision_version": "0.1.0",
    "train_seconds": 12.5,
}


def _publish(ws: gv.Workspace, record: dict[str, object]) -> Path:
    folder = store.models_dir(ws) / str(record["id"])
    folder.mkdir()
    (folder / "model.json").write_text(json.dumps(record), encoding="utf-8")
    return folder


def test_a_model_json_in_the_old_layout_loads_with_typed_fields(sqlite_workspace: gv.Workspace) -> None:
    ws = sqlite_workspace
    folder = _publish(ws, {**OLD_LAYOUT, "future_field": {"kept": True}})
    info = store.get_model(ws, "slides-classify-3")
    assert (info.id, info.task, info.arch, info.dataset) == ("slides-classify-3", "classify", "resnet18", "slides@2")
    assert info.input.size == 64 and info.input.mean == (0.485, 0.456, 0.406)
    assert info.input.patch is not None and (info.input.patch.level, info.input.patch.sampler) == (1, "balanced")
    assert info.input.side_features == ["age"]
    assert info.card.task_state == {"thresholds": [0.4, 0.6]} and info.card.evaluated_on == "test"
    assert info.headline == "balanced_accuracy" and info.metrics["balanced_accuracy"] == 0.85
    # models show --json and the REST record: the same document as the file, plus the folder's files
    assert info.as_dict() == {**OLD_LAYOUT, "future_field": {"kept": True}, "files": ["model.json"]}

    # written back, the card is the same document (unknown keys kept)
    info.card.write(folder)
    assert json.loads((folder / "model.json").read_text()) == {**OLD_LAYOUT, "future_field": {"kept": True}}
    assert ModelCard.read(folder) == info.card


def test_a_minimal_old_card_takes_defaults_and_a_broken_one_is_named(sqlite_workspace: gv.Workspace) -> None:
    ws = sqlite_workspace
    minimal = {k: OLD_LAYOUT[k] for k in ("id", "task", "arch", "classes", "dataset", "created_at")}
    _publish(ws, {**minimal, "input": {"size": 32, "mean": [0.5] * 3, "std": [0.25] * 3}})
    info = store.get_model(ws, "slides-classify-3")
    assert info.input.patch is None and info.input.side_features == [] and info.headline is None
    assert info.card.task_state == {} and info.metrics == {}

    broken = store.models_dir(ws) / "broken-1"
    broken.mkdir()
    (broken / "model.json").write_text(json.dumps({**minimal, "id": "broken-1", "input": {"size": "big"}}))
    with pytest.raises(InvalidInput, match=r"model broken-1: model.json is not a model card \(input.size"):
        store.get_model(ws, "broken-1")
