"""Class kinds are enforced on every write (issue 14): a box under a point class, a tag under a box class, ...
are a 400 naming the class and its kind, through REST (single and bulk), the store and imports alike; labels
drawn in the browser by a login are that login's own (``user:NAME``); default class colours avoid red."""

from __future__ import annotations

import colorsys
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient

import gigavision as gv
from gigavision.annotations import Annotations
from gigavision.errors import InvalidInput
from gigavision.formats.api import import_annotations
from gigavision.formats.report import ImportOptions
from gigavision.server.main import create_app
from gigavision.store import users as users_module
from gigavision.store.labels import PALETTE_HUES, palette_rgb

BOX = {"kind": "box", "label": "nucleus", "bbox": [10, 10, 20, 20]}


@pytest.fixture
def site(sqlite_workspace: gv.Workspace, samples: dict[str, Path]) -> Iterator[dict[str, Any]]:
    """coins.png (384 × 303) and one class of each kind; an annotator ``ana`` with a bearer token."""
    ws = sqlite_workspace
    (r,) = ws.ingest([samples["coins.png"]])
    for name, kind in (("coin", "box"), ("nucleus", "point"), ("tumour", "polygon"), ("debris", "mask")):
        ws.labels.set(name, kind)
    ws.labels.set("blurry", "tag")
    yield {"ws": ws, "image": str(r.id)}


def test_rest_refuses_a_kind_the_class_does_not_take(site: dict[str, Any]) -> None:
    ws, image = site["ws"], site["image"]
    client = TestClient(create_app(ws))
    url = f"/api/v1/images/{image}/annotations"
    wrong = [
        (BOX, "label 'nucleus' is a point class: a box cannot be stored under it"),
        ({**BOX, "label": "tumour"}, "label 'tumour' is a polygon class: a box"),
        ({**BOX, "label": "debris"}, "label 'debris' is a mask class: a box"),
        ({"kind": "tag", "label": "coin"}, "label 'coin' is a box class: a tag cannot be stored under it"),
        ({**BOX, "label": "blurry"}, "label 'blurry' is a tag class: a box"),
    ]
    for record, message in wrong:
        r = client.post(url, json={"annotations": [{**BOX, "label": "coin"}, record]})  # bulk: all or nothing
        assert r.status_code == 400, r.text
        assert message in r.json()["error"]["message"]
        assert r.json()["error"]["message"].startswith("annotation 1:")
    assert len(ws.annotations.query(image)) == 0

    ok = [
        {**BOX, "label": "coin"},
        {"kind": "point", "label": "nucleus", "geometry": {"type": "Point", "coordinates": [5, 5]}},
        {"kind": "tag", "label": "blurry"},
        {
            "kind": "polygon",
            "label": "debris",
            "geometry": {"type": "Polygon", "coordinates": [[[1, 1], [9, 1], [9, 9], [1, 1]]]},
        },
    ]
    r = client.post(url, json={"annotations": ok})
    assert r.status_code == 201, r.text
    (box_id, *_) = r.json()["ids"]
    r = client.patch(f"/api/v1/annotations/{box_id}", json={"version": 1, "changes": {"label": "nucleus"}})
    assert r.status_code == 400 and "'nucleus' is a point class" in r.json()["error"]["message"]


def test_store_and_import_share_the_rule(site: dict[str, Any], tmp_path: Path) -> None:
    ws, image = site["ws"], site["image"]
    with pytest.raises(InvalidInput, match="label 'blurry' is a tag class: a box cannot be stored under it"):
        ws.annotations.add(image, Annotations.from_boxes([[1, 1, 5, 5]], "blurry"), actor="t")
    name = ws.get_image(image).name
    coco = {
        "images": [{"id": 1, "file_name": name, "width": 384, "height": 303}],
        "categories": [{"id": 1, "name": "nucleus"}, {"id": 2, "name": "coin"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [10, 10, 5, 5]},
        ],
    }
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(coco))
    report = import_annotations(ws, "coco", path, options=ImportOptions(ingest=False))
    assert report.annotations == 1  # the coin; the box under the point class is rejected alone, with why
    assert any("'nucleus' is a point class" in str(r) for r in report.rejected)


