"""Routing predictions to experts (issue 14): routing policies, review tasks and their answers over REST and the
CLI, production monitoring. Predictions are made by hand (boxes with an uncertainty): no model is trained."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient

import gigavision as gv
from gigavision.active import routing
from gigavision.active.monitor import monitor, wilson
from gigavision.annotations import Annotations
from gigavision.cli.main import main
from gigavision.errors import InvalidInput, NotFound
from gigavision.models.predict import PredictItem, store_predictions
from gigavision.server.main import create_app
from gigavision.store import users as users_module
from gigavision.store.reviews import NewTask
from gigavision.store.schema import ModelAliasRow

W, H = 384, 303  # coins.png


def predictions(n: int, seed: int = 0, model: str = "m1", labels: tuple[str, ...] = ("coin",)) -> Annotations:
    """``n`` boxes inside coins.png with uniform uncertainties, as ``predict`` stamps them."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 300, (n, 2))
    u = rng.uniform(0, 1, n)
    return Annotations.from_boxes(
        np.c_[xy, np.minimum(xy + 20, [W, H])],
        [labels[i % len(labels)] for i in range(n)],
        score=1 - u / 2,
        source=[f"model:{model}"] * n,
        attributes=[{"model": model, "uncertainty": float(x)} for x in u],
    )


def prepare(ws: gv.Workspace, samples: dict[str, Path]) -> gv.Workspace:
    (r,) = ws.ingest([samples["coins.png"]])
    ws.image = r.id  # type: ignore[attr-defined]
    with ws.session.begin() as s:  # an alias, as `gigavision models alias` makes one
        s.add(ModelAliasRow(name="production", model_id="m1", updated_by="lead"))
    return ws


@pytest.fixture
def ws(sqlite_workspace: gv.Workspace, samples: dict[str, Path]) -> gv.Workspace:
    return prepare(sqlite_workspace, samples)


@pytest.fixture
def both(workspace: gv.Workspace, samples: dict[str, Path]) -> gv.Workspace:
    """SQLite and PostgreSQL: routing and answers write annotations and tasks in one transaction."""
    return prepare(workspace, samples)


def image(ws: gv.Workspace) -> str:
    return str(ws.image)  # type: ignore[attr-defined]


def test_routing_splits_by_threshold_and_audits_a_fixed_share(both: gv.Workspace) -> None:
    ws = both
    routing.set_policy(ws, "production", threshold=0.5, audit_share=0.25, actor="lead")
    routing.set_policy(ws, "m1", label="bell", threshold=0.9, actor="lead")  # the model's own, for one label
    ann = predictions(600, labels=("coin", "bell"))
    result = routing.store_routed(ws, image(ws), ann, model_id="m1", actor="model:m1")
    u = np.array([a["uncertainty"] for a in ann.attributes])
    limit = np.where(ann.label == "bell", 0.9, 0.5)
    unsure = u > limit
    records = {r["id"]: r for r in ws.annotations.query_records(image(ws), limit=10_000)}
    ids = np.array(result.ids)
    assert [records[i]["status"] for i in ids] == ["proposed" if x else "accepted" for x in unsure]
    tasks, total = ws.reviews.page(limit=10_000)
    assert total == len(tasks)
    uncertain = {t["annotation_id"]: t for t in tasks if t["reason"] == "uncertain"}
    assert set(uncertain) == set(ids[unsure].tolist()) and result.uncertain == int(unsure.sum())
    first = tasks[0]
    assert first["reason"] == "uncertain" and first["priority"] == pytest.approx(u.max())
    assert first["region"] == records[first["annotation_id"]]["bbox"] and first["model_id"] == "m1"
    # audits: only coins (the bell policy audits nothing), chosen by a hash of the annotation id
    audited = {t["annotation_id"] for t in tasks if t["reason"] == "audit"}
    coins_accepted = ids[~unsure & (ann.label == "coin")].tolist()
    assert audited == {i for i in coins_accepted if routing.draw(i) < 0.25}
    assert 0.15 < len(audited) / len(coins_accepted) < 0.35  # 0.25 ± 3 sd at n ≈ 150
    share = np.mean([routing.draw(i) < 0.25 for i in range(1, 20_001)])
    assert abs(share - 0.25) < 0.01  # the draw is uniform: the share holds over many ids


