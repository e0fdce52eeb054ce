"""Active-learning selection (issue 14): each strategy does what it claims on hand-made probabilities and
embeddings, batches skip near-duplicates, picks are deterministic per seed; ``gigavision active select`` and
``POST /api/v1/active/select`` create ``selected`` review tasks for the picks on a tiny workspace of real
digits (cold start over thumbnails; a classifier's probabilities through the same path; a detector's stored
predictions), and bad input is a clear 400 / exit 2."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select as sql_select

import gigavision as gv
from gigavision.active import pool_selection
from gigavision.active.selection import select, uncertainty_scores
from gigavision.cli.main import main
from gigavision.errors import InvalidInput
from gigavision.metrics.uncertainty import class_uncertainty
from gigavision.server.main import create_app
from gigavision.store.schema import ReviewTaskRow
from tests.realdata import digit_images

URL = "/api/v1/active/select"


# -- strategies on hand-made arrays --------------------------------------------------------------------------
def test_uncertainty_strategies_pick_what_they_claim() -> None:
    probs = np.array(
        [
            [0.90, 0.05, 0.05],  # confident
            [0.36, 0.33, 0.31],  # flattest: entropy's pick
            [0.50, 0.49, 0.01],  # closest top two: margin's pick
            [0.40, 0.30, 0.30],  # lowest top one after the flat row
        ]
    )
    assert select("entropy", probs, None, None, 1).indices.tolist() == [1]
    assert select("margin", probs, None, None, 1).indices.tolist() == [2]
    assert select("least-confidence", probs, None, None, 2).indices.tolist() == [1, 3]
    ranked = select("entropy", probs, None, None, 4)
    assert ranked.indices.tolist()[-1] == 0 and np.all(np.diff(ranked.scores) <= 0)
    # the scores are the routing queue's uncertainty (metrics.uncertainty), not a second definition
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(6), size=40)
    for ours, theirs in (("entropy", "entropy"), ("margin", "margin"), ("least-confidence", "least_confidence")):
        np.testing.assert_allclose(uncertainty_scores(p, ours), class_uncertainty(p, theirs), atol=1e-12)
    # without probabilities (detection, segmentation) the given per-item uncertainty ranks
    u = np.array([0.1, 0.9, 0.5])
    assert select("margin", None, None, None, 2, uncertainty=u).indices.tolist() == [1, 2]


def _clusters(k: int = 4, per: int = 25, dim: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.eye(dim)[:k] * 10.0
    emb = np.concatenate([c + rng.normal(0, 0.3, size=(per, dim)) for c in centres])
    return emb, np.repeat(np.arange(k), per)


def test_coreset_covers_every_cluster_and_avoids_the_labelled_ones() -> None:
    emb, cluster = _clusters()
    for seed in range(3):
        picked = select("coreset", None, emb, None, 4, seed=seed)
        assert sorted(cluster[picked.indices]) == [0, 1, 2, 3]
    labelled = np.concatenate([emb[cluster == 0][:2], emb[cluster == 1][:2]])  # clusters 0, 1 have labels
    picked = select("coreset", None, emb, labelled, 2, seed=0)
    assert sorted(cluster[picked.indices]) == [2, 3]
    assert np.all(picked.scores > 5)  # distances to the nearest labelled/picked item


def test_hybrid_spreads_an_uncertain_batch_where_margin_piles_up() -> None:
    emb, cluster = _clusters(k=2, per=20)
    rng = np.random.default_rng(1)
    top = np.where(cluster == 0, rng.uniform(0.50, 0.52, size=40), rng.uniform(0.53, 0.55, size=40))
    probs = np.stack([top, 1 - top], axis=1)
    margin = select("margin", probs, emb, None, 4, dedup=None)
    assert set(cluster[margin.indices]) == {0}
    hybrid = select("hybrid", probs, emb, None, 4, dedup=None)
    assert set(cluster[hybrid.indices]) == {0, 1}
    # scores: each pick's cluster's share of the candidates' uncertainty, largest first
    assert np.all(np.diff(hybrid.scores) <= 0) and 0 < hybrid.scores.sum() <= 1 + 1e-9
    # candidates are the 10 × budget most uncertain: a budget of 1 never leaves the 10 most uncertain rows
    u = uncertainty_scores(probs, "margin")
    for seed in range(3):
        (one,) = select("hybrid", probs, emb, None, 1, seed=seed, dedup=None).indices
        assert one in np.argsort(-u)[:10]


def test_badge_prefers_long_gradients_then_spreads() -> None:
    emb, cluster = _clusters(k=2, per=10)
    probs = np.tile([0.999, 0.001], (20, 1))
    unsure = [3, 4, 13, 14]  # two per cluster
    probs[unsure] = [[0.55, 0.45], [0.5, 0.5], [0.52, 0.48], [0.51, 0.49]]
    picked = select("badge", probs, emb, None, 2, seed=0, dedup=None)
    assert set(picked.indices.tolist()) <= set(unsure)
    assert set(cluster[picked.indices]) == {0, 1}


def test_batches_skip_near_duplicates_of_each_other_and_of_labelled_images() -> None:
    rng = np.random.default_rng(2)
    base = rng.normal(size=(10, 16))
    emb = np.concatenate([base, base + rng.normal(0, 1e-4, size=base.shape)])  # item i and i+10 are twins
    probs = rng.dirichlet(np.ones(3) * 5, size=20)
    for strategy in ("entropy", "margin", "hybrid", "coreset", "badge", "random"):
        picked = select(strategy, probs, emb, None, 10, seed=0).indices % 10
        assert len(set(picked.tolist())) == len(picked), strategy
    labelled = base[:3]  # twins of labelled images are not picked either
    picked = select("entropy", probs, emb, labelled, 20, seed=0)
    assert not (set(picked.indices.tolist()) & {0, 1, 2, 10, 11, 12})
    assert len(picked) == 7 and picked.skipped > 0
    assert len(select("entropy", probs, emb, labelled, 20, dedup=None)) == 20


def test_picks_are_deterministic_per_seed() -> None:
    emb, _ = _clusters()
    probs = np.random.default_rng(3).dirichlet(np.ones(4), size=len(emb))
    for strategy in ("random", "coreset", "badge", "hybrid", "entropy"):
        a = select(strategy, probs, emb, None, 10, seed=7)
        b = select(strategy, probs, emb, None, 10, seed=7)
        assert a.indices.tolist() == b.indices.tolist(), strategy
    assert select("random", probs, emb, None, 10, seed=1).indices.tolist() != (
        select("random", probs, emb, None, 10, seed=2).indices.tolist()
    )


def test_bad_arrays_and_requests_are_refused() -> None:
    probs = np.full((5, 2), 0.5)
    for call, words in (
        (lambda: select("greedy", probs, None, None, 1), "strategy must be one of"),
        (lambda: select("entropy", probs, None, None, 0), "budget"),
        (lambda: select("coreset", probs, None, None, 1), "needs embeddings"),
        (lambda: select("badge", probs, None, None, 1), "penultimate"),
        (lambda: select("entropy", None, np.ones((5, 2)), None, 1), "needs class probabilities"),
        (lambda: select("entropy", probs, np.ones((4, 2)), None, 1), "disagree on the pool size"),
        (lambda: select("entropy", probs * 3, None, None, 1), "finite numbers in"),
        (lambda: select("coreset", None, np.ones((5, 2)), np.ones((2, 3)), 1), "labelled embeddings"),
    ):
        with pytest.raises(InvalidInput, match=words):
            call()
    assert len(select("entropy", probs, None, None, 50)) == 5  # a budget above the pool takes it all
    with pytest.raises(InvalidInput, match="needs a model"):
        pool_selection.SelectRequest(budget=3, strategy="entropy")


# -- a tiny workspace of real digits ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """12 distinct digits (16×16) ingested as d00..d11; d00 and d01 tagged by a person, d02 predicted only.
    Built once; each test works on a copy."""
    tmp_path = tmp_path_factory.mktemp("selection")
    images, labels = digit_images(2)
    folder = tmp_path / "src"
    folder.mkdir()
    paths = []
    seen: set[bytes] = set()
    for arr, label in zip(images, labels, strict=True):
        if arr.tobytes() in seen:
            continue
        seen.add(arr.tobytes())
        paths.append(folder / f"d{len(paths):02d}-{label}.png")
        Image.fromarray(arr).save(paths[-1])
        if len(paths) == 12:
            break
    ws = gv.init_workspace(tmp_path / "ws")
    ws.labels.set("0", "tag")
    ws.labels.set("blob", "box")
    ids = {p.name[:3]: r.id for p, r in zip(paths, ws.ingest(paths), strict=True)}
    for name in ("d00", "d01"):
        ws.annotations.add(ids[name], gv.Annotations.from_tags(["0"], status=["accepted"]), "user:ada")
    ws.annotations.add(ids["d02"], gv.Annotations.from_tags(["0"], score=[0.6], source=["model:other"]), "model:other")
    ws.close()
    return tmp_path / "ws", ids


@pytest.fixture
def digits_ws(
    digits_template: tuple[Path, dict[str, str]], tmp_path: Path
) -> Iterator[tuple[gv.Workspace, dict[str, str]]]:
    template, ids = digits_template
    shutil.copytree(template, tmp_path / "ws")
    ws = gv.open_workspace(tmp_path / "ws")
    yield ws, ids
    ws.close()


def _tasks(ws: gv.Workspace) -> list[ReviewTaskRow]:
    with ws.session() as s:
        return list(s.scalars(sql_select(ReviewTaskRow).order_by(ReviewTaskRow.id)))


def test_cold_start_from_the_command_line(
    digits_ws: tuple[gv.Workspace, dict[str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    ws, ids = digits_ws
    args = ["-w", str(ws.root), "active", "select", "--budget", "4", "--strategy", "coreset", "--as", "max", "--json"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model"] is None and result["embedding"] == "thumbnail"
    assert result["pool"]["matched"] == 12 and result["pool"]["labelled"] == 2 and result["pool"]["candidates"] == 10
    chosen = [p["image_id"] for p in result["selected"]]
    assert len(chosen) == 4 == result["tasks_created"]
    assert not {ids["d00"], ids["d01"]} & set(chosen)  # labelled by a person: never offered again
    tasks = _tasks(ws)
    assert [(t.reason, t.status, t.image_id, t.created_by, t.batch) for t in tasks] == [
        ("selected", "open", i, "max", result["run"]) for i in chosen
    ]
    assert [t.priority for t in tasks] == [4.0, 3.0, 2.0, 1.0] and tasks[0].details["strategy"] == "coreset"
    # a second run leaves out what is already waiting; a budget above the rest is clamped with a note
    assert main([*args[:4], "--budget", "50", "--strategy", "random", "--pool", "image=d0*", "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["pool"]["pending"] == 4 and len(again["selected"]) == 10 - 2 - 4  # d10, d11 not in image=d0*
    assert "larger than the pool" in again["notes"][0]
    # every image labelled or pending: a clear error, exit 2
    assert main([*args[:4], "--budget", "1", "--strategy", "random", "--pool", "image=d0*"]) == 2
    assert "has no images to select from" in capsys.readouterr().err


@dataclass
class FakeModel:
    """What selection reads of a published model, for a model whose outputs the test dictates."""

    id: str
    task: str
    classes: list[str] = field(default_factory=lambda: ["0", "1", "2"])
    input: Any = field(default_factory=lambda: SimpleNamespace(patch=None))

    def task_instance(self) -> Any:
        return SimpleNamespace(multi_label=False)


@pytest.fixture
def fake_model(monkeypatch: pytest.MonkeyPatch) -> dict[str, FakeModel]:
    """Models named in requests resolve to FakeModels; a classifier's outputs come from ``probs_of``:
    images named d03..d05 flat (unsure), the rest confident; features = the one-hot of the image's index."""
    from gigavision.models import aliases, store

    models = {m.id: m for m in (FakeModel("clf", "classify"), FakeModel("det", "detect"), FakeModel("emb", "embed"))}
    monkeypatch.setattr(aliases, "resolve", lambda ws, ref: ref)
    monkeypatch.setattr(store, "get_model", lambda ws, ref: models[ref])
    monkeypatch.setattr(pool_selection, "_predictor", lambda info: None)

    def run_model(ws: gv.Workspace, predictor: Any, ids: list[str], progress: Any = None) -> Any:
        names = [ws.get_image(i).name for i in ids]
        probs = np.array([[0.34, 0.33, 0.33] if n[:3] in ("d03", "d04", "d05") else [0.9, 0.05, 0.05] for n in names])
        feats = np.eye(16)[[int(n[1:3]) for n in names]]
        return probs, feats

    monkeypatch.setattr(pool_selection, "run_model", run_model)
    return models


