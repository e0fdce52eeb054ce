"""Retraining loops: the paired bootstrap on hand-made samples, a loop round on real digits (new labels ->
next version -> train -> compare on the same test split -> promote), a dataset without a test split, and
rounds a job consumer starts on its own (its periodic check, called directly: no waiting)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import gigavision as gv
from gigavision.active import loop
from gigavision.cli.main import main
from gigavision.datasets.versions import open_version
from gigavision.errors import Conflict, InvalidInput
from gigavision.metrics.bootstrap import classification_bootstrap, paired_bootstrap
from gigavision.models import aliases, store
from gigavision.server.main import create_app
from tests.realdata import digit_images, ingest_tagged
from tests.seeding import TRAIN_SEED

# test_resnet at 16 px, 8 epochs: about 1 s of CPU per training on these few hundred digits. Trained on the
# ~42 training images of 60 digits it reaches about 0.3 test accuracy; on the ~150 of 220 digits, about 1.0.
RECIPE = {
    "task": "classify",
    "arch": "test_resnet",
    "image_size": 16,
    "epochs": 8,
    "batch_size": 32,
    "lr": 1e-2,
    "augment.hflip": False,
    "seed": TRAIN_SEED,
}


# -- the paired bootstrap -----------------------------------------------------------------------------------
def _labels(correct: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Predictions that are right where ``correct`` and the next class elsewhere."""
    return np.where(correct, y, (y + 1) % 10)


def test_bootstrap_a_clear_win_lies_above_zero() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 10, 300)
    base = _labels(rng.random(300) < 0.5, y)
    cand = _labels(rng.random(300) < 0.9, y)
    for metric in ("accuracy", "balanced_accuracy", "macro_f1"):
        r = classification_bootstrap(y, base, cand, metric=metric, resamples=1000, seed=3)
        assert 0.25 < r.difference < 0.55 and 0 < r.low < r.difference < r.high, (metric, r)
        assert r.p_better == 1.0
    from sklearn.metrics import accuracy_score, f1_score

    r = classification_bootstrap(y, base, cand, metric="macro_f1", resamples=10)
    assert r.baseline == pytest.approx(f1_score(y, base, average="macro"))
    assert r.candidate == pytest.approx(f1_score(y, cand, average="macro"))
    acc = classification_bootstrap(y, base, cand, resamples=10)
    assert acc.baseline == pytest.approx(accuracy_score(y, base))


def test_bootstrap_no_difference_contains_zero_and_is_seeded() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 10, 200)
    right = np.zeros(200, dtype=bool)
    right[:120] = True
    other = np.roll(right, 60)  # both right on 120 images, not the same ones
    r = classification_bootstrap(y, _labels(right, y), _labels(other, y), resamples=1000, seed=5)
    assert r.difference == 0.0 and r.low < 0.0 < r.high
    again = classification_bootstrap(y, _labels(right, y), _labels(other, y), resamples=1000, seed=5)
    assert again == r
    # the generic path (one score call per resample, e.g. detection mAP) gives the same interval
    hits_a, hits_b = right.astype(float), other.astype(float)
    generic = paired_bootstrap(
        200, lambda i: (hits_a[i].mean(), hits_b[i].mean()), metric="accuracy", resamples=1000, seed=5
    )
    assert (generic.low, generic.high) == pytest.approx((r.low, r.high))
    with pytest.raises(InvalidInput, match="one entry per sample"):
        classification_bootstrap(y, y[:10], y)


def test_decide_needs_the_margin_and_an_interval_above_zero() -> None:
    y = np.arange(100) % 10
    win = classification_bootstrap(y, _labels(np.arange(100) < 50, y), y, resamples=500)
    assert loop.decide(win, 0.0)[0] and loop.decide(win, 0.2)[0]
    assert not loop.decide(win, 0.6)[0]  # better, but not by the margin
    noise = classification_bootstrap(y, _labels(np.arange(100) < 50, y), _labels(np.arange(100) < 52, y), resamples=500)
    promoted, why = loop.decide(noise, 0.0)
    assert not promoted and "chance" in why


