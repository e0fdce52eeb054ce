"""gigavision fsck: what it reports for each kind of crash state, what --repair leaves, and a real SIGKILLed ingest."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import gigavision as gv
from gigavision.cli.main import main
from gigavision.models.card import ModelCard, ModelInput
from gigavision.store.fsck import STALE_AFTER, scratch_folder
from gigavision.store.fsck import fsck as run_fsck
from gigavision.store.schema import AnnotationRow, ImageRow, JobRow, utcnow

OLD = time.time() - 2 * STALE_AFTER  # an mtime older than the abandonment age


def fsck(capsys: pytest.CaptureFixture[str], ws: gv.Workspace, *args: str) -> tuple[int, dict[str, Any]]:
    code = main(["-w", str(ws.root), "fsck", "--json", *args])
    out = capsys.readouterr().out
    return code, json.loads(out)


def found(report: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {(f["check"], f["problem"], f["path"]) for f in report["findings"]}


def age(path: Path) -> None:
    """Make ``path`` (and everything in it) look untouched for twice the abandonment age."""
    for p in [path, *path.rglob("*")]:
        os.utime(p, (OLD, OLD))


def blob_path(ws: gv.Workspace, image_id: str) -> Path:
    return Path(ws.blobs.root) / ws.get_image(image_id).blob_key


def state(ws: gv.Workspace) -> tuple[set[str], set[str], set[str]]:
    """Image rows, image blobs on disk, image folders on disk."""
    with ws.session() as s:
        rows = {r.id for r in s.query(ImageRow)}
    blobs = {p.name.split(".")[0] for p in Path(ws.blobs.root).glob("??/*")}
    folders = {p.name for p in (ws.root / "pyramids").glob("??/*")}
    return rows, blobs, folders


def leftovers(ws: gv.Workspace) -> list[str]:
    """Temp files, scratch folders and their locks anywhere in the workspace."""
    return sorted(str(p.relative_to(ws.root)) for p in ws.root.rglob("*") if ".tmp-" in p.name)


def test_clean_workspace_reports_nothing(
    capsys: pytest.CaptureFixture[str], sqlite_workspace: gv.Workspace, samples: dict[str, Path]
) -> None:
    ws = sqlite_workspace
    assert [r.status for r in ws.ingest([samples["coins.png"], samples["astronaut.jpg"]])] == ["added"] * 2
    code, report = fsck(capsys, ws)
    assert code == 0
    assert report["ok"] and report["findings"] == [] and report["problems"] == 0
    assert report["checked"]["images"] == 2 and report["checked"]["blobs"] == 2
    assert main(["-w", str(ws.root), "fsck"]) == 0
    assert "no problems" in capsys.readouterr().err


def test_crash_states_are_reported_then_repaired(
    capsys: pytest.CaptureFixture[str], sqlite_workspace: gv.Workspace, samples: dict[str, Path], tmp_path: Path
) -> None:
    ws = sqlite_workspace
    names = ["coins.png", "astronaut.jpg", "coffee.webp", "immunohistochemistry.png"]
    gone, cut, flipped, thumbless = (r.id or "" for r in ws.ingest([samples[n] for n in names]))
    ws.labels.set("cell", "box")
    ws.annotations.add(cut, gv.Annotations.from_boxes([[1, 1, 9, 9]], "cell"), "t")
    rel = {i: str(blob_path(ws, i).relative_to(ws.root)) for i in (gone, cut, flipped)}
    thumb = ws.thumbnail_path(thumbless)

    blob_path(ws, gone).unlink()  # a row whose original is missing (unreferenced: its row goes)
    with blob_path(ws, cut).open("r+b") as fh:  # truncated, and annotated: kept whatever happens
        fh.truncate(100)
    data = bytearray(blob_path(ws, flipped).read_bytes())  # same size, one bit flipped: the hash tells
    data[len(data) // 2] ^= 1
    blob_path(ws, flipped).write_bytes(bytes(data))
    thumb.unlink()  # a derived file: rebuilt from the original
    # an original no row references (ingest killed before its commit)
    extra = samples["hubble_deep_field.jpg"].read_bytes()
    sha = hashlib.sha256(extra).hexdigest()
    orphan = Path(ws.blobs.root) / sha[:2] / f"{sha}.jpg"
    orphan.parent.mkdir(exist_ok=True)
    orphan.write_bytes(extra)
    # a stale ingest scratch folder (no lock: old), and a live one whose owner holds its lock
    stale = ws.root / "pyramids" / ".tmp-0123456789abcdef"
    stale.mkdir()
    (stale / ".pyramid.tif.tmp-1-0123456789ab").write_bytes(b"\0" * 1000)
    age(stale)
    # upload spools: an old one and one being written; job folders: expired, recent, and without a row
    spool_old, spool_new = ws.root / "cache/uploads/a1", ws.root / "cache/uploads/b2"
    for spool in (spool_old, spool_new):
        spool.mkdir(parents=True)
        (spool / "slide.svs").write_bytes(b"x" * 500)
    age(spool_old)
    expired, recent, rowless = "e" * 32, "c" * 32, "d" * 32
    with ws.session.begin() as s:
        for job_id, days in ((expired, 40), (recent, 2)):
            finished = utcnow() - timedelta(days=days)
            row = JobRow(id=job_id, kind="export", status="done", progress=1.0, message="", params={}, created_by="t")
            s.add(row)
            row.created_at = row.finished_at = finished
            row.cancel_requested = False
    for job_id in (expired, recent, rowless):
        (ws.root / "jobs" / job_id).mkdir(parents=True)
        (ws.root / "jobs" / job_id / "export.zip").write_bytes(b"z" * 300)
    age(ws.root / "jobs" / rowless)
    # a model folder without its weights
    model = ws.root / "models" / "cells-detect-1"
    model.mkdir()
    card = ModelCard(id="cells-detect-1", task="detect", arch="x", classes=["cell"], dataset="cells@1",
                     input=ModelInput(size=64, mean=(0, 0, 0), std=(1, 1, 1)), created_at="2026-01-01")  # fmt: skip
    card.write(model)
    (model / "recipe.json").write_text("{}")

    expected = {
        ("blob", "missing", rel[gone]),
        ("blob", "short", rel[cut]),
        ("blob", "hash", rel[flipped]),
        ("thumbnail", "missing", str(thumb.relative_to(ws.root))),
        ("orphan", "orphan", str(orphan.relative_to(ws.root))),
        ("scratch", "stale", "pyramids/.tmp-0123456789abcdef"),
        ("upload", "stale", "cache/uploads/a1"),
        ("job", "expired", f"jobs/{expired}"),
        ("job", "orphan", f"jobs/{rowless}"),
        ("model", "missing", "models/cells-detect-1/checkpoint.pt"),
    }
    with scratch_folder(ws.root / "pyramids") as live:
        (live / "thumbnail.jpg").write_bytes(b"partial")
        age(live)  # old, but its owner (this test) holds the lock: left alone
        code, report = fsck(capsys, ws)
        assert code == 1 and not report["ok"]
        assert found(report) == expected
        assert not any(f["repaired"] for f in report["findings"])
        assert thumb.exists() is False and orphan.exists() and stale.exists()  # report only: nothing changed

        code, report = fsck(capsys, ws, "--repair")
        assert live.is_dir()
    assert code == 1  # the annotated image's truncated original and the model cannot be repaired
    kept = {(f["check"], f["path"]) for f in report["findings"] if not f["repaired"]}
    assert kept == {("blob", rel[cut]), ("model", "models/cells-detect-1/checkpoint.pt")}
    reasons = {f["check"]: f["kept"] for f in report["findings"] if not f["repaired"]}
    assert "1 annotations refer to this image" in reasons["blob"]
    assert report["freed_bytes"] >= len(extra) + 1000 + 500 + 2 * 300

    rows, blobs, folders = state(ws)
    assert rows == {cut, thumbless}  # the two unreferenced broken images are gone, files and all
    assert blobs == {cut, thumbless} and folders == {cut, thumbless}
    assert blob_path(ws, cut).stat().st_size == 100  # a blob a row references is never deleted
    assert thumb.is_file() and thumb.stat().st_size > 0  # rebuilt
    assert not stale.exists() and not spool_old.exists() and spool_new.exists()
    assert not (ws.root / "jobs" / expired).exists() and not (ws.root / "jobs" / rowless).exists()
    assert (ws.root / "jobs" / recent / "export.zip").exists()
    assert (model / "model.json").exists()  # models are never removed
    assert leftovers(ws) == []

    code, report = fsck(capsys, ws, "--repair")
    assert code == 1 and found(report) == {
        ("blob", "short", rel[cut]),
        ("model", "missing", "models/cells-detect-1/checkpoint.pt"),
    }
    # ingesting the lost file again restores its original; the row was dropped, so it is added back whole
    assert ws.ingest([samples["coins.png"]])[0].status == "added"
    assert blob_path(ws, gone).read_bytes() == samples["coins.png"].read_bytes()


def test_sigkilled_ingest_then_repair_is_consistent(
    capsys: pytest.CaptureFixture[str], sqlite_workspace: gv.Workspace, samples: dict[str, Path]
) -> None:
    """A real ingest (a 1411 px fundus photograph, over a lowered pyramid threshold so it builds a pyramid),
    SIGKILLed as soon as it has made its scratch folder; fsck --repair then leaves no stray bytes."""
    ws = sqlite_workspace
    pyramids = ws.root / "pyramids"
    cli = [sys.executable, "-c", "from gigavision.cli.main import entry; entry()"]
    env = {**os.environ, "GIGAVISION_INGEST__PYRAMID_THRESHOLD": "512"}
    proc = subprocess.Popen([*cli, "-w", str(ws.root), "ingest", str(samples["retina.jpg"])], env=env)
    try:
        deadline = time.monotonic() + 60
        while not any(p.is_dir() for p in pyramids.glob(".tmp-*")):  # it has started writing
            assert proc.poll() is None, "ingest ended before it made its scratch folder"
            assert time.monotonic() < deadline
            time.sleep(0.002)  # polling for the folder, not waiting for a guess of its timing
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert leftovers(ws)  # the killed ingest left its scratch behind

    code, report = fsck(capsys, ws)
    assert code == 1 and ("scratch", "stale") in {(f["check"], f["problem"]) for f in report["findings"]}
    code, report = fsck(capsys, ws, "--repair")
    assert code == 0 and report["ok"]
    assert leftovers(ws) == []
    rows, blobs, folders = state(ws)
    assert rows == blobs == folders == set()  # killed before its commit: nothing of it remains
    code, report = fsck(capsys, ws)
    assert code == 0 and report["findings"] == []


def test_remote_blob_store_is_checked_through_fsspec(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, samples: dict[str, Path]
) -> None:
    """blob_url naming an fsspec store (memory://): originals are checked and swept through fsspec; ingesting
    a file again restores an original lost from the store."""
    with gv.init_workspace(tmp_path / "ws", blob_url=f"memory://fsck-{tmp_path.name}") as ws:
        lost, kept = (r.id or "" for r in ws.ingest([samples["coins.png"], samples["astronaut.jpg"]]))
        fs, root = ws.blobs.fs, ws.blobs.root
        fs.rm(f"{root}/{ws.get_image(lost).blob_key}")
        fs.pipe(f"{root}/ab/{'ab' * 32}.png", b"not an image anyone ingested")
        code, report = fsck(capsys, ws)
        assert code == 1
        assert found(report) == {
            ("blob", "missing", f"blobs/{ws.get_image(lost).blob_key}"),
            ("orphan", "orphan", f"blobs/ab/{'ab' * 32}.png"),
        }
        assert ws.ingest([samples["coins.png"]])[0].status == "duplicate"  # restores the original
        assert fs.cat(f"{root}/{ws.get_image(lost).blob_key}") == samples["coins.png"].read_bytes()
        code, report = fsck(capsys, ws, "--repair")
        assert code == 0 and found(report) == {("orphan", "orphan", f"blobs/ab/{'ab' * 32}.png")}
        assert sorted(fs.find(root)) == sorted(f"{root}/{ws.get_image(i).blob_key}" for i in (lost, kept))


def test_annotations_without_an_image_are_reported_and_kept(sqlite_workspace: gv.Workspace) -> None:
    ws = sqlite_workspace
    with ws.session.begin() as s:
        s.add(AnnotationRow(image_key=999, kind="box", label="cell", x0=0, y0=0, x1=1, y1=1, source="user:a",
                            status="accepted", created_by="a"))  # fmt: skip
    for repair in (False, True):
        report = run_fsck(ws, repair=repair)
        assert [(f.check, f.problem, f.repaired) for f in report.findings] == [("annotations", "dangling", False)]
        assert "1 annotations" in report.findings[0].detail and report.findings[0].kept
    with ws.session() as s:
        assert s.query(AnnotationRow).count() == 1  # never removed