def test_no_policy_stores_as_before_and_store_predictions_routes(ws: gv.Workspace) -> None:
    model = SimpleNamespace(info=SimpleNamespace(id="m2"), source_name="model:m2")
    item = PredictItem("coins.png", image(ws), W, H, predictions(20, model="m2"))
    stored = store_predictions(ws, [item], model)  # type: ignore[arg-type]
    assert stored == {"added": 20, "skipped_unknown_class": 0, "source": "model:m2"}
    assert {r["status"] for r in ws.annotations.query_records(image(ws))} == {"proposed"}
    assert ws.reviews.counts()["open"] == 0
    routing.set_policy(ws, "production", threshold=0.5, actor="lead")
    item = PredictItem("coins.png", image(ws), W, H, predictions(20, seed=1))
    model = SimpleNamespace(info=SimpleNamespace(id="m1"), source_name="model:m1")
    stored = store_predictions(ws, [item], model)  # type: ignore[arg-type]
    routed = stored["routed"]
    assert routed["uncertain"] + routed["auto_accepted"] == 20 and routed["audit"] == 0
    assert ws.reviews.counts()["by_reason"] == {"uncertain": routed["uncertain"]}


def test_policy_input_is_checked(ws: gv.Workspace) -> None:
    with pytest.raises(InvalidInput, match=r"threshold must be between 0 and 1, got 1\.5"):
        routing.set_policy(ws, "production", threshold=1.5, actor="lead")
    with pytest.raises(InvalidInput, match="audit_share must be between 0 and 1"):
        routing.set_policy(ws, "production", threshold=0.5, audit_share=-0.1, actor="lead")
    with pytest.raises(NotFound, match="no model or alias 'nope'"):
        routing.set_policy(ws, "nope", threshold=0.5, actor="lead")


@pytest.fixture
def api(ws: gv.Workspace) -> Iterator[TestClient]:
    with TestClient(create_app(ws)) as client:
        yield client


def proposals(ws: gv.Workspace, n: int = 4) -> list[dict[str, Any]]:
    """``n`` uncertain proposals of m1, each with its review task; returns the tasks, highest priority first."""
    routing.set_policy(ws, "m1", threshold=0.0, actor="lead")  # everything with an uncertainty > 0 to review
    routing.store_routed(ws, image(ws), predictions(n, seed=3), model_id="m1", actor="model:m1")
    return ws.reviews.page(limit=100)[0]


def answer(client: TestClient, task: dict[str, Any], decision: str, **body: Any) -> Any:
    return client.post(
        f"/api/v1/reviews/{task['id']}/answer", json={"decision": decision, "version": task["version"], **body}
    )


def test_answers_store_linked_labels(both: gv.Workspace) -> None:
    with TestClient(create_app(both)) as api:
        check_answers(api, both)


