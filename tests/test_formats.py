"""Import and export in every format: byte-for-byte stable round trips on SQLite and PostgreSQL, the exact
mapping of each format, image matching and ingest, archives, the CLI and the REST jobs."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import numpy as np
import pytest
import shapely
import yaml
from fastapi.testclient import TestClient

import gigavision as gv
from gigavision.annotations import Annotations
from gigavision.cli.main import main
from gigavision.cli.transfer import FormatName
from gigavision.datasets import create_version
from gigavision.errors import InvalidInput
from gigavision.formats import (
    FORMATS,
    ExportOptions,
    ImageEntry,
    ImportOptions,
    export_annotations,
    export_workspace,
    import_annotations,
    workspace_source,
)
from gigavision.server.main import create_app

IMAGES = ("coins.png", "astronaut.jpg", "immunohistochemistry.png")
CASES = [
    ("coco", {}, 8),
    ("voc", {}, 5),
    ("yolo", {}, 5),
    ("yolo", {"task": "segment"}, 5),
    ("yolo", {"task": "obb"}, 5),
    ("yolo", {"layout": "darknet"}, 5),
    ("cvat", {}, 8),
    ("labelstudio", {}, 8),
    ("geojson", {}, 6),
    ("imagefolder", {}, 2),
    ("csv", {}, 2),
]


def hole_mask() -> np.ndarray:
    m = np.zeros((30, 40), dtype=bool)
    m[5:20, 3:30] = True
    m[10:12, 10:12] = False
    return m


def annotate(ws: gv.Workspace, samples: dict[str, Path]) -> dict[str, str]:
    """Three real photos with every kind: boxes (fractional), polygons (one with a hole), a mask, a point, tags."""
    ids = {r.name: str(r.id) for r in ws.ingest([samples[n] for n in IMAGES])}
    ws.labels.set("coin", "box", "#ffaa00")
    ws.labels.set("face", "polygon", "#00ff00", attributes={"pose": ["front", "side"]})
    ws.labels.set("nucleus", "mask")
    ws.labels.set("eye", "point")
    ws.labels.set("portrait", "tag")
    ws.labels.set("histology", "tag")
    accepted = {"status": "accepted", "source": "user:ana"}
    coins = Annotations.from_boxes([[10.25, 20, 60.5, 70], [100, 100, 150.125, 180]], "coin", **accepted)
    holed = shapely.Polygon([(150, 50), (300, 60), (280, 250), (160, 240)], [[(200, 100), (240, 100), (240, 140)]])
    faces = Annotations.from_polygons(
        [holed, shapely.Polygon([(10, 10), (50.3333333, 12), (30, 40)])],
        "face",
        attributes=[{"pose": "front"}, {}],
        **accepted,
    )
    nucleus = Annotations.from_masks([hole_mask()], [(100, 200)], "nucleus", score=[0.75], **accepted)
    eye = Annotations.from_points([[220.5, 180]], "eye", **accepted)
    portrait = Annotations.from_tags(["portrait"], **accepted)
    ws.annotations.add(ids["coins.png"], coins, "ana")
    ws.annotations.add(ids["astronaut.jpg"], Annotations.merge([faces, portrait, eye, nucleus]), "ana")
    ws.annotations.add(ids["immunohistochemistry.png"], Annotations.from_tags(["histology"], **accepted), "ana")
    return ids


@pytest.fixture
def annotated(tmp_path: Path, samples: dict[str, Path]) -> Iterator[tuple[gv.Workspace, dict[str, str]]]:
    ws = gv.init_workspace(tmp_path / "annotated")
    ids = annotate(ws, samples)
    yield ws, ids
    ws.close()


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(("fmt", "opts", "count"), CASES, ids=[c[0] + "".join(c[1].values()) for c in CASES])
def test_export_import_export_is_byte_for_byte_stable(
    tmp_path: Path,
    samples: dict[str, Path],
    annotated: tuple[gv.Workspace, dict[str, str]],
    workspace: gv.Workspace,
    fmt: str,
    opts: dict[str, Any],
    count: int,
) -> None:
    """SQLite export → import into a fresh SQLite or PostgreSQL workspace → export: the same bytes."""
    source_ws, _ = annotated
    first = export_workspace(source_ws, fmt, tmp_path / "first", options=ExportOptions(**opts))
    assert first.annotations == count and first.images >= 2
    report = import_annotations(
        workspace, fmt, tmp_path / "first", options=ImportOptions(images_dir=samples["coins.png"].parent)
    )
    assert report.ok, report.as_dict()
    assert report.annotations == count and report.images_ingested == first.images
    second = export_workspace(workspace, fmt, tmp_path / "second", options=ExportOptions(**opts))
    assert (second.images, second.annotations, second.files) == (first.images, first.annotations, first.files)
    one, two = tree(tmp_path / "first"), tree(tmp_path / "second")
    assert list(one) == list(two)
    assert [name for name in one if one[name] != two[name]] == []


def test_zip_export_is_deterministic_and_imports(
    tmp_path: Path, annotated: tuple[gv.Workspace, dict[str, str]], sqlite_workspace: gv.Workspace
) -> None:
    ws, _ = annotated
    export_workspace(ws, "yolo", tmp_path / "a.zip")
    export_workspace(ws, "yolo", tmp_path / "b.zip")
    assert (tmp_path / "a.zip").read_bytes() == (tmp_path / "b.zip").read_bytes()
    with zipfile.ZipFile(tmp_path / "a.zip") as zf:
        assert zf.namelist() == sorted(zf.namelist())
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        assert "data.yaml" in zf.namelist() and "images/coins.png" in zf.namelist()
    report = import_annotations(sqlite_workspace, "yolo", tmp_path / "a.zip")
    assert report.ok and report.images_ingested == 3 and report.annotations == 5
    export_workspace(sqlite_workspace, "yolo", tmp_path / "c.zip")
    assert (tmp_path / "c.zip").read_bytes() == (tmp_path / "a.zip").read_bytes()


def test_coco_mapping_reads_back_with_pycocotools(
    tmp_path: Path, annotated: tuple[gv.Workspace, dict[str, str]]
) -> None:
    from pycocotools.coco import COCO

    ws, _ = annotated
    result = export_workspace(ws, "coco", tmp_path / "coco")
    assert result.converted == {"polygon with holes written as RLE mask": 1}
    data = json.loads((tmp_path / "coco" / "annotations.json").read_text())
    names = [c["name"] for c in data["categories"]]
    assert names == ["coin", "eye", "face", "histology", "nucleus", "portrait"]  # schema order, ids 1..N
    assert [c["id"] for c in data["categories"]] == [1, 2, 3, 4, 5, 6]
    assert data["categories"][2]["attributes"] == {"pose": ["front", "side"]}
    images = {i["file_name"]: i for i in data["images"]}
    assert images["astronaut.jpg"]["tags"] == ["portrait"] and "tags" not in images["coins.png"]
    coco = COCO(str(tmp_path / "coco" / "annotations.json"))
    by_cat = {c: coco.loadAnns(coco.getAnnIds(catIds=[names.index(c) + 1])) for c in ("coin", "face", "nucleus", "eye")}
    assert [a["bbox"] for a in by_cat["coin"]] == [[10.25, 20, 50.25, 50], [100, 100, 50.125, 80]]
    assert by_cat["coin"][0]["area"] == 2512.5 and by_cat["coin"][0]["segmentation"] == []
    nucleus = by_cat["nucleus"][0]
    full = coco.annToMask(nucleus).astype(bool)
    expected = np.zeros((512, 512), dtype=bool)
    expected[200:230, 100:140] = hole_mask()
    assert (full == expected).all() and nucleus["area"] == int(hole_mask().sum()) and nucleus["score"] == 0.75
    assert nucleus["bbox"] == [103, 205, 27, 15]
    holed, triangle = by_cat["face"]
    assert isinstance(holed["segmentation"], dict) and holed["attributes"] == {"pose": "front"}
    raster = coco.annToMask(holed).astype(bool)
    assert not raster[105, 235] and raster[200, 200]  # (x 235, y 105) is in the hole; (200, 200) in the face
    assert triangle["segmentation"] == [[10, 10, 50.333333, 12, 30, 40]]
    eye = by_cat["eye"][0]
    assert eye["keypoints"] == [220.5, 180, 2] and eye["bbox"] == [220.5, 180, 0, 0]


def test_coco_import_crowd_rle_and_matching(tmp_path: Path, samples: dict[str, Path], workspace: gv.Workspace) -> None:
    """Uncompressed crowd RLE, images matched by name in the workspace or found (and ingested) under --images."""
    (existing,) = workspace.ingest([samples["coins.png"]])
    crowd = np.zeros((303, 384), dtype=bool)
    crowd[50:60, 70:90] = True
    counts, current, n = [], False, 0  # uncompressed RLE, column-major, as COCO writes crowd regions
    for v in crowd.ravel(order="F"):
        if v != current:
            counts.append(n)
            current, n = bool(v), 0
        n += 1
    counts.append(n)
    doc = {
        "images": [
            {"id": 7, "file_name": "coins.png", "width": 384, "height": 303},
            {"id": 8, "file_name": "sub/astronaut.jpg", "width": 512, "height": 512},
            {"id": 9, "file_name": "nowhere.png", "width": 10, "height": 10},
        ],
        "categories": [{"id": 3, "name": "coin", "supercategory": "money"}, {"id": 4, "name": "person"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 7,
                "category_id": 3,
                "iscrowd": 1,
                "segmentation": {"size": [303, 384], "counts": counts},
            },
            {"id": 2, "image_id": 8, "category_id": 4, "bbox": [1, 2, 3, 4], "iscrowd": 0},
            {"id": 3, "image_id": 9, "category_id": 4, "bbox": [1, 2, 3, 4]},
        ],
    }
    (tmp_path / "in.json").write_text(json.dumps(doc))
    images = tmp_path / "imgs" / "sub"
    images.mkdir(parents=True)
    (images / "astronaut.jpg").write_bytes(samples["astronaut.jpg"].read_bytes())
    report = import_annotations(
        workspace, "coco", tmp_path / "in.json", options=ImportOptions(images_dir=images.parent)
    )
    assert (report.images_matched, report.images_ingested, report.annotations) == (1, 1, 2)
    assert [(u.ref, u.annotations) for u in report.unmatched] == [("nowhere.png", 1)]
    assert "no file nowhere.png" in report.unmatched[0].reason and not report.ok
    masks = workspace.annotations.query(str(existing.id))
    assert list(masks.kind) == ["mask"] and masks.attributes[0] == {"iscrowd": 1} and masks.status[0] == "accepted"
    assert masks.xyxy[0].tolist() == [70, 50, 90, 60] and masks.decode_mask(0).all()
    assert masks.source[0] == "import:coco"
    classes = workspace.labels.by_name()
    assert (classes["coin"].kind, classes["person"].kind) == ("mask", "box")
    export_workspace(workspace, "coco", tmp_path / "out")
    again = json.loads((tmp_path / "out" / "annotations.json").read_text())
    assert [a["iscrowd"] for a in again["annotations"]] == [0, 1]  # astronaut.jpg sorts first
    assert "attributes" not in again["annotations"][1]


def test_voc_mapping(tmp_path: Path, annotated: tuple[gv.Workspace, dict[str, str]]) -> None:
    ws, _ = annotated
    result = export_workspace(ws, "voc", tmp_path / "voc")
    assert result.skipped == {"point annotations (VOC holds boxes)": 1, "tag annotations (VOC holds boxes)": 2}
    xml = (tmp_path / "voc" / "Annotations" / "coins.xml").read_text()
    assert "<xmin>11.25</xmin>" in xml and "<ymin>21</ymin>" in xml and "<xmax>60.5</xmax>" in xml
    assert "<depth>1</depth>" in xml and "<filename>coins.png</filename>" in xml
    assert (tmp_path / "voc" / "ImageSets" / "Main" / "default.txt").read_text().split() == [
        "astronaut",
        "coins",
        "immunohistochemistry",
    ]
    ann = tmp_path / "more" / "Annotations"
    ann.mkdir(parents=True)
    (ann / "c.xml").write_text(
        "<annotation><filename>coins.png</filename><size><width>384</width><height>303</height></size>"
        "<object><name>coin</name><difficult>1</difficult><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>10</xmax>"
        "<ymax>12</ymax></bndbox></object></annotation>"
    )
    report = import_annotations(ws, "voc", tmp_path / "more")
    assert report.ok and report.annotations == 1 and report.images_matched == 1
    assert report.attributes_added == ["coin.difficult"] and ws.labels.by_name()["coin"].attributes == {"difficult": []}
    coins = workspace_source(ws).annotations(next(i.id for i in workspace_source(ws).images() if i.name == "coins.png"))
    assert coins.xyxy[-1].tolist() == [0, 0, 10, 12] and coins.attributes[-1] == {"difficult": 1}


class SplitSource:
    """A frozen two-split source (as a dataset version provides), over a workspace's images."""

    def __init__(self, ws: gv.Workspace, splits: dict[str, str]) -> None:
        self.inner = workspace_source(ws)
        self.splits = splits

    def classes(self) -> list[dict[str, Any]]:
        return self.inner.classes()

    def images(self) -> Iterator[ImageEntry]:
        for e in self.inner.images():
            yield ImageEntry(e.id, e.name, e.width, e.height, self.splits[e.name], e.bands)

    def annotations(self, image_id: str) -> Annotations:
        return self.inner.annotations(image_id)

    def __len__(self) -> int:
        return len(self.inner)