# -- a loop round -------------------------------------------------------------------------------------------
def _label_more(ws: gv.Workspace, folder: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """New images with accepted human tags, as reviewers' answers add them (no dataset version made)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, arr in enumerate(images):
        paths.append(folder / f"more-{i:05d}.png")
        Image.fromarray(arr).save(paths[-1])
    for result, label in zip(ws.ingest(paths), labels, strict=True):
        if result.status == "added":
            tags = gv.Annotations.from_tags([str(label)], status=["accepted"], source=["user:ana"])
            ws.annotations.add(result.id, tags, "ana")


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[gv.Workspace, Path, Any]]:
    root = tmp_path_factory.mktemp("loop")
    ws = gv.init_workspace(root / "ws")
    images, labels = digit_images(scale=2)
    ingest_tagged(ws, root / "seed", list(images[:60]), [[str(v)] for v in labels[:60]], "digits")
    yield ws, root, (images, labels)
    ws.close()


def test_a_round_trains_on_new_labels_and_promotes_the_better_model(
    digits: tuple[gv.Workspace, Path, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    ws, root, (images, labels) = digits
    created = loop.create(ws, "nightly", recipe=RECIPE, dataset="digits", every=100, metric="accuracy", actor="lee")
    assert created.recipe["dataset"] == "digits" and created.alias == "production"
    with pytest.raises(Conflict, match="exists already"):
        loop.create(ws, "nightly", recipe=RECIPE, dataset="digits", every=100)
    with pytest.raises(InvalidInput, match="metric 'map50'"):
        loop.create(ws, "other", recipe=RECIPE, dataset="digits", every=100, metric="map50")

    # no model behind the alias yet: the first round trains on the latest version and sets it
    assert loop.due(ws, "nightly")["due"]
    first = loop.run_round(ws, "nightly", actor="lee")
    assert first["status"] == "promoted" and first["dataset"] == "digits@1" and first["baseline"] is None
    assert aliases.resolve(ws, "production") == first["candidate"]
    state = loop.due(ws, "nightly")
    assert (state["since"], state["new_labels"], state["due"]) == ("digits@1", 0, False)
    with pytest.raises(InvalidInput, match=r"not due \(0 new label"):
        loop.run_round(ws, "nightly")

    _label_more(ws, root / "more", images[60:220], labels[60:220])
    state = loop.due(ws, "nightly")
    assert state["due"] and state["new_labels"] >= 150
    record = loop.run_round(ws, "nightly", actor="lee")
    v1, v2 = open_version(ws, "digits@1"), open_version(ws, "digits@2")
    assert record["dataset"] == "digits@2" and record["baseline"] == first["candidate"]
    test1 = {e.id for e in v1.images("test")}
    test2 = {e.id for e in v2.images("test")}
    assert test1 < test2  # the first version's test images stay in the test split; new ones join it
    c = record["comparison"]
    assert c["n"] == len(test2) and c["baseline_model"] == first["candidate"]
    # ~42 -> ~150 training images, seeds 0-4: accuracy 0.09-0.34 -> 0.94-1.0 on the 32 test images of digits@2,
    # difference 0.66-0.88, interval lower bound 0.50-0.75
    assert c["difference"] > 0.3 and c["low"] > 0.0, c
    assert record["status"] == "promoted", record["message"]
    assert aliases.resolve(ws, "production") == record["candidate"]
    event = aliases.history(ws, "production")[0]
    assert event.action == "promote" and event.previous_model_id == first["candidate"]
    assert event.evidence is not None and event.evidence["comparison"]["low"] == c["low"]
    assert [r["id"] for r in loop.runs(ws, "nightly")] == [record["id"], first["id"]]

    # over REST: a loop whose rounds start from the served model's weights, run as a job by the server
    with TestClient(create_app(ws)) as client:
        body = {"name": "warm", "dataset": "digits", "recipe": RECIPE, "every": 50, "warm_start": True}
        made = client.post("/api/v1/loops", json=body)
        assert made.status_code == 201 and made.json()["state"]["baseline"] == record["candidate"]
        assert client.post("/api/v1/loops", json={**body, "dataset": "notadataset"}).status_code == 404
        refused = client.post("/api/v1/loops/warm/run", json={})
        assert refused.status_code == 400 and "not due" in refused.json()["error"]["message"]
        queued = client.post("/api/v1/loops/warm/run", json={"force": True})
        assert queued.status_code == 202 and queued.json()["kind"] == "loop"
        job = ws.jobs.wait(queued.json()["id"], timeout=300)
        assert job["status"] == "done", job["error"]
        shown = client.get("/api/v1/loops/warm").json()
    warm = shown["runs"][0]
    assert warm == job["result"] and warm["dataset"] == "digits@2" and warm["baseline"] == record["candidate"]
    assert warm["status"] in ("promoted", "kept") and warm["comparison"]["n"] == len(test2)
    promoted = warm["comparison"]["difference"] > 0 and warm["comparison"]["low"] > 0
    assert (warm["status"] == "promoted") == promoted, warm["message"]
    assert not list(store.runs_dir(ws).glob(".loop-warm-*"))  # the warm-start weights file is gone

    assert main(["-w", str(ws.root), "loop", "show", "nightly", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [r["status"] for r in shown["runs"]] == ["promoted", "promoted"] and not shown["state"]["due"]
    assert main(["-w", str(ws.root), "loop", "check", "--json"]) == 0
    assert {s["loop"] for s in json.loads(capsys.readouterr().out)["items"]} == {"nightly", "warm"}


def test_a_dataset_without_a_test_split_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ws = gv.init_workspace(tmp_path / "ws")
    images, labels = digit_images(scale=2)
    ingest_tagged(
        ws, tmp_path / "src", list(images[:10]), [[str(v)] for v in labels[:10]], "notest", split="train=0.8,val=0.2"
    )
    with pytest.raises(InvalidInput, match="notest@1 has no 'test' split"):
        loop.create(ws, "bad", recipe=RECIPE, dataset="notest", every=10)
    cli = ["-w", str(ws.root), "loop", "create", "bad", "--dataset", "notest", "--task", "classify", "--every", "5"]
    assert main(cli) == 2
    assert "notest@1 has no 'test' split" in capsys.readouterr().err
    with pytest.raises(InvalidInput, match="name the dataset, not a version"):
        loop.create(ws, "bad", recipe=RECIPE, dataset="notest@1", every=10)
    with pytest.raises(InvalidInput, match="loops retrain classify and detect models"):
        loop.create(ws, "bad", recipe={**RECIPE, "task": "segment"}, dataset="notest", every=10)
    ws.close()


def _card(ws: gv.Workspace, model_id: str, dataset_ref: str, classes: list[str]) -> None:
    """A model folder with its card only (no weights): enough for aliases and ``due``, no training."""
    from gigavision.models.card import ModelCard, ModelInput

    folder = store.models_dir(ws) / model_id
    folder.mkdir(parents=True)
    ModelCard(
        id=model_id,
        task="classify",
        arch="test_resnet",
        classes=classes,
        dataset=dataset_ref,
        input=ModelInput(size=16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
        created_at="2026-01-01T00:00:00+00:00",
    ).write(folder)


def test_due_counts_new_human_labels_on_sqlite_and_postgresql(workspace: gv.Workspace, tmp_path: Path) -> None:
    ws = workspace
    images, labels = digit_images(scale=2)
    tags = [[str(v)] for v in labels[:20]]
    version = ingest_tagged(ws, tmp_path / "src", list(images[:20]), tags, "digits", split="train=0.6,val=0.1,test=0.3")
    _card(ws, "served", version.ref, sorted({str(v) for v in labels[:20]}))
    aliases.set_alias(ws, "production", "served", actor="ana")
    loop.create(ws, "l", recipe=RECIPE, dataset="digits", every=3)
    assert loop.due(ws, "l") == {
        "loop": "l",
        "alias": "production",
        "baseline": "served",
        "since": "digits@1",
        "new_labels": 0,
        "every": 3,
        "due": False,
    }
    ids = [e.id for e in version.images()]
    human = gv.Annotations.from_tags(["1"], status=["accepted"], source=["user:ana"])
    for image_id in ids[:2]:
        ws.annotations.add(image_id, human, "ana")
    ws.annotations.add(ids[2], gv.Annotations.from_tags(["1"], status=["accepted"], source=["model:served"]), "m")
    ws.annotations.add(ids[3], gv.Annotations.from_tags(["1"], status=["proposed"], source=["user:bo"]), "bo")
    state = loop.due(ws, "l")
    assert (state["new_labels"], state["due"]) == (2, False)  # a model's label and a proposal do not count
    ws.annotations.add(ids[4], human, "ana")
    assert loop.due(ws, "l")["due"]
    # a round that kept the served model trained on those labels: they do not make the loop due again
    from gigavision.datasets.versions import create_version
    from gigavision.store.schema import LoopRunRow

    newer = create_version(ws, "digits", **{k: version.spec[k] for k in ("split", "stratify", "seed")})
    with ws.session.begin() as session:
        session.add(LoopRunRow(loop="l", status="kept", dataset_ref=newer.ref, baseline_model_id="served"))
    state = loop.due(ws, "l")
    assert (state["since"], state["new_labels"], state["due"]) == ("digits@2", 0, False)


# -- rounds that start on their own -------------------------------------------------------------------------
def _loop_jobs(ws: gv.Workspace) -> list[dict[str, Any]]:
    return list(ws.jobs.list_jobs(kind="loop")[0])


@pytest.fixture
def fake_training() -> Iterator[None]:
    """The ``train`` job kind writes a model card and trains nothing: what is tested here is when rounds
    start, not what they train (``test_a_round_trains_…`` trains for real)."""
    from gigavision.jobs import registry

    def train(ctx: Any, params: dict[str, Any]) -> dict[str, Any]:
        model_id = f"fake-{len(list(store.models_dir(ctx.workspace).iterdir()))}"
        _card(ctx.workspace, model_id, params["recipe"]["dataset"], [str(v) for v in range(10)])
        return {"model": model_id}

    registry.register("train", train)
    try:
        yield
    finally:
        registry.register("train", "gigavision.train.jobs:run_train", isolated=True)


@pytest.mark.usefixtures("fake_training")
def test_a_consumer_queues_a_round_of_each_due_loop_on_its_own(
    sqlite_workspace: gv.Workspace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ws = sqlite_workspace
    images, labels = digit_images(scale=2)
    tags = [[str(v)] for v in labels[:8]]
    version = ingest_tagged(ws, tmp_path / "src", list(images[:8]), tags, "digits", split="train=0.5,test=0.5")
    loop.create(ws, "auto", recipe=RECIPE, dataset="digits", every=3, actor="lee")
    consumer = ws.jobs.consumer()  # what `gigavision serve` and `gigavision worker` run; not started: ticked here
    assert consumer.chores["loops"].every == 60.0
    assert _loop_jobs(ws) == []  # defining a loop queues nothing by itself

    # no model behind the alias: due; the consumer's check queues the first round, as loop:auto, once
    consumer.tick("loops")
    consumer.tick("loops")
    [job] = _loop_jobs(ws)
    assert (job["status"], job["created_by"], job["params"]) == ("queued", "loop:auto", {"loop": "auto", "auto": True})
    assert loop.schedule(ws, "auto")["in_flight"] == {"job": job["id"], "status": "queued", "by": "loop:auto"}
    with pytest.raises(Conflict, match=f"round of loop auto is queued already \\(job {job['id']}"):
        loop.queue_round(ws, "auto", force=True, actor="lee")  # nor a manual one beside it
    assert main(["-w", str(ws.root), "loop", "run", "auto", "--force"]) == 2
    assert f"queued already (job {job['id']}" in capsys.readouterr().err
    ws.jobs.execute(job["id"])  # what a worker thread does with it
    [run] = loop.runs(ws, "auto")
    assert (run["status"], run["started_by"], run["job_id"]) == ("promoted", "loop:auto", job["id"])
    assert aliases.history(ws, "production")[0].actor == "loop:auto"

    consumer.tick("loops")  # 0 new labels since the new model's version
    ids = [e.id for e in version.images()]
    human = gv.Annotations.from_tags(["1"], status=["accepted"], source=["user:ana"])
    for image_id in ids[:2]:
        ws.annotations.add(image_id, human, "ana")
    consumer.tick("loops")  # 2 of 3
    assert len(_loop_jobs(ws)) == 1
    ws.annotations.add(ids[2], human, "ana")
    consumer.tick("loops")  # 3 of 3
    second = _loop_jobs(ws)[0]
    assert len(_loop_jobs(ws)) == 2 and second["status"] == "queued" and second["created_by"] == "loop:auto"

    # disabled: the queued automatic round ends skipped (not failed), and no other is queued
    root = str(ws.root)
    assert main(["-w", root, "loop", "disable", "auto"]) == 0
    ws.jobs.execute(second["id"])
    done = ws.jobs.get(second["id"])
    assert done["status"] == "done" and done["result"] is not None and done["result"]["status"] == "skipped"
    consumer.tick("loops")
    assert len(_loop_jobs(ws)) == 2
    capsys.readouterr()
    assert main(["-w", root, "loop", "show", "auto"]) == 0
    shown = capsys.readouterr().out
    assert "automatic rounds: off (loop disabled" in shown and "(started by loop:auto)" in shown

    # enabled again: queued; a cancelled round pauses automatic ones for [loops] retry_seconds
    assert main(["-w", root, "loop", "enable", "auto"]) == 0
    consumer.tick("loops")
    third = _loop_jobs(ws)[0]
    assert len(_loop_jobs(ws)) == 3 and third["status"] == "queued"
    ws.jobs.cancel(third["id"], actor="lee")
    consumer.tick("loops")
    assert len(_loop_jobs(ws)) == 3 and loop.schedule(ws, "auto")["paused_until"] is not None

    # [loops] check_seconds = 0: consumers do not check loops at all; retry_seconds = 0: no pause
    off = gv.open_workspace(ws.root, loops={"check_seconds": 0, "retry_seconds": 0})
    assert "loops" not in off.jobs.consumer().chores and not loop.schedule(off, "auto")["automatic"]
    off.jobs.consumer().tick()
    assert len(_loop_jobs(ws)) == 3
    off.close()
    again = gv.open_workspace(ws.root, loops={"retry_seconds": 0})
    again.jobs.consumer().tick("loops")
    assert len(_loop_jobs(ws)) == 4
    again.close()

    client = TestClient(create_app(ws))  # no lifespan: no job consumer of its own in this test
    shown = client.get("/api/v1/loops/auto").json()
    assert shown["auto"]["last_automatic"] is not None and shown["runs"][0]["started_by"] == "loop:auto"
    changed = client.patch("/api/v1/loops/auto", json={"enabled": False})
    assert changed.status_code == 200 and not changed.json()["enabled"] and not changed.json()["auto"]["automatic"]
    assert not loop.get_loop(ws, "auto").enabled


def test_consumers_sharing_a_database_queue_one_round_of_a_loop(workspace: gv.Workspace) -> None:
    """Eight consumers (four connections to one database, like four worker processes) find the same loop due
    at the same moment: one round is queued."""
    others = [gv.open_workspace(workspace.root) for _ in range(3)]
    managers = [w.jobs for w in (workspace, *others)] * 2
    start = threading.Barrier(len(managers))

    def submit(jobs: Any) -> Any:
        start.wait()
        return jobs.submit_unique("loop", {"loop": "l", "auto": True}, loop.AUTO_ACTOR, key="loop")

    with ThreadPoolExecutor(len(managers)) as pool:
        results = list(pool.map(submit, managers))
    for other in others:
        other.close()
    assert sum(r is not None for r in results) == 1
    assert [j["params"]["loop"] for j in _loop_jobs(workspace)] == ["l"]
    # another loop's round is not held back by it
    assert workspace.jobs.submit_unique("loop", {"loop": "m"}, "lee", key="loop") is not None
