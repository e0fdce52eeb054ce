"""The spatial annotation store on SQLite (R*Tree) and PostgreSQL (GiST): viewport queries, edits, history."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import shapely
from skimage import measure
from sqlalchemy import text

import gigavision as gv
from gigavision.annotations import Annotations
from gigavision.errors import Conflict, InvalidInput, NotFound
from gigavision.store.annotations import Viewport


def cell_outlines(n_rows: int = 40, n_cols: int = 40, spacing: float = 250.0) -> Annotations:
    """Real nucleus-like outlines (contours of the coins scan) laid out on a grid over a big image."""
    from skimage import data

    labelled = measure.label(data.coins() > 110)
    shapes = [
        max(measure.find_contours(labelled == r.label, 0.5), key=len)[:, ::-1]
        for r in measure.regionprops(labelled)
        if r.area > 500
    ]
    polys = []
    for r in range(n_rows):
        for c in range(n_cols):
            ring = shapes[(r * n_cols + c) % len(shapes)]
            ring = ring - ring.min(axis=0) + (c * spacing, r * spacing)
            polys.append(shapely.Polygon(ring).buffer(0))  # contours may self-touch: make them valid
    labels = ["tumour" if (i % 3) else "stroma" for i in range(len(polys))]
    return Annotations.from_polygons(polys, labels, source="user:ana")


@pytest.fixture
def image_id(workspace: gv.Workspace, samples: dict[str, Path]) -> str:
    (r,) = workspace.ingest([samples["immunohistochemistry.png"]])
    assert r.id is not None
    return r.id


def test_viewport_queries_match_brute_force(workspace: gv.Workspace, image_id: str) -> None:
    cells = cell_outlines()
    ids = workspace.annotations.add(image_id, cells, actor="ana")
    assert len(ids) == 1600 and workspace.annotations.count(image_id) == 1600
    rng = np.random.default_rng(0)
    for _ in range(25):
        x0, y0 = rng.uniform(-500, 10_000, 2)
        w, h = rng.uniform(1, 3000, 2)
        got = workspace.annotations.query(image_id, Viewport(x0, y0, x0 + w, y0 + h))
        b = cells.xyxy
        expected = np.nonzero((b[:, 0] <= x0 + w) & (b[:, 2] >= x0) & (b[:, 1] <= y0 + h) & (b[:, 3] >= y0))[0]
        assert sorted(got.id.tolist()) == sorted(np.asarray(ids)[expected].tolist())
    # the geometry comes back as stored, in level-0 pixels
    one = workspace.annotations.query(image_id, Viewport(0, 0, 50, 50))
    assert one.geometry[0].equals(cells.geometry[0])
    # filters and simplification
    stroma = workspace.annotations.query(image_id, labels=["stroma"])
    assert len(stroma) == int((cells.label == "stroma").sum()) and set(stroma.label) == {"stroma"}
    coarse = workspace.annotations.query(image_id, Viewport(0, 0, 1000, 1000), simplify=8.0)
    fine = workspace.annotations.query(image_id, Viewport(0, 0, 1000, 1000))
    vertices = shapely.get_num_coordinates
    assert vertices(list(coarse.geometry)).sum() < vertices(list(fine.geometry)).sum()
    assert len(workspace.annotations.query(image_id, limit=10)) == 10


def test_other_images_do_not_leak_into_viewports(
    workspace: gv.Workspace, image_id: str, samples: dict[str, Path]
) -> None:
    (other,) = workspace.ingest([samples["coins.png"]])
    assert other.id is not None
    workspace.annotations.add(image_id, Annotations.from_boxes([[10, 10, 20, 20]], "a"), actor="ana")
    workspace.annotations.add(other.id, Annotations.from_boxes([[10, 10, 20, 20]], "b"), actor="ana")
    got = workspace.annotations.query(image_id, Viewport(0, 0, 100, 100))
    assert list(got.label) == ["a"]


def test_edits_are_versioned_and_recorded(workspace: gv.Workspace, image_id: str) -> None:
    store = workspace.annotations
    (aid,) = store.add(
        image_id, Annotations.from_boxes([[100, 100, 200, 150]], "cell", status=["proposed"]), "model:m1"
    )
    after = store.update(aid, 1, {"status": "accepted", "attributes": {"grade": "2"}}, actor="ana")
    assert after["version"] == 2 and after["status"] == "accepted"
    with pytest.raises(Conflict, match="version 2, not 1"):
        store.update(aid, 1, {"label": "tumour"}, actor="bo")  # bo edited a stale copy: 409, not a lost edit
    moved = store.update(aid, 2, {"bbox": [5000, 5000, 5100, 5050]}, actor="bo")
    assert moved["bbox"] == [5000, 5000, 5100, 5050]
    assert len(store.query(image_id, Viewport(90, 90, 210, 160))) == 0  # the spatial index followed the edit
    assert len(store.query(image_id, Viewport(5050, 5020, 5060, 5030))) == 1
    store.delete(aid, 3, actor="ana")
    assert store.count(image_id) == 0 and len(store.query(image_id, Viewport(0, 0, 1e6, 1e6))) == 0
    history = store.history(aid)
    assert [(e["action"], e["actor"], e["version"]) for e in history] == [
        ("create", "model:m1", 1),
        ("update", "ana", 2),
        ("update", "bo", 3),
        ("delete", "ana", 4),
    ]
    assert history[1]["before"]["status"] == "proposed" and history[1]["after"]["status"] == "accepted"
    with pytest.raises(NotFound):
        store.update(aid, 4, {"label": "x"}, actor="ana")


def test_label_schema_is_enforced(workspace: gv.Workspace, image_id: str) -> None:
    store = workspace.annotations
    store.set_class("roof", "polygon", "#aa0000", attributes={"overhang": ["none", "low", "high"]})
    store.set_class("solar_panel", "box", parent="roof", attributes={"solar_panel": ["yes", "no"]})
    ok = Annotations.from_boxes([[0, 0, 10, 10]], "roof", attributes=[{"overhang": "low"}])
    assert len(store.add(image_id, ok, actor="ana")) == 1
    for bad, why in (
        (Annotations.from_boxes([[0, 0, 10, 10]], "chimney"), "not in the schema"),
        (Annotations.from_boxes([[0, 0, 10, 10]], "roof", attributes=[{"overhang": "huge"}]), "not one of"),
        (Annotations.from_boxes([[0, 0, 10, 10]], "roof", attributes=[{"colour": "red"}]), "no attribute"),
    ):
        with pytest.raises(InvalidInput, match=why):
            store.add(image_id, Annotations.merge([ok, bad]), actor="ana")
    assert store.count(image_id) == 1  # a rejected batch adds nothing
    with pytest.raises(InvalidInput, match="parent"):
        store.set_class("tile", "box", parent="house")


def test_sqlite_uses_the_rtree(sqlite_workspace: gv.Workspace, samples: dict[str, Path]) -> None:
    (r,) = sqlite_workspace.ingest([samples["coins.png"]])
    assert r.id is not None
    sqlite_workspace.annotations.add(r.id, cell_outlines(5, 5), actor="ana")
    with sqlite_workspace.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM annotations_rtree")).scalar() == 25
        plan = " ".join(
            str(row)
            for row in conn.execute(
                text(
                    "EXPLAIN QUERY PLAN SELECT id FROM annotations_rtree "
                    "WHERE x0 <= 10 AND x1 >= 0 AND y0 <= 10 AND y1 >= 0"
                )
            )
        )
    assert "VIRTUAL TABLE INDEX" in plan
