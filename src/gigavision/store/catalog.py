"""The image catalogue: the workspace's image rows and the folders derived from them.

Find an image the way people name it (``find``: full id, unique id prefix, unique name), list and count
images, read a row (cached per process: the tile routes read one per tile), change metadata in one locked
transaction, and publish a newly ingested image (blob, derived files and row, all or nothing). What the
metadata may contain is ``images/metadata.py``'s to decide; this module only stores it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import re
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from gigavision import files
from gigavision.cache import LRUCache, keep
from gigavision.errors import GigavisionError, InvalidInput, NotFound
from gigavision.store import refs as refs_
from gigavision.store.schema import ImageRow, utcnow

if TYPE_CHECKING:
    from gigavision.store.blobs import BlobStore

IMAGE_ID = re.compile(r"^[0-9a-f]{64}$")
CACHED_ROWS = 4096
QUERY_CHUNK = 500  # ids in one ``IN (...)``: SQLite caps bound parameters


class NamedImage(NamedTuple):
    """An image's id, name and size: what matching files to workspace images by name needs."""

    id: str
    name: str
    width: int
    height: int


def check_image_id(image_id: str) -> str:
    if not isinstance(image_id, str) or not IMAGE_ID.match(image_id):
        raise NotFound(f"no image with id {image_id!r} (ids are 64 hex characters)")
    return image_id


