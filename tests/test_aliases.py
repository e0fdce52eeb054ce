"""Model aliases: set / promote / rollback / remove and their history, resolving a name, predicting by alias
through the CLI and REST (a promotion changes the next request's model, no restart), refusals of a model of
another label set or task, and two promotions decided on the same alias version (the second is a 409)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

import gigavision as gv
from gigavision.cli.main import main
from gigavision.errors import Conflict, InvalidInput, NotFound
from gigavision.models import aliases, store
from gigavision.server.main import create_app
from tests.realdata import digits_version
from tests.seeding import TRAIN_SEED

TINY = {"task": "classify", "dataset": "digits@1", "arch": "test_resnet", "image_size": 16, "epochs": 1}


def _clone(ws: gv.Workspace, info: store.ModelInfo, model_id: str, **card: object) -> store.ModelInfo:
    """A copy of ``info`` under another id (and other card fields): a second model without a second training."""
    folder = store.models_dir(ws) / model_id
    shutil.copytree(info.path, folder)
    info.card.model_copy(update={"id": model_id, **card}).write(folder)
    return store.get_model(ws, model_id)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[gv.Workspace, list[str]]]:
    """One tiny digits classifier (about a second of training) and clones: b (same label set), odd (another
    label set), det (another task)."""
    from gigavision.train.recipe import load_recipe
    from gigavision.train.trainer import train

    root = tmp_path_factory.mktemp("aliases")
    ws = gv.init_workspace(root / "ws")
    digits_version(ws, root / "digits", limit=40)
    a = train(ws, load_recipe(overrides={**TINY, "seed": TRAIN_SEED}), model_id="digits-a")
    _clone(ws, a, "digits-b")
    _clone(ws, a, "odd", classes=[*a.classes[:-1], "eleven"])
    _clone(ws, a, "det", task="detect")
    yield ws, sorted(p.name for p in store.models_dir(ws).iterdir())
    ws.close()


def test_set_promote_rollback_remove_and_history(models: tuple[gv.Workspace, list[str]]) -> None:
    ws, _ = models
    aliases.set_alias(ws, "staging", "digits-a", actor="ana")
    assert aliases.resolve(ws, "staging") == "digits-a"
    assert aliases.resolve(ws, "digits-b") == "digits-b" and aliases.resolve(ws, "digits-a") == "digits-a"
    moved = aliases.promote(ws, "staging", "digits-b", actor="lee", reason="better", evidence={"accuracy": [0.8, 0.9]})
    assert (moved.model_id, moved.version) == ("digits-b", 2)
    assert aliases.resolve(ws, "staging") == "digits-b"
    with pytest.raises(InvalidInput, match="already points at model digits-b"):
        aliases.promote(ws, "staging", "digits-b", actor="lee")
    back = aliases.rollback(ws, "staging", actor="ana", reason="regression")
    assert (back.model_id, back.version) == ("digits-a", 3)
    with pytest.raises(InvalidInput, match="no earlier model to roll back to"):
        aliases.rollback(ws, "staging", actor="ana")  # the stack: a <- b rolled back leaves a alone
    events = aliases.history(ws, "staging")
    assert [(e.action, e.model_id, e.previous_model_id, e.actor) for e in events] == [
        ("rollback", "digits-a", "digits-b", "ana"),
        ("promote", "digits-b", "digits-a", "lee"),
        ("set", "digits-a", None, "ana"),
    ]
    assert events[1].evidence == {"accuracy": [0.8, 0.9]} and events[1].reason == "better"
    assert aliases.lineage(ws, "digits-a")["aliases"] == ["staging"]
    assert aliases.lineage(ws, "digits-a")["dataset"]["ref"] == "digits@1"

    aliases.remove(ws, "staging", actor="ana")
    with pytest.raises(NotFound, match="no model 'staging'"):
        aliases.resolve(ws, "staging")
    assert aliases.history(ws, "staging")[0].action == "remove"  # the history stays
    with pytest.raises(InvalidInput, match="is not valid"):
        aliases.set_alias(ws, "../x", "digits-a", actor="ana")
    with pytest.raises(InvalidInput, match="would hide the model"):
        aliases.set_alias(ws, "digits-b", "digits-a", actor="ana")


def test_promote_refuses_another_label_set_or_task(models: tuple[gv.Workspace, list[str]]) -> None:
    ws, _ = models
    aliases.set_alias(ws, "qa", "digits-a", actor="ana")
    with pytest.raises(InvalidInput, match=r"odd was trained on another label set .*adds eleven; lacks 9"):
        aliases.promote(ws, "qa", "odd", actor="ana")
    with pytest.raises(InvalidInput, match="det is a detect model; alias qa serves classify"):
        aliases.promote(ws, "qa", "det", actor="ana")
    with pytest.raises(InvalidInput, match="another label set"):
        aliases.set_alias(ws, "qa", "odd", actor="ana")
    assert aliases.set_alias(ws, "qa", "odd", actor="ana", force=True).model_id == "odd"  # deliberate
    assert aliases.history(ws, "qa")[0].action == "set"


def test_predict_by_alias_follows_a_promotion_and_concurrent_moves_conflict(
    models: tuple[gv.Workspace, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    ws, _ = models
    from gigavision.datasets.versions import open_version

    image_id = next(open_version(ws, "digits@1").images("test")).id
    assert main(["-w", str(ws.root), "models", "alias", "set", "production", "digits-a", "--json"]) == 0
    capsys.readouterr()
    assert main(["-w", str(ws.root), "predict", "production", image_id, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["model"] == "digits-a" and doc["items"][0]["annotations"][0]["source"] == "model:digits-a"

    with TestClient(create_app(ws)) as client:
        first = client.post("/api/v1/predict", json={"model": "production", "image_id": image_id})
        assert first.status_code == 200 and first.json()["model"] == "digits-a"
        current = client.get("/api/v1/aliases/production").json()
        assert current["version"] == 1 and current["lineage"]["dataset"]["ref"] == "digits@1"
        labels = current["lineage"]["dataset"]["labels"]  # who made the labels the served model learned from
        assert labels["complete"] and sum(labels["by_source"].values()) == current["lineage"]["dataset"]["annotations"]

        # two managers decide on version 1 at the same time: the first promotion wins, the second is a 409
        won = client.post("/api/v1/aliases/production/promote", json={"model": "digits-b", "version": 1})
        assert won.status_code == 200 and won.json()["version"] == 2
        lost = client.post("/api/v1/aliases/production/promote", json={"model": "odd", "version": 1})
        assert lost.status_code == 409
        assert "no longer at version 1: it points at digits-b (version 2)" in lost.json()["error"]["message"]

        after = client.post("/api/v1/predict", json={"model": "production", "image_id": image_id})
        assert after.json()["model"] == "digits-b"  # the next request, same server: the promoted model
        bad = client.post("/api/v1/aliases/production/promote", json={"model": "det"})
        assert bad.status_code == 400 and "is a detect model" in bad.json()["error"]["message"]
        back = client.post("/api/v1/aliases/production/rollback", json={"reason": "drift"})
        assert back.status_code == 200 and back.json()["model"] == "digits-a"
        history = client.get("/api/v1/aliases/production/history").json()["items"]
        assert [h["action"] for h in history] == ["rollback", "promote", "set"]
        listed = client.get("/api/v1/aliases").json()["items"]
        assert {(x["name"], x["model"]) for x in listed} >= {("production", "digits-a")}

    assert main(["-w", str(ws.root), "models", "list", "--json"]) == 0
    served = {m["id"]: m["aliases"] for m in json.loads(capsys.readouterr().out)["items"]}
    assert "production" in served["digits-a"] and served["digits-b"] == []
    assert main(["-w", str(ws.root), "models", "promote", "odd", "--alias", "production"]) == 2
    assert "another label set" in capsys.readouterr().err
    assert main(["-w", str(ws.root), "predict", "nosuchalias", image_id]) != 0
    capsys.readouterr()
    assert main(["-w", str(ws.root), "models", "remove", "digits-a"]) != 0  # nothing lost: production serves it
    assert "served by alias production" in capsys.readouterr().err
    assert (store.models_dir(ws) / "digits-a").is_dir()


def test_resolve_prefixes_and_a_promotion_racing_another(
    models: tuple[gv.Workspace, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    ws, _ = models
    assert aliases.resolve(ws, "od") == "odd"
    with pytest.raises(InvalidInput, match="fits 2 models"):
        aliases.resolve(ws, "digits-")
    aliases.set_alias(ws, "race", "digits-a", actor="ana")
    checked = aliases._target

    def slow_check(*args: object, **kwargs: object) -> store.ModelInfo:
        """While this promotion checks its model, another one lands (as from a second server process)."""
        monkeypatch.setattr(aliases, "_target", checked)
        aliases.promote(ws, "race", "digits-b", actor="lee")
        return checked(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(aliases, "_target", slow_check)
    with pytest.raises(Conflict, match="race moved while this change was made: it points at digits-b"):
        aliases.set_alias(ws, "race", "odd", actor="ana", force=True)
    assert aliases.resolve(ws, "race") == "digits-b"
    assert [e.actor for e in aliases.history(ws, "race")] == ["lee", "ana"]


def _card(ws: gv.Workspace, model_id: str, classes: list[str], task: str = "classify") -> None:
    """A model folder holding only its card: enough for aliases, which never load weights."""
    from gigavision.models.card import ModelCard, ModelInput

    folder = store.models_dir(ws) / model_id
    folder.mkdir()
    ModelCard(
        id=model_id,
        task=task,
        arch="test_resnet",
        classes=classes,
        dataset="digits@1",
        input=ModelInput(size=16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
        created_at="2026-01-01T00:00:00+00:00",
    ).write(folder)


def test_alias_moves_on_sqlite_and_postgresql(workspace: gv.Workspace) -> None:
    ws = workspace
    for model_id in ("m1", "m2", "m3"):
        _card(ws, model_id, ["cat", "dog"])
    _card(ws, "birds", ["cat", "dog", "bird"])
    aliases.set_alias(ws, "production", "m1", actor="ana")
    aliases.promote(ws, "production", "m2", actor="ana", evidence={"difference": 0.1})
    aliases.promote(ws, "production", "m3", actor="lee", expected_version=2)
    with pytest.raises(Conflict, match=r"no longer at version 2: it points at m3 \(version 3\)"):
        aliases.promote(ws, "production", "m1", actor="bo", expected_version=2)
    with pytest.raises(InvalidInput, match="adds bird"):
        aliases.promote(ws, "production", "birds", actor="bo")
    assert aliases.rollback(ws, "production", actor="ana").model_id == "m2"
    assert aliases.rollback(ws, "production", actor="ana").model_id == "m1"
    assert [e.action for e in aliases.history(ws, "production")] == [
        "rollback",
        "rollback",
        "promote",
        "promote",
        "set",
    ]
    assert aliases.history(ws, "production")[3].evidence == {"difference": 0.1}
    assert aliases.get_alias(ws, "production").version == 5
    aliases.remove(ws, "production", actor="ana", expected_version=5)
    assert aliases.list_aliases(ws) == []
