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
    store.labels.set("roof", "box", "#aa0000", attributes={"overhang": ["none", "low", "high"]})
    store.labels.set("solar_panel", "box", parent="roof", attributes={"solar_panel": ["yes", "no"]})
    ok = Annotations.from_boxes([[0, 0, 10, 10]], "roof", attributes=[{"overhang": "low"}])
    assert len(store.add(image_id, ok, actor="ana")) == 1
    for bad, why in (
        (Annotations.from_boxes([[0, 0, 10, 10]], "chimney"), "not in the schema"),
        (Annotations.from_boxes([[0, 0, 10, 10]], "roof", attributes=[{"overhang": "huge"}]), "not one of"),
        (Annotations.from_boxes([[0, 0, 10, 10]], "roof", attributes=[{"colour": "red"}]), "no attribute"),
        (Annotations.from_tags(["roof"]), "label 'roof' is a box class: a tag cannot be stored under it"),
    ):
        with pytest.raises(InvalidInput, match=why):
            store.add(image_id, Annotations.merge([ok, bad]), actor="ana")
    assert store.count(image_id) == 1  # a rejected batch adds nothing
    with pytest.raises(InvalidInput, match="parent"):
        store.labels.set("tile", "box", parent="house")


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


# -- compact storage (migration 0006, store/geometry_codec.py) ---------------------------------------------
def _codec_cases() -> list[object]:
    rng = np.random.default_rng(7)
    ring = rng.uniform(40_000, 40_030, (20, 2))
    return [
        shapely.Polygon([(0, 0), (10, 0), (10, 10), (0, 10)]),  # integers: 1 byte per coordinate
        shapely.Polygon(ring),  # full-precision doubles
        shapely.Polygon(ring.astype(np.float32).astype(np.float64)),  # a model's float32 output
        shapely.Polygon([(0, 0), (100, 0), (100, 100), (0, 100)], [[(10, 10), (20.5, 10), (20, 20.25), (10, 20)]]),
        shapely.MultiPolygon([shapely.box(0, 0, 1, 1), shapely.box(2.5, 2, 3, 3.75)]),
        shapely.Point(3.5, -2.25),
        shapely.Point(1e-7, 99_999.123456789),
        # full precision on both sides of 2^15: no exact grid below 2^53 steps, so it stays WKB
        shapely.Polygon([(np.nextafter(32_768.0, 0), 5), (np.nextafter(32_768.0, 1e9), 5), (32_768.5, 6.5)]),
        shapely.Polygon([(0.1, 0.2), (1e5, 0), (5, 7)]),  # 0.1 and 1e5 share no exact grid: stays WKB
        shapely.Polygon([(0, 0, 1), (1, 0, 1), (1, 1, 1)]),  # a z: stays WKB
        shapely.Polygon([(0, 0), (np.inf, 0), (1, 1)]),
        shapely.LineString([(0, 0), (1, 1)]),
        shapely.Polygon(),
        None,
    ]


def test_geometry_codec_is_lossless_and_compact() -> None:
    from gigavision.store import geometry_codec as codec

    cases = _codec_cases()
    blobs = codec.encode(cases)
    decoded = codec.decode(blobs)
    geojson = codec.decode_geojson(blobs)
    for g, blob, back, gj in zip(cases, blobs, decoded, geojson, strict=True):
        if g is None:
            assert blob is None and back is None and gj is None
            continue
        assert blob is not None
        assert back.geom_type == g.geom_type
        assert shapely.has_z(back) == shapely.has_z(g)
        got, want = shapely.get_coordinates(back, include_z=True), shapely.get_coordinates(g, include_z=True)
        assert got.shape == want.shape and (np.isnan(got) & np.isnan(want) | (got == want)).all()
        assert gj == shapely.geometry.mapping(g)  # exactly what the REST API returned before the codec
        assert codec.encode([back]) == [blob]  # reading and writing again changes nothing
        assert codec.to_wkb(blob) is not None and shapely.from_wkb(codec.to_wkb(blob)).equals_exact(back, 0)
    compact = [b is not None and b[0] == codec.TAG for b in blobs]
    assert compact == [True] * 7 + [False] * 6 + [False]
    wkb = shapely.to_wkb(cases[:3])
    assert len(blobs[0]) <= 15 and len(blobs[2]) < len(wkb[2]) / 3 and len(blobs[1]) < 0.8 * len(wkb[1])


