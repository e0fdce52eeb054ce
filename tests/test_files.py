"""Published files appear whole or not at all (gigavision.files)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gigavision import files
from gigavision.files import atomic_path, atomic_write, write_text


def test_atomic_write_replaces_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_write(target) as fh:
        fh.write(b"half of the new")
        raise RuntimeError("writer failed")
    assert target.read_text() == "old"  # the old content survives a failed writer
    with atomic_write(target) as fh:
        fh.write(b"new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]  # no temp file left behind


def test_atomic_path_publishes_a_folder_and_cleans_up_a_failed_one(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "export"
    with atomic_path(out) as tmp:
        tmp.mkdir()
        (tmp / "a.json").write_text("{}")
        assert not out.exists()  # nothing visible until the block ends
    assert (out / "a.json").read_text() == "{}"
    with pytest.raises(ValueError), atomic_path(tmp_path / "sub" / "other") as tmp:
        tmp.mkdir()
        (tmp / "b.json").write_text("{}")
        raise ValueError("exporter failed")
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["export"]


def test_publishing_a_folder_syncs_every_file_and_folder_in_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model folder's checkpoint comes from ``torch.save``, which never fsyncs: publish must, or a power cut
    after the rename (and the database commit) can leave a published folder with a short file."""
    staging = tmp_path / "staging"
    (staging / "sub").mkdir(parents=True)
    (staging / "checkpoint.pt").write_bytes(b"w" * 100)
    (staging / "sub" / "report.html").write_text("<p>")
    synced: list[str] = []
    real = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    monkeypatch.setenv(files.FSYNC_ENV, "1")  # the suite runs with syncs off (tests/conftest.py)
    files.publish(staging, tmp_path / "model")
    for name in ("checkpoint.pt", "sub/report.html", "sub", ""):
        assert str((staging / name).resolve()) in synced, name
    assert str(tmp_path.resolve()) == synced[-1]  # the rename itself, last
    assert (tmp_path / "model" / "checkpoint.pt").read_bytes() == b"w" * 100


def test_syncs_can_be_turned_off_for_throwaway_workspaces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``GIGAVISION_FSYNC=0``: no fsync and SQLite's ``synchronous=OFF``; files are still published whole."""
    import gigavision as gv

    synced: list[int] = []
    monkeypatch.setattr(os, "fsync", synced.append)
    for value, sqlite_level in (("0", 0), ("1", 2)):  # PRAGMA synchronous: 0 OFF, 2 FULL
        monkeypatch.setenv(files.FSYNC_ENV, value)
        synced.clear()
        files.write_text(tmp_path / value / "a.txt", "whole")
        assert (tmp_path / value / "a.txt").read_text() == "whole"
        assert bool(synced) == (value == "1")
        ws = gv.init_workspace(tmp_path / f"ws{value}")
        with ws.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == sqlite_level
        ws.close()
