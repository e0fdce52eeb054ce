"""Review of issue 3 (schema, annotations, import/export): each test pins a bug found by using the features
on real files the way other tools write them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import gigavision as gv
from gigavision.annotations import Annotations
from gigavision.cli.main import main
from gigavision.errors import InvalidInput
from gigavision.formats import import_annotations
from gigavision.formats.api import export_workspace


def test_mask_record_with_uncompressed_counts_is_stored_compressed_and_exports(
    tmp_path: Path, samples: dict[str, Path], sqlite_workspace: gv.Workspace
) -> None:
    """A mask record whose ``counts`` is a list (COCO's uncompressed RLE) was stored as is; every exporter that
    decodes masks (COCO, GeoJSON) then crashed with ``'list' object has no attribute 'encode'``."""
    (r,) = sqlite_workspace.ingest([samples["astronaut.jpg"]])
    sqlite_workspace.labels.set("helmet", "mask")
    record = {
        "kind": "mask",
        "label": "helmet",
        "bbox": [10, 300, 14, 304],
        "mask": {"size": [4, 4], "counts": [0, 16]},
    }
    (ann_id,) = sqlite_workspace.annotations.add(str(r.id), Annotations.from_records([record]), actor="ana")
    stored = sqlite_workspace.annotations.query(str(r.id))
    assert stored.mask[0] == {"size": [4, 4], "counts": "0`0"} and stored.area.tolist() == [16.0]
    result = export_workspace(sqlite_workspace, "coco", tmp_path / "coco")
    coco = json.loads((tmp_path / "coco" / "annotations.json").read_text())
    assert result.annotations == 1 and coco["annotations"][0]["area"] == 16
    export_workspace(sqlite_workspace, "geojson", tmp_path / "geojson")
    assert ann_id > 0


@pytest.mark.parametrize(
    ("mask", "reason"),
    [
        ({"size": [4, 4], "counts": [0, 10]}, "mask counts cover 10 pixels, its 4x4 window has 16"),
        ({"size": [4], "counts": "0`0"}, "a mask must be a COCO RLE"),
        ({"size": [4, 4], "counts": "~~~~"}, "not a valid COCO RLE string"),
        ({"size": [4, 4]}, "mask counts must be a COCO counts string or a list"),
        ("0`0", "a mask must be a COCO RLE"),
    ],
)
def test_malformed_mask_records_are_refused(mask: object, reason: str) -> None:
    with pytest.raises(InvalidInput, match=reason.replace("[", r"\[")):
        Annotations.from_records([{"kind": "mask", "label": "m", "bbox": [0, 0, 4, 4], "mask": mask}])


def test_geometry_must_fit_the_kind() -> None:
    """A ``polygon`` record with a LineString geometry was stored, and broke exporters and the viewer."""
    line = {"type": "LineString", "coordinates": [[0, 0], [10, 10]]}
    with pytest.raises(InvalidInput, match="a polygon needs a Polygon or MultiPolygon geometry, got LineString"):
        Annotations.from_records([{"kind": "polygon", "label": "roof", "geometry": line}])
    square = {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}
    with pytest.raises(InvalidInput, match="a point needs a Point geometry, got Polygon"):
        Annotations.from_records([{"kind": "point", "label": "eye", "geometry": square}])


def test_coco_with_hostile_categories_and_ids_is_reported_not_a_traceback(
    tmp_path: Path, samples: dict[str, Path], sqlite_workspace: gv.Workspace
) -> None:
    """A category without a name raised KeyError; a list/object as an id raised ``unhashable type``; ``tags``
    given as a string became one tag per character; a string ``segmentation`` was silently a box."""
    doc = {
        "images": [
            {"id": 1, "file_name": "astronaut.jpg", "width": 512, "height": 512},
            {"id": 2, "file_name": "coins.png", "width": 384, "height": 303, "tags": "cat"},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4]},
            {"id": 2, "image_id": [1], "category_id": 1, "bbox": [1, 2, 3, 4]},
            {"id": 3, "image_id": 1, "category_id": {"a": 1}, "bbox": [1, 2, 3, 4]},
            {"id": 4, "image_id": 1, "category_id": 2, "bbox": [1, 2, 3, 4]},
            {"id": 5, "image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4], "segmentation": "abc"},
        ],
        "categories": [{"id": 1, "name": "face"}, {"id": 2}],
    }
    (tmp_path / "coco.json").write_text(json.dumps(doc))
    images = tmp_path / "images"
    images.mkdir()
    for name in ("astronaut.jpg", "coins.png"):
        (images / name).write_bytes(samples[name].read_bytes())
    report = import_annotations(sqlite_workspace, "coco", tmp_path / "coco.json", options=_images(images))
    got = {r.item: r.reason for r in report.rejected}
    assert got == {
        "category 1": "a category needs an integer id and a text name",
        "image 2": "tags must be a list of labels, got 'cat'",
        "annotation 2": "image_id [1] is not in images",
        "annotation 3": "category_id {'a': 1} is not in categories",
        "annotation 4": "category_id 2 is not in categories",
        "annotation 5": "segmentation must be a list of [x1, y1, x2, y2, ...] number lists or an RLE",
    }
    assert report.annotations == 1
    assert set(sqlite_workspace.labels.by_name()) == {"face"}


def _images(folder: Path) -> object:
    from gigavision.formats import ImportOptions

    return ImportOptions(images_dir=folder)


def test_yolo_label_file_with_a_byte_order_mark(
    tmp_path: Path, samples: dict[str, Path], sqlite_workspace: gv.Workspace
) -> None:
    """Label files written by Windows tools start with a UTF-8 BOM: line 1 was rejected as 'not numbers'."""
    root = tmp_path / "yolo"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "images" / "coins.png").write_bytes(samples["coins.png"].read_bytes())
    (root / "data.yaml").write_text("names: {0: coin}\n")
    (root / "labels" / "coins.txt").write_bytes("\ufeff0 0.5 0.5 0.25 0.25\r\n0 0.25 0.25 0.1 0.1\r\n".encode())
    report = import_annotations(sqlite_workspace, "yolo", root)
    assert report.rejected == [] and report.annotations == 2


def test_unreadable_data_yaml_is_a_one_line_error(
    tmp_path: Path, samples: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """PyYAML's message spans several lines; CLI errors are one line (DESIGN.md §3)."""
    root = tmp_path / "yolo"
    (root / "images").mkdir(parents=True)
    (root / "images" / "coins.png").write_bytes(samples["coins.png"].read_bytes())
    (root / "data.yaml").write_text("names: [coin\n")
    ws = tmp_path / "ws"
    assert main(["-w", str(ws), "init"]) == 0
    capsys.readouterr()
    assert main(["-w", str(ws), "import", "yolo", str(root)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: data.yaml: not a readable YAML file (") and "\n" not in err


def test_qupath_measurements_that_are_dropped_are_reported(
    tmp_path: Path, samples: dict[str, Path], sqlite_workspace: gv.Workspace
) -> None:
    """QuPath detections carry measurements ([{name, value}]); all but ``score`` vanished without a word."""
    (r,) = sqlite_workspace.ingest([samples["immunohistochemistry.png"]])
    feature = {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [[[400, 400], [420, 400], [420, 420], [400, 420], [400, 400]]]},
        "properties": {
            "objectType": "detection",
            "classification": {"name": "Positive", "colorRGB": -377282},
            "measurements": [{"name": "Nucleus: Area", "value": 400.0}, {"name": "score", "value": 0.5}],
        },
    }
    path = tmp_path / "immunohistochemistry.png.geojson"
    path.write_text(json.dumps([feature]))  # QuPath's older export: a bare list of features
    report = import_annotations(sqlite_workspace, "geojson", path)
    assert report.annotations == 1 and report.ok
    assert any("measurements other than 'score'" in n for n in report.notes)
    stored = sqlite_workspace.annotations.query(str(r.id))
    assert stored.score.tolist() == [0.5] and stored.attributes[0] == {"objectType": "detection"}
    assert sqlite_workspace.labels.by_name()["Positive"].color == "#fa3e3e"


def test_a_class_cannot_be_its_own_ancestor(sqlite_workspace: gv.Workspace) -> None:
    labels = sqlite_workspace.labels
    labels.set("animal", "box")
    labels.set("dog", "box", parent="animal")
    with pytest.raises(InvalidInput, match="would make it its own ancestor"):
        labels.set("animal", "box", parent="animal")
    with pytest.raises(InvalidInput, match="would make it its own ancestor"):
        labels.set("animal", "box", parent="dog")
    assert {c.name: c.parent for c in labels.classes()} == {"animal": None, "dog": "animal"}
