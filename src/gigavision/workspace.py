"""A workspace: settings + database + blob store + derived image files, wired together.

This is what the CLI, the server and ``import gigavision as gv`` share: ``gv.init_workspace(path)``,
``gv.open_workspace(path)``, then ``ws.ingest([...])``, ``ws.list_images()``, ``ws.open_source(id)``,
``ws.set_image_meta(id, {"patient": "p7", "age": 61})``. The parts live with their stage: the image
catalogue in ``store/catalog.py``, the metadata rules in ``images/metadata.py``, ingest in ``ingest.py``;
the methods here are the short names the callers use.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from gigavision.cache import LRUCache
from gigavision.config import CONFIG_NAME, Settings, default_toml, load_settings
from gigavision.errors import ConfigError, GigavisionError, NotFound
from gigavision.progress import Progress
from gigavision.store.catalog import IMAGE_ID, ImageCatalog, check_image_id
from gigavision.store.db import make_engine, migrate, session_factory
from gigavision.store.roles import LOCAL_USER
from gigavision.store.schema import ImageRow

if TYPE_CHECKING:
    from gigavision.annotations import Canvas
    from gigavision.images.cache import TileCache
    from gigavision.images.metadata import MetaCsvSummary
    from gigavision.images.source import ImageSource
    from gigavision.images.volumes import Plane, Volume
    from gigavision.ingest import IngestResult
    from gigavision.jobs.manager import JobManager
    from gigavision.store.annotations import AnnotationStore
    from gigavision.store.blobs import BlobStore
    from gigavision.store.labels import LabelSchema
    from gigavision.store.reviews import ReviewStore

__all__ = ["IMAGE_ID", "Workspace", "check_image_id", "init_workspace", "open_workspace"]

T = TypeVar("T")
OPEN_SOURCES = 64


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


def _review_store(ws: Workspace) -> ReviewStore:
    from gigavision.store.reviews import ReviewStore

    return ReviewStore(ws.session)


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
    reviews = _Handle(_review_store)

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.workspace
        for sub in ("pyramids", "models", "indexes"):
            (self.root / sub).mkdir(exist_ok=True)
        self.engine = make_engine(settings.resolved_db_url())
        migrate(self.engine)
        self.session = session_factory(self.engine)
        self.catalog = ImageCatalog(self.session, self.root)
        self._handles_lock = threading.RLock()  # the _Handle attributes: made on first use
        self._sources: LRUCache[str, ImageSource] = LRUCache(OPEN_SOURCES)  # evicted sources are closed

    # -- images (the catalogue) ---------------------------------------------------------------------------
    def image_dir(self, image_id: str) -> Path:
        return self.catalog.image_dir(image_id)

    def get_image(self, image_id: str, *, fresh: bool = False) -> ImageRow:
        """The image's row; ``fresh``: read the database instead of this process's cache (for ``meta``)."""
        return self.catalog.get(image_id, fresh=fresh)

    def list_images(self, offset: int = 0, limit: int = 50) -> tuple[list[ImageRow], int]:
        return self.catalog.page(offset, limit)

    def canvas(self, image_id: str) -> Canvas:
        """What an annotation written from outside (REST, QC submissions) must fit on this image
        (``annotations.shape_problem``): its level-0 size, the vertex cap, and masks no larger than a tile
        response may be (``limits.max_tile_pixels``)."""
        from gigavision.annotations import Canvas

        image, limits = self.get_image(image_id), self.settings.limits
        width, height = image.width, image.height
        volume = (image.meta or {}).get("volume")
        if isinstance(volume, dict):  # a volume's annotations lie on slices of any plane (docs/volumes.md)
            from gigavision.images.volumes.geometry import Grid

            width, height = Grid.of(volume).canvas()
        return Canvas(width, height, limits.max_annotation_vertices, limits.max_tile_pixels)

    def find_image(self, ref: str) -> str:
        """The id of the image ``ref`` names: full id, unique id prefix or unique name (``ImageCatalog.find``)."""
        return self.catalog.find(ref)

    def find_images(self, refs: Iterable[str]) -> dict[str, str]:
        """``find_image`` for many refs at once: ref -> id. Raises the first ref's error, if any."""
        return self.catalog.find_many(refs)

    def open_source(self, image_id: str) -> ImageSource:
        """The image's pixels (its pyramid when one was built), kept open in a small LRU."""
        from gigavision.images.registry import open_image

        source = self._sources.get(image_id)
        if source is not None:
            return source
        row = self.get_image(image_id)
        if row.reader == "volume":  # 2D consumers of a volume see its middle axial slice
            return self.open_slice(image_id, "axial", int(row.meta["volume"]["shape"][0]) // 2)
        if row.pyramid:
            path, reader = self.root / row.pyramid, "tiff"
        else:
            path, reader = self.blobs.local_path(row.blob_key), row.reader
        source = open_image(path, reader=reader, limits=self.settings.limits, cache=self.tile_cache)
        return self._sources.add(image_id, source)  # closes ours when another thread opened it meanwhile

    def open_volume(self, image_id: str) -> Volume:
        """A 3D image's voxels (``images.volumes.Volume``: blocks, slices, spacing, affine); ``InvalidInput``
        when the image is 2D."""
        from gigavision.errors import InvalidInput
        from gigavision.images.volumes import open_volume

        row = self.get_image(image_id)
        if row.reader != "volume":
            raise InvalidInput(f"image {row.name!r} is 2D ({row.width}x{row.height}), not a volume")
        return open_volume(self.image_dir(image_id))

    def open_slice(self, image_id: str, plane: Plane, index: int) -> ImageSource:
        """Slice ``index`` of a volume's ``plane`` as a 2D image (``images.volumes.VolumeSlice``), kept open
        beside the other sources."""
        from gigavision.images.volumes import VolumeSlice

        key = f"{image_id}:{plane}:{index}"
        source = self._sources.get(key)
        if source is not None:
            return source
        volume = self.open_volume(image_id)
        return self._sources.add(key, VolumeSlice(volume, plane, index, cache=self.tile_cache))

    def thumbnail_path(self, image_id: str) -> Path:
        from gigavision.images.ingest import THUMBNAIL_NAME

        self.get_image(image_id)
        return self.image_dir(image_id) / THUMBNAIL_NAME

    def mask_path(self, image_id: str) -> Path:
        from gigavision.images.ingest import MASK_NAME

        self.get_image(image_id)
        return self.image_dir(image_id) / MASK_NAME

    # -- metadata ---------------------------------------------------------------------------------------
    def set_image_meta(self, image_id: str, values: Mapping[str, Any], actor: str = LOCAL_USER) -> dict[str, Any]:
        """Merge ``values`` into the image's metadata in one transaction; returns the new metadata.

        ``None`` deletes a key. Keys are 1-64 characters ``[A-Za-z_][A-Za-z0-9_.-]*``; values are text (at
        most 1000 characters), integers (|n| < 2^53), finite floats or booleans. Keys written by ingest
        cannot be set or removed. Raises ``NotFound`` for an unknown image and ``InvalidInput`` naming
        each bad key, in which case nothing is written. The image records ``actor`` as who changed it last.
        """
        return self.set_images_meta({image_id: values}, actor)[image_id]

    def set_images_meta(
        self, updates: Mapping[str, Mapping[str, Any]], actor: str = LOCAL_USER
    ) -> dict[str, dict[str, Any]]:
        """``set_image_meta`` for many images (id -> values) in one transaction: all or nothing."""
        from gigavision.images.metadata import check_problems, clean_meta  # not at import: images/ loads NumPy

        items: list[tuple[str, str, dict[str, Any]]] = []
        problems: list[str] = []
        for image_id, values in updates.items():
            where = f"image {image_id[:12]}…: " if len(updates) > 1 else ""
            cleaned, found = clean_meta(values, where)
            items.append((where, check_image_id(image_id), cleaned))
            problems += found
        check_problems(problems)
        metas, _ = self._write_meta(items, actor)
        return metas

    def set_images_meta_csv(self, path: str | Path, actor: str = LOCAL_USER) -> MetaCsvSummary:
        """Set metadata of many images from a CSV file: header ``image,KEY,KEY…``; each row names an image
        (id, or unique name as ``images list`` shows it) and its values, parsed like the command line
        (``parse_meta_value``); an empty cell leaves that key as it is.

        Every row is checked before anything is written (errors name the row), then all are written in one
        transaction, so a mistake in row 900 does not leave rows 1-899 changed.
        """
        from gigavision.images.metadata import MetaCsvSummary, check_problems, read_meta_csv

        rows, keys = read_meta_csv(Path(path))
        problems: list[str] = []
        ids = self.catalog.resolve(list(dict.fromkeys(row.ref for row in rows)))
        first_row: dict[str, int] = {}
        items: list[tuple[str, str, dict[str, Any]]] = []
        for row in rows:
            image_id = ids[row.ref]
            if isinstance(image_id, GigavisionError):
                problems.append(f"row {row.line}: {image_id}")
                continue
            if image_id in first_row:
                problems.append(
                    f"row {row.line}: image {row.ref!r} is also on row {first_row[image_id]}; give each image once"
                )
                continue
            first_row[image_id] = row.line
            items.append((f"row {row.line}: ", image_id, row.values))
        check_problems(problems)
        _, changed = self._write_meta(items, actor)
        return MetaCsvSummary(rows=len(rows), images=len(items), changed=len(changed), keys=keys)

    def _write_meta(
        self, items: list[tuple[str, str, dict[str, Any]]], actor: str
    ) -> tuple[dict[str, dict[str, Any]], set[str]]:
        """Apply checked ``(where, image id, values)`` in one transaction; returns the new metadata by id
        (without the USER_KEYS entry) and the ids whose metadata changed. ``where`` prefixes errors
        ("row 3: "). Each image's keys are checked against what ingest wrote there before anything is
        written."""
        from gigavision.images.metadata import apply_meta, check_problems, public_meta

        def change(current: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
            problems: list[str] = []
            new: dict[str, dict[str, Any]] = {}
            for where, image_id, values in items:
                if image_id not in current:
                    raise NotFound(f"{where}no image with id {image_id}")
                new[image_id], found = apply_meta(current[image_id], values, where)
                problems += found
            check_problems(problems)  # raising here rolls the transaction back: nothing written
            return new

        new, changed = self.catalog.update_meta([image_id for _, image_id, _ in items], change, actor)
        return {i: public_meta(meta) for i, meta in new.items()}, changed

    # -- ingest -----------------------------------------------------------------------------------------
    def ingest(
        self,
        paths: Iterable[str | Path],
        *,
        recursive: bool = False,
        follow_symlinks: bool | None = None,
        on_start: Callable[[int], None] | None = None,
        on_result: Callable[[IngestResult], None] | None = None,
        progress: Progress | None = None,
    ) -> list[IngestResult]:
        """Ingest files and folders; returns one result per file, in input order (``gigavision.ingest``)."""
        from gigavision.ingest import ingest

        return ingest(
            self,
            paths,
            recursive=recursive,
            follow_symlinks=follow_symlinks,
            on_start=on_start,
            on_result=on_result,
            progress=progress,
        )

    def ingest_file(
        self,
        path: Path,
        *,
        name: str | None = None,
        source_path: str | None = None,
        progress: Progress | None = None,
    ) -> IngestResult:
        """Ingest one file. Rejections are returned, not raised; nothing is left behind for them."""
        from gigavision.ingest import ingest_file

        return ingest_file(self, path, name=name, source_path=source_path, progress=progress)

    def close(self) -> None:
        self._sources.clear()
        self.engine.dispose()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
