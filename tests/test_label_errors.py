"""Finding label errors (issue 14): confident learning on out-of-fold probabilities, detection and segmentation
suspects on hand-made predictions, review tasks, bad input, and the CLI and REST over a stub fold predictor
(the k-fold training itself is measured by benchmarks/bench_label_errors.py; here it would cost minutes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import gigavision as gv
from gigavision.active.label_errors import (
    check_request,
    confident_learning,
    detection_suspects,
    find_label_errors,
    rank,
    review_tasks,
    segmentation_suspects,
)
from gigavision.annotations import Annotations
from gigavision.errors import InvalidInput, NotFound
from gigavision.models.recipe import load_recipe
from gigavision.train.folds import FoldPredictions, assign_folds
from tests.realdata import digit_images, ingest_tagged


def _noisy_probs(n: int, k: int, flips: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True classes, given labels with ``flips`` planted errors, and out-of-fold probabilities of a good but
    imperfect model (the right class ~0.98, as a trained CNN gives, with spread; 3 % of clean images honestly
    confused with another class)."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, k, n)
    logits = rng.normal(0, 1.0, (n, k))
    logits[np.arange(n), truth] += 6.0
    hard = rng.choice(n, size=n * 3 // 100, replace=False)  # ambiguous images: the model is unsure there
    logits[hard, (truth[hard] + 1) % k] += 5.5
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    given = truth.copy()
    flipped = rng.choice(n, size=flips, replace=False)
    given[flipped] = (truth[flipped] + rng.integers(1, k, flips)) % k
    return given, probs, flipped


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_confident_learning_finds_planted_flips(seed: int) -> None:
    given, probs, flipped = _noisy_probs(1000, 10, 50, seed)
    cl = confident_learning(given, probs)
    cut = set(cl.order[: cl.suggested].tolist())
    hits = len(cut & set(flipped.tolist()))
    # seeds 0-4: precision 0.955-1.0, recall 0.84-0.92 (ranking by margin alone: recall 0.84-0.92 at the cut)
    assert hits / max(1, len(cut)) >= 0.9 and hits / 50 >= 0.8, (len(cut), hits)
    assert cl.joint.sum() <= 1000 and np.trace(cl.joint) > 750  # most images: confidently what they are labelled
    assert abs(cl.estimate - 50) <= 8  # the calibrated joint estimates the number of planted flips (50.8-53.6)
    top = cl.order[0]
    assert given[top] != int(np.argmax(probs[top]))  # the most suspect label is the one most contradicted


def test_confident_learning_thresholds_are_per_class_self_confidence() -> None:
    given = np.array([0, 0, 1, 1, 1])
    probs = np.array([[0.9, 0.1], [0.7, 0.3], [0.2, 0.8], [0.4, 0.6], [0.95, 0.05]])
    cl = confident_learning(given, probs)
    assert cl.thresholds.tolist() == pytest.approx([0.8, (0.8 + 0.6 + 0.05) / 3])
    assert cl.order.tolist() == [4]  # labelled 1, confidently 0
    assert cl.joint.tolist() == [[1, 0], [1, 2]]
    with pytest.raises(InvalidInput, match="class indices"):
        confident_learning([0, 2], np.full((2, 2), 0.5))


def _boxes(rows: list[tuple[float, float, float, float]], labels: list[str], score: list[float] | None = None) -> Any:
    return Annotations.from_boxes(np.asarray(rows, dtype=float), labels, **({"score": score} if score else {}))


def test_detection_suspects_by_kind() -> None:
    truth = _boxes(
        [(10, 10, 50, 50), (100, 100, 140, 140), (200, 10, 240, 50), (300, 300, 340, 340), (10, 200, 50, 240)],
        ["car", "car", "car", "bus", "car"],
    )
    pred = _boxes(
        [
            (11, 11, 50, 50),  # the first car, found as labelled
            (200, 10, 240, 50),  # the third "car" is a truck: wrong class
            (318, 318, 358, 358),  # the bus, found but placed off: IoU ~0.29
            (400, 400, 440, 440),  # nothing labelled here: missing
            (12, 202, 48, 238),  # a weak guess on the last car: still found? no, under the found score
        ],
        ["car", "truck", "bus", "car", "car"],
        score=[0.95, 0.9, 0.8, 0.85, 0.1],
    )
    found = {(f.kind, f.truth, f.pred) for f in detection_suspects(truth, pred)}
    assert found == {
        ("spurious", 1, -1),  # the second car: no prediction anywhere near it
        ("wrong_class", 2, 1),
        ("localisation", 3, 2),
        ("missing", -1, 3),
        ("spurious", 4, -1),  # only a 0.1 guess overlaps it
    }
    by_truth = {f.truth: f for f in detection_suspects(truth, pred)}
    assert by_truth[4].score == pytest.approx(0.9) and by_truth[1].score == 1.0  # a guess nearby: less sure
    assert detection_suspects(truth, truth.__class__.empty()) and not detection_suspects(truth, truth)


def test_segmentation_disagreement_regions() -> None:
    label = np.zeros((64, 64), np.uint8)
    label[5:25, 5:25] = 1  # a labelled blob the model agrees with
    label[40:60, 40:60] = 2  # labelled class 2, predicted class 1: wrong class
    pred = label.copy()
    pred[40:60, 40:60] = 1
    pred[5:15, 40:58] = 1  # predicted, not labelled: missing in the labels
    pred[30, 30] = 2  # one stray pixel: under the least area
    regions = segmentation_suspects(label, pred, min_area=0.01)
    assert [(r.kind, r.box, r.area) for r in regions] == [
        ("wrong_class", (40, 40, 60, 60), 400),
        ("missing", (40, 5, 58, 15), 180),
    ]
    # a letterboxed canvas: disagreement in the padding is not the image's
    assert segmentation_suspects(label, pred, valid=(30, 64), min_area=0.01)[0].kind == "missing"
    with pytest.raises(InvalidInput, match="differ in size"):
        segmentation_suspects(label, pred[:10])


def _oof_classify(ids: list[str], given: list[str], probs: np.ndarray, classes: list[str]) -> FoldPredictions:
    out = FoldPredictions("classify", classes, "digits@1", 2, 32)
    for i, (image_id, label) in enumerate(zip(ids, given, strict=True)):
        scores = dict(zip(classes, probs[i].tolist(), strict=True))
        out.image_ids.append(image_id)
        out.fold.append(i % 2)
        out.truths.append(Annotations.from_tags([label], id=[100 + i]))
        best = classes[int(np.argmax(probs[i]))]
        out.predictions.append(Annotations.from_tags([best], score=[probs[i].max()], attributes=[{"scores": scores}]))
        out.scale.append(1.0)
        out.sizes.append((16, 16))
    return out


def test_ranked_suspects_become_review_tasks(tmp_path: Path) -> None:
    classes = [str(d) for d in range(10)]
    given_idx, probs, _ = _noisy_probs(300, 10, 15, 0)
    ids = [f"{i:064x}" for i in range(300)]
    result = rank(_oof_classify(ids, [classes[g] for g in given_idx], probs, classes))
    assert result.suggested >= 10 and result.suspects[0].kind == "label"
    first = result.suspects[0]
    assert first.given != first.predicted and first.annotation_id == 100 + ids.index(first.image_id)
    tasks = review_tasks(result)
    assert len(tasks) == result.suggested and all(t.reason == "suspect" for t in tasks)
    assert tasks[0].priority >= tasks[-1].priority
    assert (
        tasks[0].details is not None and tasks[0].details["kind"] == "label" and "margin" in tasks[0].details["scores"]
    )
    assert result.as_dict()["estimate"]["confident_joint"][0][0] > 0


def test_folds_are_stratified_and_seeded() -> None:
    strata = [str(i % 3) for i in range(30)]
    folds = assign_folds(30, 5, seed=1, strata=strata)
    assert np.bincount(folds).tolist() == [6] * 5
    for s in "012":
        assert sorted(np.bincount(folds[np.array(strata) == s], minlength=5).tolist()) == [2] * 5
    assert assign_folds(30, 5, seed=1, strata=strata).tolist() == folds.tolist()


@pytest.fixture(scope="module")
def digits_ws(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """30 of scikit-learn's 8×8 digits, zeros and ones (two classes: every fold trains on both)."""
    root = tmp_path_factory.mktemp("label-errors")
    ws = gv.init_workspace(root / "ws")
    images, labels = digit_images(scale=1)
    pick = np.nonzero(labels < 2)[0][:30]
    ingest_tagged(ws, root / "src", list(images[pick]), [[str(v)] for v in labels[pick]], "digits")
    yield ws
    ws.close()