def test_store_round_trips_coordinates_exactly(workspace: gv.Workspace, image_id: str) -> None:
    """Whatever the precision of the input, query returns the very same doubles (lossless storage)."""
    rng = np.random.default_rng(3)
    centres = rng.uniform(100, 90_000, (300, 2))
    theta = np.linspace(0, 2 * np.pi, 20, endpoint=False)
    ring = centres[:, None, :] + rng.uniform(6, 12, (300, 20, 1)) * np.stack([np.cos(theta), np.sin(theta)], 1)
    variants = [ring, ring.astype(np.float32).astype(np.float64), np.round(ring * 2) / 2]
    polys = [shapely.Polygon(r) for v in variants for r in v]
    extra = [g for g in _codec_cases()[3:9] if g is not None]
    ann = Annotations.merge(
        [
            Annotations.from_polygons(polys + [g for g in extra if g.geom_type != "Point"], "cell"),
            Annotations.from_points([[3.5, -2.25], [1e-7, 99_999.123456789]], "dot"),
        ]
    )
    ids = workspace.annotations.add(image_id, ann, actor="ana")
    got = workspace.annotations.query(image_id, limit=10_000)
    assert got.id.tolist() == ids
    for a, b in zip(ann.geometry, got.geometry, strict=True):
        assert a.geom_type == b.geom_type and (shapely.get_coordinates(a) == shapely.get_coordinates(b)).all()
    records = workspace.annotations.query_records(image_id, limit=10_000)
    assert [r["geometry"] for r in records] == [shapely.geometry.mapping(g) for g in ann.geometry]
    assert (np.array([r["bbox"] for r in records]) == ann.xyxy).all()


def test_query_matches_records(workspace: gv.Workspace, image_id: str) -> None:
    """``query`` builds ``Annotations`` straight from the rows: the same as ``from_records(query_records())``."""
    store = workspace.annotations
    mask = np.zeros((6, 7), dtype=bool)
    mask[1:5, 2:6] = True
    ann = Annotations.merge(
        [
            cell_outlines(4, 4),
            Annotations.from_boxes([[5, 6, 50, 60]], "box", score=[0.75], attributes=[{"grade": "2"}]),
            Annotations.from_points([[7.5, 8.25]], "dot", status=["accepted"]),
            Annotations.from_tags(["slide-ok"]),
            Annotations.from_masks([mask], [(30, 40)], "blob"),
        ]
    )
    store.add(image_id, ann, actor="ana")
    for viewport, simplify in ((None, 0.0), (Viewport(0, 0, 600, 600), 0.0), (Viewport(0, 0, 900, 900), 6.0)):
        got = store.query(image_id, viewport, simplify=simplify)
        want = Annotations.from_records(store.query_records(image_id, viewport, simplify=simplify))
        assert got.to_records() == want.to_records()
        assert [g is None or g.equals_exact(w, 0) for g, w in zip(got.geometry, want.geometry, strict=True)]
    assert store.query(image_id, Viewport(1e6, 1e6, 2e6, 2e6)).to_records() == []


def test_orm_mapping_stays_compatible(workspace: gv.Workspace, image_id: str) -> None:
    """Code reading ``AnnotationRow`` directly still sees WKB geometry and the image id."""
    from sqlalchemy import select

    from gigavision.store.annotations import image_key
    from gigavision.store.schema import AnnotationRow

    cells = cell_outlines(2, 2)
    ids = workspace.annotations.add(image_id, cells, actor="ana")
    with workspace.session() as s:
        rows = s.scalars(
            select(AnnotationRow)
            .where(AnnotationRow.image_key == image_key(image_id), AnnotationRow.image_id == image_id)
            .order_by(AnnotationRow.id)
        ).all()
        assert [r.id for r in rows] == ids and {r.image_id for r in rows} == {image_id}
        assert all(shapely.from_wkb(r.geometry).equals_exact(g, 0) for r, g in zip(rows, cells.geometry, strict=True))
        assert rows[0].attributes is None  # empty attributes are stored as NULL ...
        assert s.scalars(select(AnnotationRow.image_id).distinct()).all() == [image_id]
    assert workspace.annotations.query_records(image_id, limit=1)[0]["attributes"] == {}  # ... and read as {}