def test_yolo_layout_with_splits(
    tmp_path: Path, samples: dict[str, Path], annotated: tuple[gv.Workspace, dict[str, str]]
) -> None:
    ws, _ = annotated
    source = SplitSource(ws, {"coins.png": "train", "astronaut.jpg": "val", "immunohistochemistry.png": "train"})
    result = export_annotations(source, "yolo", tmp_path / "y", image_file=source.inner.image_file)
    data = yaml.safe_load((tmp_path / "y" / "data.yaml").read_text())
    assert data == {
        "train": "images/train",
        "val": "images/val",
        "nc": 3,
        "names": {0: "coin", 1: "face", 2: "nucleus"},
    }
    files = tree(tmp_path / "y")
    assert set(files) == {
        "data.yaml",
        "images/train/coins.png",
        "images/train/immunohistochemistry.png",
        "images/val/astronaut.jpg",
        "labels/train/coins.txt",
        "labels/train/immunohistochemistry.txt",
        "labels/val/astronaut.txt",
    }
    assert files["labels/train/immunohistochemistry.txt"] == b""  # a background image
    first = files["labels/train/coins.txt"].decode().splitlines()[0].split()
    assert first == ["0", "0.0921224", "0.14851485", "0.13085938", "0.1650165"]  # (35.375/384, 45/303, ...)
    assert files["images/train/coins.png"] == samples["coins.png"].read_bytes()  # the original bytes
    assert result.images == 3