def test_bad_input(digits_ws: gv.Workspace) -> None:
    recipe = load_recipe(overrides={"task": "classify", "dataset": "digits@1"})
    with pytest.raises(NotFound, match="has no version 7"):
        check_request(digits_ws, recipe.model_copy(update={"dataset": "digits@7"}), 5)
    with pytest.raises(NotFound, match="no dataset named 'nope'"):
        check_request(digits_ws, recipe.model_copy(update={"dataset": "nope"}), 5)
    with pytest.raises(InvalidInput, match="task 'embed' has no labels"):
        check_request(digits_ws, load_recipe(overrides={"task": "embed", "dataset": "digits@1"}), 5)
    with pytest.raises(InvalidInput, match="at least 2"):
        check_request(digits_ws, recipe, 1)
    with pytest.raises(InvalidInput, match=r"folds 500: dataset digits@1 has only \d+ image"):
        check_request(digits_ws, recipe, 500)
    with pytest.raises(InvalidInput, match="patch recipes"):
        check_request(digits_ws, recipe.model_copy(update={"patch": {"size": 16}}), 5)
    assert check_request(digits_ws, recipe, 2) == "digits@1"


def _stub_oof(ws: gv.Workspace, recipe: Any, *, folds: int, progress: Any = None) -> FoldPredictions:
    """Out-of-fold "predictions" that contradict the first training image's label confidently."""
    from gigavision.datasets.versions import open_version

    version = open_version(ws, recipe.dataset)
    entries = list(version.images("train"))
    classes = [c["name"] for c in version.classes()]
    given = [str(version.annotations(e.id).label[0]) for e in entries]
    probs = np.full((len(entries), len(classes)), 0.01)
    for i, g in enumerate(given):
        probs[i, classes.index(g)] = 0.9
    probs[0] = 0.01
    probs[0, (classes.index(given[0]) + 1) % len(classes)] = 0.9
    if progress is not None:
        progress(folds, folds, "done")
    return _oof_classify([e.id for e in entries], given, probs, classes)