def check_answers(api: TestClient, ws: gv.Workspace) -> None:
    accept, correct, reject, skip = proposals(ws)
    got = api.get("/api/v1/reviews/next", params={"actor": "ana"}).json()
    assert got["task"]["id"] == accept["id"] and got["remaining"] == 4
    assert got["task"]["annotation"]["attributes"]["uncertainty"] == accept["uncertainty"]
    after = api.get("/api/v1/reviews/next", params={"after": accept["id"]}).json()
    assert after["task"]["id"] == correct["id"]  # skip / next: the following one in priority order

    done = answer(api, accept, "accept", actor="ana")
    assert done.status_code == 200, done.text
    task = done.json()
    assert task["status"] == "answered" and task["decision"] == "accept" and task["decided_by"] == "ana"
    assert task["annotation"]["status"] == "accepted"
    label = ws.annotations.get_record(task["result_annotation_id"])
    assert label["source"] == "user:ana" and label["status"] == "accepted" and label["bbox"] == accept["region"]
    assert label["attributes"] == {
        "review_task": accept["id"],
        "prediction": accept["annotation_id"],
        "model": "m1",
        "score": accept["score"],
        "uncertainty": accept["uncertainty"],
    }

    fixed = answer(api, correct, "correct", actor="bo", annotation={"bbox": [10, 10, 60, 50], "label": "bell"})
    assert fixed.status_code == 200, fixed.text
    assert ws.annotations.get_record(correct["annotation_id"])["status"] == "rejected"
    label = ws.annotations.get_record(fixed.json()["result_annotation_id"])
    assert (label["bbox"], label["label"], label["source"]) == ([10, 10, 60, 50], "bell", "user:bo")
    assert label["attributes"]["prediction"] == correct["annotation_id"]

    refused = answer(api, reject, "reject", actor="bo")
    assert refused.json()["result_annotation_id"] is None
    assert ws.annotations.get_record(reject["annotation_id"])["status"] == "rejected"

    kept = answer(api, skip, "skip", actor="bo").json()
    assert kept["status"] == "open" and kept["version"] == skip["version"]
    counts = api.get("/api/v1/reviews/counts").json()
    assert counts["open"] == 1 and counts["answered"] == 3
    assert counts["by_decision"] == {"accept": 1, "correct": 1, "reject": 1}
    sources = sorted(r["source"] for r in ws.annotations.query_records(image(ws)))
    assert sources == ["model:m1"] * 4 + ["user:ana", "user:bo"]  # reject and skip stored no label
    assert ws.reviews.superseded_ids() == {accept["annotation_id"]}  # its copy is the label a freeze should take
    from gigavision.datasets import create_version, open_version

    frozen = open_version(ws, create_version(ws, "reviewed", actor="ana").ref)
    kept = sorted((r["source"], r["label"]) for r in frozen.records(image(ws)))
    assert ("user:ana", accept["label"]) in kept and ("model:m1", accept["label"]) not in kept  # not twice


def test_labelled_task_on_a_region(api: TestClient, ws: gv.Workspace) -> None:
    ws.reviews.add([NewTask(image_id=image(ws), reason="selected", region=(0, 0, 100, 100), priority=5)], actor="al")
    (task,) = api.get("/api/v1/reviews", params={"reason": "selected"}).json()["items"]
    assert task["region"] == [0, 0, 100, 100] and task["annotation"] is None
    r = answer(api, task, "accept", actor="ana")
    assert r.status_code == 400 and "no proposal to accept" in r.json()["error"]["message"]
    outside = answer(
        api, task, "labelled", actor="ana", annotations=[{"kind": "box", "label": "coin", "bbox": [0, 0, 999, 9]}]
    )
    assert outside.status_code == 400 and ws.reviews.get(task["id"])["status"] == "open"  # nothing half-written
    boxes = [
        {"kind": "box", "label": "coin", "bbox": [5, 5, 30, 30]},
        {"kind": "box", "label": "coin", "bbox": [40, 40, 70, 70]},
    ]
    done = answer(api, task, "labelled", actor="ana", annotations=boxes).json()
    stored = [ws.annotations.get_record(i) for i in done["details"]["result_annotation_ids"]]
    assert [s["bbox"] for s in stored] == [[5, 5, 30, 30], [40, 40, 70, 70]]
    assert {s["status"] for s in stored} == {"accepted"} and stored[0]["attributes"] == {"review_task": task["id"]}


def test_second_answer_is_a_conflict_showing_the_first(api: TestClient, ws: gv.Workspace) -> None:
    task = proposals(ws, 1)[0]
    assert answer(api, task, "reject", actor="ana").status_code == 200
    late = answer(api, task, "accept", actor="bo")
    assert late.status_code == 409
    body = late.json()
    assert "already answered by ana (reject" in body["detail"]
    assert body["current"]["decision"] == "reject" and body["current"]["decided_by"] == "ana"
    assert ws.annotations.get_record(task["annotation_id"])["status"] == "rejected"  # bo's accept changed nothing


