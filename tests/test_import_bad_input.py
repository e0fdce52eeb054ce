"""Bad input to ``gigavision import``: each case is rejected with its file, item and reason, the valid rest is
imported, and nothing already stored changes (DESIGN.md §5)."""

from __future__ import annotations

import json
import re
import stat
import time
import tracemalloc
import uuid
import zipfile
from pathlib import Path

import pytest

import gigavision as gv
from gigavision.annotations import Annotations
from gigavision.errors import InvalidInput, LimitExceeded
from gigavision.formats import ImportOptions, import_annotations
from gigavision.formats.archive import ArchiveLimits, safe_extract


def snapshot(ws: gv.Workspace, image_id: str) -> list[dict[str, object]]:
    return ws.annotations.query_records(image_id)


def reasons(report: object) -> dict[str, str]:
    return {r.item: r.reason for r in report.rejected}  # type: ignore[attr-defined]


def test_coco_rejects_each_bad_record_and_keeps_the_rest(
    tmp_path: Path, samples: dict[str, Path], workspace: gv.Workspace
) -> None:
    coins, astronaut = workspace.ingest([samples["coins.png"], samples["astronaut.jpg"]])
    workspace.labels.set("coin", "box")
    workspace.annotations.add(str(coins.id), Annotations.from_boxes([[1, 1, 5, 5]], "coin"), "ana")
    before = snapshot(workspace, str(coins.id))
    bowtie = [10, 10, 60, 60, 60, 10, 10, 60]
    doc = {
        "images": [
            {"id": 1, "file_name": "coins.png", "width": 384, "height": 303},
            {"id": 2, "file_name": "ghost.png", "width": 10, "height": 10},
            {"id": 3, "file_name": "astronaut.jpg", "width": 100, "height": 100},
        ],
        "categories": [{"id": 1, "name": "coin"}, {"id": 2, "name": "cat"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [20, 30, 40, 50]},
            {"id": 2, "image_id": 99, "category_id": 1, "bbox": [20, 30, 40, 50]},
            {"id": 3, "image_id": 1, "category_id": 5, "bbox": [20, 30, 40, 50]},
            {"id": 4, "image_id": 1, "category_id": 1, "bbox": [-5, 10, 20, 20]},
            {"id": 5, "image_id": 1, "category_id": 1, "bbox": [float("nan"), 10, 20, 20]},
            {"id": 6, "image_id": 1, "category_id": 1, "segmentation": [bowtie]},
            {"id": 7, "image_id": 1, "category_id": 1, "bbox": [370, 290, 50, 50]},
            {"id": 8, "image_id": 1, "category_id": 1, "segmentation": [[100, 100, 150, 100, 125, 140]]},
            {"id": 9, "image_id": 2, "category_id": 1, "bbox": [1, 1, 2, 2]},
            {"id": 10, "image_id": 1, "category_id": 1, "bbox": [1, 2, 3]},
            {"id": 11, "image_id": 1, "category_id": 2, "bbox": [1, 2, 3, 4]},
            {"id": 12, "image_id": 3, "category_id": 1, "bbox": [1, 2, 3, 4]},
            {"id": 13, "image_id": 1, "category_id": 1, "segmentation": {"size": [10, 10], "counts": "0d0"}},
        ],
    }
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))  # json writes NaN as the literal NaN, as some tools do
    report = import_annotations(workspace, "coco", path, options=ImportOptions(strict_labels=True))
    got = reasons(report)
    assert got == {
        "annotation 2": "image_id 99 is not in images",
        "annotation 3": "category_id 5 is not in categories",
        "annotation 4": "negative coordinates in box [-5, 10, 15, 30]",
        "annotation 5": "NaN or infinite coordinates in box [nan, 10, nan, 30]",
        "annotation 6": got["annotation 6"],
        "annotation 7": "box [370, 290, 420, 340] extends outside the 384x303 image",
        "annotation 10": "bbox must be 4 numbers [x, y, width, height], got [1, 2, 3]",
        "annotation 11": "label 'cat' is not in the schema (strict labels)",
        "annotation 13": "RLE size [10, 10] is not the image size [303, 384]",
        "image astronaut.jpg": "the file gives the image size 100x100, the image astronaut.jpg is 512x512; "
        "its 1 annotation(s) were not imported",
    }
    assert got["annotation 6"].startswith("self-intersecting polygon (Self-intersection[")
    assert {r.file for r in report.rejected} == {"bad.json"} and report.rejected_count == 10
    assert [(u.ref, u.annotations) for u in report.unmatched] == [("ghost.png", 1)]
    # annotation 8, a polygon, is stored as its box: "coin" is a box class (class kinds are enforced)
    assert report.annotations == 2 and dict(report.by_kind) == {"box": 2}
    after = snapshot(workspace, str(coins.id))
    assert after[0] == before[0] and len(after) == 3  # the stored annotation is untouched
    assert [a["kind"] for a in after[1:]] == ["box", "box"] and after[1]["bbox"] == [20, 30, 60, 80]
    assert after[2]["bbox"] == [100, 100, 150, 140]
    assert set(workspace.labels.by_name()) == {"coin"}  # strict: "cat" was not added
    assert workspace.annotations.query_records(str(astronaut.id)) == []


