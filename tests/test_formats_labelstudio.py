"""Label Studio JSON (``labelstudio``): a file written exactly as Label Studio exports it imports with no
flags and every annotation counted; export → import → export is byte-for-byte stable; bad results are
rejected one by one and a file that is not a list of tasks is refused whole."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import shapely

import gigavision as gv
from gigavision.annotations import Annotations
from gigavision.errors import InvalidInput
from gigavision.formats import ExportOptions, export_workspace, import_annotations
from gigavision.formats.rle import decode_window


def small_photos(folder: Path) -> dict[str, tuple[int, int]]:
    """Real pixels from scikit-image, saved small: a.jpg (160×120 astronaut crop), b.png (100×80 coins)."""
    from PIL import Image
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(data.astronaut()[100:220, 150:310]).save(folder / "a.jpg", quality=90)
    Image.fromarray(data.coins()[:80, :100]).save(folder / "b.png")
    return {"a.jpg": (160, 120), "b.png": (100, 80)}


def ls_rle(rgba: np.ndarray) -> list[int]:
    """Label Studio's brush RLE of an RGBA image, written from its format (thi.ng rle-pack, as
    label-studio-converter documents it): a header of 32-bit value count, 5-bit word size - 1 and four 4-bit
    run sizes - 1; then per run of equal values a repeat bit, a size index, the length - 1 and the value.
    Single values go as literals (repeat bit 0), like the converter's ``encode_rle``."""
    flat = rgba.ravel().tolist()
    bits = [f"{len(flat):032b}", f"{8 - 1:05b}", *(f"{s - 1:04b}" for s in (3, 4, 8, 16))]
    i = 0
    while i < len(flat):
        j = i
        while j < len(flat) and flat[j] == flat[i]:
            j += 1
        n = j - i
        if n == 1:
            bits.append("0" + "00" + "000" + f"{flat[i]:08b}")
        while n > 1:
            k = min(n, 1 << 16)
            bits.append("1" + "11" + f"{k - 1:016b}" + f"{flat[i]:08b}")
            n -= k
        i = j
    text = "".join(bits)
    text += "0" * (-len(text) % 8)
    return [int(text[k : k + 8], 2) for k in range(0, len(text), 8)]


def result(rid: str, rtype: str, value: dict[str, Any], size: tuple[int, int], **extra: Any) -> dict[str, Any]:
    """One result as Label Studio writes it (from_name / to_name of its default templates)."""
    return {
        "id": rid,
        "type": rtype,
        "from_name": extra.pop("from_name", "label"),
        "to_name": "image",
        "original_width": size[0],
        "original_height": size[1],
        "image_rotation": 0,
        "value": value,
        "origin": "manual",
        **extra,
    }


def task(tid: int, image: str, annotations: list[dict[str, Any]], predictions: list[Any] | None = None) -> dict:
    return {
        "id": tid,
        "data": {"image": image},
        "annotations": annotations,
        "predictions": predictions or [],
        "meta": {},
        "created_at": "2024-05-02T09:00:00.000000Z",
        "project": 1,
        "file_upload": image.rsplit("/", 1)[-1],
    }


def annotation(aid: int, results: list[dict[str, Any]], updated: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": aid,
        "completed_by": 1,
        "result": results,
        "was_cancelled": False,
        "ground_truth": False,
        "created_at": updated,
        "updated_at": updated,
        "lead_time": 12.5,
        **extra,
    }


def nucleus_mask() -> tuple[np.ndarray, np.ndarray]:
    """The brush stroke as the browser paints it (the label's colour, no red, alpha 200) and the boolean mask:
    Label Studio's converter reads a brush mask from the alpha channel."""
    mask = np.zeros((120, 160), dtype=bool)
    mask[30:50, 100:140] = True
    mask[40, 120] = False
    rgba = np.zeros((120, 160, 4), dtype=np.uint8)
    rgba[mask] = (0, 170, 255, 200)
    return rgba, mask