def test_rest_selects_with_a_classifier(
    digits_ws: tuple[gv.Workspace, dict[str, str]], fake_model: dict[str, FakeModel]
) -> None:
    ws, ids = digits_ws
    client = TestClient(create_app(ws))
    r = client.post(URL, json={"model": "clf", "budget": 3, "strategy": "entropy", "dry_run": True})
    assert r.status_code == 200, r.text
    assert r.json()["tasks_created"] == 0 and _tasks(ws) == []
    r = client.post(URL, json={"model": "clf", "budget": 3, "strategy": "entropy", "actor": "max"})
    body = r.json()
    assert {p["image_id"] for p in body["selected"]} == {ids["d03"], ids["d04"], ids["d05"]}
    assert body["embedding"] == "penultimate features"
    tasks = _tasks(ws)
    assert len(tasks) == 3 and all(t.model_id == "clf" and t.label == "0" and t.score == 0.34 for t in tasks)
    assert all(t.uncertainty is not None and t.uncertainty > 0.99 for t in tasks)
    # badge and hybrid take the same path; the flat ones are picked first again once they are labelled
    for name in ("d03", "d04", "d05"):
        ws.annotations.add(ids[name], gv.Annotations.from_tags(["0"], status=["accepted"]), "user:ada")
    r = client.post(URL, json={"model": "clf", "budget": 2, "strategy": "badge", "dry_run": True})
    assert r.status_code == 200 and len(r.json()["selected"]) == 2
    assert not {p["image_id"] for p in r.json()["selected"]} & {ids["d03"], ids["d04"], ids["d05"]}


