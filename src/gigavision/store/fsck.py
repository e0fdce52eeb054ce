"""Workspace consistency (``gigavision fsck``): every row's files, and what no row owns.

Checks each image row's original (present, its recorded size, its sha256 — which is the image id), the files
derived from it (``gigavision.ingest.check_derived``: pyramid, thumbnail, mask), each model folder
(``gigavision.models.check``), annotations whose image row is gone; and finds what crashed writers leave:
ingest scratch folders (``pyramids/.tmp-*``), temp files of ``gigavision.files`` writes, upload spools,
job folders without a job row or finished long ago, blobs and pyramid folders no row references.

Only reports unless ``repair``, which removes what is safe to remove and says what it did to each finding:
orphans and abandoned temp files; rows whose original is gone or damaged, when nothing (annotations, dataset
versions, QC items) refers to them; derived files are rebuilt from the original. A blob a row references is
never deleted while that row stays.

What may still be in use is judged without guessing where it can be: ingest publishes under the catalogue's
lock, which is held while blobs and pyramid folders are matched to rows; an ingest scratch folder is locked by
its live owner (``scratch_folder``). Everything else (a spool being uploaded, a temp file being written, a
dataset freeze's blobs before its commit) counts as abandoned once nothing in it changed for
``stale_after`` seconds.

The upper layers' checks are named as ``module:function`` paths (as job kinds are), so this module stays
in the store layer.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import stat
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import delete, func, select

from gigavision.files import is_temp_name
from gigavision.progress import Progress, no_progress
from gigavision.registry import import_path
from gigavision.store.schema import (
    AnnotationImageRow,
    AnnotationRow,
    DatasetImageRow,
    ImageHashRow,
    ImageRow,
    JobRow,
    QcItemRow,
)

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from gigavision.config import Settings
    from gigavision.store.blobs import BlobStore
    from gigavision.store.catalog import ImageCatalog

STALE_AFTER = 3600.0  # s without a change after which a spool, temp file or row-less folder is abandoned
JOB_FILES_DAYS = 30.0  # a finished job's folder (outputs, inputs) is kept this long
SCRATCH_PREFIX = ".tmp-"  # scratch_folder's names; its lock is the folder name + LOCK_SUFFIX
LOCK_SUFFIX = ".lock"
HASH_CHUNK = 4 * 1024 * 1024
FINISHED = ("done", "failed", "cancelled")
DERIVED_CHECK = "gigavision.ingest:check_derived"  # (ws, row, repair) -> list[Finding]
MODEL_CHECK = "gigavision.models.check:check_models"  # (models folder, repair) -> list[Finding]

_IMAGE_BLOB = re.compile(r"^[0-9a-f]{2}/[0-9a-f]{64}(\.[a-z0-9]{1,10})?$")  # store/blobs.blob_key
_FROZEN_BLOB = re.compile(r"^datasets/annotations/[0-9a-f]{2}/[0-9a-f]{64}\.json\.gz$")  # datasets/freeze
_HEX2, _HEX64, _HEX32 = re.compile(r"^[0-9a-f]{2}$"), re.compile(r"^[0-9a-f]{64}$"), re.compile(r"^[0-9a-f]{32}$")


class FsckWorkspace(Protocol):
    """What fsck needs of a workspace (``gigavision.workspace.Workspace`` is one)."""

    @property
    def root(self) -> Path: ...
    @property
    def settings(self) -> Settings: ...
    @property
    def session(self) -> sessionmaker[Session]: ...
    @property
    def catalog(self) -> ImageCatalog: ...
    @property
    def blobs(self) -> BlobStore: ...


@dataclass(slots=True)
class Finding:
    """One problem: what was checked, where, what is wrong, and what ``--repair`` did or why it did not."""

    check: str  # blob | pyramid | thumbnail | mask | model | annotations | scratch | temp | upload | job | orphan
    path: str  # relative to the workspace, or a blob key (``blobs/<key>``)
    problem: str  # missing | short | size | hash | unreadable | orphan | stale | expired | dangling
    detail: str
    image: str | None = None
    bytes: int = 0  # bytes the finding occupies (what removing it frees)
    action: str = ""  # what --repair does / did ("remove", "rebuild", "remove row"); empty: nothing
    kept: str = ""  # why --repair leaves it, when it does
    repaired: bool = False


@dataclass(slots=True)
class FsckReport:
    repair: bool
    findings: list[Finding] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)

    @property
    def remaining(self) -> list[Finding]:
        return [f for f in self.findings if not f.repaired]

    @property
    def ok(self) -> bool:
        return not self.remaining

    def count(self, name: str, n: int = 1) -> None:
        self.checked[name] = self.checked.get(name, 0) + n

    def as_dict(self) -> dict[str, Any]:
        repaired = [f for f in self.findings if f.repaired]
        return {
            "ok": self.ok,
            "repair": self.repair,
            "checked": dict(self.checked),
            "problems": len(self.findings),
            "repaired": len(repaired),
            "remaining": len(self.remaining),
            "freed_bytes": sum(f.bytes for f in repaired),
            "findings": [asdict(f) for f in self.findings],
        }


# -- scratch folders ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def scratch_folder(parent: Path) -> Iterator[Path]:
    """A fresh ``parent/.tmp-<hex>`` folder for work published from it (ingest), removed when the block ends.

    Its lock file (beside it, so a folder renamed into place does not carry it) is held while the owner
    lives; the kernel drops it when the owner dies, even by SIGKILL, so fsck removes a scratch folder the
    moment its owner is gone and never one still being written.
    """
    parent.mkdir(parents=True, exist_ok=True)
    folder = parent / f"{SCRATCH_PREFIX}{uuid.uuid4().hex}"
    lock = folder.with_name(folder.name + LOCK_SUFFIX)
    with lock.open("wb") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            folder.mkdir()
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)
            lock.unlink(missing_ok=True)


@contextlib.contextmanager
def _owner_gone(lock: Path) -> Iterator[bool | None]:
    """True while we hold ``lock`` (its owner is gone), False when a live owner holds it, None when there is
    no lock file (then only age can tell)."""
    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        yield None
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


# -- the check ---------------------------------------------------------------------------------------------
def fsck(
    ws: FsckWorkspace,
    *,
    repair: bool = False,
    hashes: bool = True,
    stale_after: float = STALE_AFTER,
    job_days: float = JOB_FILES_DAYS,
    progress: Progress | None = None,
) -> FsckReport:
    """Check ``ws`` (and with ``repair``, fix what is safe to fix); see the module docstring.

    ``hashes``: re-hash every original (the slow part: every stored byte is read); without it sizes are
    compared. ``stale_after``: seconds without a change before a spool or temp file counts as abandoned
    (0: nothing else is running). ``job_days``: how long a finished job's folder is kept.
    """
    progress = progress or no_progress
    report = FsckReport(repair=repair)
    now = time.time()
    _check_images(ws, report, hashes=hashes, progress=progress)
    _check_annotations(ws, report)
    check_models: Callable[[Path, bool], list[Finding]] = import_path(MODEL_CHECK)
    report.findings += check_models(ws.root / "models", repair)
    progress(0, 1, "orphans")
    with ws.catalog.publish_lock():  # no ingest publishes while blobs and folders are matched to rows
        _orphan_blobs(ws, report, stale_after, now)
        _orphan_pyramids(ws, report)
    _scratch(ws, report, stale_after, now)
    _temps(ws, report, stale_after, now)
    _uploads(ws, report, stale_after, now)
    _jobs(ws, report, stale_after, job_days, now)
    progress(1, 1, "done")
    return report


def _check_images(ws: FsckWorkspace, report: FsckReport, *, hashes: bool, progress: Progress) -> None:
    check_derived: Callable[[Any, ImageRow, bool], list[Finding]] = import_path(DERIVED_CHECK)
    with ws.session() as s:
        rows = list(s.scalars(select(ImageRow).order_by(ImageRow.created_at, ImageRow.id)))
    total = sum(r.size_bytes for r in rows) if hashes else len(rows)
    done = 0
    for row in rows:
        report.count("images")
        problem = _blob_problem(ws.blobs, row, hashes)
        done += row.size_bytes if hashes else 1
        progress(done, max(total, 1), f"{'hashing' if hashes else 'checking'} {row.name}")
        if problem is None:
            report.count("blob_bytes", row.size_bytes)
            report.findings += check_derived(ws, row, report.repair)
            continue
        kind, detail = problem
        finding = Finding("blob", f"blobs/{row.blob_key}", kind, detail, image=row.id)
        report.findings.append(finding)
        finding.action = "remove row"
        if report.repair:
            _drop_image(ws, row, finding)


def _blob_problem(blobs: BlobStore, row: ImageRow, hashes: bool) -> tuple[str, str] | None:
    """(problem, detail) of the image's original, or None when it is whole."""
    path = f"{blobs.root}/{row.blob_key}"
    try:
        size = int(blobs.fs.size(path))
    except FileNotFoundError:
        return "missing", f"the original of {row.name} is missing"
    if size != row.size_bytes:
        kind = "short" if size < row.size_bytes else "size"
        return kind, f"the original of {row.name} has {size:,} bytes, {row.size_bytes:,} were ingested"
    if hashes:
        digest = hashlib.sha256()
        with blobs.fs.open(path, "rb") as fh:
            while chunk := fh.read(HASH_CHUNK):
                digest.update(chunk)
        if digest.hexdigest() != row.id:
            return "hash", f"the original of {row.name} is damaged: its sha256 is not the image id"
    return None