def test_unreadable_input_changes_nothing(tmp_path: Path, samples: dict[str, Path], workspace: gv.Workspace) -> None:
    (coins,) = workspace.ingest([samples["coins.png"]])
    workspace.annotations.add(str(coins.id), Annotations.from_tags(["x"]), "ana")
    before = snapshot(workspace, str(coins.id)), workspace.labels.by_name().keys()
    for name, text, message in (
        ("trunc.json", '{"images": [{"id": 1, "file_name": "coins.png"', "not a readable COCO JSON file"),
        ("list.json", "[1, 2]", "not a COCO file (needs 'images' and 'annotations' lists)"),
        ("trunc.geojson", '{"type": "FeatureCollection", "features": [{"type": "Feature"', "truncated or malformed"),
    ):
        (tmp_path / name).write_text(text)
        fmt = "geojson" if name.endswith("geojson") else "coco"
        with pytest.raises(InvalidInput, match=re.escape(message)) as caught:
            import_annotations(workspace, fmt, tmp_path / name)
        assert name in str(caught.value)
    assert (snapshot(workspace, str(coins.id)), workspace.labels.by_name().keys()) == before


def test_yolo_bad_lines(tmp_path: Path, samples: dict[str, Path], sqlite_workspace: gv.Workspace) -> None:
    root = tmp_path / "yolo"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "images" / "coins.png").write_bytes(samples["coins.png"].read_bytes())
    (root / "data.yaml").write_text("names: [coin]\n")
    (root / "labels" / "coins.txt").write_text(
        "0 0.5 0.5 0.25 0.25\n"
        "0 0.5 0.5 0.1\n"
        "3 0.5 0.5 0.1 0.1\n"
        "0 0.95 0.5 0.2 0.2\n"
        "0 nan 0.5 0.1 0.1\n"
        "0 -0.1 0.5 0.1 0.1\n"
        "0 0.1 0.1 0.9 0.1 0.1 0.9 0.9 0.9\n"
        "zero 0.5 0.5 0.1 0.1\n"
    )
    report = import_annotations(sqlite_workspace, "yolo", root)
    assert reasons(report) == {
        "line 2": "3 numbers after the class: expected 4 (cx cy w h) or an even count ≥ 6 (x1 y1 x2 y2 x3 y3 ...)",
        "line 3": "class 3 is not an index of the 1 names in data.yaml",
        "line 4": "box extends outside the image (normalised coordinates beyond 0..1)",
        "line 5": "NaN or infinite coordinates",
        "line 6": "negative coordinates",
        "line 7": reasons(report)["line 7"],
        "line 8": "class and coordinates must be numbers",
    }
    assert reasons(report)["line 7"].startswith("self-intersecting polygon")
    assert report.annotations == 1 and report.images_ingested == 1
    (image,) = sqlite_workspace.list_images()[0]
    assert sqlite_workspace.annotations.query(image.id).xyxy.tolist() == [[144.0, 113.625, 240.0, 189.375]]


