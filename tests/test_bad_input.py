"""Bad input at ingest (Python API, CLI and upload): truncated, empty, mislabelled, bombs, cyclic IFDs, tiles
larger than any real tile, offsets past EOF, directories, symlinks, FIFOs.

Every bad file must be rejected with one line that names the file and says why, leave nothing in blobs/,
pyramids/ or the database, make ``gigavision ingest`` exit non-zero when everything was rejected, and leave
the server answering the next request.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

import gigavision as gv
from gigavision.cli.main import main
from gigavision.server.main import create_app
from tests import badfiles
from tests.badfiles import BadFile


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory: pytest.TempPathFactory, samples: dict[str, Path]) -> dict[str, BadFile]:
    return badfiles.bad_image_files(tmp_path_factory.mktemp("bad"), samples)


def leftovers(ws: gv.Workspace) -> list[str]:
    """Anything but empty folders under blobs/, pyramids/ and the upload spool, plus any temp folder."""
    found = []
    for sub in ("blobs", "pyramids", "cache/uploads"):
        base = ws.root / sub
        if base.exists():
            for p in base.rglob("*"):
                if p.is_symlink() or not p.is_dir() or ".tmp" in p.name:
                    found.append(str(p.relative_to(ws.root)))
    return sorted(found)


def assert_nothing_left(ws: gv.Workspace) -> None:
    assert leftovers(ws) == []
    rows, total = ws.list_images()
    assert (rows, total) == ([], 0)


def check_rejection(bad: BadFile, status: str, reason: str | None, code: str | None) -> list[str]:
    """What is wrong with one rejection (empty when it is right)."""
    name = bad.path.name
    problems = []
    if status != "rejected":
        problems.append(f"{name}: status {status}, expected rejected")
    if not reason or "\n" in reason or name not in reason:
        problems.append(f"{name}: reason must be one line naming the file, got {reason!r}")
    if "Traceback" in (reason or ""):
        problems.append(f"{name}: reason is a traceback")
    problems += [f"{name}: {p}" for p in bad.problems(reason)]
    if code != bad.code:
        problems.append(f"{name}: code {code!r}, expected {bad.code!r}")
    return problems


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


# -- Python API, both databases ----------------------------------------------------------------------------
def test_bad_files_are_rejected_and_leave_nothing(
    workspace: gv.Workspace, bad_files: dict[str, BadFile], samples: dict[str, Path]
) -> None:
    paths = [b.path for b in bad_files.values()]
    results = workspace.ingest(paths)
    assert [r.name for r in results] == [p.name for p in paths]
    problems = [p for r in results for p in check_rejection(bad_files[r.name], r.status, r.reason, r.code)]
    assert problems == []
    assert all(r.id is None for r in results)
    assert_nothing_left(workspace)
    # the workspace is still usable: a real image ingests right after
    (ok,) = workspace.ingest([samples["coins.png"]])
    assert ok.status == "added" and workspace.list_images()[1] == 1


def test_each_bad_file_alone_leaves_nothing(sqlite_workspace: gv.Workspace, bad_files: dict[str, BadFile]) -> None:
    """One file per call (no batch state can hide a leftover), through ``ingest_file`` as the server uses it."""
    for bad in bad_files.values():
        result = sqlite_workspace.ingest_file(bad.path)
        assert check_rejection(bad, result.status, result.reason, result.code) == []
        assert leftovers(sqlite_workspace) == [], bad.path.name
    assert sqlite_workspace.list_images()[1] == 0


def test_truncated_jpeg_is_not_decoded_with_missing_data(
    sqlite_workspace: gv.Workspace, samples: dict[str, Path], tmp_path: Path
) -> None:
    """Pillow can fill a truncated JPEG with grey when LOAD_TRUNCATED_IMAGES is set; ingest must not."""
    from PIL import ImageFile

    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    for fraction in (0.5, 0.9, 0.99):
        cut = badfiles.truncated(samples["astronaut.jpg"], tmp_path / f"astro_{fraction}.jpg", fraction)
        (r,) = sqlite_workspace.ingest([cut])
        assert r.status == "rejected" and "truncated" in (r.reason or ""), (fraction, r.reason)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # and nothing switched it on globally
    assert_nothing_left(sqlite_workspace)


def test_real_images_over_lowered_limits_are_rejected(workspace: gv.Workspace, samples: dict[str, Path]) -> None:
    limits = {"max_decode_pixels": 100_000, "max_image_pixels": 1_000_000}
    with gv.open_workspace(workspace.root, limits=limits) as ws:
        names = ["coins.png", "retina.jpg", "moon_16bit.tif", "coffee.webp"]
        results = ws.ingest([samples[n] for n in names])
        for name, r in zip(names, results, strict=True):
            assert r.status == "rejected" and r.code == "limit_exceeded", (name, r)
            assert name in (r.reason or "") and "limits.max_" in (r.reason or ""), r.reason
        assert_nothing_left(ws)
    with gv.open_workspace(workspace.root, limits={"max_image_pixels": 1_000_000}) as ws:
        (r,) = ws.ingest([samples["retina.jpg"]])  # 1411² ≈ 2 Mpx
        assert r.status == "rejected" and "max_image_pixels" in (r.reason or "")
        assert_nothing_left(ws)


@pytest.mark.timeout(60)
def test_cyclic_ifds_do_not_hang(workspace: gv.Workspace, samples: dict[str, Path], tmp_path: Path) -> None:
    """A next-IFD offset pointing back to the first IFD: rejected, or read once as one page, never a loop."""
    expected = badfiles.real_pixels(samples["coins.png"], 64, 64)
    files = [badfiles.cyclic_tiff(tmp_path, samples["coins.png"], n, name=f"cycle{n}.tif") for n in (1, 2, 3)]
    added = 0
    for path, r in zip(files, workspace.ingest(files), strict=True):
        if r.status == "rejected":
            assert path.name in (r.reason or "") and "\n" not in (r.reason or "")
            continue
        assert r.status in ("added", "duplicate") and (r.width, r.height) == (64, 64), r
        added += r.status == "added"
        pixels = workspace.open_source(r.id or "").read_region(gv.Region(0, 0, 64, 64))
        assert np.array_equal(pixels[:, :, 0], expected)
    assert workspace.list_images()[1] == added
    blobs = [p for p in (workspace.root / "blobs").rglob("*") if p.is_file()]
    assert len(blobs) == added
    assert [p for p in (workspace.root / "pyramids").rglob(".tmp*")] == []


def test_handmade_tiff_control_ingests(
    sqlite_workspace: gv.Workspace, samples: dict[str, Path], tmp_path: Path
) -> None:
    """The hand-built TIFFs above are rejected for what is wrong with them, not for how they are built."""
    good = badfiles.valid_handmade_tiff(tmp_path, samples["coins.png"])
    (r,) = sqlite_workspace.ingest([good])
    assert r.status == "added", r.reason
    pixels = sqlite_workspace.open_source(r.id or "").read_region(gv.Region(0, 0, 64, 64))
    assert np.array_equal(pixels[:, :, 0], badfiles.real_pixels(samples["coins.png"], 64, 64))


def test_tile_bigger_than_the_image_is_rejected_or_clean(
    sqlite_workspace: gv.Workspace, samples: dict[str, Path], tmp_path: Path
) -> None:
    """A 4096² tile for a 64² image (plausible, unlike 65536²): either a clear rejection or a clean ingest."""
    path = badfiles.huge_tile(tmp_path, samples["coins.png"], 4096, name="tile4096.tif")
    (r,) = sqlite_workspace.ingest([path])
    if r.status == "rejected":
        assert "tile4096.tif" in (r.reason or "")
        assert_nothing_left(sqlite_workspace)
    else:
        assert r.status == "added" and (r.width, r.height) == (64, 64)
        assert sqlite_workspace.list_images()[1] == 1


# -- paths that are not image files -------------------------------------------------------------------------
def test_directory_without_recursive_is_rejected(
    workspace: gv.Workspace, samples: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "a_folder"
    folder.mkdir()
    (folder / "coins.png").write_bytes(samples["coins.png"].read_bytes())
    (r,) = workspace.ingest([folder])
    assert r.status == "rejected" and r.name == "a_folder" and r.path == str(folder)
    assert "directory" in (r.reason or "") and "--recursive" in (r.reason or "")
    assert_nothing_left(workspace)
    code, out, err = run_cli(capsys, "-w", str(workspace.root), "ingest", str(folder), "--json")
    assert code == 1
    (item,) = json.loads(out)["images"]
    assert item["status"] == "rejected" and "--recursive" in item["reason"] and "Traceback" not in err
    assert_nothing_left(workspace)


def test_directory_rejection_has_an_error_code(sqlite_workspace: gv.Workspace, tmp_path: Path) -> None:
    """Like every other rejection, the directory one carries a machine-readable code (``--json`` users)."""
    (r,) = sqlite_workspace.ingest([tmp_path])
    assert r.status == "rejected" and r.code


def test_missing_path_and_nul_byte_are_rejected(sqlite_workspace: gv.Workspace, tmp_path: Path) -> None:
    results = sqlite_workspace.ingest([tmp_path / "nope.jpg", str(tmp_path / "a\x00b.jpg")])
    assert [r.status for r in results] == ["rejected", "rejected"]
    assert "no such file" in (results[0].reason or "") and results[0].name == "nope.jpg"
    assert "NUL" in (results[1].reason or "")
    assert_nothing_left(sqlite_workspace)


@pytest.mark.timeout(5)
@pytest.mark.parametrize("kind", ["fifo", "char_device"])
def test_special_files_are_rejected_without_reading(sqlite_workspace: gv.Workspace, tmp_path: Path, kind: str) -> None:
    """A FIFO named .jpg (would block forever on open) or /dev/zero (endless bytes) is not a regular file."""
    if kind == "fifo":
        path = tmp_path / "pipe.jpg"
        os.mkfifo(path)
    else:
        path = Path("/dev/zero")
        if not path.exists():
            pytest.skip("no /dev/zero")
    (r,) = sqlite_workspace.ingest([path])
    assert r.status == "rejected" and "regular file" in (r.reason or ""), r
    assert_nothing_left(sqlite_workspace)


# -- symlinks ---------------------------------------------------------------------------------------------
@pytest.fixture
def linked_folder(tmp_path: Path, samples: dict[str, Path]) -> Path:
    """in/ with a real file, a link to it, a link escaping to a file outside, and a linked folder outside."""
    folder = tmp_path / "in"
    outside = tmp_path / "outside"
    folder.mkdir()
    (outside / "deep").mkdir(parents=True)
    (folder / "coins.png").write_bytes(samples["coins.png"].read_bytes())
    (folder / "inside_link.png").symlink_to(folder / "coins.png")
    (outside / "secret.jpg").write_bytes(samples["astronaut.jpg"].read_bytes())
    (outside / "deep" / "retina.jpg").write_bytes(samples["retina.jpg"].read_bytes())
    (folder / "escape.jpg").symlink_to(outside / "secret.jpg")
    (folder / "relative_escape.jpg").symlink_to(Path("..") / "outside" / "secret.jpg")
    (folder / "linked_dir").symlink_to(outside / "deep", target_is_directory=True)
    return folder


def test_symlinks_escaping_the_folder_are_not_followed(
    sqlite_workspace: gv.Workspace, linked_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ws = str(sqlite_workspace.root)
    code, out, _ = run_cli(capsys, "-w", ws, "ingest", "--recursive", str(linked_folder), "--json")
    assert code == 0
    by_name = {i["name"]: i for i in json.loads(out)["images"]}
    assert by_name["coins.png"]["status"] == "added"
    assert by_name["inside_link.png"]["status"] == "duplicate"  # a link inside the folder is fine
    for name in ("escape.jpg", "relative_escape.jpg"):
        assert by_name[name]["status"] == "rejected"
        assert "outside" in by_name[name]["reason"] and "--follow-symlinks" in by_name[name]["reason"]
    assert not any(n.startswith("linked_dir") and i["status"] == "added" for n, i in by_name.items())
    rows, total = sqlite_workspace.list_images()
    assert total == 1 and rows[0].name == "coins.png"
    assert len([p for p in (sqlite_workspace.root / "blobs").rglob("*") if p.is_file()]) == 1

    code, out, _ = run_cli(capsys, "-w", ws, "ingest", "-r", "--follow-symlinks", str(linked_folder), "--json")
    assert code == 0
    by_name = {i["name"]: i for i in json.loads(out)["images"]}
    assert by_name["escape.jpg"]["status"] == "added"
    assert by_name["relative_escape.jpg"]["status"] == "duplicate"
    assert by_name["linked_dir/retina.jpg"]["status"] == "added"
    assert sqlite_workspace.list_images()[1] == 3


def test_broken_and_looping_symlinks_in_a_folder_are_rejected(
    sqlite_workspace: gv.Workspace, samples: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "coins.png").write_bytes(samples["coins.png"].read_bytes())
    (folder / "dangling.jpg").symlink_to(folder / "gone.jpg")
    (folder / "loop_a.jpg").symlink_to(folder / "loop_b.jpg")
    (folder / "loop_b.jpg").symlink_to(folder / "loop_a.jpg")
    code, out, err = run_cli(capsys, "-w", str(sqlite_workspace.root), "ingest", "-r", str(folder), "--json")
    assert code == 0 and "Traceback" not in err
    by_name = {i["name"]: i for i in json.loads(out)["images"]}
    assert by_name["coins.png"]["status"] == "added"
    for name in ("dangling.jpg", "loop_a.jpg", "loop_b.jpg"):
        assert by_name[name]["status"] == "rejected" and by_name[name]["reason"], by_name[name]
    assert sqlite_workspace.list_images()[1] == 1


# -- CLI --------------------------------------------------------------------------------------------------
def test_cli_exit_code_for_each_bad_file(
    sqlite_workspace: gv.Workspace,
    bad_files: dict[str, BadFile],
    samples: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    ws = str(sqlite_workspace.root)
    for bad in bad_files.values():
        code, out, err = run_cli(capsys, "-w", ws, "ingest", str(bad.path), "--json")
        assert code == 1, (bad.path.name, err)
        (item,) = json.loads(out)["images"]
        assert check_rejection(bad, item["status"], item["reason"], item["code"]) == []
        assert "Traceback" not in err
    # all of them at once: still 1; with one good image among them: 0 (something was added)
    paths = [str(b.path) for b in bad_files.values()]
    code, out, _ = run_cli(capsys, "-w", ws, "ingest", *paths, "--json")
    assert code == 1 and json.loads(out)["summary"] == {"added": 0, "duplicate": 0, "rejected": len(paths)}
    assert_nothing_left(sqlite_workspace)
    code, out, _ = run_cli(capsys, "-w", ws, "ingest", *paths, str(samples["coins.png"]), "--json")
    assert code == 0 and json.loads(out)["summary"]["added"] == 1


def test_cli_prints_one_line_per_rejected_file(
    sqlite_workspace: gv.Workspace, bad_files: dict[str, BadFile], capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --json, each rejection is a single line naming the file and the reason (grep-able logs)."""
    code, _, err = run_cli(
        capsys, "-w", str(sqlite_workspace.root), "ingest", *(str(b.path) for b in bad_files.values())
    )
    assert code == 1
    lines = err.splitlines()
    problems = []
    for name, bad in bad_files.items():
        line = next((ln for ln in lines if ln.startswith("rejected") and f" {name} " in ln), None)
        if line is None:
            problems.append(f"{name}: no 'rejected' line")
        else:
            problems += [f"{name}: {p}" for p in bad.problems(line)]
    assert problems == []