def _references(s: Session, image_id: str) -> list[str]:
    """What still refers to an image: the reason a broken image row is kept."""
    found = []
    annotated = s.scalar(
        select(func.count())
        .select_from(AnnotationRow)
        .join(AnnotationImageRow, AnnotationImageRow.image_key == AnnotationRow.image_key)
        .where(AnnotationImageRow.image_id == image_id)
    )
    for count, what in (
        (annotated, "annotations"),
        (
            s.scalar(select(func.count()).select_from(DatasetImageRow).where(DatasetImageRow.image_id == image_id)),
            "dataset version images",
        ),
        (s.scalar(select(func.count()).select_from(QcItemRow).where(QcItemRow.image_id == image_id)), "QC items"),
    ):
        if count:
            found.append(f"{count} {what}")
    return found


def _drop_image(ws: FsckWorkspace, row: ImageRow, finding: Finding) -> None:
    """Remove an image row whose original is gone or damaged, with its files, unless something refers to it."""
    with ws.catalog.publish_lock():
        with ws.session.begin() as s:
            refs = _references(s, row.id)
            if refs:
                fix = (
                    "restore the original from a backup"
                    if finding.problem != "missing"
                    else ("ingest the original file again to restore it")
                )
                finding.kept = f"kept: {', '.join(refs)} refer to this image; {fix}"
                return
            s.execute(delete(AnnotationImageRow).where(AnnotationImageRow.image_id == row.id))
            s.execute(delete(ImageHashRow).where(ImageHashRow.image_id == row.id))
            s.execute(delete(ImageRow).where(ImageRow.id == row.id))
        # the row is gone: its folder and the damaged bytes (if any) are orphans now
        finding.bytes = _remove(ws.catalog.image_dir(row.id))
        path = f"{ws.blobs.root}/{row.blob_key}"
        if ws.blobs.fs.exists(path):
            finding.bytes += int(ws.blobs.fs.size(path))
            ws.blobs.fs.rm(path)
        if ws.blobs.cache_dir is not None:  # a remote store's local copy
            finding.bytes += _remove(ws.blobs.cache_dir / row.blob_key)
    finding.repaired = True
    finding.action = "removed the row and its files (nothing referred to it; ingesting the file again adds it back)"


