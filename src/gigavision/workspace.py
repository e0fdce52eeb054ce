"""A workspace: settings + database + blob store + derived image files, and the verbs on them.

This is what the CLI, the server and ``import gigavision as gv`` share: ``gv.init_workspace(path)``,
``gv.open_workspace(path)``, then ``ws.ingest([...])``, ``ws.list_images()``, ``ws.open_source(id)``.
"""

from __future__ import annotations

import contextlib
import fcntl
import re
import shutil
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from gigavision.config import CONFIG_NAME, Settings, default_toml, load_settings
from gigavision.errors import ConfigError, GigavisionError, InvalidInput, NotFound
from gigavision.images.cache import TileCache
from gigavision.images.source import ImageSource
from gigavision.store.blobs import BlobStore, blob_key, sha256_file
from gigavision.store.db import make_engine, migrate, session_factory
from gigavision.store.schema import ImageRow

if TYPE_CHECKING:
    from gigavision.images.ingest import Prepared

IMAGE_ID = re.compile(r"^[0-9a-f]{64}$")
OPEN_SOURCES = 64
CACHED_ROWS = 4096


@dataclass(slots=True)
class IngestResult:
    """One line of an ingest report (``--json`` prints these)."""

    path: str
    name: str
    status: str  # added | duplicate | rejected
    id: str | None = None
    width: int | None = None
    height: int | None = None
    levels: int | None = None
    mpp: float | None = None
    crs: str | None = None
    reason: str | None = None
    code: str | None = None  # error code of a rejection (invalid_image, limit_exceeded, ...)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_image_id(image_id: str) -> str:
    if not isinstance(image_id, str) or not IMAGE_ID.match(image_id):
        raise NotFound(f"no image with id {image_id!r} (ids are 64 hex characters)")
    return image_id


def init_workspace(path: str | Path, *, db_url: str = "", blob_url: str = "") -> Workspace:
    """Create (or reopen) a workspace folder with a ``gigavision.toml``, then open it."""
    root = Path(path).expanduser().resolve()
    if root.exists() and not root.is_dir():
        raise ConfigError(f"{root} exists and is not a folder")
    root.mkdir(parents=True, exist_ok=True)
    config = root / CONFIG_NAME
    if not config.exists():
        text = default_toml()
        if db_url:
            text = f'db_url = "{db_url}"\n' + text
        if blob_url:
            text = f'blob_url = "{blob_url}"\n' + text
        config.write_text(text, encoding="utf-8")
    return Workspace(load_settings(root))


def open_workspace(path: str | Path, **overrides: Any) -> Workspace:
    return Workspace(load_settings(Path(path), **overrides))