def test_dataset_version_export(tmp_path: Path, annotated: tuple[gv.Workspace, dict[str, str]]) -> None:
    pytest.importorskip("gigavision.datasets")
    from gigavision.datasets import create_version

    ws, _ = annotated
    version = create_version(ws, "photos", split="train=0.5,val=0.5", dup_distance=None)
    result = export_workspace(ws, "coco", tmp_path / "ds", dataset="photos@1")
    splits = {e.split for e in version.images()}
    written = sorted(p.name for p in (tmp_path / "ds").glob("*.json"))
    assert written == sorted(f"annotations_{s}.json" for s in splits)
    images = [i for name in written for i in json.loads((tmp_path / "ds" / name).read_text())["images"]]
    assert sorted(i["file_name"] for i in images) == sorted(IMAGES) and result.images == 3
    with pytest.raises(InvalidInput, match="frozen"):
        export_workspace(ws, "coco", tmp_path / "x", dataset="photos@1", labels=["coin"])


def test_geojson_reads_qupath(tmp_path: Path, samples: dict[str, Path], sqlite_workspace: gv.Workspace) -> None:
    ws = sqlite_workspace
    (image,) = ws.ingest([samples["immunohistochemistry.png"]])
    square = [[[10, 10], [100, 10], [100, 80], [10, 80], [10, 10]]]
    features = [
        {
            "type": "Feature",
            "id": "0f5f6c1e-0000-4000-8000-000000000001",
            "geometry": {"type": "Polygon", "coordinates": square},
            "properties": {"objectType": "annotation", "classification": {"name": "Tumor", "color": [200, 0, 0]}},
        },
        {
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [[[200, 200], [210, 200], [205, 209], [200, 200]]]},
            "properties": {
                "objectType": "detection",
                "classification": {"name": "Tumor: Positive", "colorRGB": -3670016},
                "measurements": [{"name": "score", "value": 0.9}],
            },
        },
        {"type": "Feature", "geometry": {"type": "MultiPoint", "coordinates": [[5, 5], [6, 7]]}, "properties": {}},
        {"type": "Feature", "geometry": {"type": "LineString", "coordinates": [[0, 0], [9, 9]]}, "properties": {}},
    ]
    path = tmp_path / "immunohistochemistry.geojson"  # QuPath names files after the image, without extension
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}, indent=2))
    report = import_annotations(ws, "geojson", path)
    assert report.annotations == 4 and report.images_matched == 1
    assert [(r.item, r.reason) for r in report.rejected] == [
        ("feature 3", "LineString geometries are not supported (polygons and points only)")
    ]
    ann = ws.annotations.query(str(image.id))
    assert list(ann.label) == ["Tumor", "Tumor: Positive", "unclassified", "unclassified"]
    assert list(ann.kind) == ["polygon", "polygon", "point", "point"]
    assert ann.attributes[1] == {"objectType": "detection"} and ann.score[1] == 0.9
    assert ann.geometry[0].equals(shapely.Polygon(square[0]))
    classes = ws.labels.by_name()
    assert (classes["Tumor"].color, classes["Tumor: Positive"].color) == ("#c80000", "#c80000")
    export_workspace(ws, "geojson", tmp_path / "out")
    out = json.loads((tmp_path / "out" / "immunohistochemistry.png.geojson").read_text())
    assert out["features"][1]["properties"] == {
        "objectType": "detection",
        "classification": {"name": "Tumor: Positive", "color": [200, 0, 0]},
        "measurements": {"score": 0.9},
    }
    assert out["features"][2]["geometry"] == {"type": "Point", "coordinates": [5, 5]}