def _check_annotations(ws: FsckWorkspace, report: FsckReport) -> None:
    """Annotations whose image row is gone: reported, never removed (ingesting the image again re-attaches
    them: image ids are content hashes)."""
    with ws.session() as s:
        dangling = s.execute(
            select(AnnotationImageRow.image_id, func.count(AnnotationRow.id))
            .join(AnnotationRow, AnnotationRow.image_key == AnnotationImageRow.image_key)
            .outerjoin(ImageRow, ImageRow.id == AnnotationImageRow.image_id)
            .where(ImageRow.id.is_(None))
            .group_by(AnnotationImageRow.image_id)
        ).all()
        keyless = s.scalar(
            select(func.count())
            .select_from(AnnotationRow)
            .outerjoin(AnnotationImageRow, AnnotationImageRow.image_key == AnnotationRow.image_key)
            .where(AnnotationImageRow.image_key.is_(None))
        )
        report.count("annotations", int(s.scalar(select(func.count()).select_from(AnnotationRow)) or 0))
    kept = "kept: ingesting the image again re-attaches them"
    for image_id, count in dangling:
        detail = f"{count} annotations refer to image {image_id[:12]}…, which is not in the catalogue"
        report.findings.append(Finding("annotations", "gigavision.db", "dangling", detail, image=image_id, kept=kept))
    if keyless:
        detail = f"{keyless} annotations have an image key that names no image"
        report.findings.append(Finding("annotations", "gigavision.db", "dangling", detail, kept="kept: inspect them"))


