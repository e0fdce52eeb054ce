"""Embedding indexes in the workspace: ``indexes/NAME/`` holds a card and one generation of data files.

- ``index.json``: the card (model, what is indexed, FAISS parameters, counts) naming the current files;
- ``vectors-G.faiss``: the FAISS index of generation ``G`` (entry id = row);
- ``entries-G.npz``: what each row is: ``image`` (a number into ``image_ids``) and ``boxes`` (level-0
  ``x0, y0, x1, y1``; the whole image for an image index).

A change (``index add``) writes generation G+1's files beside, then replaces ``index.json`` (one atomic
rename), then deletes generation G: a reader always finds a card whose files exist, and a killed writer
leaves the old generation intact (its stray files are removed by the next write). Writers of one index take
an exclusive lock on ``indexes/NAME/.lock``, so two ``index add`` runs never interleave.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gigavision.cache import LRUCache, keep
from gigavision.datasets.spec import NAME
from gigavision.errors import Conflict, InvalidInput, NotFound
from gigavision.files import atomic_path, atomic_write, make_dirs, write_text
from gigavision.search import vectors
from gigavision.search.vectors import IndexParams

if TYPE_CHECKING:
    from gigavision.workspace import Workspace

CARD = "index.json"
KEEP_LOADED = 4  # indexes kept in memory per process (a server answers many queries on the same one)


def check_index_name(name: str) -> str:
    """An index name: 1-64 characters of ``A-Z a-z 0-9 _ . -`` (not ``.`` or ``..``)."""
    if not isinstance(name, str) or not NAME.match(name) or name in (".", ".."):
        raise InvalidInput(f"index name {name!r} must be 1-64 characters of A-Z a-z 0-9 _ . - (e.g. slides-l1)")
    return name


def indexes_dir(ws: Workspace) -> Path:
    return ws.root / "indexes"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class IndexCard:
    """What an index is (``index.json``)."""

    name: str
    model: str  # the model whose vectors these are: queries must use the same one
    model_task: str
    dim: int
    mode: str  # "image" (one vector per image) or "regions" (a grid of foreground windows per image)
    regions: dict[str, Any] | None  # tile, level | mpp, min_foreground (regions mode)
    images_filter: list[str]  # the image filters it covers (``index add`` takes new images that match)
    dataset: str | None  # or the images of this dataset version
    follow: bool  # add newly ingested images by itself
    params: IndexParams
    count: int
    n_images: int
    generation: int
    created_at: str
    updated_at: str
    created_by: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.model,
            "model_task": self.model_task,
            "dim": self.dim,
            "mode": self.mode,
            "regions": self.regions,
            "images_filter": list(self.images_filter),
            "dataset": self.dataset,
            "follow": self.follow,
            "faiss": self.params.as_dict(),
            "count": self.count,
            "images": self.n_images,
            "generation": self.generation,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "created_by": self.created_by,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IndexCard:
        return cls(
            name=str(data["name"]),
            model=str(data["model"]),
            model_task=str(data["model_task"]),
            dim=int(data["dim"]),
            mode=str(data["mode"]),
            regions=data.get("regions"),
            images_filter=list(data.get("images_filter") or []),
            dataset=data.get("dataset"),
            follow=bool(data.get("follow", False)),
            params=IndexParams.from_dict(dict(data.get("faiss") or {})),
            count=int(data.get("count", 0)),
            n_images=int(data.get("images", 0)),
            generation=int(data.get("generation", 0)),
            created_at=str(data.get("created_at", "")),
            updated_at=str(data.get("updated_at", "")),
            created_by=str(data.get("created_by", "")),
        )


@dataclass
class Entries:
    """What each row of an index is: ``image`` numbers into ``image_ids`` and level-0 ``boxes``."""

    image_ids: list[str]
    image: np.ndarray  # (N,) int32
    boxes: np.ndarray  # (N, 4) int64

    @classmethod
    def empty(cls) -> Entries:
        return cls([], np.zeros(0, np.int32), np.zeros((0, 4), np.int64))

    def __len__(self) -> int:
        return len(self.image)

    def extend(self, added: Sequence[tuple[str, np.ndarray]]) -> Entries:
        """These entries, then each ``(image id, level-0 boxes)`` in order (one concatenation for all)."""
        ids = [*self.image_ids, *(image_id for image_id, _ in added)]
        first = len(self.image_ids)
        rows = [np.full(len(boxes), first + k, dtype=np.int32) for k, (_, boxes) in enumerate(added)]
        return Entries(
            ids,
            np.concatenate([self.image, *rows]).astype(np.int32),
            np.concatenate([self.boxes, *(b.astype(np.int64).reshape(-1, 4) for _, b in added)]),
        )

    def rows_of(self, image_ids: set[str]) -> np.ndarray:
        """Entry ids of the given images."""
        wanted = np.asarray([i for i, x in enumerate(self.image_ids) if x in image_ids], dtype=np.int32)
        return np.flatnonzero(np.isin(self.image, wanted)).astype(np.int64)


@dataclass
class LoadedIndex:
    """An index read into memory: its card, its FAISS index and its entries."""

    card: IndexCard
    index: Any
    entries: Entries


def _card_path(ws: Workspace, name: str) -> Path:
    return indexes_dir(ws) / check_index_name(name) / CARD


def get_card(ws: Workspace, name: str) -> IndexCard:
    path = _card_path(ws, name)
    if not path.is_file():
        known = ", ".join(c.name for c in list_cards(ws)) or "none yet"
        raise NotFound(f"index {name!r} does not exist (indexes: {known}); build it with gigavision index build")
    return IndexCard.from_dict(json.loads(path.read_text(encoding="utf-8")))


def list_cards(ws: Workspace) -> list[IndexCard]:
    root = indexes_dir(ws)
    if not root.is_dir():
        return []
    return [
        IndexCard.from_dict(json.loads((p / CARD).read_text(encoding="utf-8")))
        for p in sorted(root.iterdir())
        if (p / CARD).is_file()
    ]


def _files(folder: Path, generation: int) -> tuple[Path, Path]:
    return folder / f"vectors-{generation}.faiss", folder / f"entries-{generation}.npz"


_LOADED: LRUCache[tuple[str, int, str], LoadedIndex] = LRUCache(KEEP_LOADED, on_evict=keep)


def load(ws: Workspace, name: str) -> LoadedIndex:
    """The index ``name`` in memory (kept per process until its generation changes). A writer may replace
    the generation between reading the card and opening its files: then the new card is read again."""
    for attempt in range(3):
        card = get_card(ws, name)
        folder = indexes_dir(ws) / name
        key = (str(folder), card.generation, card.updated_at)

        def read(card: IndexCard = card, folder: Path = folder) -> LoadedIndex:
            faiss_path, entries_path = _files(folder, card.generation)
            with np.load(entries_path, allow_pickle=False) as data:
                entries = Entries([str(x) for x in data["image_ids"]], data["image"], data["boxes"])
            return LoadedIndex(card, vectors.read(faiss_path), entries)

        try:
            return _LOADED.get_or_create(key, read)
        except (FileNotFoundError, RuntimeError) as exc:  # FAISS raises RuntimeError for a missing file
            if attempt == 2 or get_card(ws, name).generation == card.generation:
                raise NotFound(f"index {name!r}: its files are missing ({exc}); build it again") from exc
    raise AssertionError("unreachable")


@contextlib.contextmanager
def locked(ws: Workspace, name: str) -> Iterator[Path]:
    """The index's folder, held under its writers' lock."""
    folder = indexes_dir(ws) / check_index_name(name)
    make_dirs(folder)
    with (folder / ".lock").open("a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield folder
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def save(folder: Path, card: IndexCard, index: Any, entries: Entries) -> IndexCard:
    """Write ``card``'s next generation (caller holds ``locked``) and return the card now in force."""
    generation = card.generation + 1
    faiss_path, entries_path = _files(folder, generation)
    with atomic_path(faiss_path) as tmp:
        vectors.write(index, tmp)
    with atomic_write(entries_path) as fh:
        np.savez(fh, image_ids=np.asarray(entries.image_ids, dtype=str), image=entries.image, boxes=entries.boxes)
    card.generation = generation
    card.count = int(index.ntotal)
    card.n_images = len(entries.image_ids)
    card.updated_at = now()
    write_text(folder / CARD, json.dumps(card.as_dict(), indent=2))
    for old in folder.iterdir():  # earlier generations and what a killed writer left
        if old.name not in (CARD, ".lock", faiss_path.name, entries_path.name):
            old.unlink(missing_ok=True) if not old.is_dir() else shutil.rmtree(old, ignore_errors=True)
    return card


def create_folder(ws: Workspace, name: str) -> None:
    """Refuse a name already taken (the caller then builds into the new folder under ``locked``)."""
    if _card_path(ws, name).is_file():
        raise Conflict(f"index {name!r} already exists; add images with gigavision index add, or drop it first")


def drop(ws: Workspace, name: str) -> None:
    get_card(ws, name)
    folder = indexes_dir(ws) / name
    trash = folder.with_name(f".{name}.dropped")
    shutil.rmtree(trash, ignore_errors=True)
    folder.rename(trash)  # one rename: no reader sees half a folder
    shutil.rmtree(trash, ignore_errors=True)