def test_bad_answers(api: TestClient, ws: gv.Workspace) -> None:
    task = proposals(ws, 1)[0]
    r = answer(api, task, "approve", actor="ana")
    assert r.status_code == 400 and "decision 'approve': expected one of accept" in r.json()["error"]["message"]
    r = api.post(f"/api/v1/reviews/{task['id']}/answer", json={"decision": "accept", "version": 7, "actor": "ana"})
    assert r.status_code == 409 and "at version 1, not 7" in r.json()["detail"]
    assert r.json()["current"]["status"] == "open"
    r = api.post("/api/v1/reviews/999/answer", json={"decision": "accept", "version": 1})
    assert r.status_code == 404 and "no review task with id 999" in r.json()["error"]["message"]
    r = answer(api, task, "correct", actor="ana")
    assert r.status_code == 400 and "needs 'annotation'" in r.json()["error"]["message"]
    r = api.get("/api/v1/reviews", params={"reason": "bored"})
    assert r.status_code == 400 and "reason 'bored'" in r.json()["error"]["message"]
    r = api.put("/api/v1/routing/production", json={"threshold": 1.5})
    assert r.status_code == 400 and "threshold must be between 0 and 1, got 1.5" in r.json()["error"]["message"]
    assert api.put("/api/v1/routing/nope", json={"threshold": 0.5}).status_code == 404
    assert api.get("/api/v1/reviews/999").status_code == 404


def test_routing_over_rest(api: TestClient) -> None:
    r = api.put("/api/v1/routing/production", json={"threshold": 0.3, "audit_share": 0.1, "actor": "lead"})
    assert r.status_code == 200 and r.json()["threshold"] == 0.3 and r.json()["updated_by"] == "lead"
    assert api.get("/api/v1/routing").json()["items"][0]["model"] == "production"
    assert api.get("/api/v1/routing/production").json()["items"][0]["audit_share"] == 0.1
    assert api.delete("/api/v1/routing/production").status_code == 204
    assert api.get("/api/v1/routing/production").status_code == 404