def ls_export(size: tuple[int, int]) -> list[dict[str, Any]]:
    """Two tasks as Label Studio's JSON export writes them: every result type, several annotators."""
    a = size
    rgba, _ = nucleus_mask()
    latest = [
        result(
            "r1",
            "rectanglelabels",
            {"x": 10.5, "y": 20, "width": 30, "height": 40, "rotation": 0, "rectanglelabels": ["car"]},
            a,
        ),
        result(
            "r1",
            "textarea",
            {"x": 10.5, "y": 20, "width": 30, "height": 40, "rotation": 0, "text": ["parked"]},
            a,
            from_name="comment",
        ),
        result(
            "r2",
            "rectanglelabels",
            {"x": 50, "y": 10, "width": 20, "height": 25, "rotation": 90, "rectanglelabels": ["bus"]},
            a,
        ),
        result(
            "r3",
            "polygonlabels",
            {"points": [[10, 10], [40, 10], [25, 50]], "closed": True, "polygonlabels": ["roof"]},
            a,
            from_name="polygon",
        ),
        result("r4", "keypointlabels", {"x": 25, "y": 50, "width": 0.5, "keypointlabels": ["eye"]}, a, from_name="kp"),
        result(
            "r5", "brushlabels", {"format": "rle", "rle": ls_rle(rgba), "brushlabels": ["nucleus"]}, a, from_name="tag"
        ),
        {
            "id": "r6",
            "type": "choices",
            "from_name": "scene",
            "to_name": "image",
            "origin": "manual",
            "value": {"choices": ["outdoor", "sunny"]},
        },
        {"id": "r7", "type": "rating", "from_name": "quality", "to_name": "image", "value": {"rating": 4}},
        {"type": "relation", "from_id": "r1", "to_id": "r2", "direction": "right", "labels": []},
    ]
    older = [
        result(
            "o1",
            "rectanglelabels",
            {"x": 1, "y": 1, "width": 5, "height": 5, "rotation": 0, "rectanglelabels": ["car"]},
            a,
        )
    ]
    cancelled = annotation(1, [], "2024-05-02T09:30:00.000000Z", was_cancelled=True)
    prediction = {"id": 9, "model_version": "yolo-1", "score": 0.5, "result": older}
    first = task(
        1,
        "/data/upload/1/abcd1234-a.jpg",
        [
            cancelled,
            annotation(2, older, "2024-05-02T10:00:00.000000Z"),
            annotation(3, latest, "2024-05-03T08:00:00.000000Z"),
        ],
        [prediction],
    )
    b = (100, 80)
    box = result(
        "x1",
        "rectanglelabels",
        {"x": 0, "y": 0, "width": 100, "height": 50, "rotation": 0, "rectanglelabels": ["car"]},
        b,
    )
    second = task(2, "/data/local-files/?d=photos/b.png", [annotation(4, [box], "2024-05-03T09:00:00.000000Z")])
    return [first, second]


def by_label(ws: gv.Workspace, name: str) -> dict[str, Any]:
    (image_id,) = [i.id for i in ws.list_images(0, 10)[0] if i.name == name]
    ann = ws.annotations.query(image_id)
    return {str(ann.label[i]): (ann, i) for i in range(len(ann))}


def test_label_studio_export_imports_with_no_flags(tmp_path: Path, workspace: gv.Workspace) -> None:
    root = tmp_path / "ls"
    small_photos(root / "images")  # uploaded a.jpg: Label Studio stores it as abcd1234-a.jpg
    (root / "photos").mkdir()
    (root / "images" / "b.png").rename(root / "photos" / "b.png")  # a local-files storage folder
    (root / "project-1-at-2024-05-03-10-00-1a2b3c4d.json").write_text(json.dumps(ls_export((160, 120))))

    report = import_annotations(workspace, "labelstudio", root)

    assert report.ok, report.as_dict()
    assert (report.files, report.images_ingested) == (1, 2)
    assert dict(report.by_kind) == {"box": 2, "polygon": 2, "point": 1, "mask": 1, "tag": 2}
    assert report.annotations == 8
    notes = "\n".join(report.notes)
    for text in (
        "1 prediction(s) (model pre-annotations) in 1 task(s) were not imported",
        "1 cancelled annotation(s)",
        "1 task(s) had several annotations",
        "1 other annotation(s) were not",
        "1 relation(s)",
        "1 rating result(s) not attached to a region",
        "1 rotated rectangle(s) were imported as polygons",
    ):
        assert text in notes, notes
    a = by_label(workspace, "a.jpg")
    ann, i = a["car"]
    assert ann.xyxy[i].tolist() == [16.8, 24.0, 64.8, 72.0]  # 10.5 % of 160 px, 20 % of 120 px, ...
    assert ann.attributes[i] == {"comment": "parked"}  # the textarea sharing the rectangle's id
    ann, i = a["bus"]  # rotated 90° clockwise about its top-left corner (80, 12)
    assert ann.kind[i] == "polygon"
    assert shapely.equals(ann.geometry[i], shapely.Polygon([(80, 12), (80, 44), (50, 44), (50, 12)]))
    ann, i = a["roof"]
    assert shapely.equals(ann.geometry[i], shapely.Polygon([(16, 12), (64, 12), (40, 60)]))
    ann, i = a["eye"]
    assert (ann.kind[i], ann.xyxy[i][:2].tolist()) == ("point", [40.0, 60.0])
    ann, i = a["nucleus"]
    _, mask = nucleus_mask()
    assert ann.kind[i] == "mask" and ann.xyxy[i].tolist() == [100, 30, 140, 50]
    assert int(decode_window(ann.mask[i]).sum()) == int(mask.sum()) == 799
    assert {"outdoor", "sunny"} <= set(a) and a["outdoor"][0].kind[a["outdoor"][1]] == "tag"
    ann, i = by_label(workspace, "b.png")["car"]
    assert ann.xyxy[i].tolist() == [0.0, 0.0, 100.0, 40.0]


