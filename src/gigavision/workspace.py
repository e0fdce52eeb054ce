"""A workspace: settings + database + blob store + derived image files, and the verbs on them.

This is what the CLI, the server and ``import gigavision as gv`` share: ``gv.init_workspace(path)``,
``gv.open_workspace(path)``, then ``ws.ingest([...])``, ``ws.list_images()``, ``ws.open_source(id)``,
``ws.set_image_meta(id, {"patient": "p7", "age": 61})``.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import json
import math
import numbers
import re
import shutil
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from sqlalchemy import func, select

from gigavision.config import CONFIG_NAME, Settings, default_toml, load_settings
from gigavision.errors import ConfigError, GigavisionError, InvalidInput, LimitExceeded, NotFound
from gigavision.store import refs as refs_
from gigavision.store.blobs import blob_key, sha256_file
from gigavision.store.db import make_engine, migrate, session_factory
from gigavision.store.schema import ImageRow

if TYPE_CHECKING:
    from gigavision.images.cache import TileCache
    from gigavision.images.ingest import Prepared
    from gigavision.images.source import ImageSource
    from gigavision.jobs.manager import JobManager
    from gigavision.store.annotations import AnnotationStore
    from gigavision.store.blobs import BlobStore
    from gigavision.store.labels import LabelSchema

T = TypeVar("T")
IMAGE_ID = re.compile(r"^[0-9a-f]{64}$")
OPEN_SOURCES = 64
CACHED_ROWS = 4096

# -- user metadata (``ImageRow.meta``, shared with what ingest writes there) --------------------------------
META_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
MAX_META_TEXT = 1000
MAX_USER_KEYS = 256
MAX_META_INT = 2**53 - 1  # larger integers lose digits in JavaScript (the viewer) and in float32 features
# The names of the user-set keys of an image, kept in its metadata so they stay distinguishable from what
# ingest wrote. "@" cannot start a user key, so this entry can never collide with one.
USER_KEYS = "@user_keys"
# Keys the built-in ingest writes (reader metadata + pyramid options): refused on every image, also on
# those that lack them, so ``pyramid`` or ``photometric`` always means what ingest meant. Keys that another
# reader wrote on one image are protected there through USER_KEYS (anything present and not user-set).
INGEST_KEYS = frozenset(
    {
        *("pyramid",),  # images/ingest.py: the options of the pyramid built at ingest
        *("display_window", "frames", "transfer_syntax"),  # images/readers/dicom.py
        *("compression", "photometric"),  # images/readers/tiff.py
        *("objective_power",),  # images/readers/slide.py
    }
)
_META_INT_TEXT = re.compile(r"[+-]?(0|[1-9][0-9]*)")
_META_FLOAT_TEXT = re.compile(r"[+-]?([0-9]+\.[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|[+-]?[0-9]+[eE][+-]?[0-9]+")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
MetaValue = str | int | float | bool


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


@dataclass(slots=True)
class MetaCsvSummary:
    """What ``set_images_meta_csv`` wrote (``--json`` prints this)."""

    rows: int  # data rows read
    images: int  # distinct images named
    changed: int  # images whose metadata changed
    keys: list[str] = field(default_factory=list)  # the CSV's key columns

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


class _Handle(Generic[T]):
    """A workspace handle made on first use, with its module imported then: a command that lists images
    does not pay for the annotation store's NumPy and shapely, fsspec, or the job queue."""

    def __init__(self, make: Callable[[Workspace], T]) -> None:
        self.make = make
        self.name = make.__name__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, ws: None, owner: type) -> _Handle[T]: ...
    @overload
    def __get__(self, ws: Workspace, owner: type) -> T: ...
    def __get__(self, ws: Workspace | None, owner: type) -> T | _Handle[T]:
        if ws is None:
            return self
        with ws._handles_lock:  # once per workspace, also when two threads ask first
            if self.name not in ws.__dict__:
                ws.__dict__[self.name] = self.make(ws)  # stored on the instance: later reads skip __get__
            value: T = ws.__dict__[self.name]
            return value


def _annotation_store(ws: Workspace) -> AnnotationStore:
    from gigavision.store.annotations import AnnotationStore

    return AnnotationStore(ws.engine, ws.session)


def _label_schema(ws: Workspace) -> LabelSchema:
    from gigavision.store.labels import LabelSchema

    return LabelSchema(ws.session)


def _job_manager(ws: Workspace) -> JobManager:
    from gigavision.jobs.manager import JobManager

    return JobManager(ws)