def _failing_encoder(calls_before_failure: int) -> object:
    from gigavision.store import geometry_codec

    real = geometry_codec.encode
    calls = {"n": 0}

    def encode(geometries: object) -> list[bytes | None]:
        calls["n"] += 1
        if calls["n"] > calls_before_failure:
            raise RuntimeError("disk on fire")
        return real(geometries)  # type: ignore[arg-type]

    return encode


def test_bulk_add_is_all_or_nothing(workspace: gv.Workspace, image_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A chunk failing in the middle of the stream (executemany / COPY) leaves nothing behind."""
    import gigavision.store.annotations as store_module

    store = workspace.annotations
    kept = store.add(image_id, cell_outlines(2, 2), actor="ana")
    monkeypatch.setattr(store_module, "CHUNK", 100)
    monkeypatch.setattr(store_module, "BULK_ROWS", 100)  # the bulk path (SQLite: R*Tree trigger dropped)
    cells = cell_outlines(7, 50)  # 350 rows: chunks of 100, the third one fails
    with monkeypatch.context() as m:
        m.setattr(store_module.geometry_codec, "encode", _failing_encoder(2))
        with pytest.raises(RuntimeError, match="disk on fire"):
            store.add(image_id, cells, actor="ana")
    if not store.sqlite:  # PostgreSQL itself refuses a row in the middle of the COPY
        too_long = Annotations.merge([cells[:250], Annotations.from_boxes([[1, 1, 2, 2]], "x" * 300), cells[250:]])
        with pytest.raises(Exception, match="too long"):
            store.add(image_id, too_long, actor="ana")
    assert store.count(image_id) == 4
    assert [a for a in store.query(image_id).id.tolist()] == kept
    # the spatial index is intact, and so is the SQLite trigger that bulk loads drop for their duration
    assert store.count_in(image_id, Viewport(0, 0, 1e5, 1e5)) == 4
    if store.sqlite:
        with workspace.engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM annotations_rtree")).scalar() == 4
            triggers = conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger'")).scalars().all()
        assert "annotations_rtree_insert" in triggers
    ids = store.add(image_id, cells, actor="ana")  # and the same rows go in fine afterwards
    assert len(ids) == 350 and ids == sorted(ids) and min(ids) > max(kept)
    assert store.count_in(image_id, Viewport(0, 0, 1e5, 1e5)) == 354


def _old_layout_database(url: str) -> tuple[object, dict[str, str]]:
    """A database migrated to 0003 (before compact annotations) with rows written the 0002 way."""
    from alembic import command
    from alembic.config import Config

    from gigavision.store.db import MIGRATIONS, make_engine
    from tests.conftest import empty_postgres_schema

    if url.startswith("postgresql"):
        empty_postgres_schema(url)
    engine = make_engine(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0003")
    images = {"a": "abcdef" + "1" * 58, "b": "abcdef" + "2" * 58, "c": "012345" + "3" * 58}  # a, b share a prefix
    now = "2026-11-22 10:00:00.000000"
    with engine.begin() as conn:
        for image_id in images.values():
            conn.execute(
                text(
                    "INSERT INTO images (id, name, size_bytes, blob_key, reader, format, width, height, levels, "
                    "bands, dtype, metadata, created_at) VALUES (:id, 'x', 1, 'k', 'pil', 'png', 10, 10, '[]', "
                    "1, 'uint8', '{}', :now)"
                ),
                {"id": image_id, "now": now},
            )
        rows = []
        for i, (name, x, attrs) in enumerate(
            [("a", 0.1, "{}"), ("b", 10.25, '{"grade": "2"}'), ("c", 20.0, "{}"), ("a", 30.0, "{}")], start=1
        ):
            geom = shapely.Polygon([(x, 1), (x + 4.7, 1), (x + 4.7, 5.3)])
            rows.append(
                {
                    "id": i,
                    "image_id": images[name],
                    "key": int(images[name][:6], 16),
                    "x0": x,
                    "x1": x + 4.7,
                    "g": shapely.to_wkb(geom),
                    "attrs": attrs,
                    "now": now,
                }
            )
        conn.execute(
            text(
                "INSERT INTO annotations (id, image_id, image_key, kind, label, x0, y0, x1, y1, geometry, source, "
                "status, attributes, version, deleted, created_by, created_at, updated_at) VALUES (:id, :image_id, "
                ":key, 'polygon', 'cell', :x0, 1, :x1, 5.3, :g, 'user:ana', 'proposed', :attrs, 1, false, 'ana', "
                ":now, :now)"
            ),
            rows,
        )
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT setval('annotations_id_seq', 4)"))
        conn.execute(
            text(
                "CREATE TABLE child_of_annotations (id INTEGER PRIMARY KEY, annotation_id INTEGER "
                "NOT NULL REFERENCES annotations (id))"
            )
        )
        conn.execute(text("INSERT INTO child_of_annotations VALUES (1, 2), (2, 4)"))
    engine.dispose()
    return rows, images


def test_migration_0006_keeps_existing_annotations(tmp_path: Path, db_url: str) -> None:
    """Upgrading a database with rows: every annotation keeps its id, image, geometry, attributes and
    history; images whose id prefixes collide are told apart; other tables' foreign keys stay valid."""
    url = db_url or f"sqlite:///{tmp_path / 'old.db'}"
    rows, images = _old_layout_database(url)
    ws = gv.init_workspace(tmp_path / "ws", db_url=url)  # opening migrates to the newest revision
    try:
        store = ws.annotations
        with ws.engine.connect() as conn:
            keys = dict(conn.execute(text("SELECT image_id, image_key FROM annotation_images")).all())
        assert keys[images["a"]] == int("abcdef", 16) and keys[images["c"]] == int("012345", 16)
        assert keys[images["b"]] >= 1 << 24  # its prefix was taken by image a
        by_image = {name: store.query_records(image_id) for name, image_id in images.items()}
        assert [r["id"] for r in by_image["a"]] == [1, 4]
        assert [r["id"] for r in by_image["b"]] == [2] and [r["id"] for r in by_image["c"]] == [3]
        assert by_image["b"][0]["attributes"] == {"grade": "2"} and by_image["a"][0]["attributes"] == {}
        for name, row in zip("abca", rows, strict=True):
            (rec,) = [r for r in by_image[name] if r["id"] == row["id"]]
            assert rec["geometry"] == shapely.geometry.mapping(shapely.from_wkb(row["g"]))  # WKB left untouched
        assert [r["id"] for r in store.query_records(images["a"], Viewport(0, 0, 5, 5))] == [1]
        assert store.count(images["a"]) == 2 and store.count_in(images["b"], Viewport(0, 0, 100, 100)) == 1
        after = store.update(2, 1, {"label": "tumour"}, actor="bo")  # edits work on migrated rows
        assert after["geometry"] == by_image["b"][0]["geometry"]
        assert [e["action"] for e in store.history(2)] == ["create", "update"]
        new = store.add(images["b"], Annotations.from_boxes([[1, 1, 3, 3]], "box"), actor="ana")
        assert new[0] > 4 and [r["id"] for r in store.query_records(images["b"])] == [2, new[0]]
        with ws.engine.connect() as conn:
            children = conn.execute(text("SELECT annotation_id FROM child_of_annotations ORDER BY id")).scalars()
            assert children.all() == [2, 4]
            if ws.engine.dialect.name == "sqlite":
                assert conn.execute(text("PRAGMA foreign_key_check")).all() == []
    finally:
        ws.close()