# -- orphans and temp files ------------------------------------------------------------------------------
def _orphan_blobs(ws: FsckWorkspace, report: FsckReport, stale_after: float, now: float) -> None:
    """Blobs no row references, and temp files of interrupted blob writes. Called under the publish lock."""
    blobs = ws.blobs
    with ws.session() as s:
        referenced = set(s.scalars(select(ImageRow.blob_key))) | set(s.scalars(select(DatasetImageRow.annotations_key)))
    if blobs.local and not Path(blobs.root).is_dir():
        return
    for path, info in sorted(blobs.fs.find(blobs.root, detail=True).items()):
        key = path[len(blobs.root) + 1 :]
        size = int(info.get("size") or 0)
        report.count("blobs")
        if is_temp_name(key.rsplit("/", 1)[-1]):
            # image blobs are written under the publish lock we hold; dataset blobs by a freeze in progress
            if (key.count("/") == 1 and _HEX2.match(key.split("/")[0])) or _age(info, now) > stale_after:
                _found(
                    blobs.fs,
                    path,
                    report,
                    Finding("temp", f"blobs/{key}", "stale", "an interrupted blob write", bytes=size),
                )
        elif key in referenced:
            continue
        elif _IMAGE_BLOB.match(key):
            detail = "an original no image row references (an ingest stopped before its commit)"
            _found(blobs.fs, path, report, Finding("orphan", f"blobs/{key}", "orphan", detail, bytes=size))
        elif _FROZEN_BLOB.match(key) and _age(info, now) > stale_after:
            detail = "frozen annotations no dataset version references (a dataset freeze that did not finish)"
            _found(blobs.fs, path, report, Finding("orphan", f"blobs/{key}", "orphan", detail, bytes=size))


def _orphan_pyramids(ws: FsckWorkspace, report: FsckReport) -> None:
    """``pyramids/ab/<id>/`` folders without an image row. Called under the publish lock."""
    root = ws.root / "pyramids"
    if not root.is_dir():
        return
    with ws.session() as s:
        ids = set(s.scalars(select(ImageRow.id)))
    for shard in sorted(p for p in root.iterdir() if p.is_dir() and _HEX2.match(p.name)):
        for folder in sorted(shard.iterdir()):
            if _HEX64.match(folder.name) and folder.name not in ids:
                detail = "derived files of an image that has no row (an ingest stopped before its commit)"
                _found_path(ws.root, folder, report, Finding("orphan", _rel(ws.root, folder), "orphan", detail))


def _scratch(ws: FsckWorkspace, report: FsckReport, stale_after: float, now: float) -> None:
    """Ingest scratch folders (``scratch_folder``) whose owner is gone, and their lock files."""
    root = ws.root / "pyramids"
    if not root.is_dir():
        return
    names = {p.name.removesuffix(LOCK_SUFFIX) for p in root.iterdir() if p.name.startswith(SCRATCH_PREFIX)}
    for name in sorted(names):
        folder, lock = root / name, root / (name + LOCK_SUFFIX)
        with _owner_gone(lock) as gone:
            if gone is False or (gone is None and _tree_age(folder, now) <= stale_after):
                report.count("in_progress")
                continue
            why = "its ingest was killed" if gone else f"unchanged for over {stale_after:g} s"
            for path in (folder, lock):
                if path.exists():
                    _found_path(
                        ws.root,
                        path,
                        report,
                        Finding("scratch", _rel(ws.root, path), "stale", f"ingest scratch; {why}"),
                    )


def _temps(ws: FsckWorkspace, report: FsckReport, stale_after: float, now: float) -> None:
    """Temp files of ``gigavision.files`` writes (``.name.tmp-PID-HEX``) left by a writer that died, and model
    folders half-way through ``models rm`` (``models/.deleting-*``), anywhere in the workspace."""
    skip = {Path(ws.blobs.root).resolve()} if ws.blobs.local else set()
    for top, dirs, files in os.walk(ws.root):
        here = Path(top)
        dirs[:] = sorted(d for d in dirs if (here / d).resolve() not in skip)
        if here == ws.root / "pyramids":
            dirs[:] = [d for d in dirs if not d.startswith(SCRATCH_PREFIX)]
        for name in [*dirs, *files]:
            path = here / name
            deleting = here == ws.root / "models" and name.startswith(".deleting-")
            if not (deleting or is_temp_name(name)):
                continue
            if name in dirs:
                dirs.remove(name)  # not descended: removed (or kept) whole
            if not deleting and _tree_age(path, now) <= stale_after:
                report.count("in_progress")
                continue
            detail = "a model removal that did not finish" if deleting else "a write that never finished (temp file)"
            _found_path(ws.root, path, report, Finding("temp", _rel(ws.root, path), "stale", detail))