class Workspace:
    """Open handles on one workspace. Thread-safe; one per process is enough."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.workspace
        for sub in ("pyramids", "models", "indexes"):
            (self.root / sub).mkdir(exist_ok=True)
        self.engine = make_engine(settings.resolved_db_url())
        migrate(self.engine)
        self.session = session_factory(self.engine)
        from gigavision.store.annotations import AnnotationStore

        self.annotations = AnnotationStore(self.engine, self.session)
        from gigavision.jobs.manager import JobManager
        from gigavision.store.labels import LabelSchema

        self.labels = LabelSchema(self.session)

        self.jobs = JobManager(self)
        self.blobs = BlobStore(settings.resolved_blob_url(), cache_dir=self.root / "cache" / "blobs")
        self.tile_cache = TileCache(settings.tile_cache_mb * 1024 * 1024)
        self._sources: OrderedDict[str, ImageSource] = OrderedDict()
        self._sources_lock = threading.Lock()
        # Image rows never change once written (the id is the content hash), so the tile routes read
        # them from memory instead of querying the database for every tile.
        self._rows: OrderedDict[str, ImageRow] = OrderedDict()

    # -- images -----------------------------------------------------------------------------------------
    def image_dir(self, image_id: str) -> Path:
        check_image_id(image_id)
        return self.root / "pyramids" / image_id[:2] / image_id

    def get_image(self, image_id: str) -> ImageRow:
        check_image_id(image_id)
        with self._sources_lock:
            row = self._rows.get(image_id)
            if row is not None:
                self._rows.move_to_end(image_id)
                return row
        with self.session() as s:
            row = s.get(ImageRow, image_id)
        if row is None:
            raise NotFound(f"no image with id {image_id}")
        with self._sources_lock:
            self._rows[image_id] = row
            while len(self._rows) > CACHED_ROWS:
                self._rows.popitem(last=False)
        return row

    def list_images(self, offset: int = 0, limit: int = 50) -> tuple[list[ImageRow], int]:
        if offset < 0 or not 1 <= limit <= 1000:
            raise InvalidInput(f"offset must be ≥ 0 and limit 1..1000, got offset={offset} limit={limit}")
        with self.session() as s:
            total = s.scalar(select(func.count()).select_from(ImageRow)) or 0
            rows = s.scalars(
                select(ImageRow).order_by(ImageRow.created_at, ImageRow.id).offset(offset).limit(limit)
            ).all()
        return list(rows), int(total)

    def open_source(self, image_id: str) -> ImageSource:
        """The image's pixels (its pyramid when one was built), kept open in a small LRU."""
        from gigavision.images.registry import open_image

        with self._sources_lock:
            source = self._sources.get(image_id)
            if source is not None:
                self._sources.move_to_end(image_id)
                return source
        row = self.get_image(image_id)
        if row.pyramid:
            path, reader = self.root / row.pyramid, "tiff"
        else:
            path, reader = self.blobs.local_path(row.blob_key), row.reader
        source = open_image(path, reader=reader, limits=self.settings.limits, cache=self.tile_cache)
        with self._sources_lock:
            existing = self._sources.get(image_id)
            if existing is not None:  # another thread opened it meanwhile
                source.close()
                return existing
            self._sources[image_id] = source
            while len(self._sources) > OPEN_SOURCES:
                _, old = self._sources.popitem(last=False)
                old.close()
        return source

    def thumbnail_path(self, image_id: str) -> Path:
        from gigavision.images.ingest import THUMBNAIL_NAME

        self.get_image(image_id)
        return self.image_dir(image_id) / THUMBNAIL_NAME

    def mask_path(self, image_id: str) -> Path:
        from gigavision.images.ingest import MASK_NAME

        self.get_image(image_id)
        return self.image_dir(image_id) / MASK_NAME

    # -- ingest -----------------------------------------------------------------------------------------
    def ingest(
        self,
        paths: Iterable[str | Path],
        *,
        recursive: bool = False,
        follow_symlinks: bool | None = None,
        on_start: Callable[[int], None] | None = None,
        on_result: Callable[[IngestResult], None] | None = None,
        progress: Callable[[float], None] | None = None,
    ) -> list[IngestResult]:
        """Ingest files and folders; returns one result per file, in input order."""
        from gigavision.images.ingest import collect_inputs

        follow = self.settings.ingest.follow_symlinks if follow_symlinks is None else follow_symlinks
        inputs = collect_inputs([Path(p) for p in paths], recursive=recursive, follow_symlinks=follow)
        if on_start is not None:
            on_start(len(inputs))
        results = []
        for item in inputs:
            if item.rejected:
                result = IngestResult(str(item.path), item.name, "rejected", reason=item.rejected, code="invalid_input")
            else:
                result = self.ingest_file(item.path, name=item.name, progress=progress)
            results.append(result)
            if on_result is not None:
                on_result(result)
        return results

    def ingest_file(
        self,
        path: Path,
        *,
        name: str | None = None,
        source_path: str | None = None,
        progress: Callable[[float], None] | None = None,
    ) -> IngestResult:
        """Ingest one file. Rejections are returned, not raised; nothing is left behind for them."""
        from gigavision.images.ingest import collect_inputs, prepare

        path = Path(path)
        name = name or path.name
        shown = source_path or str(path)
        checked = collect_inputs([path])[0]
        if checked.rejected:
            return IngestResult(shown, name, "rejected", reason=checked.rejected, code="invalid_image")
        try:
            sha = sha256_file(path)
        except OSError as exc:
            return IngestResult(shown, name, "rejected", reason=f"cannot read file: {exc.strerror or exc}")
        with self.session() as s:
            existing = s.get(ImageRow, sha)
        if existing is not None:
            return self._result(existing, shown, name, "duplicate")
        scratch = self.root / "pyramids" / f".tmp-{uuid.uuid4().hex}"
        scratch.mkdir(parents=True)
        try:
            # The expensive part (validation, pyramid, thumbnail, mask) runs outside the lock.
            try:
                prepared = prepare(path, self.settings, scratch, progress=progress)
            except GigavisionError as exc:
                return IngestResult(shown, name, "rejected", reason=str(exc), code=exc.code)
            with self._publish_lock():
                with self.session() as s:
                    winner = s.get(ImageRow, sha)
                if winner is not None:  # the same bytes were ingested while we prepared them
                    return self._result(winner, shown, name, "duplicate")
                row = self._publish(path, sha, name, shown, scratch, prepared)
            return self._result(row, shown, name, "added")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    @contextlib.contextmanager
    def _publish_lock(self) -> Iterator[None]:
        """Serialises the short "check, store, move, insert" step of ingest across threads and processes
        (flock on a file in the workspace), so two ingests of the same bytes never both publish, and a
        failing one never deletes files that another one committed."""
        with (self.root / "pyramids" / ".publish.lock").open("a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def _publish(self, path: Path, sha: str, name: str, shown: str, scratch: Path, prepared: Prepared) -> ImageRow:
        """Store the blob, move the derived files into place, insert the row; undo all of it on failure.

        Called with the publish lock held and no row for ``sha``.
        """
        from gigavision.images.ingest import PYRAMID_NAME

        key = blob_key(sha, path.suffix)
        final = self.image_dir(sha)
        stored_blob = moved = False
        try:
            stored_blob = self.blobs.put_file(path, key)
            final.parent.mkdir(parents=True, exist_ok=True)
            if final.exists():  # no row owns it: leftover of an ingest killed before its commit
                shutil.rmtree(final)
            scratch.rename(final)
            moved = True
            info = prepared.info
            row = ImageRow(
                id=sha,
                name=name[:1024],
                source_path=shown,
                size_bytes=path.stat().st_size,
                blob_key=key,
                pyramid=str((final / PYRAMID_NAME).relative_to(self.root)) if prepared.pyramid else None,
                reader=prepared.reader,
                format=info.format[:32],
                width=info.width,
                height=info.height,
                levels=[{"width": lv.width, "height": lv.height, "downsample": lv.downsample} for lv in info.levels],
                bands=info.bands,
                dtype=info.dtype,
                mpp_x=info.mpp_x,
                mpp_y=info.mpp_y,
                crs=info.crs,
                transform=list(info.transform) if info.transform else None,
                modality=info.modality,
                foreground_fraction=prepared.foreground_fraction,
                display_window=list(prepared.display_window) if prepared.display_window else None,
                meta={**_jsonable(info.metadata), **prepared.extra},
            )
            with self.session() as s:
                s.add(row)
                s.commit()
            return row
        except BaseException:
            if stored_blob:
                self.blobs.delete(key)
            if moved:
                shutil.rmtree(final, ignore_errors=True)
            raise

    @staticmethod
    def _result(row: ImageRow, path: str, name: str, status: str) -> IngestResult:
        return IngestResult(
            path=path,
            name=name,
            status=status,
            id=row.id,
            width=row.width,
            height=row.height,
            levels=len(row.levels),
            mpp=row.mpp_x,
            crs=row.crs,
        )

    def close(self) -> None:
        with self._sources_lock:
            for source in self._sources.values():
                source.close()
            self._sources.clear()
        self.engine.dispose()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _jsonable(meta: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in meta.items():
        if isinstance(v, str | int | float | bool) or v is None:
            out[k] = v
        elif isinstance(v, Sequence):
            out[k] = [x if isinstance(x, str | int | float | bool) else str(x) for x in v]
        else:
            out[k] = str(v)
    return out