def test_find_label_errors_creates_review_tasks(digits_ws: gv.Workspace) -> None:
    from gigavision.active.label_errors import create_review_tasks

    recipe = load_recipe(overrides={"task": "classify", "dataset": "digits"})
    result = find_label_errors(digits_ws, recipe, folds=3, out_of_fold=_stub_oof)
    assert result.suggested == 1 and result.suspects[0].kind == "label"
    assert create_review_tasks(digits_ws, result, actor="alice") == 1


def test_rest_job_runs_the_folds(digits_ws: gv.Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    """POST /api/v1/label-errors: bad input refused in the request; a real 2-fold run (a tiny network, one
    epoch) as a job whose result ranks suspects and whose review tasks are created. The job runs in the
    consumer's thread here (a child process would import torch again: ~30 s of this test on a busy runner)."""
    from fastapi.testclient import TestClient

    from gigavision.jobs import registry
    from gigavision.server.main import create_app

    monkeypatch.setattr(registry, "ISOLATED", registry.ISOLATED - {"label-errors"})

    recipe = {"task": "classify", "arch": "test_resnet", "image_size": 16, "epochs": 1, "batch_size": 16}
    with TestClient(create_app(digits_ws)) as client:
        missing = client.post("/api/v1/label-errors", json={"dataset": "digits@9", "recipe": recipe})
        assert missing.status_code == 404 and "no version 9" in missing.json()["error"]["message"]
        few = client.post("/api/v1/label-errors", json={"dataset": "digits@1", "recipe": recipe, "folds": 1})
        assert few.status_code == 400 and "at least 2" in few.json()["error"]["message"]
        embed = client.post("/api/v1/label-errors", json={"dataset": "digits@1", "recipe": {"task": "embed"}})
        assert embed.status_code == 400 and "no labels to check" in embed.json()["error"]["message"]

        resp = client.post(
            "/api/v1/label-errors",
            json={"dataset": "digits@1", "recipe": recipe, "folds": 2, "tasks": True, "limit": 3},
        )
        assert resp.status_code == 202 and resp.json()["kind"] == "label-errors"
        done = digits_ws.jobs.wait(resp.json()["id"], timeout=240)
        assert done["status"] == "done", done["error"]
        result = done["result"]
        assert result["task"] == "classify" and result["folds"] == 2 and result["images"] >= 18
        assert {s["fold"] for s in result["suspects"]} <= {0, 1} and result["tasks_created"] == min(
            3, len(result["suspects"])
        )
