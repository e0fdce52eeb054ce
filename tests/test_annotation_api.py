"""The annotation REST API on SQLite and PostgreSQL: add, viewport, edit with versions (409), history, schema."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import gigavision as gv
from gigavision.server.main import create_app


@pytest.fixture
def api(workspace: gv.Workspace, samples: dict[str, Path]) -> Iterator[tuple[TestClient, str]]:
    (r,) = workspace.ingest([samples["immunohistochemistry.png"]])
    assert r.id is not None
    with TestClient(create_app(workspace)) as client:
        yield client, r.id


def test_add_query_edit_delete_history(api: tuple[TestClient, str]) -> None:
    client, image_id = api
    assert (
        client.put(
            "/api/v1/labels/nucleus",
            json={"kind": "polygon", "color": "#3050ff", "attributes": {"stain": ["weak", "strong"]}},
        ).status_code
        == 200
    )
    assert client.put("/api/v1/labels/tumour", json={"kind": "tag"}).status_code == 200
    assert set(client.get("/api/v1/labels").json()) == {"nucleus", "tumour"}
    records = [
        {
            "kind": "polygon",
            "label": "nucleus",
            "source": "user:ana",
            "attributes": {"stain": "strong"},
            "geometry": {
                "type": "Polygon",
                "coordinates": [[[100, 100], [140, 100], [140, 130], [100, 130], [100, 100]]],
            },
        },
        {
            "kind": "polygon",
            "label": "nucleus",
            "source": "user:ana",
            "geometry": {"type": "Polygon", "coordinates": [[[400, 400], [420, 400], [420, 430], [400, 400]]]},
        },
        {"kind": "tag", "label": "tumour", "source": "user:ana"},
    ]
    added = client.post(f"/api/v1/images/{image_id}/annotations", json={"annotations": records, "actor": "ana"})
    assert added.status_code == 201 and added.json()["count"] == 3
    first = added.json()["ids"][0]

    viewport = client.get(f"/api/v1/images/{image_id}/annotations", params={"bbox": "90,90,200,200"}).json()
    assert viewport["count"] == 1 and viewport["items"][0]["id"] == first
    assert viewport["items"][0]["bbox"] == [100, 100, 140, 130] and viewport["items"][0]["version"] == 1
    every = client.get(f"/api/v1/images/{image_id}/annotations").json()
    assert every["count"] == 3
    tags = client.get(f"/api/v1/images/{image_id}/annotations", params={"label": "tumour"}).json()
    assert [i["kind"] for i in tags["items"]] == ["tag"]

    edit = client.patch(
        f"/api/v1/annotations/{first}", json={"version": 1, "changes": {"status": "accepted"}, "actor": "bo"}
    )
    assert edit.status_code == 200 and edit.json()["version"] == 2
    stale = client.patch(f"/api/v1/annotations/{first}", json={"version": 1, "changes": {"label": "x"}, "actor": "cy"})
    assert stale.status_code == 409 and stale.json()["error"]["code"] == "conflict"
    assert client.delete(f"/api/v1/annotations/{first}", params={"version": 1}).status_code == 409
    assert client.delete(f"/api/v1/annotations/{first}", params={"version": 2, "actor": "ana"}).status_code == 204
    history = client.get(f"/api/v1/annotations/{first}/history").json()
    assert [(h["action"], h["actor"]) for h in history] == [("create", "ana"), ("update", "bo"), ("delete", "ana")]
    assert client.get(f"/api/v1/images/{image_id}/annotations").json()["count"] == 2


def test_bad_annotations_are_rejected_whole(api: tuple[TestClient, str]) -> None:
    client, image_id = api
    client.put("/api/v1/labels/cell", json={"kind": "box"})
    good = {"kind": "box", "label": "cell", "bbox": [0, 0, 10, 10]}
    raw_nan = '{"annotations": [{"kind": "box", "label": "cell", "bbox": [0, 0, NaN, 10]}]}'  # a sloppy client
    r = client.post(
        f"/api/v1/images/{image_id}/annotations", content=raw_nan, headers={"content-type": "application/json"}
    )
    assert r.status_code == 400 and "finite" in r.json()["error"]["message"]
    for bad, why in (
        ({"kind": "box", "label": "cell", "bbox": [10, 0, 0, 10]}, "x1 >= x0"),
        ({"kind": "box", "label": "dog", "bbox": [0, 0, 1, 1]}, "not in the schema"),
        ({"kind": "blob", "label": "cell", "bbox": [0, 0, 1, 1]}, "kind"),
        ({"kind": "polygon", "label": "cell"}, "bbox or a geometry"),
    ):
        r = client.post(f"/api/v1/images/{image_id}/annotations", json={"annotations": [good, bad]})
        assert r.status_code == 400, (bad, r.text)
        assert why in r.json()["error"]["message"]
    assert client.get(f"/api/v1/images/{image_id}/annotations").json()["count"] == 0
    assert client.get(f"/api/v1/images/{image_id}/annotations", params={"bbox": "1,2,3"}).status_code == 400
    assert client.get("/api/v1/images/" + "0" * 64 + "/annotations").status_code == 404
    assert client.patch("/api/v1/annotations/999999", json={"version": 1, "changes": {}}).status_code == 404
    assert client.put("/api/v1/labels/x", json={"kind": "cube"}).status_code == 400


def test_label_palette_is_the_colour_a_new_class_gets(sqlite_workspace: gv.Workspace) -> None:
    """The viewer colours labels without a class by GET /api/v1/labels/palette: the colours classes get."""
    client = TestClient(create_app(sqlite_workspace))
    names = ["cell", "solar panel", '<img src=x onerror="x">']
    r = client.get("/api/v1/labels/palette", params={"name": names})
    assert r.status_code == 200
    colours = r.json()
    assert list(colours) == names and len(set(colours.values())) == 3
    assert all(len(c) == 7 and c.startswith("#") for c in colours.values())
    for name in names:  # a class added without a colour gets exactly the palette's
        assert client.put(f"/api/v1/labels/{name}", json={"kind": "box"}).json()["color"] == colours[name]
    assert client.get("/api/v1/labels/palette", params={"name": "cell"}).json() == {"cell": colours["cell"]}
    assert client.get("/api/v1/labels/palette").status_code == 422
    assert client.get("/api/v1/labels/palette", params={"name": ["x"] * 1001}).status_code == 422
    assert client.get("/api/v1/labels/palette", params={"name": "x" * 257}).status_code == 422