def test_annotator_answers_only_as_themselves(ws: gv.Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(users_module, "HASHER", PasswordHasher(time_cost=1, memory_cost=8192))
    tasks = proposals(ws, 2)
    ws.reviews.add([NewTask(image_id=image(ws), reason="selected", assignee="bo", priority=9)], actor="lead")
    app = create_app(ws)
    accounts = app.state.auth.accounts
    accounts.add("ana", "annotator", "correct horse battery")
    ana = {"Authorization": f"Bearer {accounts.add_token('ana', 'test')[0]}"}
    with TestClient(app) as client:
        listed = client.get("/api/v1/reviews", headers=ana).json()
        assert listed["total"] == 2  # bo's task is not ana's to see
        assert client.get("/api/v1/reviews/next", headers=ana).json()["task"]["id"] == tasks[0]["id"]
        r = client.post(
            f"/api/v1/reviews/{tasks[0]['id']}/answer",
            json={"decision": "accept", "version": 1, "actor": "bo"},
            headers=ana,
        )
        assert r.status_code == 403 and "a login acts only as itself (ana)" in r.json()["error"]["message"]
        r = client.post(
            f"/api/v1/reviews/{tasks[0]['id']}/answer", json={"decision": "accept", "version": 1}, headers=ana
        )
        assert r.status_code == 200 and r.json()["decided_by"] == "ana"
        assert ws.annotations.get_record(r.json()["result_annotation_id"])["source"] == "user:ana"


def test_monitor_from_hand_made_answers(api: TestClient, ws: gv.Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    """20 audits, 3 rejected and 1 corrected: error rate 0.2, Wilson 95 % interval [0.081, 0.416]."""
    ann = predictions(26, seed=5)
    ann.score[:] = [0.95] * 20 + [0.55] * 6
    ids = ws.annotations.add(image(ws), ann, actor="model:m1")
    tasks = [
        NewTask(image_id=image(ws), reason="audit", annotation_id=i, model_id="m1", score=0.95, priority=1)
        for i in ids[:20]
    ] + [
        NewTask(image_id=image(ws), reason="uncertain", annotation_id=i, model_id="m1", score=0.55, priority=0.5)
        for i in ids[20:]
    ]
    ws.reviews.add(tasks, actor="model:m1")
    made = sorted(ws.reviews.page(limit=100)[0], key=lambda t: t["id"])
    decisions = ["reject"] * 3 + ["correct"] + ["accept"] * 16 + ["accept"] * 2 + ["reject"] * 2
    for task, decision in zip(made, decisions, strict=False):
        body = {"annotation": {"label": "bell"}} if decision == "correct" else {}
        assert answer(api, task, decision, actor="ana", **body).status_code == 200
    doc = api.get("/api/v1/models/production/monitor").json()
    assert doc["model_id"] == "m1"
    assert doc["audit"]["n"] == 20 and doc["audit"]["errors"] == 4 and doc["audit"]["error_rate"] == 0.2
    lo, hi = doc["audit"]["ci95"]
    assert (round(lo, 3), round(hi, 3)) == (0.081, 0.416)  # Wilson, z = 1.96
    assert doc["sent_to_review"] == {"uncertain": 6, "audit": 20} and doc["backlog"] == 2
    assert doc["answered"] == 24
    bands = {tuple(b["band"]): (b["n"], b["precision"]) for b in doc["precision_by_score_band"]}
    assert bands[(0.9, 1.0)] == (20, 0.8) and bands[(0.5, 0.6)] == (4, 0.5)
    assert wilson(0, 0) is None and wilson(0, 10)[0] == 0.0  # type: ignore[index]
    code = main(["-w", str(ws.root), "models", "monitor", "m1", "--json"])
    assert code == 0 and json.loads(capsys.readouterr().out) == monitor(ws, "m1")


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli(ws: gv.Workspace, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    w = ["-w", str(ws.root)]
    code, _, err = run(capsys, *w, "routing", "set", "production", "--threshold", "2")
    assert code == 2 and "threshold must be between 0 and 1, got 2.0" in err
    code, out, _ = run(
        capsys, *w, "routing", "set", "production", "--threshold", "0.4", "--audit-share", "0.1", "--json"
    )
    assert code == 0 and json.loads(out)["threshold"] == 0.4
    code, out, _ = run(capsys, *w, "routing", "list", "--json")
    assert [p["model"] for p in json.loads(out)["items"]] == ["production"]
    routing.store_routed(ws, image(ws), predictions(10, seed=2), model_id="m1", actor="model:m1")
    code, out, _ = run(capsys, *w, "review", "next", "--json")
    task = json.loads(out)["task"]
    assert code == 0 and task["reason"] == "uncertain"
    fix = tmp_path / "fix.json"
    fix.write_text(json.dumps({"label": "bell"}))
    code, out, _ = run(
        capsys, *w, "review", "answer", str(task["id"]), "correct", "--as", "ana", "--file", str(fix), "--json"
    )
    assert code == 0 and json.loads(out)["decision"] == "correct"
    code, _, err = run(capsys, *w, "review", "answer", str(task["id"]), "accept", "--as", "bo")
    assert code != 0 and "already answered by ana" in err
    code, out, _ = run(capsys, *w, "review", "list", "--status", "answered", "--json")
    assert json.loads(out)["total"] == 1
    code, out, _ = run(capsys, *w, "review", "show", str(task["id"]), "--json")
    assert json.loads(out)["annotation"]["status"] == "rejected"
    code, _, _ = run(capsys, *w, "routing", "remove", "production")
    assert code == 0 and routing.list_policies(ws) == []


def test_confirming_a_suspect_label_makes_no_copy(api: TestClient, ws: gv.Workspace) -> None:
    (label,) = ws.annotations.add(
        image(ws), Annotations.from_boxes([[5, 5, 40, 40]], ["coin"], source=["user:al"], status=["accepted"]), "al"
    )
    ws.reviews.add([NewTask(image_id=image(ws), reason="suspect", annotation_id=label, label="coin")], actor="lead")
    (task,) = api.get("/api/v1/reviews").json()["items"]
    done = answer(api, task, "accept", actor="ana").json()
    assert done["result_annotation_id"] == label and ws.annotations.count(image(ws)) == 1
    assert ws.reviews.superseded_ids() == set()