@contextlib.contextmanager
def exclusive(lock_file: Path) -> Iterator[None]:
    """An exclusive lock across threads and processes: flock on a file in the workspace."""
    with lock_file.open("a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def chunks(items: Sequence[str], size: int = QUERY_CHUNK) -> Iterator[Sequence[str]]:
    """Slices of ``items`` small enough for one ``IN (...)``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


class ImageCatalog:
    """``ws.catalog``: the image rows of one workspace (``root``) in its database. Thread-safe."""

    def __init__(self, session: sessionmaker[Session], root: Path) -> None:
        self.session = session
        self.root = root
        # Image rows change only in ``meta`` (update_meta), so the tile routes read them from memory instead
        # of querying the database for every tile. Readers of metadata pass ``fresh=True``: another process
        # may have changed it since the row was cached here.
        self._rows: LRUCache[str, ImageRow] = LRUCache(CACHED_ROWS, on_evict=keep)

    # -- reading ------------------------------------------------------------------------------------------
    def image_dir(self, image_id: str) -> Path:
        """The folder of the image's derived files (pyramid, thumbnail, mask)."""
        check_image_id(image_id)
        return self.root / "pyramids" / image_id[:2] / image_id

    def get(self, image_id: str, *, fresh: bool = False) -> ImageRow:
        """The image's row; ``fresh``: read the database instead of this process's cache (for ``meta``)."""
        check_image_id(image_id)
        row = None if fresh else self._rows.get(image_id)
        if row is not None:
            return row
        row = self.lookup(image_id)
        if row is None:
            raise NotFound(f"no image with id {image_id}")
        self._rows.put(image_id, row)
        return row

    def lookup(self, image_id: str) -> ImageRow | None:
        """The row of ``image_id`` from the database, or None (e.g. "were these bytes ingested already?")."""
        with self.session() as s:
            return s.get(ImageRow, image_id)

    def page(self, offset: int = 0, limit: int = 50) -> tuple[list[ImageRow], int]:
        """A page of images in the order they were added, and the total."""
        if offset < 0 or not 1 <= limit <= 1000:
            raise InvalidInput(f"offset must be ≥ 0 and limit 1..1000, got offset={offset} limit={limit}")
        with self.session() as s:
            total = s.scalar(select(func.count()).select_from(ImageRow)) or 0
            rows = s.scalars(
                select(ImageRow).order_by(ImageRow.created_at, ImageRow.id).offset(offset).limit(limit)
            ).all()
        return list(rows), int(total)

    def count(self) -> int:
        with self.session() as s:
            return int(s.scalar(select(func.count()).select_from(ImageRow)) or 0)

    def named(self, names: Sequence[str]) -> dict[str, list[NamedImage]]:
        """name -> the images stored under exactly that name (none: an empty list), a query per chunk."""
        found: dict[str, list[NamedImage]] = {n: [] for n in names}
        with self.session() as s:
            for chunk in chunks(list(found)):
                for row in s.execute(select(*_NAMED).where(ImageRow.name.in_(chunk))):
                    found[row.name].append(NamedImage(*row))
        return found

    def named_like(self, pattern: str, *, escape: str | None = None, limit: int | None = None) -> list[NamedImage]:
        """Images whose name matches the SQL ``LIKE`` ``pattern`` (e.g. ``"%/%"``: names with folders)."""
        stmt = select(*_NAMED).where(ImageRow.name.like(pattern, escape=escape)).order_by(ImageRow.name)
        with self.session() as s:
            return [NamedImage(*row) for row in s.execute(stmt.limit(limit))]

    # -- references -----------------------------------------------------------------------------------------
    def find(self, ref: str) -> str:
        """The id of the image ``ref`` names, the way people type it: the full id, a unique prefix of it
        (at least 6 characters, as ``images list`` shows 12), or a unique name as ``images list`` shows it.

        Every command and route that names an image resolves it here. Raises ``NotFound``, or ``Ambiguous``
        (400) listing the candidates when ``ref`` fits several images (a shared name, a short prefix).
        """
        if IMAGE_ID.fullmatch(ref):
            with contextlib.suppress(NotFound):
                return self.get(ref).id  # the cached row: routes the viewer calls per request stay cheap
        found = self.resolve([ref])[ref]
        if isinstance(found, GigavisionError):
            raise found
        return found

    def find_many(self, refs: Iterable[str]) -> dict[str, str]:
        """``find`` for many refs at once: ref -> id. Raises the first ref's error, if any."""
        resolved = self.resolve(list(dict.fromkeys(refs)))
        for found in resolved.values():
            if isinstance(found, GigavisionError):
                raise found
        return {ref: str(found) for ref, found in resolved.items()}

    def resolve(self, refs: Sequence[str]) -> dict[str, str | GigavisionError]:
        """ref -> image id, or the error saying why it names no single image (unknown; ambiguous).

        A full id (in any case) wins outright; otherwise the images named ``ref`` and those whose id starts
        with it (a hex ref of 6+ characters: one indexed range query each) are the candidates, and there
        must be one.
        """
        out: dict[str, str | GigavisionError] = {}
        with self.session() as s:
            full = {r: r.lower() for r in refs if IMAGE_ID.fullmatch(r.lower())}
            known: set[str] = set()
            for chunk in chunks(list(set(full.values()))):
                known.update(s.scalars(select(ImageRow.id).where(ImageRow.id.in_(chunk))))
            names = [r for r in refs if full.get(r) not in known]
            found: dict[str, dict[str, tuple[str, str]]] = {r: {} for r in names}  # ref -> id -> (name, source)
            columns = (ImageRow.id, ImageRow.name, ImageRow.source_path)
            for chunk in chunks(names):
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
                out[ref] = _ambiguous(ref, found[ref], capped=ref in capped)
            else:
                hint = f" (an id prefix needs at least {refs_.MIN_PREFIX} characters)" if refs_.too_short(ref) else ""
                out[ref] = NotFound(f"no image with id or name {ref!r}{hint}")
        return out

    # -- writing --------------------------------------------------------------------------------------------
    def update_meta(
        self,
        image_ids: Sequence[str],
        change: Callable[[dict[str, dict[str, Any]]], dict[str, dict[str, Any]]],
        actor: str,
    ) -> tuple[dict[str, dict[str, Any]], set[str]]:
        """Replace the metadata of ``image_ids`` in one transaction: ``change`` gets their current metadata
        (id -> meta; an unknown id is missing) and returns the new metadata (id -> meta), or raises, in
        which case nothing is written. Returns the new metadata and the ids whose metadata changed; those
        record ``actor`` and the time as their last metadata change.

        A file lock serialises writers across processes (SQLite would otherwise refuse the second one's
        upgrade from read to write), ``FOR UPDATE`` across PostgreSQL hosts.
        """
        with exclusive(self.root / ".meta.lock"), self.session.begin() as s:
            rows: dict[str, ImageRow] = {}
            for chunk in chunks(list(image_ids)):
                rows.update(
                    (r.id, r) for r in s.scalars(select(ImageRow).where(ImageRow.id.in_(chunk)).with_for_update())
                )
            new = change({image_id: dict(row.meta or {}) for image_id, row in rows.items()})
            # compared as JSON: in Python True == 1 == 1.0, but a user who changes 1 to true means it
            changed = {i for i, meta in new.items() if _json(meta) != _json(rows[i].meta or {})}
            now = utcnow()
            for image_id in changed:
                rows[image_id].meta = new[image_id]
                rows[image_id].meta_by, rows[image_id].meta_at = actor, now
        for image_id in changed:
            self._rows.discard(image_id)
        return new, changed

    def publish_lock(self) -> contextlib.AbstractContextManager[None]:
        """Serialises the short "check, store, move, insert" step of ingest across threads and processes,
        so two ingests of the same bytes never both publish, and a failing one never deletes files that
        another one committed."""
        return exclusive(self.root / "pyramids" / ".publish.lock")

    def publish(self, row: ImageRow, original: Path, scratch: Path, blobs: BlobStore) -> ImageRow:
        """Add an ingested image: store ``original`` as ``row.blob_key``, move its derived files from
        ``scratch`` to ``image_dir(row.id)`` and insert ``row``; undo all of it on failure.

        Returns the row that holds ``row.id`` afterwards: an existing one when the same bytes were published
        meanwhile (then nothing is written; compare its identity with ``row``).
        """
        with self.publish_lock():
            winner = self.lookup(row.id)
            if winner is not None:  # the same bytes were ingested while they were prepared
                return winner
            final = self.image_dir(row.id)
            stored_blob = moved = False
            try:
                stored_blob = blobs.put_file(original, row.blob_key)
                files.make_dirs(final.parent)
                if final.exists():  # no row owns it: leftover of an ingest killed before its commit
                    shutil.rmtree(final)
                files.publish(scratch, final)  # the rename is durable before the row is committed
                moved = True
                with self.session() as s:
                    s.add(row)
                    s.commit()
                return row
            except BaseException:
                if stored_blob:
                    blobs.delete(row.blob_key)
                if moved:
                    shutil.rmtree(final, ignore_errors=True)
                raise


_NAMED = (ImageRow.id, ImageRow.name, ImageRow.width, ImageRow.height)


def _json(meta: Mapping[str, Any]) -> str:
    return json.dumps(meta, sort_keys=True, default=str)


def _ambiguous(ref: str, found: Mapping[str, tuple[str, str]], *, capped: bool) -> GigavisionError:
    """The error for ``ref`` fitting several images (``found``: id -> (name, source path)), listing them."""
    if all(name == ref for name, _ in found.values()):  # a name that several files had: tell them apart
        listed = [f"{i[: refs_.SHOWN]} ({source})" for i, (_, source) in sorted(found.items(), key=lambda f: f[1])]
        return refs_.ambiguous(f"{len(found)} images are named {ref!r}", "use the image id instead", listed)
    listed = [f"{i[: refs_.SHOWN]} ({name})" for i, (name, _) in sorted(found.items())]
    count = f"{len(found)}+" if capped else str(len(found))
    head = f"{ref!r} fits {count} images (by id prefix or name)"
    return refs_.ambiguous(head, "give more characters of the id", listed, capped=capped)
