"""User-set image metadata (patient id, age, visual-field indices…): Python, CLI (KEY=VALUE and CSV), REST.

Images are small crops of scikit-image's real photographs (the ``samples`` fixture) and its 16-bit moon scan
as a TIFF, whose reader records ``compression`` and ``photometric``: keys that belong to ingest.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import update

import gigavision as gv
from gigavision.cli.main import main
from gigavision.datasets import create_version
from gigavision.errors import InvalidInput, NotFound
from gigavision.images.metadata import INGEST_KEYS, USER_KEYS, parse_meta_value
from gigavision.server.main import create_app
from gigavision.store.schema import ImageRow

PHOTOS = ("astronaut.jpg", "coffee.webp", "immunohistochemistry.png", "retina.jpg")


@pytest.fixture(scope="session")
def crop_files(samples: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two 96² crops from opposite corners of each of four photographs (8 distinct images)."""
    out = tmp_path_factory.mktemp("meta-crops")
    paths = []
    for photo in PHOTOS:
        arr = np.asarray(Image.open(samples[photo]).convert("RGB"))
        h, w = arr.shape[:2]
        for k, (y, x) in enumerate([(h // 4, w // 4), (h * 3 // 4 - 96, w * 3 // 4 - 96)]):
            path = out / f"{photo.split('.')[0]}_{k}.png"
            Image.fromarray(np.ascontiguousarray(arr[y : y + 96, x : x + 96])).save(path)
            paths.append(path)
    return paths


def ingest(ws: gv.Workspace, files: list[Path]) -> dict[str, str]:
    """name -> image id."""
    results = ws.ingest(files)
    assert all(r.status == "added" for r in results), [r.reason for r in results]
    return {r.name: str(r.id) for r in results}


@pytest.fixture
def sqlite_images(sqlite_workspace: gv.Workspace, crop_files: list[Path], samples: dict[str, Path]) -> dict[str, str]:
    return ingest(sqlite_workspace, [*crop_files, samples["moon_16bit.tif"]])


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def stored_meta(ws: gv.Workspace, image_id: str) -> dict[str, object]:
    return dict(ws.get_image(image_id, fresh=True).meta)


# -- Python ----------------------------------------------------------------------------------------------------
def test_set_overwrite_delete_keeps_types_and_ingest_keys(
    workspace: gv.Workspace, crop_files: list[Path], samples: dict[str, Path]
) -> None:
    ws = workspace
    ids = ingest(ws, [crop_files[0], samples["moon_16bit.tif"]])
    moon = ids["moon_16bit.tif"]
    ingested = stored_meta(ws, moon)
    assert {"compression", "photometric"} <= set(ingested)

    meta = ws.set_image_meta(moon, {"patient": "p017", "age": 61, "md": -3.25, "glaucoma": True})
    assert meta == {**ingested, "patient": "p017", "age": 61, "md": -3.25, "glaucoma": True}
    assert stored_meta(ws, moon)[USER_KEYS] == ["age", "glaucoma", "md", "patient"]
    assert USER_KEYS not in meta  # bookkeeping is not shown

    # overwrite (with another type), delete, and deleting a missing key is a no-op
    meta = ws.set_image_meta(moon, {"age": 62.5, "glaucoma": None, "never_set": None, "site": "b"})
    assert meta == {**ingested, "patient": "p017", "age": 62.5, "md": -3.25, "site": "b"}
    again = gv.open_workspace(ws.root)  # another process' view: the database, not a cache
    try:
        row = again.get_image(moon)
        assert (row.meta["age"], type(row.meta["age"])) == (62.5, float)
        assert row.meta["patient"] == "p017" and "glaucoma" not in row.meta
        assert row.meta[USER_KEYS] == ["age", "md", "patient", "site"]
    finally:
        again.close()
    # the cached row of this process is refreshed too (side features read it)
    assert ws.get_image(moon).meta["site"] == "b"
    # NumPy numbers are stored as plain JSON numbers
    assert ws.set_image_meta(moon, {"age": np.int64(63), "md": np.float32(-1.5)})["age"] == 63
    assert type(stored_meta(ws, moon)["age"]) is int

    # removing every user key drops the bookkeeping entry: back to what ingest wrote
    ws.set_image_meta(moon, dict.fromkeys(["patient", "age", "md", "site"]))
    assert stored_meta(ws, moon) == ingested


def test_ingest_keys_and_bad_input_are_refused_and_nothing_is_written(
    sqlite_workspace: gv.Workspace, sqlite_images: dict[str, str]
) -> None:
    ws = sqlite_workspace
    moon, crop = sqlite_images["moon_16bit.tif"], sqlite_images["astronaut_0.png"]
    ws.set_image_meta(moon, {"patient": "p1"})
    before = stored_meta(ws, moon)
    assert set(before) - {"patient", USER_KEYS} <= INGEST_KEYS  # the fixed list knows what the TIFF reader writes

    # keys ingest wrote on this image, and ingest's key names on an image that lacks them
    for key, value in [("compression", 1), ("photometric", None), ("pyramid", "x"), ("display_window", 3)]:
        with pytest.raises(InvalidInput, match=rf"'{key}' belongs to ingest.*nothing was written"):
            ws.set_image_meta(moon, {"patient": "p2", key: value})
    with pytest.raises(InvalidInput, match="'pyramid' belongs to ingest"):
        ws.set_image_meta(crop, {"pyramid": "mine"})
    # a key another reader (a plugin) wrote is protected on that image, though it is not a known ingest key
    with ws.session.begin() as s:
        s.execute(update(ImageRow).where(ImageRow.id == crop).values(meta={"scanner": "X1"}))
    with pytest.raises(InvalidInput, match="'scanner' belongs to ingest"):
        ws.set_image_meta(crop, {"scanner": "mine"})
    assert ws.set_image_meta(crop, {"scanner_user": "mine"}) == {"scanner": "X1", "scanner_user": "mine"}

    bad: list[tuple[object, object, str]] = [
        ("", 1, "must be 1 to 64 characters"),
        ("1st", 1, "must be 1 to 64 characters"),
        ("has space", 1, "must be 1 to 64 characters"),
        ("k" * 65, 1, "must be 1 to 64 characters"),
        ("new\n", 1, "must be 1 to 64 characters"),
        ("@user_keys", ["a"], "must be 1 to 64 characters"),
        ("note", "x" * 1001, "1,001 characters; at most 1,000"),
        ("note", "a\x00b", "control character"),
        ("ratio", float("nan"), "not a finite number"),
        ("ratio", float("inf"), "not a finite number"),
        ("big", 2**60, r"beyond ±2\^53"),
        ("tags", ["a", "b"], "not list"),
        ("nested", {"a": 1}, "not dict"),
    ]
    for bad_key, bad_value, reason in bad:
        values: dict[Any, Any] = {"patient": "p2", bad_key: bad_value}
        with pytest.raises(InvalidInput, match=reason):
            ws.set_image_meta(moon, values)
    assert stored_meta(ws, moon) == before  # the good key of each call was not written either

    # several problems are reported together
    with pytest.raises(InvalidInput, match=r"^2 problems, nothing was written: metadata key 'a b'.*'x': .*nan"):
        ws.set_image_meta(moon, {"a b": 1, "x": float("nan")})
    with pytest.raises(NotFound):
        ws.set_image_meta("0" * 64, {"patient": "p1"})
    with pytest.raises(NotFound):
        ws.set_image_meta("../etc", {"patient": "p1"})
    assert ws.find_image("moon_16bit.tif") == moon and ws.find_image(moon) == moon
    with pytest.raises(NotFound, match=r"no image with id or name 'nope\.png'"):
        ws.find_image("nope.png")


def test_text_values_parse_like_a_user_means_them() -> None:
    cases = {
        "42": 42,
        "-7": -7,
        "0": 0,
        "3.5": 3.5,
        "-.5": -0.5,
        "1e3": 1000.0,
        "true": True,
        "False": False,
        "p017": "p017",
        "007": "007",  # an identifier: a number would lose its zeros
        "12345678901234567890": "12345678901234567890",  # beyond 2^53
        "1_000": "1_000",
        "nan": "nan",
        "OD": "OD",
        " 5": " 5",
    }
    for text, value in cases.items():
        parsed = parse_meta_value(text)
        assert (parsed, type(parsed)) == (value, type(value)), text


# -- CLI ---------------------------------------------------------------------------------------------------------
def test_cli_sets_unsets_and_shows(
    sqlite_workspace: gv.Workspace, sqlite_images: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    ws, moon = str(sqlite_workspace.root), sqlite_images["moon_16bit.tif"]
    code, out, err = run(capsys, "-w", ws, "images", "meta", moon, "patient=p017", "age=61", "md=-3.2", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["id"] == moon and doc["name"] == "moon_16bit.tif"
    assert {k: doc["meta"][k] for k in doc["user_keys"]} == {"patient": "p017", "age": 61, "md": -3.2}
    assert {"compression", "photometric"} <= set(doc["meta"]) and USER_KEYS not in doc["meta"]

    # by name; overwrite one key, remove another; text output marks what ingest wrote
    code, out, err = run(capsys, "-w", ws, "images", "meta", "moon_16bit.tif", "age=62", "--unset", "md")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["age:", "62"] and lines[1].split() == ["patient:", '"p017"']
    assert any("compression" in line and "(ingest)" in line for line in lines) and "md:" not in out

    code, out, _ = run(capsys, "-w", ws, "images", "show", moon, "--json")
    shown = json.loads(out)
    assert shown["meta"]["age"] == 62 and shown["user_keys"] == ["age", "patient"]
    code, out, _ = run(capsys, "-w", ws, "images", "show", moon)
    assert "'age': 62" in out and "'patient': 'p017'" in out

    # errors: one line on stderr, exit code 2, nothing written
    for args, message in [
        ([moon, "photometric=2"], "'photometric' belongs to ingest"),
        ([moon, "age=63", "bad key=1"], "'bad key' must be 1 to 64 characters"),
        ([moon, "age"], "'age' must look like KEY=VALUE"),
        ([moon, "age=1", "--unset", "age"], "'age' is both set and --unset"),
        (["0" * 64, "age=1"], "no image with id or name"),
        (["age=1"], "no image with id or name 'age=1'"),
        ([], "name an image"),
    ]:
        code, out, err = run(capsys, "-w", ws, "images", "meta", *args)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (args, err)
    assert stored_meta(sqlite_workspace, moon)["age"] == 62


# -- CSV -----------------------------------------------------------------------------------------------------
def test_csv_by_id_and_by_name_all_or_nothing(
    sqlite_workspace: gv.Workspace,
    sqlite_images: dict[str, str],
    crop_files: list[Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ws, ids = sqlite_workspace, sqlite_images
    sheet = tmp_path / "meta.csv"
    sheet.write_text(
        "\ufeffimage,patient,age,md\n"  # Excel's byte-order mark
        f"{ids['astronaut_0.png']},p1,61,-3.5\n"
        "astronaut_1.png,p1,61,\n"  # an empty cell leaves md as it is
        "coffee_0.png, p2 ,45,0.25\n"
        "\n",
        encoding="utf-8",
    )
    code, out, err = run(capsys, "-w", str(ws.root), "images", "meta", "--csv", str(sheet), "--json")
    assert code == 0, err
    assert json.loads(out) == {"rows": 3, "images": 3, "changed": 3, "keys": ["patient", "age", "md"]}
    assert {k: stored_meta(ws, ids["astronaut_0.png"])[k] for k in ("patient", "age", "md")} == {
        "patient": "p1",
        "age": 61,
        "md": -3.5,
    }
    assert "md" not in stored_meta(ws, ids["astronaut_1.png"])
    assert stored_meta(ws, ids["coffee_0.png"])["patient"] == "p2"
    # the same file again changes nothing
    assert ws.set_images_meta_csv(sheet).changed == 0

    before = {i: stored_meta(ws, i) for i in ids.values()}
    for body, message in [
        ("image,age\nastronaut_0.png,70\nnope.png,71\n", "row 3: no image with id or name 'nope.png'"),
        ("image,age\nastronaut_0.png,70\ncoffee_0.png,1e999\n", "row 3: metadata 'age': inf is not a finite number"),
        ("image,age\nastronaut_0.png,70\nastronaut_0.png,71\n", "row 3: image 'astronaut_0.png' is also on row 2"),
        ("image,age\nastronaut_0.png,70\ncoffee_0.png,1,2\n", "row 3: 3 cells, the header has 2"),
        ("image,compression\nmoon_16bit.tif,1\n", "row 2: metadata key 'compression' belongs to ingest"),
        ("image,bad key\nastronaut_0.png,1\n", "header: metadata key 'bad key'"),
        ("name,age\nastronaut_0.png,1\n", "the header must start with 'image'"),
        ("", "empty"),
    ]:
        sheet.write_text(body, encoding="utf-8")
        code, _, err = run(capsys, "-w", str(ws.root), "images", "meta", "--csv", str(sheet))
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (body, err)
    sheet.write_bytes(b"image,age\n\xff\xfe,1\n")
    with pytest.raises(InvalidInput, match="not UTF-8"):
        ws.set_images_meta_csv(sheet)
    with pytest.raises(InvalidInput, match="no such file"):
        ws.set_images_meta_csv(tmp_path / "missing.csv")
    assert {i: stored_meta(ws, i) for i in ids.values()} == before


def test_csv_ambiguous_name_names_the_row(
    sqlite_workspace: gv.Workspace, samples: dict[str, Path], tmp_path: Path
) -> None:
    ws = sqlite_workspace
    for folder, photo in (("a", "coins.png"), ("b", "astronaut.jpg")):  # two different images named x.png
        (tmp_path / folder).mkdir()
        Image.open(samples[photo]).save(tmp_path / folder / "x.png")
    ids = [r.id for r in ws.ingest([tmp_path / "a" / "x.png", tmp_path / "b" / "x.png"])]
    sheet = tmp_path / "meta.csv"
    sheet.write_text(f"image,site\n{ids[0]},a\nx.png,b\n", encoding="utf-8")
    with pytest.raises(InvalidInput, match=r"row 3: 2 images are named 'x\.png'; use the image id instead"):
        ws.set_images_meta_csv(sheet)
    assert "site" not in stored_meta(ws, str(ids[0]))


# -- REST ----------------------------------------------------------------------------------------------------
@pytest.fixture
def client(sqlite_workspace: gv.Workspace) -> Iterator[TestClient]:
    with TestClient(create_app(sqlite_workspace)) as c:
        yield c


def test_rest_patch_meta(sqlite_workspace: gv.Workspace, sqlite_images: dict[str, str], client: TestClient) -> None:
    moon = sqlite_images["moon_16bit.tif"]
    url = f"/api/v1/images/{moon}/meta"
    r = client.patch(url, json={"patient": "p9", "age": 70, "md": -1.5, "flag": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == moon and body["user_keys"] == ["age", "flag", "md", "patient"]
    assert body["meta"]["age"] == 70 and body["meta"]["flag"] is True and "compression" in body["meta"]
    r = client.patch(url, json={"flag": None, "age": 71})
    assert r.status_code == 200 and "flag" not in r.json()["meta"] and r.json()["meta"]["age"] == 71
    one = client.get(f"/api/v1/images/{moon}").json()
    assert one["meta"]["patient"] == "p9" and one["user_keys"] == ["age", "md", "patient"]
    assert USER_KEYS not in one["meta"]
    listed = client.get("/api/v1/images", params={"limit": 100}).json()["items"]
    assert next(i for i in listed if i["id"] == moon)["meta"]["age"] == 71

    # a change made by another process (the CLI) shows at once, though this process cached the row
    other = gv.open_workspace(sqlite_workspace.root)
    try:
        other.set_image_meta(moon, {"age": 72})
    finally:
        other.close()
    assert client.get(f"/api/v1/images/{moon}").json()["meta"]["age"] == 72

    for payload, status, code, message in [
        ({"compression": 9}, 400, "invalid_input", "'compression' belongs to ingest"),
        ({"age": 1, "bad key": 2}, 400, "invalid_input", "'bad key' must be 1 to 64 characters"),
        ({"tags": [1, 2]}, 400, "invalid_input", "not list"),
        ({"note": "x" * 1001}, 400, "invalid_input", "at most 1,000"),
        ([1, 2], 422, "invalid_input", ""),
    ]:
        r = client.patch(url, json=payload)
        assert r.status_code == status and r.json()["error"]["code"] == code, r.text
        assert message in r.json()["error"]["message"]
    assert client.get(f"/api/v1/images/{moon}").json()["meta"]["age"] == 72  # nothing written
    r = client.patch(f"/api/v1/images/{'0' * 64}/meta", json={"age": 1})
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = client.patch("/api/v1/images/not-an-id/meta", json={"age": 1})
    assert r.status_code == 404


# -- what it is for ------------------------------------------------------------------------------------------------
def test_patients_set_with_the_cli_stay_together_and_numbers_stay_numbers(
    sqlite_workspace: gv.Workspace, sqlite_images: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    ws, ids = sqlite_workspace, sqlite_images
    crops = sorted(n for n in ids if n.endswith(".png"))
    patients = {name: f"p{i // 2}" for i, name in enumerate(crops)}  # two crops of one photo: one patient
    for i, (name, patient) in enumerate(patients.items()):
        code, _, err = run(
            capsys, "-w", str(ws.root), "images", "meta", name, f"patient={patient}", f"age={50 + i}", f"md={-i / 4}"
        )
        assert code == 0, err

    v = create_version(ws, "patients", group_by="meta:patient", split="train=0.5,val=0.25,test=0.25", dup_distance=None)
    placed = {e.name: e.split for e in v.images()}
    by_patient: dict[str, set[object]] = {}
    for name, patient in patients.items():
        by_patient.setdefault(patient, set()).add(placed[name])
    assert all(len(s) == 1 for s in by_patient.values()), by_patient
    assert v.counts["groups"] == 4 + 1 and v.counts["ungrouped"] == 1  # the moon scan has no patient
    only = create_version(ws, "p1", filters=["meta:patient=p1"], dup_distance=None)
    assert sorted(e.name for e in only.images()) == sorted(n for n, p in patients.items() if p == "p1")

    # numbers come back as numbers (what a classifier's side features need), text stays text
    for i, name in enumerate(patients):
        meta = ws.get_image(ids[name], fresh=True).meta
        assert (meta["age"], meta["md"], meta["patient"]) == (50 + i, -i / 4, patients[name])
        assert (type(meta["age"]), type(meta["md"])) == (int, float)