def test_imagefolder_and_csv_import(tmp_path: Path, samples: dict[str, Path], sqlite_workspace: gv.Workspace) -> None:
    ws = sqlite_workspace
    root = tmp_path / "folders"
    for rel, name in (("train/cat", "astronaut.jpg"), ("val/dog", "coins.png"), ("val/a%2Fb", "coffee.webp")):
        (root / rel).mkdir(parents=True)
        (root / rel / name).write_bytes(samples[name].read_bytes())
    report = import_annotations(ws, "imagefolder", root)
    assert report.ok and report.images_ingested == 3 and report.annotations == 3
    assert report.classes_added == ["cat", "a/b", "dog"] and "splits are not kept" in report.notes[0]
    table = tmp_path / "labels.csv"
    table.write_text('image,label\nastronaut.jpg,person,"space, suit"\ncoins.png\nmissing.png,x\n')
    report = import_annotations(ws, "csv", table)
    assert report.annotations == 2 and [u.ref for u in report.unmatched] == ["missing.png"]
    export_workspace(ws, "csv", tmp_path / "csv")
    assert (tmp_path / "csv" / "labels.csv").read_text().splitlines() == [
        "image,label",
        'astronaut.jpg,cat,person,"space, suit"',
        "coffee.webp,a/b",
        "coins.png,dog",
    ]
    result = export_workspace(ws, "imagefolder", tmp_path / "if")
    assert sorted(tree(tmp_path / "if")) == ["a%2Fb/coffee.webp", "dog/coins.png"]
    assert result.skipped == {"images with several tags (ImageFolder is single-label; use csv)": 1}


def test_names_are_unique_and_safe(tmp_path: Path, samples: dict[str, Path], sqlite_workspace: gv.Workspace) -> None:
    """Two images called the same (and one whose name is a path) still export to distinct, safe files."""
    ws = sqlite_workspace
    twin = tmp_path / "twin"
    twin.mkdir()
    (twin / "coins.png").write_bytes(samples["astronaut.jpg"].read_bytes())  # other bytes, same name
    (a,) = ws.ingest([samples["coins.png"]])
    b = ws.ingest_file(twin / "coins.png", name="../coins.png")
    ws.annotations.add(str(a.id), Annotations.from_tags(["x"]), "t")
    ws.annotations.add(str(b.id), Annotations.from_tags(["y"]), "t")
    export_workspace(ws, "imagefolder", tmp_path / "out")
    # "../coins.png" sorts first and keeps the file name; the other coins.png gets its id appended
    assert sorted(tree(tmp_path / "out")) == [f"x/coins_{str(a.id)[:8]}.png", "y/coins.png"]


def test_progress_cancel_and_refusals(tmp_path: Path, annotated: tuple[gv.Workspace, dict[str, str]]) -> None:
    ws, _ = annotated
    seen: list[tuple[float, float]] = []
    export_workspace(ws, "coco", tmp_path / "ok", progress=lambda d, t, m: seen.append((d, t)))
    assert seen == [(1, 3), (2, 3), (3, 3)]

    class Stop(Exception):
        pass

    def stop(done: float, total: float, message: str = "") -> None:
        if done == 2:
            raise Stop

    with pytest.raises(Stop):
        export_workspace(ws, "yolo", tmp_path / "cancelled", progress=stop)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["annotated", "ok"]  # nothing half-written
    with pytest.raises(InvalidInput, match="not an empty folder"):
        export_workspace(ws, "coco", tmp_path / "ok")
    with pytest.raises(InvalidInput, match="unknown format 'tiff'"):
        export_workspace(ws, "tiff", tmp_path / "t")
    with pytest.raises(InvalidInput, match="images=copy or images=link"):
        export_workspace(ws, "imagefolder", tmp_path / "if", options=ExportOptions(images="none"))
    with pytest.raises(InvalidInput, match="unknown export option"):
        ExportOptions.from_dict({"colour": "red"})
    linked = export_workspace(ws, "yolo", tmp_path / "linked", options=ExportOptions(images="link"))
    assert linked.files == 7 and (tmp_path / "linked" / "images" / "coins.png").stat().st_nlink >= 2


