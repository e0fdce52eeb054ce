"""Label-schema migrations: rename, merge, remove, kind changes; recorded, versioned, over REST and CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import gigavision as gv
from gigavision.annotations import Annotations
from gigavision.cli.main import main
from gigavision.errors import Conflict, InvalidInput, NotFound
from gigavision.server.main import create_app


@pytest.fixture
def coins(workspace: gv.Workspace, samples: dict[str, Path]) -> str:
    (result,) = workspace.ingest([samples["coins.png"]])
    return result.id


def _labels(ws: gv.Workspace, image_id: str) -> list[str]:
    return sorted(ws.annotations.query(image_id).label.tolist())


def test_rename_relabels_annotations_and_bumps_versions(workspace: gv.Workspace, coins: str) -> None:
    ws = workspace
    ws.labels.set("coin", "box", "#ffcc00", attributes={"metal": ["copper", "silver"]}, actor="ana")
    ws.labels.set("old coin", "box", parent="coin", actor="ana")
    ids = ws.annotations.add(coins, Annotations.from_boxes([[10, 10, 50, 50], [60, 60, 90, 90]], "coin"), "ana")
    ws.annotations.add(coins, Annotations.from_boxes([[5, 5, 9, 9]], "old coin"), "ana")

    done = ws.labels.rename("coin", "penny", actor="bob")
    assert done.annotations_changed == 2
    assert _labels(ws, coins) == ["old coin", "penny", "penny"]
    classes = ws.labels.by_name()
    assert set(classes) == {"old coin", "penny"}
    assert classes["penny"].attributes == {"metal": ["copper", "silver"]}
    assert classes["old coin"].parent == "penny"
    # an edit made against the pre-rename version would silently restore the old label: it is refused
    with pytest.raises(Conflict):
        ws.annotations.update(ids[0], 1, {"label": "coin"}, actor="carl")
    assert ws.annotations.query_records(coins)[0]["version"] == 2

    with pytest.raises(Conflict, match="already exists"):
        ws.labels.rename("penny", "old coin", actor="bob")
    with pytest.raises(NotFound):
        ws.labels.rename("nickel", "dime", actor="bob")
    event = ws.labels.events()[0]
    assert (event.action, event.actor, event.annotations_changed) == ("rename", "bob", 2)
    assert event.before["name"] == "coin" and event.after["name"] == "penny"


def test_merge_unites_classes_and_attribute_values(workspace: gv.Workspace, coins: str) -> None:
    ws = workspace
    ws.labels.set("low", "polygon", attributes={"overhang": ["low"]})
    ws.labels.set("high", "polygon", attributes={"overhang": ["high"], "solar_panel": ["yes", "no"]})
    ws.labels.set("tagged", "tag")
    square = [[(0, 0), (10, 0), (10, 10), (0, 10)]]
    ws.annotations.add(coins, Annotations.from_polygons(square * 3, ["low", "high", "high"]), "ana")

    with pytest.raises(InvalidInput, match="different kinds"):
        ws.labels.merge(["low", "tagged"], "vegetation", actor="bob")
    assert _labels(ws, coins) == ["high", "high", "low"]  # nothing moved on the refused merge

    done = ws.labels.merge(["low", "high"], "vegetation", actor="bob")
    assert done.annotations_changed == 3
    assert done.label_class.attributes == {"overhang": ["low", "high"], "solar_panel": ["yes", "no"]}
    assert _labels(ws, coins) == ["vegetation"] * 3
    assert {c.name for c in ws.labels.classes()} == {"tagged", "vegetation"}
    # values allowed in either source class stay valid on the merged class
    rec = ws.annotations.query_records(coins)[0]
    ws.annotations.update(rec["id"], rec["version"], {"attributes": {"overhang": "high"}}, actor="bob")


def test_remove_and_kind_changes_protect_used_classes(workspace: gv.Workspace, coins: str) -> None:
    ws = workspace
    ws.labels.set("coin", "box")
    ws.labels.set("unused", "point")
    (aid,) = ws.annotations.add(coins, Annotations.from_boxes([[1, 1, 5, 5]], "coin"), "ana")
    with pytest.raises(Conflict, match="used by 1 annotations"):
        ws.labels.remove("coin", actor="bob")
    with pytest.raises(Conflict, match="kind cannot change"):
        ws.labels.set("coin", "tag")
    ws.labels.remove("unused", actor="bob")
    assert [c.name for c in ws.labels.classes()] == ["coin"]
    ws.annotations.delete(aid, 1, actor="bob")
    ws.labels.remove("coin", actor="bob")  # only deleted annotations left: allowed, their history keeps the label
    assert ws.labels.classes() == []
    assert [e.action for e in ws.labels.events()] == ["remove", "remove", "set", "set"]


def test_rest_label_migrations(workspace: gv.Workspace, coins: str) -> None:
    client = TestClient(create_app(workspace))
    assert client.put("/api/v1/labels/cell", json={"kind": "box"}).status_code == 200
    assert client.put("/api/v1/labels/nucleus", json={"kind": "box"}).status_code == 200
    workspace.annotations.add(coins, Annotations.from_boxes([[1, 1, 5, 5]], "cell"), "ana")
    r = client.post("/api/v1/labels/cell/rename", json={"to": "tumour cell", "actor": "eve"})
    assert r.status_code == 200 and r.json()["annotations_changed"] == 1
    r = client.post("/api/v1/labels/tumour cell/rename", json={"to": "nucleus"})
    assert r.status_code == 409 and "merge" in r.json()["error"]["message"]
    r = client.post("/api/v1/labels/merge", json={"sources": ["tumour cell", "nucleus"], "into": "object"})
    assert r.status_code == 200 and r.json()["annotations_changed"] == 1
    assert client.post("/api/v1/labels/merge", json={"sources": ["ghost"], "into": "object"}).status_code == 404
    assert client.delete("/api/v1/labels/object").status_code == 409
    assert list(client.get("/api/v1/labels").json()) == ["object"]
    events = client.get("/api/v1/labels/events").json()
    assert [e["action"] for e in events] == ["merge", "rename", "set", "set"]
    assert events[1]["actor"] == "eve"


def test_cli_label_migrations(
    sqlite_workspace: gv.Workspace, samples: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    ws = sqlite_workspace
    (img,) = ws.ingest([samples["coins.png"]])
    ws.labels.set("a", "box")
    ws.labels.set("b", "box")
    ws.annotations.add(img.id, Annotations.from_boxes([[1, 1, 5, 5], [2, 2, 6, 6]], ["a", "b"]), "ana")
    root = str(ws.root)
    assert main(["-w", root, "labels", "rename", "a", "alpha", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["annotations_changed"] == 1
    assert main(["-w", root, "labels", "merge", "alpha", "b", "--into", "any", "--actor", "zoe"]) == 0
    assert "2 relabelled" in capsys.readouterr().err
    assert main(["-w", root, "labels", "remove", "any"]) == 2
    assert "merge it into another class" in capsys.readouterr().err
    assert main(["-w", root, "labels", "history", "--json"]) == 0
    assert [e["action"] for e in json.loads(capsys.readouterr().out)][:2] == ["merge", "rename"]
    assert _labels(ws, img.id) == ["any", "any"]


def test_merge_into_a_child_of_a_source_keeps_the_tree(workspace: gv.Workspace) -> None:
    ws = workspace
    ws.labels.set("cell", "box")
    ws.labels.set("tumour", "box", parent="cell")
    ws.labels.set("lymphocyte", "box", parent="tumour")
    ws.labels.merge(["tumour"], "lymphocyte", actor="bob")
    assert {c.name: c.parent for c in ws.labels.classes()} == {"cell": None, "lymphocyte": "cell"}


def test_prediction_overlays_draw_a_class_without_colour_in_its_palette_colour(tmp_path: Path) -> None:
    """One palette: the viewer (GET /api/v1/labels/palette) and the prediction overlay PNG agree."""
    from gigavision.infer.jobs import class_colours
    from gigavision.store.labels import palette_color, palette_rgb

    ws = gv.init_workspace(tmp_path / "ws")
    ws.labels.set("tumour", kind="polygon", color="#00ff00")
    colours = class_colours(ws, ["tumour", "stroma"])
    assert colours["tumour"] == (0, 255, 0)  # the schema's colour wins
    assert colours["stroma"] == palette_rgb("stroma")
    assert palette_color("stroma") == "#{:02x}{:02x}{:02x}".format(*palette_rgb("stroma"))