# -- upload (REST) ----------------------------------------------------------------------------------------
@pytest.fixture
def client(sqlite_workspace: gv.Workspace) -> Iterator[TestClient]:
    with TestClient(create_app(sqlite_workspace), raise_server_exceptions=False) as c:
        yield c


def test_uploads_of_bad_files_are_4xx_and_the_server_stays_up(
    client: TestClient, sqlite_workspace: gv.Workspace, bad_files: dict[str, BadFile], samples: dict[str, Path]
) -> None:
    problems = []
    for name, bad in bad_files.items():
        resp = client.post("/api/v1/images", files={"file": (name, bad.path.read_bytes(), "application/octet-stream")})
        body = resp.json()
        if resp.status_code not in (400, 413, 422):
            problems.append(f"{name}: HTTP {resp.status_code} {body}")
            continue
        error = body.get("error", {})
        if not (isinstance(error.get("code"), str) and isinstance(error.get("message"), str)):
            problems.append(f"{name}: no error code/message in {body}")
        expected = (413,) if bad.code == "limit_exceeded" else (400, 422)
        if resp.status_code not in expected:
            problems.append(f"{name}: HTTP {resp.status_code} for code {bad.code}")
        if "\n" in error.get("message", ""):
            problems.append(f"{name}: message is not one line")
        if client.get("/healthz").status_code != 200:
            problems.append(f"{name}: server not answering after the upload")
    assert problems == []
    assert_nothing_left(sqlite_workspace)
    ok = client.post("/api/v1/images", files={"file": ("retina.jpg", samples["retina.jpg"].read_bytes(), "image/jpeg")})
    assert ok.status_code == 201 and ok.json()["status"] == "added"
    assert client.get(f"/iiif/3/{ok.json()['id']}/full/64,/0/default.jpg").status_code == 200


def test_upload_rejection_names_the_uploaded_file(client: TestClient, bad_files: dict[str, BadFile]) -> None:
    """The message names the file the client sent, not the server's spool file (and says why)."""
    problems = []
    for name, bad in bad_files.items():
        if name == "empty.jpg":
            continue  # answered before ingest (covered by test_bad_tiles' upload tests)
        resp = client.post("/api/v1/images", files={"file": (name, bad.path.read_bytes(), "application/octet-stream")})
        message = resp.json().get("error", {}).get("message", "")
        if name not in message:
            problems.append(f"{name}: {message!r}")
        problems += [f"{name}: {p}" for p in bad.problems(message)]
    assert problems == []