def annotate(ws: gv.Workspace, photos: Path) -> None:
    """Every kind, with fractional coordinates, a hole, a score, text and number attributes, tags."""
    ids = {r.name: str(r.id) for r in ws.ingest([photos / "a.jpg", photos / "b.png"])}
    ws.labels.set("car", "box", "#ffaa00", attributes={"note": [], "n": []})
    for name, kind in (("roof", "polygon"), ("nucleus", "mask"), ("eye", "point"), ("unused", "polygon")):
        ws.labels.set(name, kind, "#123456")
    for name in ("outdoor", "sunny", "coins"):
        ws.labels.set(name, "tag")
    holed = shapely.Polygon([(10, 10), (90.3333333, 12), (80, 100), (15, 90)], [[(30, 30), (50, 30), (40, 50)]])
    _, mask = nucleus_mask()
    parts = [
        Annotations.from_boxes([[10.25, 20, 60.5, 70]], "car", score=[0.75], attributes=[{"note": "red", "n": 3}]),
        Annotations.from_polygons([holed], "roof"),
        Annotations.from_masks([mask[30:50, 100:140]], [(100, 30)], "nucleus"),
        Annotations.from_points([[22.5, 18]], "eye"),
        Annotations.from_tags(["outdoor", "sunny"]),
    ]
    ws.annotations.add(ids["a.jpg"], Annotations.merge(parts), "ana")
    ws.annotations.add(ids["b.png"], Annotations.from_tags(["coins"]), "ana")


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_export_import_export_is_byte_for_byte_stable(tmp_path: Path, workspace: gv.Workspace) -> None:
    source = gv.init_workspace(tmp_path / "source")
    small_photos(tmp_path / "photos")
    annotate(source, tmp_path / "photos")
    copy = ExportOptions(images="copy")
    first = export_workspace(source, "labelstudio", tmp_path / "first", options=copy)
    source.close()
    assert (first.images, first.annotations) == (2, 7)
    assert first.converted == {"polygon holes dropped (Label Studio polygons have none)": 1}
    tasks = json.loads((tmp_path / "first" / "tasks.json").read_text())
    (car,) = [r for r in tasks[0]["annotations"][0]["result"] if r["type"] == "rectanglelabels"]
    assert car["value"]["x"] == pytest.approx(10.25 / 160 * 100) and car["score"] == 0.75
    assert [r["type"] for r in tasks[0]["annotations"][0]["result"] if r["id"] == car["id"]] == [
        "rectanglelabels",
        "number",
        "textarea",
    ]
    config = (tmp_path / "first" / "label_config.xml").read_text()
    assert '<Label value="car" background="#ffaa00"/>' in config and 'value="unused"' in config

    report = import_annotations(workspace, "labelstudio", tmp_path / "first")  # no flags: images/ beside it
    assert report.ok, report.as_dict()
    assert report.annotations == 7 and report.images_ingested == 2
    assert "unused" in workspace.labels.by_name()  # declared by label_config.xml
    export_workspace(workspace, "labelstudio", tmp_path / "second", options=copy)
    one, two = tree(tmp_path / "first"), tree(tmp_path / "second")
    assert list(one) == list(two) == ["images/a.jpg", "images/b.png", "label_config.xml", "tasks.json"]
    assert [name for name in one if one[name] != two[name]] == []


def test_bad_results_are_rejected_one_by_one_and_a_non_list_is_refused(
    tmp_path: Path, sqlite_workspace: gv.Workspace
) -> None:
    small_photos(tmp_path / "images")
    size = (160, 120)
    results = [
        result("ok", "rectanglelabels", {"x": 1, "y": 2, "width": 3, "height": 4, "rectanglelabels": ["car"]}, size),
        result(
            "wide", "rectanglelabels", {"x": 120, "y": 2, "width": 3, "height": 4, "rectanglelabels": ["car"]}, size
        ),
        result("nan", "keypointlabels", {"x": float("nan"), "y": 5, "keypointlabels": ["eye"]}, size),
        result("blob", "ellipselabels", {"x": 5, "y": 5, "radiusX": 2, "radiusY": 3, "ellipselabels": ["c"]}, size),
    ]
    doc = [
        task(7, "a.jpg", [annotation(1, results, "2024-05-03T08:00:00Z")]),
        {"id": 8, "data": {"text": "no image here"}, "annotations": []},
    ]
    (tmp_path / "export.json").write_text(json.dumps(doc))
    report = import_annotations(sqlite_workspace, "labelstudio", tmp_path / "export.json")
    assert not report.ok and report.annotations == 1
    reasons = {(r.item, r.reason.split(" (")[0]) for r in report.rejected}
    assert reasons == {
        ("task 7 result wide", "value.x = 120.0 is outside 0..100"),
        ("task 7 result nan", "value.x is NaN"),
        ("task 8", "no image reference in data"),
    }
    assert "1 ellipselabels result(s) were not imported" in "\n".join(report.notes)

    for name, text in (("object.json", '{"tasks": []}'), ("numbers.json", "[1, 2]"), ("text.json", "hello")):
        (tmp_path / name).write_text(text)
        with pytest.raises(InvalidInput, match=name):
            import_annotations(sqlite_workspace, "labelstudio", tmp_path / name)
    (image_id,) = [i.id for i in sqlite_workspace.list_images(0, 10)[0]]
    assert len(sqlite_workspace.annotations.query(image_id)) == 1  # only the valid box, nothing from the refusals
