"""The QC flow over REST (SQLite and PostgreSQL) and the ``gigavision qc`` command line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import gigavision as gv
from gigavision.cli.main import main
from gigavision.server.main import create_app


@pytest.fixture
def api(workspace: gv.Workspace, samples: dict[str, Path]) -> Iterator[tuple[TestClient, str]]:
    (r,) = workspace.ingest([samples["retina.jpg"]])  # 1411 × 1411
    assert r.id is not None
    with TestClient(create_app(workspace)) as client:
        yield client, r.id


def box(x0: float, y0: float, x1: float, y1: float, label: str = "lesion") -> dict[str, Any]:
    return {"kind": "box", "label": label, "bbox": [x0, y0, x1, y1]}


def test_rest_flow_from_items_to_consensus(api: tuple[TestClient, str]) -> None:
    client, image_id = api
    made = client.post(
        "/api/v1/qc/items",
        json={"image_id": image_id, "kind": "box", "grid": [706, 706], "labels": ["lesion"], "actor": "lead"},
    )
    assert made.status_code == 201 and made.json()["count"] == 4
    items = [i["id"] for i in made.json()["items"]]
    assert made.json()["items"][3]["region"] == [706, 706, 1411, 1411]
    staffed = client.post("/api/v1/qc/assignments", json={"all_items": True, "pool": ["ana", "bo"], "actor": "lead"})
    assert staffed.status_code == 200 and all(a["added"] for a in staffed.json()["assignments"])
    assert client.get("/api/v1/qc/items", params={"annotator": "ana"}).json()["total"] == 4

    def submit(item: int, who: str, records: list[dict[str, Any]]) -> Any:
        return client.post(f"/api/v1/qc/items/{item}/submit", json={"actor": who, "annotations": records})

    # item 0: agree; items 1 and 2: disagree (item 2 more than item 1); item 3: left open
    assert submit(items[0], "ana", [box(10, 10, 100, 100)]).json()["status"] == "open"
    hidden = client.get(f"/api/v1/qc/items/{items[0]}", params={"actor": "bo"}).json()
    assert hidden["labels_hidden"] and hidden["submissions"][0]["labels"] is None
    mine = client.get(f"/api/v1/qc/items/{items[0]}", params={"actor": "ana"}).json()
    assert mine["submissions"][0]["labels"][0]["bbox"] == [10, 10, 100, 100]
    agreed = submit(items[0], "bo", [box(12, 10, 102, 100)]).json()
    assert agreed["status"] == "agreed" and agreed["consensus"][0]["bbox"] == [11, 10, 101, 100]
    submit(items[1], "ana", [box(800, 10, 900, 100), box(1000, 10, 1100, 100)])
    disputed = submit(items[1], "bo", [box(800, 10, 900, 100)]).json()
    assert disputed["agreement"] == pytest.approx(2 / 3)
    # per label, who else drew the same object: ana's second box is the disagreement the adjudicator sees
    matched = {s["annotator"]: [r["matched_with"] for r in s["labels"]] for s in disputed["submissions"]}
    assert matched == {"ana": [["bo"], []], "bo": [["ana"]]}
    submit(items[2], "ana", [box(10, 800, 100, 900)])
    assert submit(items[2], "bo", []).json()["agreement"] == 0.0

    queue = client.get("/api/v1/qc/queue").json()
    assert [i["id"] for i in queue["items"]] == [items[2], items[1]] and queue["total"] == 2  # lowest first
    assert client.get("/api/v1/qc/queue", params={"adjudicator": "ana"}).json()["total"] == 0
    r = client.post(f"/api/v1/qc/items/{items[2]}/adjudicate", json={"actor": "ana", "choose": "bo"})
    assert r.status_code == 400 and "cannot adjudicate" in r.json()["error"]["message"]
    staffed = client.post(
        "/api/v1/qc/assignments", json={"all_items": True, "role": "adjudicator", "pool": ["cy"], "actor": "lead"}
    )
    assert [a["added"] for a in staffed.json()["assignments"]] == [["cy"], ["cy"]]
    decided = client.post(f"/api/v1/qc/items/{items[2]}/adjudicate", json={"actor": "cy", "choose": "ana"})
    assert decided.status_code == 200 and decided.json()["status"] == "adjudicated"
    own = client.post(
        f"/api/v1/qc/items/{items[1]}/adjudicate", json={"actor": "cy", "annotations": [box(805, 10, 900, 100)]}
    )
    assert own.json()["consensus"][0]["bbox"] == [805, 10, 900, 100]
    assert own.json()["consensus"][0]["status"] == "adjudicated"

    consensus = client.get("/api/v1/qc/consensus", params={"image_id": image_id}).json()
    got = sorted(c["bbox"] for c in consensus["items"])
    assert got == [[10, 800, 100, 900], [11, 10, 101, 100], [805, 10, 900, 100]]
    assert client.get(f"/api/v1/qc/items/{items[1]}/consensus").json()["count"] == 1
    agreement = client.get(f"/api/v1/qc/items/{items[1]}/agreement").json()
    assert agreement["pairwise"]["matrix"] == [[1, pytest.approx(2 / 3)], [pytest.approx(2 / 3), 1]]
    people = {r["annotator"]: r for r in client.get("/api/v1/qc/annotators").json()["annotators"]}
    assert people["ana"]["submitted"] == 3 and people["ana"]["pending"] == 1 and people["ana"]["chosen"] == 1
    assert people["cy"]["adjudicated"] == 2
    summary = client.get("/api/v1/qc/agreement").json()
    assert summary["by_status"] == {"adjudicated": 2, "agreed": 1, "open": 1}
    assert client.get("/api/v1/qc/items", params={"status": "open"}).json()["items"][0]["id"] == items[3]


def test_rest_errors_are_4xx_with_a_message(api: tuple[TestClient, str]) -> None:
    client, image_id = api

    def error(response: Any, status: int, text: str) -> None:
        assert response.status_code == status, response.text
        assert text in response.json()["error"]["message"]

    new = {"image_id": image_id, "kind": "box", "actor": "lead"}
    error(client.post("/api/v1/qc/items", json={**new, "required": 1}), 400, "required must be")
    error(client.post("/api/v1/qc/items", json={**new, "threshold": 1.2}), 400, "threshold must be between 0 and 1")
    error(client.post("/api/v1/qc/items", json={**new, "regions": [[0, 0, 2000, 10]]}), 400, "outside the image")
    error(client.post("/api/v1/qc/items", json={**new, "iou_threshold": 0}), 400, "iou_threshold")
    error(client.post("/api/v1/qc/items", json={**new, "image_id": "0" * 64}), 404, "no image")
    error(client.get("/api/v1/qc/items/12345"), 404, "no QC item with id 12345")
    error(client.post("/api/v1/qc/items/12345/submit", json={"actor": "ana"}), 404, "no QC item")
    error(client.post("/api/v1/qc/items/12345/submit", json={}), 422, "actor")
    item = client.post("/api/v1/qc/items", json=new).json()["items"][0]["id"]
    client.post("/api/v1/qc/assignments", json={"item_ids": [item], "annotators": ["ana", "bo"]})
    error(client.post(f"/api/v1/qc/items/{item}/submit", json={"actor": "cy", "annotations": []}), 400, "not assigned")
    bad_box = {"actor": "ana", "annotations": [{"kind": "box", "label": "x", "bbox": [5, 0, 0, 5]}]}
    error(client.post(f"/api/v1/qc/items/{item}/submit", json=bad_box), 400, "x1 >= x0")
    # submissions are checked as every REST annotation write is, before anything is decoded: a box off the
    # 1411² image, and a mask whose 20-byte RLE declares 20000² pixels (decoding it would take ~400 MB)
    outside = {"actor": "ana", "annotations": [box(1300, 10, 1500, 100)]}
    error(client.post(f"/api/v1/qc/items/{item}/submit", json=outside), 400, "annotation record 0")
    bomb = {"kind": "mask", "label": "x", "bbox": [10, 10, 20, 20], "mask": {"size": [20000, 20000], "counts": "0"}}
    for route, who in (("submit", "ana"), ("adjudicate", "dee")):
        error(client.post(f"/api/v1/qc/items/{item}/{route}", json={"actor": who, "annotations": [bomb]}), 400, "20000")
    error(client.post(f"/api/v1/qc/items/{item}/adjudicate", json={"actor": "dee", "choose": "ana"}), 409, "open")
    for who in ("ana", "bo"):
        client.post(f"/api/v1/qc/items/{item}/submit", json={"actor": who, "annotations": []})
    error(client.post(f"/api/v1/qc/items/{item}/submit", json={"actor": "ana", "annotations": []}), 409, "closed")
    error(client.post("/api/v1/qc/assignments", json={"item_ids": [item], "annotators": []}), 400, "either")
    error(client.get("/api/v1/qc/items", params={"status": "nope"}), 400, "status must be")


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_flow(workspace: gv.Workspace, samples: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    (r,) = workspace.ingest([samples["coins.png"]])
    assert r.id is not None
    w = ["-w", str(workspace.root)]
    add = f"qc items add {r.id} --kind tag --label round --label worn --required 2 --threshold 0.9 --as lead"
    code, out, _ = run(capsys, *w, *add.split(), "--json")
    assert code == 0
    item = json.loads(out)["items"][0]
    assert item["kind"] == "tag" and item["labels"] == ["round", "worn"] and item["threshold"] == 0.9
    code, out, _ = run(capsys, *w, "qc", "assign", str(item["id"]), "--annotator", "ana", "--annotator", "bo", "--json")
    assert code == 0 and json.loads(out)["assignments"][0]["added"] == ["ana", "bo"]
    code, out, _ = run(capsys, *w, "qc", "submit", str(item["id"]), "--as", "ana", "--tag", "round", "--json")
    assert code == 0 and json.loads(out)["status"] == "open"
    labels = workspace.root / "bo.json"
    labels.write_text(json.dumps([{"kind": "tag", "label": "round"}, {"kind": "tag", "label": "worn"}]))
    code, out, err = run(capsys, *w, "qc", "submit", str(item["id"]), "--as", "bo", "--file", str(labels))
    assert code == 0 and "adjudication" in err  # Jaccard {round} vs {round, worn} = 0.5 < 0.9
    code, out, _ = run(capsys, *w, "qc", "queue", "--json")
    assert [i["id"] for i in json.loads(out)["items"]] == [item["id"]]
    code, out, err = run(capsys, *w, "qc", "adjudicate", str(item["id"]), "--as", "ana", "--choose", "bo")
    assert code == 2 and out == "" and err.count("\n") == 1 and "cannot adjudicate" in err
    code, out, _ = run(capsys, *w, "qc", "adjudicate", str(item["id"]), "--as", "cy", "--choose", "bo", "--json")
    assert code == 0 and sorted(c["label"] for c in json.loads(out)["consensus"]) == ["round", "worn"]
    code, out, _ = run(capsys, *w, "qc", "consensus", "--image", r.id, "--json")
    assert json.loads(out)["count"] == 2
    code, out, _ = run(capsys, *w, "qc", "annotators", "--json")
    people = {p["annotator"]: p for p in json.loads(out)["annotators"]}
    assert people["bo"]["consensus_agreement"] == 1.0 and people["ana"]["consensus_agreement"] == 0.5
    assert people["cy"]["adjudicated"] == 1
    code, out, _ = run(capsys, *w, "qc", "agreement", str(item["id"]), "--json")
    assert json.loads(out)["pairwise"]["matrix"] == [[1.0, 0.5], [0.5, 1.0]]
    code, out, _ = run(capsys, *w, "qc", "agreement", "--json")
    assert json.loads(out)["kinds"]["tag"]["items"] == 1
    code, out, _ = run(capsys, *w, "qc", "items", "show", str(item["id"]), "--json")
    assert json.loads(out)["decided_by"] == "cy"
    code, out, _ = run(capsys, *w, "qc", "items", "list", "--status", "adjudicated", "--json")
    assert json.loads(out)["total"] == 1
    for line in (
        "items list",
        "annotators",
        "agreement",
        "queue",
        f"items show {item['id']}",
        f"consensus {item['id']}",
    ):
        code, out, _ = run(capsys, *w, "qc", *line.split())
        assert code == 0 and out.strip()

    # grid items over the command line, then bad input as one-line errors with exit code 2
    code, out, _ = run(capsys, *w, "qc", "items", "add", r.id, "--kind", "box", "--grid", "200x200", "--json")
    assert json.loads(out)["count"] == 4  # 384 × 303 in 200 × 200 cells
    for args, text in (
        (["qc", "items", "add", r.id, "--kind", "box", "--required", "1"], "required must be"),
        (["qc", "items", "add", r.id, "--kind", "box", "--threshold", "2"], "threshold must be"),
        (["qc", "items", "add", r.id, "--kind", "box", "--region", "0,0,999,10"], "outside the image"),
        (["qc", "items", "add", r.id, "--kind", "box", "--grid", "a"], "--grid"),
        (["qc", "submit", "999", "--as", "ana"], "no QC item with id 999"),
        (["qc", "submit", str(item["id"]), "--as", "ana", "--tag", "x", "--empty"], "one way"),
        (["qc", "assign", "--pool", "ana"], "item ids or --all"),
    ):
        code, out, err = run(capsys, *w, *args)
        assert code == 2 and out == "" and text in err and err.count("\n") == 1, (args, err)


def test_items_refuse_labels_the_schema_lacks_or_gives_another_kind(
    api: tuple[TestClient, str], workspace: gv.Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 11: `qc items add --label lesion` used to accept a label the schema lacks, and `qc submit` failed."""
    client, image_id = api
    workspace.labels.set("roof", "polygon")
    new = {"image_id": image_id, "kind": "box", "actor": "lead"}
    response = client.post("/api/v1/qc/items", json={**new, "labels": ["lesion"]})
    assert response.status_code == 400, response.text
    message = response.json()["error"]["message"]
    assert "label 'lesion' is not in the label schema" in message
    assert "gigavision labels add lesion --kind box" in message
    response = client.post("/api/v1/qc/items", json={**new, "labels": ["roof"]})
    assert response.status_code == 400 and "a polygon class" in response.json()["error"]["message"]
    assert client.get("/api/v1/qc/items").json()["total"] == 0

    w = ["-w", str(workspace.root)]
    code, out, err = run(capsys, *w, "qc", "items", "add", image_id, "--kind", "box", "--label", "lesion")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "gigavision labels add lesion --kind box" in err
    # the README's order: add the class, then the items; a submission with that label is then stored
    assert run(capsys, *w, "labels", "add", "lesion", "--kind", "box")[0] == 0
    code, out, _ = run(capsys, *w, "qc", "items", "add", image_id, "--kind", "box", "--label", "lesion", "--json")
    assert code == 0
    item = json.loads(out)["items"][0]["id"]
    client.post("/api/v1/qc/assignments", json={"item_ids": [item], "annotators": ["ana", "bo"], "actor": "lead"})
    response = client.post(f"/api/v1/qc/items/{item}/submit", json={"actor": "ana", "annotations": [box(1, 1, 9, 9)]})
    assert response.status_code == 200, response.text