def test_a_login_draws_as_itself(site: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """The viewer sends source ``web``: with users it is stored as ``user:NAME``, which QC and isolation read."""
    monkeypatch.setattr(users_module, "HASHER", PasswordHasher(time_cost=1, memory_cost=8192))
    ws, image = site["ws"], site["image"]
    app = create_app(ws)
    app.state.auth.accounts.add("ana", "annotator", "correct horse battery")
    token = app.state.auth.accounts.add_token("ana", "test")[0]
    with TestClient(app) as client:
        r = client.post(
            f"/api/v1/images/{image}/annotations",
            json={
                "annotations": [
                    {**BOX, "label": "coin", "source": "web"},
                    {**BOX, "label": "coin", "source": "model:m@1"},
                ]
            },
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 201, r.text
    stored = ws.annotations.query(image)
    assert sorted(stored.source.tolist()) == ["model:m@1", "user:ana"]


def test_default_colours_avoid_red_and_differ() -> None:
    names = ["cell", "nucleus", "mitosis", "tumour", "stroma", "haemorrhage", "exudate", "vessel", "optic disc"]
    colours = {palette_rgb(n) for n in names}
    assert len(colours) == len(names)
    for r, g, b in colours:
        h, s, v = colorsys.rgb_to_hsv(r / 255, g / 255, b / 255)
        assert PALETTE_HUES[0] - 1 <= h * 360 <= PALETTE_HUES[1] + 1 and s >= 0.6 and v >= 0.8
        assert not (r > 1.5 * g and r > 1.5 * b)  # never a red


def test_browser_annotators_take_part_in_qc(site: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Two annotators draw in the viewer (source ``web`` as the page sends it) on an open QC item: neither sees
    the other's labels, and handing in without a body collects their drawings, so the item is decided."""
    monkeypatch.setattr(users_module, "HASHER", PasswordHasher(time_cost=1, memory_cost=8192))
    ws, image = site["ws"], site["image"]
    app = create_app(ws)
    accounts = app.state.auth.accounts
    app.state.auth.cache.seconds = 0
    tokens = {}
    for name, role in (("max", "manager"), ("ana", "annotator"), ("bo", "annotator")):
        accounts.add(name, role, "correct horse battery")
        tokens[name] = {"Authorization": f"Bearer {accounts.add_token(name, 'test')[0]}"}
    with TestClient(app) as client:
        made = client.post(
            "/api/v1/qc/items",
            json={"image_id": image, "kind": "box", "regions": [[0, 0, 200, 200]], "labels": []},
            headers=tokens["max"],
        )
        item = made.json()["items"][0]["id"]
        staffed = client.post(
            "/api/v1/qc/assignments", json={"item_ids": [item], "annotators": ["ana", "bo"]}, headers=tokens["max"]
        )
        assert staffed.status_code == 200, staffed.text
        drawn = {}
        for who, box in (("ana", [20, 20, 60, 60]), ("bo", [21, 21, 61, 61])):
            record = {"kind": "box", "label": "coin", "bbox": box, "source": "web"}
            r = client.post(f"/api/v1/images/{image}/annotations", json={"annotations": [record]}, headers=tokens[who])
            assert r.status_code == 201, r.text
            drawn[who] = r.json()["ids"][0]
        seen = client.get(f"/api/v1/images/{image}/annotations", headers=tokens["ana"]).json()["items"]
        assert drawn["ana"] in {r["id"] for r in seen} and drawn["bo"] not in {r["id"] for r in seen}
        for who in ("ana", "bo"):
            r = client.post(f"/api/v1/qc/items/{item}/submit", json={}, headers=tokens[who])
            assert r.status_code == 200, r.text
        decided = client.get(f"/api/v1/qc/items/{item}", headers=tokens["max"]).json()
    assert decided["status"] == "agreed", decided
    labels = {s["annotator"]: [x["id"] for x in s["labels"]] for s in decided["submissions"]}
    assert labels == {"ana": [drawn["ana"]], "bo": [drawn["bo"]]}


def test_predictions_are_fitted_to_their_class_kind(site: dict[str, Any]) -> None:
    """A detector trained on outlined objects predicts boxes: under a polygon class they are stored as their
    rectangles (``predict --store`` fits them), where a box drawn by hand under that class is refused."""
    ws, image = site["ws"], site["image"]
    boxes = Annotations.from_boxes([[10, 10, 30, 20]], "tumour", source=["model:det@1"], score=[0.9])
    with pytest.raises(InvalidInput, match="'tumour' is a polygon class"):
        ws.annotations.add(image, boxes, actor="t")
    (new,) = ws.annotations.add(image, ws.labels.fit(boxes), actor="t")
    stored = ws.annotations.get_record(new)
    assert stored["kind"] == "polygon" and stored["bbox"] == [10, 10, 30, 20]
    assert sorted(map(tuple, stored["geometry"]["coordinates"][0])) == sorted(
        [(10.0, 10.0), (30.0, 10.0), (30.0, 20.0), (10.0, 20.0), (30.0, 10.0)]
    )