def test_voc_external_entity_is_refused_never_resolved(
    tmp_path: Path, samples: dict[str, Path], sqlite_workspace: gv.Workspace
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET")
    sqlite_workspace.ingest([samples["coins.png"]])
    folder = tmp_path / "voc" / "Annotations"
    folder.mkdir(parents=True)
    body = "<filename>coins.png</filename><object><name>{}</name><bndbox><xmin>1</xmin><ymin>1</ymin>"
    body += "<xmax>9</xmax><ymax>9</ymax></bndbox></object></annotation>"
    (folder / "good.xml").write_text("<annotation>" + body.format("coin"))
    (folder / "xxe.xml").write_text(
        f'<?xml version="1.0"?><!DOCTYPE annotation [<!ENTITY xxe SYSTEM "file://{secret}">]>'
        "<annotation>" + body.format("&xxe;")
    )
    (folder / "laughs.xml").write_text(
        '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY l "lol"><!ENTITY l2 "&l;&l;&l;&l;&l;&l;&l;&l;">]>'
        "<annotation>" + body.format("&l2;")
    )
    report = import_annotations(sqlite_workspace, "voc", tmp_path / "voc")
    assert report.annotations == 1 and report.rejected_count == 2
    for r in report.rejected:
        assert r.item == "file" and "DTD or entity declarations is refused (entities are never resolved)" in r.reason
    assert {r.file for r in report.rejected} == {"Annotations/xxe.xml", "Annotations/laughs.xml"}
    assert set(sqlite_workspace.labels.by_name()) == {"coin"}
    with pytest.raises(InvalidInput, match=r"xxe\.xml: XML with a DTD"):
        import_annotations(sqlite_workspace, "voc", folder / "xxe.xml")


def test_geojson_ten_million_vertex_polygon(
    tmp_path: Path, samples: dict[str, Path], sqlite_workspace: gv.Workspace
) -> None:
    """A 10,000,000-vertex polygon is refused unparsed, in seconds and bounded memory; its neighbours import."""
    (image,) = sqlite_workspace.ingest([samples["immunohistochemistry.png"]])
    small = b'{"type":"Feature","geometry":{"type":"Polygon","coordinates":[[[1,1],[9,1],[9,9],[1,1]]]},'
    small += b'"properties":{"classification":{"name":"cell","color":[0,128,0]}}}'
    path = tmp_path / "immunohistochemistry.png.geojson"
    with path.open("wb") as fh:
        fh.write(b'{"type":"FeatureCollection","features":[' + small + b",")
        fh.write(b'{"type":"Feature","properties":{},"geometry":{"type":"Polygon","coordinates":[[')
        fh.write(b"[1,1]," * 10_000_000 + b"[1,1]]]}},")
        fh.write(small + b"]}")
    assert path.stat().st_size > 60_000_000
    tracemalloc.start()
    t0 = time.perf_counter()
    report = import_annotations(sqlite_workspace, "geojson", path)
    elapsed = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert [(r.item, r.reason) for r in report.rejected] == [
        ("feature 1", "geometry has about 10000001 vertices, more than max_vertices 1000000; not parsed")
    ]
    assert report.annotations == 2 and len(sqlite_workspace.annotations.query(str(image.id))) == 2
    assert elapsed < 20, elapsed  # ~2 s here; json.load alone would take longer and need > 1 GB
    assert peak < 150 * 1024**2, peak / 1024**2


def test_archive_members_that_escape_are_rejected(
    tmp_path: Path, samples: dict[str, Path], sqlite_workspace: gv.Workspace
) -> None:
    (coins,) = sqlite_workspace.ingest([samples["coins.png"]])
    escape = f"evil-{uuid.uuid4().hex}.json"
    doc = {
        "images": [{"id": 1, "file_name": "coins.png", "width": 384, "height": 303}],
        "categories": [{"id": 1, "name": "coin"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4]}],
    }
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("export/annotations.json", json.dumps(doc))
        zf.writestr(f"../{escape}", json.dumps(doc))
        zf.writestr("export/../../x.json", "{}")
        zf.writestr("/abs.json", "{}")
        link = zipfile.ZipInfo("export/link.json")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    report = import_annotations(sqlite_workspace, "coco", archive)
    assert reasons(report) == {
        f"../{escape}": "path contains '..' (would escape the extraction folder)",
        "export/../../x.json": "path contains '..' (would escape the extraction folder)",
        "/abs.json": "absolute path",
        "export/link.json": "symbolic link (not extracted)",
    }
    assert {r.file for r in report.rejected} == {"export.zip"}
    assert report.annotations == 1 and len(sqlite_workspace.annotations.query(str(coins.id))) == 1
    assert not list(Path("/tmp").glob(escape)) and not (tmp_path / escape).exists()