def test_rest_selects_from_a_detectors_stored_predictions(
    digits_ws: tuple[gv.Workspace, dict[str, str]], fake_model: dict[str, FakeModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    ws, ids = digits_ws
    asked: list[list[str]] = []

    def predict_uncertainty(ws: gv.Workspace, predictor: Any, ids: list[str], progress: Any = None) -> Any:
        asked.append(list(ids))
        return {}, list(ids)  # every image too big to predict whole (tests/test_pool_selection_detect.py runs one)

    monkeypatch.setattr(pool_selection, "predict_uncertainty", predict_uncertainty)
    client = TestClient(create_app(ws))
    r = client.post(URL, json={"model": "det", "budget": 2, "strategy": "margin"})
    message = r.json()["error"]["message"]
    assert r.status_code == 400 and "predict --model det --store" in message and "active regions" in message
    for name, score in (("d06", 0.95), ("d07", 0.5), ("d08", 0.7)):
        box = gv.Annotations.from_records(
            [{"kind": "box", "label": "blob", "bbox": [1, 1, 8, 8], "score": score, "source": "model:det"}]
        )
        ws.annotations.add(ids[name], box, "model:det")
    r = client.post(URL, json={"model": "det", "budget": 2, "strategy": "margin"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [p["image_id"] for p in body["selected"]] == [ids["d07"], ids["d08"]]  # score 0.5 is the most unsure
    assert body["pool"]["unscored"] == 7 and body["selected"][0]["uncertainty"] == pytest.approx(1.0)
    assert "active regions --model det" in body["notes"][0]
    assert len(asked[-1]) == 7 and not {ids["d06"], ids["d07"], ids["d08"]} & set(asked[-1])  # stored: not rerun


def test_rest_bad_input_is_a_clear_400(
    digits_ws: tuple[gv.Workspace, dict[str, str]], fake_model: dict[str, FakeModel]
) -> None:
    ws, _ = digits_ws
    client = TestClient(create_app(ws))
    for body, words in (
        ({"model": "emb", "budget": 2, "strategy": "margin"}, "embed model"),
        ({"model": "det", "budget": 2, "strategy": "badge"}, "badge needs a classifier"),
        ({"budget": 2, "strategy": "hybrid"}, "needs a model"),
        ({"budget": 2, "strategy": "coreset", "pool": ["image=nothing*"]}, "has no images"),
        ({"budget": 2, "strategy": "coreset", "pool": ["label=0"]}, "picks annotations, not images"),
        ({"budget": 2, "strategy": "nope"}, "strategy must be one of"),
    ):
        r = client.post(URL, json=body)
        assert r.status_code == 400, (body, r.text)
        assert words in r.json()["error"]["message"], (body, r.text)
    assert client.post(URL, json={"budget": 0}).status_code in (400, 422)
    assert _tasks(ws) == []


def test_rest_background_selection_runs_as_a_job(digits_ws: tuple[gv.Workspace, dict[str, str]]) -> None:
    ws, _ = digits_ws
    client = TestClient(create_app(ws))
    r = client.post(URL, json={"budget": 3, "strategy": "coreset", "background": True, "actor": "max"})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["kind"] == "active-select" and job["status"] == "queued" and _tasks(ws) == []
    ws.jobs.execute(job["id"])  # here, synchronously (the server's consumer would run it in a child process)
    done = client.get(f"/api/v1/jobs/{job['id']}").json()
    assert done["status"] == "done" and done["progress"] == 1.0, done["error"]
    assert done["result"]["tasks_created"] == 3 and len(_tasks(ws)) == 3
    assert {t.created_by for t in _tasks(ws)} == {"max"}
    ws.jobs.huey.storage.flush_queue()


def test_perceptual_hashes_as_the_near_duplicate_rule() -> None:
    from gigavision.active.selection import hash_bits, phash_duplicates

    base = np.array([0, 0b1111, 2**63 + 1], dtype=np.uint64)
    bits = hash_bits(base)
    assert bits.shape == (3, 64) and set(np.unique(bits)) == {-1.0, 1.0}
    pool = np.array([0b0, 0b11, 0b11111, 2**40], dtype=np.uint64)  # 0, 2, 5 and 1 bits from item 0
    near = phash_duplicates(pool, None, 2)
    picked = select("entropy", np.full((4, 2), 0.5), None, None, 4, near_duplicates=near)
    assert picked.indices.tolist() == [0, 2] and picked.skipped == 2  # 0b11 and 2**40 are within 2 bits of 0
    labelled = phash_duplicates(pool, np.array([0b11111], dtype=np.uint64), 0)  # exact copies of a labelled one
    assert select("random", None, np.ones((4, 1)), None, 4, near_duplicates=labelled).indices.tolist().count(2) == 0
    with pytest.raises(InvalidInput, match=r"0\.\.32 bits"):
        phash_duplicates(pool, None, 40)


def test_near_duplicate_images_are_not_picked_twice(
    digits_ws: tuple[gv.Workspace, dict[str, str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A retouched copy of a pool image and of a labelled image (one pixel changed: 2 pHash bits apart)."""
    from gigavision.images.resolution import read_level

    ws, ids = digits_ws
    copies = []
    for name in ("d05", "d00"):
        arr = read_level(ws.open_source(ids[name]), 0)[:, :, 0].copy()
        arr[3, 3] = 255 - arr[3, 3]
        copies.append(tmp_path / f"copy-of-{name}.png")
        Image.fromarray(arr).save(copies[-1])
    twin, labelled_twin = (r.id for r in ws.ingest(copies))
    args = ["-w", str(ws.root), "active", "select", "--budget", "50", "--strategy", "coreset", "--dry-run", "--json"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    chosen = {p["image_id"] for p in result["selected"]}
    assert len({ids["d05"], twin} & chosen) == 1 and labelled_twin not in chosen
    assert result["pool"]["candidates"] == 12 and len(chosen) == 10 and result["pool"]["near_duplicates"] == 2
    assert main([*args, "--dup-distance", "-1"]) == 0  # the check off: every candidate
    assert len(json.loads(capsys.readouterr().out)["selected"]) == 12