def _blob_store(ws: Workspace) -> BlobStore:
    from gigavision.store.blobs import BlobStore

    return BlobStore(ws.settings.resolved_blob_url(), cache_dir=ws.root / "cache" / "blobs")


def _tile_cache(ws: Workspace) -> TileCache:
    from gigavision.images.cache import TileCache

    return TileCache(ws.settings.tile_cache_mb * 1024 * 1024)


class Workspace:
    """Open handles on one workspace. Thread-safe; one per process is enough."""

    annotations = _Handle(_annotation_store)
    labels = _Handle(_label_schema)
    jobs = _Handle(_job_manager)
    blobs = _Handle(_blob_store)
    tile_cache = _Handle(_tile_cache)

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.workspace
        for sub in ("pyramids", "models", "indexes"):
            (self.root / sub).mkdir(exist_ok=True)
        self.engine = make_engine(settings.resolved_db_url())
        migrate(self.engine)
        self.session = session_factory(self.engine)
        self._handles_lock = threading.RLock()  # annotations, labels, jobs, blobs, tile_cache: made on first use
        self._sources: OrderedDict[str, ImageSource] = OrderedDict()
        self._sources_lock = threading.Lock()
        # Image rows change only in ``meta`` (set_images_meta), so the tile routes read them from memory
        # instead of querying the database for every tile. Readers of metadata pass ``fresh=True``: another
        # process may have changed it since the row was cached here.
        self._rows: OrderedDict[str, ImageRow] = OrderedDict()

    # -- images -----------------------------------------------------------------------------------------
    def image_dir(self, image_id: str) -> Path:
        check_image_id(image_id)
        return self.root / "pyramids" / image_id[:2] / image_id

    def get_image(self, image_id: str, *, fresh: bool = False) -> ImageRow:
        """The image's row; ``fresh``: read the database instead of this process's cache (for ``meta``)."""
        check_image_id(image_id)
        with self._sources_lock:
            row = None if fresh else self._rows.get(image_id)
            if row is not None:
                self._rows.move_to_end(image_id)
                return row
        with self.session() as s:
            row = s.get(ImageRow, image_id)
        if row is None:
            raise NotFound(f"no image with id {image_id}")
        with self._sources_lock:
            self._rows[image_id] = row
            self._rows.move_to_end(image_id)
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

    # -- metadata -------------------------------------------------------------------------------------------
    def find_image(self, ref: str) -> str:
        """The id of the image ``ref`` names, the way people type it: the full id, a unique prefix of it
        (at least 6 characters, as ``images list`` shows 12), or a unique name as ``images list`` shows it.

        Every command and route that names an image resolves it here. Raises ``NotFound``, or ``Ambiguous``
        (400) listing the candidates when ``ref`` fits several images (a shared name, a short prefix).
        """
        if IMAGE_ID.fullmatch(ref):
            with contextlib.suppress(NotFound):
                return self.get_image(ref).id  # the cached row: routes the viewer calls per request stay cheap
        found = self._resolve_refs([ref])[ref]
        if isinstance(found, GigavisionError):
            raise found
        return found

    def find_images(self, refs: Iterable[str]) -> dict[str, str]:
        """``find_image`` for many refs at once: ref -> id. Raises the first ref's error, if any."""
        resolved = self._resolve_refs(list(dict.fromkeys(refs)))
        for found in resolved.values():
            if isinstance(found, GigavisionError):
                raise found
        return {ref: str(found) for ref, found in resolved.items()}

    def set_image_meta(self, image_id: str, values: Mapping[str, Any]) -> dict[str, Any]:
        """Merge ``values`` into the image's metadata in one transaction; returns the new metadata.

        ``None`` deletes a key. Keys are 1-64 characters ``[A-Za-z_][A-Za-z0-9_.-]*``; values are text (at
        most 1000 characters), integers (|n| < 2^53), finite floats or booleans. Keys written by ingest
        cannot be set or removed. Raises ``NotFound`` for an unknown image and ``InvalidInput`` naming
        each bad key, in which case nothing is written.
        """
        return self.set_images_meta({image_id: values})[image_id]

    def set_images_meta(self, updates: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
        """``set_image_meta`` for many images (id -> values) in one transaction: all or nothing."""
        items: list[tuple[str, str, dict[str, Any]]] = []
        problems: list[str] = []
        for image_id, values in updates.items():
            where = f"image {image_id[:12]}…: " if len(updates) > 1 else ""
            cleaned, found = clean_meta(values, where)
            items.append((where, check_image_id(image_id), cleaned))
            problems += found
        check_problems(problems)
        metas, _ = self._write_meta(items)
        return metas

    def set_images_meta_csv(self, path: str | Path) -> MetaCsvSummary:
        """Set metadata of many images from a CSV file: header ``image,KEY,KEY…``; each row names an image
        (id, or unique name as ``images list`` shows it) and its values, parsed like the command line
        (``parse_meta_value``); an empty cell leaves that key as it is.

        Every row is checked before anything is written (errors name the row), then all are written in one
        transaction, so a mistake in row 900 does not leave rows 1-899 changed.
        """
        rows, keys = read_meta_csv(Path(path))
        problems: list[str] = []
        ids = self._resolve_refs(list(dict.fromkeys(ref for _, ref, _ in rows)))
        first_row: dict[str, int] = {}
        items: list[tuple[str, str, dict[str, Any]]] = []
        for line, ref, values in rows:
            image_id = ids[ref]
            if isinstance(image_id, GigavisionError):
                problems.append(f"row {line}: {image_id}")
                continue
            if image_id in first_row:
                problems.append(f"row {line}: image {ref!r} is also on row {first_row[image_id]}; give each image once")
                continue
            first_row[image_id] = line
            items.append((f"row {line}: ", image_id, values))
        check_problems(problems)
        _, changed = self._write_meta(items)
        return MetaCsvSummary(rows=len(rows), images=len(items), changed=len(changed), keys=keys)

    def _resolve_refs(self, refs: Sequence[str]) -> dict[str, str | GigavisionError]:
        """ref -> image id, or the error saying why it names no single image (unknown; ambiguous).

        A full id wins outright; otherwise the images named ``ref`` and those whose id starts with it (a hex
        ref of 6+ characters: one indexed range query each) are the candidates, and there must be one.
        """
        out: dict[str, str | GigavisionError] = {}
        with self.session() as s:
            full = {r: r.lower() for r in refs if IMAGE_ID.fullmatch(r.lower())}  # a full id in any case
            known: set[str] = set()
            for chunk in _chunks(list(set(full.values()))):
                known.update(s.scalars(select(ImageRow.id).where(ImageRow.id.in_(chunk))))
            names = [r for r in refs if full.get(r) not in known]
            found: dict[str, dict[str, tuple[str, str]]] = {r: {} for r in names}  # ref -> id -> (name, source)
            columns = (ImageRow.id, ImageRow.name, ImageRow.source_path)
            for chunk in _chunks(names):
                for image_id, name, source in s.execute(select(*columns).where(ImageRow.name.in_(chunk))):
                    found[name][image_id] = (name, source or name)
            capped: set[str] = set()
            for ref in names:
                prefix = refs_.hex_prefix(ref, len_id=64)
                if prefix is not None:
                    rows = refs_.by_prefix(s, ImageRow.id, prefix, ImageRow.name, ImageRow.source_path)
                    found[ref].update((image_id, (name, source or name)) for image_id, name, source in rows)
                    if len(rows) > refs_.CANDIDATES:
                        capped.add(ref)
        for ref in refs:
            if full.get(ref) in known:
                out[ref] = full[ref]
            elif len(found[ref]) == 1:
                out[ref] = next(iter(found[ref]))
            elif found[ref]:
                out[ref] = _ambiguous_image(ref, found[ref], capped=ref in capped)
            else:
                hint = f" (an id prefix needs at least {refs_.MIN_PREFIX} characters)" if refs_.too_short(ref) else ""
                out[ref] = NotFound(f"no image with id or name {ref!r}{hint}")
        return out

    def _write_meta(
        self, items: Sequence[tuple[str, str, dict[str, Any]]]
    ) -> tuple[dict[str, dict[str, Any]], set[str]]:
        """Apply checked ``(where, image id, values)`` in one transaction; returns the new metadata by id
        (without the USER_KEYS entry) and the ids whose metadata changed. ``where`` prefixes errors
        ("row 3: ").

        Each image's keys are checked against what ingest wrote there before anything is written; a file
        lock serialises writers across processes (SQLite would otherwise refuse the second one's upgrade
        from read to write), ``FOR UPDATE`` across PostgreSQL hosts.
        """
        problems: list[str] = []
        new: dict[str, dict[str, Any]] = {}
        with self._exclusive(self.root / ".meta.lock"), self.session.begin() as s:
            rows: dict[str, ImageRow] = {}
            for chunk in _chunks([image_id for _, image_id, _ in items]):
                rows.update(
                    (r.id, r) for r in s.scalars(select(ImageRow).where(ImageRow.id.in_(chunk)).with_for_update())
                )
            for where, image_id, values in items:
                row = rows.get(image_id)
                if row is None:
                    raise NotFound(f"{where}no image with id {image_id}")
                meta = dict(row.meta or {})
                owned = set(meta.pop(USER_KEYS, None) or ())
                for key, value in values.items():
                    if key in INGEST_KEYS or (key in meta and key not in owned):
                        problems.append(
                            f"{where}metadata key {key!r} belongs to ingest (what it read from the file or "
                            "built) and cannot be set or removed; choose another name"
                        )
                    elif value is None:
                        meta.pop(key, None)
                        owned.discard(key)
                    else:
                        meta[key] = value
                        owned.add(key)
                if len(owned) > MAX_USER_KEYS:
                    raise LimitExceeded(
                        f"{where}{len(owned)} metadata keys; an image holds at most {MAX_USER_KEYS} user keys"
                    )
                new[image_id] = meta | ({USER_KEYS: sorted(owned)} if owned else {})
            check_problems(problems)  # raising here rolls the transaction back: nothing written
            # compared as JSON: in Python True == 1 == 1.0, but a user who changes 1 to true means it
            changed = {i for i, meta in new.items() if _json(meta) != _json(rows[i].meta or {})}
            for image_id in changed:
                rows[image_id].meta = new[image_id]
        with self._sources_lock:
            for image_id in changed:
                self._rows.pop(image_id, None)
        return {i: public_meta(meta) for i, meta in new.items()}, changed

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

    def _publish_lock(self) -> contextlib.AbstractContextManager[None]:
        """Serialises the short "check, store, move, insert" step of ingest across threads and processes,
        so two ingests of the same bytes never both publish, and a failing one never deletes files that
        another one committed."""
        return self._exclusive(self.root / "pyramids" / ".publish.lock")

    @staticmethod
    @contextlib.contextmanager
    def _exclusive(lock_file: Path) -> Iterator[None]:
        """An exclusive lock across threads and processes: flock on a file in the workspace."""
        with lock_file.open("a+b") as fh:
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


# -- metadata values ------------------------------------------------------------------------------------------
def public_meta(meta: Mapping[str, Any] | None) -> dict[str, Any]:
    """An image's metadata as shown to people: everything but the USER_KEYS bookkeeping entry."""
    return {k: v for k, v in (meta or {}).items() if k != USER_KEYS}


def user_meta_keys(meta: Mapping[str, Any] | None) -> list[str]:
    """The keys of ``meta`` that users set (the rest came from ingest)."""
    return sorted((meta or {}).get(USER_KEYS) or ())


def user_meta(meta: Mapping[str, Any] | None) -> dict[str, Any]:
    """Only the user-set part of an image's metadata (e.g. candidate side features: no TIFF codes)."""
    meta = meta or {}
    return {k: meta[k] for k in user_meta_keys(meta) if k in meta}


def parse_meta_value(text: str) -> MetaValue:
    """A typed value from text (command line, CSV cell): an integer, then a float, then ``true``/``false``,
    else the text itself. Integers with leading zeros (``007``) and beyond 2^53 stay text: they are
    identifiers, and a number would lose their digits."""
    if _META_INT_TEXT.fullmatch(text):
        number = int(text)
        return number if abs(number) <= MAX_META_INT else text
    if _META_FLOAT_TEXT.fullmatch(text):
        return float(text)  # 1e999 becomes inf, which the check refuses with a reason
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def clean_meta(values: Any, where: str = "") -> tuple[dict[str, Any], list[str]]:
    """``values`` checked for ``set_image_meta``: (the values as plain JSON scalars, problems).

    NumPy/pandas numbers become ``int``/``float``; ``None`` stays (it deletes the key). Each problem names
    the key and the reason, prefixed by ``where``.
    """
    if not isinstance(values, Mapping):
        return {}, [f"{where}metadata must be a mapping of key -> value, got {type(values).__name__}"]
    cleaned: dict[str, Any] = {}
    problems: list[str] = []
    for key, value in values.items():
        if not isinstance(key, str) or not META_KEY.fullmatch(key):
            problems.append(
                f"{where}metadata key {key!r} must be 1 to 64 characters: a letter or _ first, then letters, "
                "digits, _ . or -"
            )
            continue
        if value is None or isinstance(value, bool | str):
            plain: Any = value
        elif isinstance(value, numbers.Integral):
            plain = int(value)
        elif isinstance(value, numbers.Real):
            plain = float(value)
        else:
            problems.append(
                f"{where}metadata {key!r}: a value is text, a number or true/false, not {type(value).__name__}"
            )
            continue
        reason = _value_problem(plain)
        if reason:
            problems.append(f"{where}metadata {key!r}: {reason}")
        else:
            cleaned[key] = plain
    return cleaned, problems


def _value_problem(value: Any) -> str | None:
    if isinstance(value, str):
        if len(value) > MAX_META_TEXT:
            return f"text is {len(value):,} characters; at most {MAX_META_TEXT:,}"
        if _CONTROL.search(value):
            return "text contains a control character"
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_META_INT:
        return f"integer {value} is beyond ±2^53; store it as text"
    elif isinstance(value, float) and not math.isfinite(value):
        return f"{value} is not a finite number"
    return None


def check_problems(problems: Sequence[str]) -> None:
    """Raise ``InvalidInput`` listing ``problems`` (the first few), if any."""
    if len(problems) == 1:
        raise InvalidInput(f"{problems[0]}; nothing was written")
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise InvalidInput(f"{len(problems)} problems, nothing was written: {shown}")


def read_meta_csv(path: Path) -> tuple[list[tuple[int, str, dict[str, Any]]], list[str]]:
    """Rows of a metadata CSV as ``(row number, image ref, values)`` and its key columns.

    Row numbers are the file's line numbers (the header is row 1), as a spreadsheet shows them. Raises
    ``InvalidInput`` listing every bad header, row and cell.
    """
    records: list[tuple[int, list[str]]] = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            for cells in reader:
                records.append((reader.line_num, cells))
    except FileNotFoundError as exc:
        raise InvalidInput(f"{path}: no such file") from exc
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except (OSError, csv.Error) as exc:
        raise InvalidInput(f"{path}: cannot read as CSV: {exc}") from exc
    records = [(line, cells) for line, cells in records if any(c.strip() for c in cells)]
    if not records:
        raise InvalidInput(f"{path}: empty; expected a header like image,patient,age and one row per image")
    header = [c.strip() for c in records[0][1]]
    if header[0].lower() != "image" or len(header) < 2:
        raise InvalidInput(f"{path}: the header must start with 'image' followed by metadata keys, got {header}")
    keys = header[1:]
    problems = [f"{path}: column {k!r} appears twice" for k in {k for k in keys if keys.count(k) > 1}]
    problems += clean_meta(dict.fromkeys(keys, 0), f"{path}: header: ")[1]
    rows: list[tuple[int, str, dict[str, Any]]] = []
    for line, cells in records[1:]:
        if len(cells) != len(header):
            problems.append(f"row {line}: {len(cells)} cells, the header has {len(header)}")
            continue
        ref = cells[0].strip()
        if not ref:
            problems.append(f"row {line}: the image cell is empty")
            continue
        parsed = {k: parse_meta_value(c.strip()) for k, c in zip(keys, cells[1:], strict=True) if c.strip()}
        values, found = clean_meta(parsed, f"row {line}: ")
        problems += found
        rows.append((line, ref, values))
    check_problems(problems)
    return rows, keys


def _json(meta: Mapping[str, Any]) -> str:
    return json.dumps(meta, sort_keys=True, default=str)


def _chunks(items: Sequence[str], size: int = 500) -> Iterator[Sequence[str]]:
    """Slices of ``items`` small enough for one ``IN (...)`` (SQLite caps bound parameters)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _ambiguous_image(ref: str, found: Mapping[str, tuple[str, str]], *, capped: bool) -> GigavisionError:
    """The error for ``ref`` fitting several images (``found``: id -> (name, source path)), listing them."""
    if all(name == ref for name, _ in found.values()):  # a name that several files had: tell them apart
        listed = [f"{i[: refs_.SHOWN]} ({source})" for i, (_, source) in sorted(found.items(), key=lambda f: f[1])]
        return refs_.ambiguous(f"{len(found)} images are named {ref!r}", "use the image id instead", listed)
    listed = [f"{i[: refs_.SHOWN]} ({name})" for i, (name, _) in sorted(found.items())]
    count = f"{len(found)}+" if capped else str(len(found))
    head = f"{ref!r} fits {count} images (by id prefix or name)"
    return refs_.ambiguous(head, "give more characters of the id", listed, capped=capped)