def _uploads(ws: FsckWorkspace, report: FsckReport, stale_after: float, now: float) -> None:
    """Upload spools (``cache/uploads/*``) and dataset-freeze scratch (``cache/tmp/*``) nobody touched lately."""
    for sub in ("uploads", "tmp"):
        folder = ws.root / "cache" / sub
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if _tree_age(path, now) > stale_after:
                detail = (
                    f"{'upload spool' if sub == 'uploads' else 'scratch file'} unchanged for over {stale_after:g} s"
                )
                _found_path(ws.root, path, report, Finding("upload", _rel(ws.root, path), "stale", detail))
            else:
                report.count("in_progress")


def _jobs(ws: FsckWorkspace, report: FsckReport, stale_after: float, job_days: float, now: float) -> None:
    """Job folders of jobs finished over ``job_days`` ago, and folders without a job row."""
    root = ws.settings.jobs_dir
    if not root.is_dir():
        return
    with ws.session() as s:
        jobs = {
            row.id: (row.status, row.finished_at)
            for row in s.execute(select(JobRow.id, JobRow.status, JobRow.finished_at))
        }
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and _HEX32.match(p.name)):
        report.count("job_folders")
        if folder.name not in jobs:
            if _tree_age(folder, now) > stale_after:  # the folder is made just before its row is committed
                detail = "a job folder without a job row"
                _found_path(ws.root, folder, report, Finding("job", _rel(ws.root, folder), "orphan", detail))
            continue
        status, finished = jobs[folder.name]
        if status in FINISHED and finished is not None:
            ended = (finished if finished.tzinfo else finished.replace(tzinfo=UTC)).timestamp()
            if now - ended > job_days * 86400:
                day = datetime.fromtimestamp(ended, UTC).date()
                detail = f"files of a job {status} on {day}, past the {job_days:g}-day expiry"
                _found_path(ws.root, folder, report, Finding("job", _rel(ws.root, folder), "expired", detail))


# -- helpers ------------------------------------------------------------------------------------------------
def _found(fs: Any, path: str, report: FsckReport, finding: Finding) -> None:
    """Record a removable blob-store finding; remove it when repairing."""
    finding.action = "remove"
    report.findings.append(finding)
    if report.repair:
        with contextlib.suppress(FileNotFoundError):
            fs.rm(path)
        finding.repaired = True


def _found_path(root: Path, path: Path, report: FsckReport, finding: Finding) -> None:
    """Record a removable local file or folder; remove it when repairing."""
    finding.action = "remove"
    finding.bytes = _size(path)
    report.findings.append(finding)
    if report.repair:
        _remove(path)
        finding.repaired = True


def _remove(path: Path) -> int:
    """Delete a file or folder tree; returns the bytes it held."""
    size = _size(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
    return size


def _walk(path: Path) -> Iterator[os.stat_result]:
    """lstat of ``path`` and of everything under it (never following links); vanished entries are skipped."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    yield st
    if path.is_dir() and not path.is_symlink():
        for top, dirs, files in os.walk(path):
            for name in [*dirs, *files]:
                with contextlib.suppress(FileNotFoundError):
                    yield (Path(top) / name).lstat()


def _size(path: Path) -> int:
    return sum(st.st_size for st in _walk(path) if stat.S_ISREG(st.st_mode))


def _tree_age(path: Path, now: float) -> float:
    """Seconds since anything in ``path`` last changed (a live writer keeps it young); inf when gone."""
    newest = max((st.st_mtime for st in _walk(path)), default=None)
    return float("inf") if newest is None else now - newest


def _age(info: dict[str, Any], now: float) -> float:
    """Seconds since an fsspec entry changed; 0 (never abandoned) when the store does not say."""
    stamp = info.get("mtime", info.get("LastModified", info.get("last_modified")))
    if isinstance(stamp, datetime):
        stamp = stamp.timestamp()
    return now - float(stamp) if isinstance(stamp, int | float) else 0.0


def _rel(root: Path, path: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
