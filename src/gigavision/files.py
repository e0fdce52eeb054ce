"""Files that appear whole or not at all: write beside the target, fsync, rename, fsync the folder.

A reader (the tile server, a resumed job, the next process after a crash) must never see half a file, and a
rename is only durable once its folder is synced, so every published file goes through here.

``GIGAVISION_FSYNC=0`` turns the syncs off (and SQLite's ``synchronous`` with them, ``store/db.py``) for
throwaway workspaces (the test suite, CI). Files still appear whole or not at all, so a killed process
loses nothing; only a power cut or a kernel crash can lose the last writes. The test suite runs so.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

FSYNC_ENV = "GIGAVISION_FSYNC"


def syncing() -> bool:
    """Whether writes are synced to disk (``GIGAVISION_FSYNC`` is not ``0``), read at each call."""
    return os.environ.get(FSYNC_ENV, "1") != "0"


def fsync(fd: int) -> None:
    """``os.fsync(fd)``, unless syncing is off."""
    if syncing():
        os.fsync(fd)


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Make the renames and creations in ``folder`` durable (a no-op where folders cannot be opened)."""
    if not syncing():
        return
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # Windows, or a folder we may not open: nothing more to do
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(folder: str | os.PathLike[str]) -> None:
    """``mkdir -p folder``, durably: each folder created is synced into its parent, so a file published
    inside a new folder (``blobs/ab/…``) cannot lose its folder's name in a power cut after the commit."""
    path = Path(folder)
    if path.is_dir():
        return
    make_dirs(path.parent)
    path.mkdir(exist_ok=True)
    fsync_dir(path.parent)


def publish(tmp: str | os.PathLike[str], dest: str | os.PathLike[str]) -> None:
    """Rename the finished ``tmp`` (a file or a folder) onto ``dest`` durably: its bytes, then the name.

    A folder's files and subfolders are synced first (a model folder's checkpoint is written by
    ``torch.save``, which does not fsync), so no published folder can hold a short file after a power cut."""
    tmp_path, dest_path = Path(tmp), Path(dest)
    if syncing():
        _sync_tree(tmp_path)
    os.replace(tmp_path, dest_path)
    fsync_dir(dest_path.parent)


def _sync_tree(path: Path) -> None:
    """fsync a file, or a folder with everything in it (children before their folders; links skipped)."""
    if path.is_file():
        _fsync_file(path)
    elif path.is_dir():
        for child in sorted(path.rglob("*"), reverse=True):
            if child.is_symlink():
                continue
            if child.is_file():
                _fsync_file(child)
            elif child.is_dir():
                fsync_dir(child)
        fsync_dir(path)


def _fsync_file(path: Path) -> None:
    with path.open("rb") as fh:
        os.fsync(fh.fileno())


def temp_beside(dest: str | os.PathLike[str]) -> Path:
    """A fresh hidden name next to ``dest`` (same folder, so the final rename never crosses a filesystem)."""
    dest_path = Path(dest)
    return dest_path.with_name(f".{dest_path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:12]}")


def is_temp_name(name: str) -> bool:
    """Whether ``name`` is one ``temp_beside`` makes (what a writer killed before its rename leaves behind)."""
    return _TEMP_NAME.match(name) is not None


_TEMP_NAME = re.compile(r"^\..+\.tmp-\d+-[0-9a-f]{12}$")


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """A temp path for a writer that takes a path (libvips, zipfile, onnx export, a folder being filled);
    published onto ``dest`` when the block ends cleanly, removed when it raises."""
    dest_path = Path(dest)
    make_dirs(dest_path.parent)
    tmp = temp_beside(dest_path)
    try:
        yield tmp
        publish(tmp, dest_path)
    finally:
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_write(dest: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """A binary file whose bytes replace ``dest`` when the block ends cleanly (nothing changes when it raises)."""
    with atomic_path(dest) as tmp, tmp.open("wb") as fh:
        yield fh
        fh.flush()
        fsync(fh.fileno())


def write_bytes(dest: str | os.PathLike[str], data: bytes) -> Path:
    """``dest`` holds ``data``, atomically."""
    with atomic_write(dest) as fh:
        fh.write(data)
    return Path(dest)


def write_text(dest: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """``dest`` holds ``text``, atomically."""
    return write_bytes(dest, text.encode(encoding))