def test_archive_limits(tmp_path: Path) -> None:
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.json", b"0" * 2_000_000)
        zf.writestr("ok.json", b'{"a": 1}')
    out = tmp_path / "out"
    out.mkdir()
    left_out = safe_extract(archive, out, ArchiveLimits(max_ratio=100))
    assert left_out == [("zeros.json", "compression ratio over 100 (zip bomb?)")]
    assert sorted(p.name for p in out.iterdir()) == ["ok.json"]
    with pytest.raises(LimitExceeded, match="more than the limit 1000000"):
        safe_extract(archive, tmp_path / "out2", ArchiveLimits(max_total_bytes=1_000_000))
    (tmp_path / "not.zip").write_bytes(b"PK\x03\x04 garbage")
    with pytest.raises(InvalidInput, match="not a readable zip archive"):
        safe_extract(tmp_path / "not.zip", out)


def test_encrypted_and_corrupt_members_are_rejected_one_by_one(tmp_path: Path) -> None:
    """Found by benchmarks/fuzz_files.py: both raised out of the extraction and failed the whole import job."""
    archive = tmp_path / "mixed.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("secret.json", b"{}")
        zf.writestr("broken.json", b'{"a": 1}' * 4000)
        zf.writestr("ok.json", b'{"a": 1}')
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo("broken.json")
    data = bytearray(archive.read_bytes())
    central = data.index(b"PK\x01\x02")  # the first central-directory entry: secret.json, written first
    data[central + 8] |= 0x1  # its flags say "encrypted" (zipfile asks for a password on open)
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start + 4 : start + 12] = b"\xff" * 8  # invalid deflate codes in the member's data
    archive.write_bytes(bytes(data))
    out = tmp_path / "out"
    out.mkdir()
    left_out = dict(safe_extract(archive, out))
    assert left_out["secret.json"] == "encrypted (no password is asked for)"
    assert left_out["broken.json"].startswith("cannot extract:")
    assert sorted(p.name for p in out.iterdir()) == ["ok.json"]


def test_image_references_stay_inside_the_images_folder(
    tmp_path: Path, samples: dict[str, Path], sqlite_workspace: gv.Workspace
) -> None:
    """``../coins.png`` relative to --images names a real file outside it: it is not followed."""
    (tmp_path / "images").mkdir()
    (tmp_path / "coins.png").write_bytes(samples["coins.png"].read_bytes())
    (tmp_path / "csv").mkdir()
    table = tmp_path / "csv" / "labels.csv"  # its own folder is searched too: keep coins.png out of it
    table.write_text("image,label\n../coins.png,x\n/etc/passwd,y\n")
    report = import_annotations(sqlite_workspace, "csv", table, options=ImportOptions(images_dir=tmp_path / "images"))
    suffix = " (the reference is an absolute path or contains '..': only its file name was looked up)"
    where = f"under {tmp_path / 'images'}"
    assert [(u.ref, u.reason) for u in report.unmatched] == [
        ("../coins.png", f"no file coins.png {where} and no image named coins.png in the workspace{suffix}"),
        ("/etc/passwd", f"no file passwd {where} and no image named passwd in the workspace{suffix}"),
    ]
    assert report.annotations == 0 and sqlite_workspace.list_images()[1] == 0


def test_labels_outside_the_schema(tmp_path: Path, samples: dict[str, Path], sqlite_workspace: gv.Workspace) -> None:
    """Strict: unknown labels are rejected; otherwise added, unless the schema refuses the name itself."""
    ws = sqlite_workspace
    (coins,) = ws.ingest([samples["coins.png"]])
    ws.labels.set("coin", "tag")
    long_label = "x" * 300
    table = tmp_path / "labels.csv"
    table.write_text(f"image,label\ncoins.png,coin,dog\ncoins.png,{long_label}\n")
    strict = import_annotations(ws, "csv", table, options=ImportOptions(strict_labels=True))
    assert reasons(strict) == {
        "row 2 label 2": "label 'dog' is not in the schema (strict labels)",
        "row 3 label 1": f"label {long_label!r} is not in the schema (strict labels)",
    }
    assert strict.annotations == 1 and set(ws.labels.by_name()) == {"coin"}
    loose = import_annotations(ws, "csv", table)
    refused = "label cannot join the schema: class name must be 1 to 256 characters"
    assert reasons(loose) == {
        f"class {('x' * 80)!r}": "class name must be 1 to 256 characters",  # file "schema", reported once
        "row 3 label 1": refused,
    }
    assert loose.classes_added == ["dog"] and loose.annotations == 2
    assert list(ws.annotations.query(str(coins.id)).label) == ["coin", "coin", "dog"]