def test_cli_export_and_import(
    tmp_path: Path,
    samples: dict[str, Path],
    annotated: tuple[gv.Workspace, dict[str, str]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert list(get_args(FormatName)) == list(FORMATS)
    ws, _ = annotated
    code = main(["-w", str(ws.root), "export", "coco", str(tmp_path / "out"), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["annotations"] == 8 and out["images"] == 3
    other = str(tmp_path / "other")
    assert main(["init", other]) == 0
    capsys.readouterr()
    args = ["-w", other, "import", "coco", str(tmp_path / "out" / "annotations.json")]
    code = main([*args, "--images", str(samples["coins.png"].parent), "--status", "proposed", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["ok"] and report["annotations"] == 8 and report["images_ingested"] == 3
    broken = json.loads((tmp_path / "out" / "annotations.json").read_text())
    broken["annotations"][0]["category_id"] = 99
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    code = main(["-w", other, "import", "coco", str(tmp_path / "broken.json")])
    err = capsys.readouterr().err
    assert code == 1 and "rejected annotations.json" not in err and "category_id 99 is not in categories" in err
    (tmp_path / "garbage.json").write_text("{not json")
    code = main(["-w", other, "import", "coco", str(tmp_path / "garbage.json")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: garbage.json: not a readable COCO JSON file")


def test_rest_export_and_import_jobs(
    tmp_path: Path, samples: dict[str, Path], annotated: tuple[gv.Workspace, dict[str, str]], workspace: gv.Workspace
) -> None:
    ws, _ = annotated
    with TestClient(create_app(ws)) as client:
        job = client.post("/api/v1/exports", json={"format": "coco", "options": {"status": ["accepted"]}})
        assert job.status_code == 202 and job.json()["status"] == "queued"
        done = ws.jobs.wait(job.json()["id"], timeout=120)
        assert done["status"] == "done", done
        assert done["result"]["out"] == "coco.zip" and done["result"]["annotations"] == 8
        download = client.get(f"/api/v1/jobs/{done['id']}/files/coco.zip")
        assert download.status_code == 200
        with zipfile.ZipFile(io.BytesIO(download.content)) as zf:
            payload = zf.read("annotations.json")
        bad = client.post("/api/v1/exports", json={"format": "tiff"})
        assert bad.status_code == 400 and "format must be one of" in bad.json()["error"]["message"]
        missing = client.post("/api/v1/exports", json={"format": "coco", "dataset": "nope@1"})
        assert missing.status_code == 404
    workspace.ingest([samples[n] for n in IMAGES])  # uploads match images already in the workspace by name
    with TestClient(create_app(workspace)) as client:
        sent = client.post(
            "/api/v1/imports",
            data={"format": "coco", "options": json.dumps({"status": "proposed"}), "actor": "bo"},
            files={"file": ("annotations.json", payload, "application/json")},
        )
        assert sent.status_code == 202, sent.json()
        done = workspace.jobs.wait(sent.json()["id"], timeout=120)
        assert done["status"] == "done" and done["result"]["ok"] and done["result"]["annotations"] == 8
        assert done["result"]["images_matched"] == 3
        for data, reason in (
            ({"format": "yolo"}, "upload it as a .zip"),
            ({"format": "coco", "options": "[1]"}, "options must be a JSON object"),
            ({"format": "coco", "options": '{"images_dir": "/etc"}'}, "images_dir is not available"),
        ):
            r = client.post("/api/v1/imports", data=data, files={"file": ("a.json", b"{}", "application/json")})
            assert r.status_code == 400 and reason in r.json()["error"]["message"]
    ann = workspace.annotations.query(str(next(iter(workspace_source(workspace).images())).id))
    assert set(ann.status) == {"proposed"}


def test_rest_import_that_rejects_something_ends_done_but_not_ok(
    tmp_path: Path,
    samples: dict[str, Path],
    annotated: tuple[gv.Workspace, dict[str, str]],
    workspace: gv.Workspace,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Issue 11: a partly failed REST import was a plain ``done`` job while the CLI exits 1."""
    ws, _ = annotated
    export_workspace(ws, "coco", tmp_path / "out")
    coco = json.loads((tmp_path / "out" / "annotations.json").read_text())
    coco["annotations"][0]["category_id"] = 99  # rejected
    coco["images"].append({"id": 99, "file_name": "nowhere.png", "width": 10, "height": 10})
    coco["annotations"].append({**coco["annotations"][1], "id": 99, "image_id": 99, "bbox": [1, 1, 2, 2]})
    workspace.ingest([samples[n] for n in IMAGES])
    with TestClient(create_app(workspace)) as client:
        unknown = client.post(
            "/api/v1/imports",
            data={"format": "coco", "options": json.dumps({"status": "proposed", "strict": True})},
            files={"file": ("annotations.json", b"{}", "application/json")},
        )
        assert unknown.status_code == 400, unknown.text
        message = unknown.json()["error"]["message"]
        assert "unknown import option(s) ['strict']" in message and "strict_labels" in message
        assert "images_dir" not in message  # not offered to uploads
        sent = client.post(
            "/api/v1/imports",
            data={"format": "coco"},
            files={"file": ("annotations.json", json.dumps(coco).encode(), "application/json")},
        )
        assert sent.status_code == 202, sent.text
        assert sent.json()["ok"] is None  # not finished yet
        workspace.jobs.wait(sent.json()["id"], timeout=120)
        job = client.get(f"/api/v1/jobs/{sent.json()['id']}").json()
    assert job["status"] == "done" and job["ok"] is False
    assert job["message"] == "imported 7 annotations, rejected 1, unmatched 1 (not ok: see the report)"
    result = job["result"]
    assert not result["ok"] and result["rejected_count"] == 1 and result["unmatched_count"] == 1
    assert result["unmatched"][0]["ref"] == "nowhere.png"
    # the CLI's client agrees with the CLI's import: exit code 1
    assert main(["-w", str(workspace.root), "jobs", "wait", job["id"]]) == 1
    assert "rejected 1, unmatched 1" in capsys.readouterr().out


@pytest.mark.parametrize("fmt", ["coco", "voc", "geojson", "csv"])
def test_reimport_matches_images_ingested_recursively_by_their_file_name(
    fmt: str, tmp_path: Path, samples: dict[str, Path], workspace: gv.Workspace
) -> None:
    """Issue 11: images ingested with --recursive are stored as ``sub/name.jpg`` and exported as ``name.jpg``;
    re-importing the export into the same workspace left their annotations unmatched."""
    import shutil

    folder = tmp_path / "scans"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(samples["coins.png"], folder / "coins.png")
    shutil.copy(samples["astronaut.jpg"], folder / "sub" / "astronaut.jpg")
    shutil.copy(samples["immunohistochemistry.png"], folder / "sub" / "ihc.png")
    ids = {r.name: str(r.id) for r in workspace.ingest([folder], recursive=True)}
    assert set(ids) == {"coins.png", "sub/astronaut.jpg", "sub/ihc.png"}
    workspace.labels.set("coin", "box")
    workspace.labels.set("face", "polygon")
    workspace.labels.set("histology", "tag")
    workspace.annotations.add(ids["coins.png"], Annotations.from_boxes([[10, 20, 60, 70]], "coin"), "ana")
    face = shapely.Polygon([(150, 50), (300, 60), (280, 250), (160, 240)])
    workspace.annotations.add(ids["sub/astronaut.jpg"], Annotations.from_polygons([face], "face"), "ana")
    workspace.annotations.add(ids["sub/ihc.png"], Annotations.from_tags(["histology"]), "ana")
    kinds = {"coco": ("box", "polygon", "tag"), "voc": ("box", "polygon"), "geojson": ("box", "polygon")}
    written = {
        i: int(np.isin(workspace.annotations.query(i).kind, kinds.get(fmt, ("tag",))).sum()) for i in ids.values()
    }

    result = export_workspace(workspace, fmt, tmp_path / "out")
    assert result.annotations == sum(written.values()) > 0
    exported = next(p for p in sorted((tmp_path / "out").rglob("*")) if p.is_file())
    report = import_annotations(workspace, fmt, exported if fmt in ("coco", "csv") else tmp_path / "out")
    assert report.ok and report.unmatched == [], report.as_dict()
    assert report.images_ingested == 0 and report.images_matched == 3  # every image is in the export
    imported = {i: len(workspace.annotations.query(i, sources=[f"import:{fmt}"])) for i in ids.values()}
    assert imported == written  # each exported annotation back once, on its own image
    assert len(workspace.list_images(0, 100)[0]) == 3  # nothing ingested twice


def test_ambiguous_file_names_are_reported_never_guessed(
    tmp_path: Path, samples: dict[str, Path], workspace: gv.Workspace
) -> None:
    import shutil

    for sub, sample in (("a", "coins.png"), ("b", "astronaut.jpg")):
        (tmp_path / "scans" / sub).mkdir(parents=True)
        shutil.copy(samples[sample], tmp_path / "scans" / sub / "scan.png")
    workspace.ingest([tmp_path / "scans"], recursive=True)
    (tmp_path / "labels.csv").write_text("image,label\nscan.png,round\nb/scan.png,portrait\n")
    report = import_annotations(workspace, "csv", tmp_path / "labels.csv")
    assert not report.ok and report.annotations == 1  # b/scan.png names one image
    (unmatched,) = report.unmatched
    assert unmatched.ref == "scan.png" and "a/scan.png" in unmatched.reason and "b/scan.png" in unmatched.reason


def _coco(images: list[tuple[int, str, int, int]], boxes: list[tuple[int, list[float]]]) -> dict[str, Any]:
    """A COCO document as the format's documentation specifies it (cocodataset.org/#format-data)."""
    return {
        "info": {"description": "export"},
        "images": [{"id": i, "file_name": f, "width": w, "height": h} for i, f, w, h in images],
        "categories": [{"id": 1, "name": "thing", "supercategory": "object"}],
        "annotations": [
            {"id": k + 1, "image_id": i, "category_id": 1, "bbox": b, "area": b[2] * b[3], "iscrowd": 0}
            for k, (i, b) in enumerate(boxes)
        ],
    }


def _photo(samples: dict[str, Path], name: str, dest: Path) -> tuple[int, int]:
    from PIL import Image

    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(samples[name].read_bytes())
    with Image.open(dest) as im:
        return im.size


@pytest.mark.parametrize("layout", ["images/<split>", "<split>2017"])
def test_coco_exports_in_their_usual_layouts_import_with_no_flags(
    layout: str, tmp_path: Path, samples: dict[str, Path], workspace: gv.Workspace
) -> None:
    """``annotations/instances_<split>.json`` beside ``images/<split>/`` (CVAT, Roboflow, FiftyOne) or beside
    ``<split>2017/`` (COCO's own): the images are found from the file's split, with no --images."""
    root = tmp_path / "export"
    year = "2017" if layout == "<split>2017" else ""
    files = {"train": [("astronaut.jpg", 2), ("coins.png", 0)], "val": [("retina.jpg", 1)]}
    for split, members in files.items():
        folder = root / (f"{split}2017" if year else f"images/{split}")
        images, boxes = [], []
        for k, (name, n) in enumerate(members, start=1):
            w, h = _photo(samples, name, folder / name)
            images.append((k, name, w, h))
            boxes += [(k, [5.0 + j, 6.0, 20.0, 30.0]) for j in range(n)]
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"instances_{split}{year}.json").write_text(json.dumps(_coco(images, boxes)))
    report = import_annotations(workspace, "coco", root)
    assert report.ok, report.as_dict()
    assert (report.files, report.images_ingested, report.annotations) == (2, 3, 3)
    # the file's split is each image's split hint, and a dataset version keeps it
    hints = {i.name: i.meta.get("split") for i in workspace.list_images(0, 10)[0]}
    assert hints == {"astronaut.jpg": "train", "coins.png": "train", "retina.jpg": "val"}
    version = create_version(workspace, "layout", split="train=0.5,val=0.5", dup_distance=None)
    assert {e.name: e.split for e in version.images()} == hints
    # COCO's supercategory "object" is no category here: said, not dropped silently
    assert any("supercategories" in n and "object (1 categories)" in n for n in report.notes), report.notes


def test_coco_images_found_anywhere_under_images_and_an_ambiguous_name_is_reported(
    tmp_path: Path, samples: dict[str, Path], workspace: gv.Workspace
) -> None:
    photos = tmp_path / "photos"
    w, h = _photo(samples, "astronaut.jpg", photos / "2024" / "06" / "astronaut.jpg")
    _photo(samples, "coins.png", photos / "a" / "coins.png")
    _photo(samples, "retina.jpg", photos / "b" / "coins.png")  # another picture, the same file name
    doc = _coco([(1, "astronaut.jpg", w, h), (2, "coins.png", 384, 303)], [(1, [1.0, 2, 3, 4]), (2, [1.0, 2, 3, 4])])
    (tmp_path / "instances.json").write_text(json.dumps(doc))
    report = import_annotations(
        workspace, "coco", tmp_path / "instances.json", options=ImportOptions(images_dir=photos)
    )
    assert (report.images_ingested, report.annotations) == (1, 1)  # astronaut.jpg, two folders down
    (unmatched,) = report.unmatched
    assert unmatched.ref == "coins.png" and "2 files under" in unmatched.reason
    assert "a/coins.png" in unmatched.reason and "b/coins.png" in unmatched.reason  # reported, never guessed


def test_yolo_darknet_layouts_import_with_no_flags(
    tmp_path: Path, samples: dict[str, Path], workspace: gv.Workspace
) -> None:
    """CVAT's "YOLO 1.1" export as its documentation lays it out (obj.data, obj.names, train.txt and
    obj_train_data/ holding each image beside its label file), and a labels/ + images/ folder with a
    classes.txt (labelImg): both were refused for lacking a data.yaml."""
    darknet = tmp_path / "yolo11"
    w, h = _photo(samples, "astronaut.jpg", darknet / "obj_train_data" / "astronaut.jpg")
    (darknet / "obj_train_data" / "astronaut.txt").write_text("0 0.5 0.5 0.2 0.4\n1 0.25 0.25 0.1 0.1\n")
    (darknet / "obj.names").write_text("person\nflag\n")
    (darknet / "obj.data").write_text("classes = 2\ntrain = data/train.txt\nnames = data/obj.names\nbackup = backup/\n")
    (darknet / "train.txt").write_text("data/obj_train_data/astronaut.jpg\n")
    report = import_annotations(workspace, "yolo", darknet)
    assert report.ok and (report.images_ingested, report.annotations) == (1, 2), report.as_dict()
    (image_id,) = [i.id for i in workspace.list_images(0, 10)[0] if i.name == "astronaut.jpg"]
    boxes = workspace.annotations.query(image_id)
    assert sorted(boxes.label) == ["flag", "person"]
    person = boxes.xyxy[list(boxes.label).index("person")]
    assert np.allclose(person, [0.4 * w, 0.3 * h, 0.6 * w, 0.7 * h])

    flat = tmp_path / "labelimg"
    _photo(samples, "coins.png", flat / "images" / "coins.png")
    (flat / "labels").mkdir()
    (flat / "labels" / "coins.txt").write_text("0 0.5 0.5 0.5 0.5\n2 0.5 0.5 0.1 0.1\n")
    (flat / "labels" / "classes.txt").write_text("coin\n")
    report = import_annotations(workspace, "yolo", flat)
    assert report.annotations == 1 and not report.ok  # class 2 is not one of classes.txt's names
    (rejected,) = report.rejected
    assert "class 2 is not an index of the 1 names in classes.txt" in rejected.reason


def test_roboflow_ultralytics_layout_imports_with_its_splits(
    tmp_path: Path, samples: dict[str, Path], workspace: gv.Workspace
) -> None:
    """Roboflow's "YOLOv8" export: data.yaml with ``train: ../train/images``, ``<split>/images`` beside
    ``<split>/labels`` and README files at the top, as Roboflow's documentation shows it."""
    root = tmp_path / "roboflow"
    (root).mkdir()
    (root / "data.yaml").write_text(
        "train: ../train/images\nval: ../valid/images\ntest: ../test/images\n\nnc: 2\nnames: ['coin', 'face']\n"
    )
    (root / "README.roboflow.txt").write_text("Exported via roboflow.com\n")
    members = {
        "train": ("coins.png", "0 0.5 0.5 0.2 0.2\n0 0.1 0.1 0.05 0.05\n"),
        "valid": ("astronaut.jpg", "1 0.5 0.3 0.2 0.3\n"),
    }
    for split, (name, rows) in members.items():
        _photo(samples, name, root / split / "images" / name)
        (root / split / "labels").mkdir(parents=True)
        (root / split / "labels" / f"{Path(name).stem}.txt").write_text(rows)
    report = import_annotations(workspace, "yolo", root)
    assert report.ok and (report.images_ingested, report.annotations) == (2, 3), report.as_dict()
    assert any("README.roboflow.txt" in n for n in report.notes)  # read as no label file, and said so
    hints = {i.name: i.meta.get("split") for i in workspace.list_images(0, 10)[0]}
    assert hints == {"coins.png": "train", "astronaut.jpg": "val"}


def test_yolo_oriented_boxes_import_as_polygons_and_export_back(
    tmp_path: Path, samples: dict[str, Path], workspace: gv.Workspace
) -> None:
    """Ultralytics OBB rows (``class x1 y1 x2 y2 x3 y3 x4 y4``, DOTA-style) are polygons here; ``task=obb``
    writes them back byte for byte, and a box as its 4 corners."""
    root = tmp_path / "obb"
    w, h = _photo(samples, "astronaut.jpg", root / "images" / "train" / "astronaut.jpg")
    (root / "labels" / "train").mkdir(parents=True)
    rotated = "0 0.5 0.1 0.7 0.3 0.5 0.5 0.3 0.3\n"  # a square turned 45 degrees
    (root / "labels" / "train" / "astronaut.txt").write_text(rotated + "1 0.1 0.1 0.3 0.1 0.3 0.2 0.1 0.2\n")
    (root / "data.yaml").write_text(
        "path: /datasets/dota\ntrain: images/train\nval: images/train\nnames:\n  0: plane\n  1: ship\n"
    )
    report = import_annotations(workspace, "yolo", root)
    assert report.ok and report.by_kind == {"polygon": 2}, report.as_dict()
    assert any("2 oriented box(es)" in n for n in report.notes)
    (image_id,) = [i.id for i in workspace.list_images(0, 10)[0]]
    plane = workspace.annotations.query(image_id)
    ring = np.asarray(plane.geometry[list(plane.label).index("plane")].exterior.coords)[:4]
    assert np.allclose(ring, [[0.5 * w, 0.1 * h], [0.7 * w, 0.3 * h], [0.5 * w, 0.5 * h], [0.3 * w, 0.3 * h]])
    first = export_workspace(workspace, "yolo", tmp_path / "a", options=ExportOptions(task="obb", images="none"))
    assert first.annotations == 2
    text = (tmp_path / "a" / "labels" / "astronaut.txt").read_text()
    assert text.splitlines()[0] == rotated.strip()  # the file's own numbers, unchanged

    workspace.labels.set("tank", "box")
    workspace.annotations.add(image_id, Annotations.from_boxes([[10.0, 20.0, 50.0, 80.0]], "tank"), actor="t")
    export_workspace(workspace, "yolo", tmp_path / "b", options=ExportOptions(task="obb", images="none"))
    last = (tmp_path / "b" / "labels" / "astronaut.txt").read_text().splitlines()[-1].split()
    corners = np.asarray([float(v) for v in last[1:]]).reshape(4, 2) * (w, h)
    assert np.allclose(corners, [[10, 20], [50, 20], [50, 80], [10, 80]], atol=1e-4)


def test_yolo_darknet_export_layout_and_list_lines_that_leave_the_folder(
    tmp_path: Path, annotated: tuple[gv.Workspace, dict[str, str]], sqlite_workspace: gv.Workspace
) -> None:
    """``--layout darknet`` writes CVAT's YOLO 1.1 (obj.names, obj.data, train.txt, obj_train_data/; the round
    trip is in the byte-stability cases). A train.txt line that leaves the folder is refused, line by line."""
    ws, _ = annotated
    result = export_workspace(ws, "yolo", tmp_path / "a", options=ExportOptions(layout="darknet"))
    root = tmp_path / "a"
    obj_data = (root / "obj.data").read_text()
    assert obj_data == "classes = 3\ntrain = data/train.txt\nnames = data/obj.names\nbackup = backup/\n"
    listed = (root / "train.txt").read_text().splitlines()
    assert len(listed) == result.images and all(line.startswith("data/obj_train_data/") for line in listed)
    with (root / "train.txt").open("a") as fh:
        fh.write("../../outside.jpg\n/etc/passwd\ndata/obj_train_data/missing.jpg\n")
    report = import_annotations(sqlite_workspace, "yolo", root)
    assert report.annotations == result.annotations, report.as_dict()
    reasons = sorted(r.reason for r in report.rejected)
    assert len(reasons) == 3 and sum("leaves the folder" in r for r in reasons) == 2, reasons


def test_voc_person_layout_parts_are_kept_and_written_back(
    tmp_path: Path, samples: dict[str, Path], workspace: gv.Workspace
) -> None:
    """VOC2012's person layout (2007_000027.xml: a person with <part> head and hands) was dropped silently;
    the parts are boxes of their own now, tied to their object, and a VOC export nests them back."""
    root = tmp_path / "VOC2012"
    _photo(samples, "astronaut.jpg", root / "JPEGImages" / "astronaut.jpg")
    (root / "Annotations").mkdir()
    (root / "Annotations" / "astronaut.xml").write_text(
        "<annotation><folder>VOC2012</folder><filename>astronaut.jpg</filename>"
        "<source><database>The VOC2007 Database</database></source>"
        "<size><width>512</width><height>512</height><depth>3</depth></size><segmented>0</segmented>"
        "<object><name>person</name><pose>Unspecified</pose><truncated>0</truncated><difficult>0</difficult>"
        "<bndbox><xmin>174</xmin><ymin>101</ymin><xmax>349</xmax><ymax>351</ymax></bndbox>"
        "<part><name>head</name><bndbox><xmin>169</xmin><ymin>104</ymin><xmax>209</xmax><ymax>146</ymax></bndbox></part>"
        "<part><name>hand</name><bndbox><xmin>278</xmin><ymin>210</ymin><xmax>297</xmax><ymax>233</ymax></bndbox></part>"
        "</object></annotation>"
    )
    report = import_annotations(workspace, "voc", root)
    assert report.ok and report.by_kind == {"box": 3}, report.as_dict()
    (image_id,) = [i.id for i in workspace.list_images(0, 10)[0]]
    ann = workspace.annotations.query(image_id)
    head = list(ann.label).index("head")
    assert ann.attributes[head] == {"part_of": 0} and np.allclose(ann.xyxy[head], [168, 103, 209, 146])
    export_workspace(workspace, "voc", tmp_path / "a")
    xml = (tmp_path / "a" / "Annotations" / "astronaut.xml").read_text()
    assert xml.count("<object>") == 1 and xml.count("<part>") == 2 and "part_of" not in xml
    with gv.init_workspace(tmp_path / "second") as second:
        assert import_annotations(second, "voc", tmp_path / "a", options=ImportOptions(images_dir=root)).ok
        export_workspace(second, "voc", tmp_path / "b")
    assert tree(tmp_path / "a") == tree(tmp_path / "b")
