"""Dataset versions: create (freeze + group + split + hash), open by ``NAME@N``, list, and read back.

A version is written in one transaction and never changed afterwards. What it holds:

- the images (ids are sha256 of their bytes) with their name, size, split and group;
- per image, the annotations that passed the filters, frozen as a content-addressed blob (``freeze.py``);
- the label schema at creation time; the spec that made it (filters, statuses, ratios, grouping, seed);
- ``content_hash``: sha256 over the schema, the split ratios and every (image id, split, annotations sha).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from gigavision.annotations import Annotations
from gigavision.datasets import freeze
from gigavision.datasets.phash import perceptual_hashes
from gigavision.datasets.spec import (
    DEFAULT_DUP_DISTANCE,
    DEFAULT_SPLIT,
    Filters,
    check_name,
    parse_dup_distance,
    parse_filters,
    parse_group_by,
    parse_ref,
    parse_split,
    parse_statuses,
)
from gigavision.datasets.splits import UnionFind, assign_splits, group_order_key, near_duplicate_pairs
from gigavision.errors import Conflict, InvalidInput, NotFound
from gigavision.formats.source import ImageEntry
from gigavision.images.metadata import SPLIT_HINT
from gigavision.progress import Progress
from gigavision.registry import import_path
from gigavision.store.schema import DatasetImageRow, DatasetVersionRow, utcnow

if TYPE_CHECKING:
    from gigavision.workspace import Workspace

HASH_FORMAT = "gigavision.dataset/1"
NO_LABEL = "(none)"  # the stratum of images without annotations
PAGE = 1000
INSERT_CHUNK = 5000
DEDUPE_PAIRS = "gigavision.search.duplicates:embedding_pairs"  # (ws, spec, image ids, progress) -> (k, 2) pairs


class DatasetVersion:
    """One immutable version ``NAME@N``: a label schema and images with splits and frozen annotations.

    Implements ``gigavision.formats.source.AnnotatedImages``, so every exporter writes it as it writes the live
    workspace. Images come in a stable order: by (name, id), the same on SQLite and PostgreSQL.
    """

    def __init__(self, ws: Workspace, row: DatasetVersionRow) -> None:
        self.ws = ws
        self.id = row.id
        self.ref = row.ref
        self.name = row.name
        self.version = row.version
        self.content_hash = row.content_hash
        self.created_at: datetime = row.created_at
        self.created_by = row.created_by
        self.spec: dict[str, Any] = row.spec
        self.label_schema: list[dict[str, Any]] = row.label_schema
        self.counts: dict[str, Any] = row.counts

    @property
    def splits(self) -> dict[str, float]:
        """Split name -> target ratio, in the order they were given."""
        return dict(self.spec["split"])

    # -- AnnotatedImages ------------------------------------------------------------------------------------
    def classes(self) -> list[dict[str, Any]]:
        return copy.deepcopy(self.label_schema)

    def images(self, split: str | None = None) -> Iterator[ImageEntry]:
        """Every image (of one split when given), by (name, id); streamed a page at a time."""
        for row in self._rows(split):
            yield ImageEntry(
                id=row.image_id, name=row.name, width=row.width, height=row.height, split=row.split, bands=row.bands
            )

    def annotations(self, image_id: str) -> Annotations:
        """The frozen annotations of one image of this version (ids and versions of the live rows kept)."""
        return Annotations.from_records(self.records(image_id))

    def __len__(self) -> int:
        return int(self.counts["images"])

    # -- more reads -----------------------------------------------------------------------------------------
    def records(self, image_id: str) -> list[dict[str, Any]]:
        """The frozen annotation records of one image (as the REST API returns them, with ``version``)."""
        row = self._image(image_id)
        return freeze.read_frozen(self.ws.blobs, row.annotations_key, row.annotations_sha)

    def image(self, image_id: str) -> dict[str, Any]:
        return _entry(self._image(image_id))

    def page(self, split: str | None = None, offset: int = 0, limit: int = 100) -> tuple[list[dict[str, Any]], int]:
        """One page of images (dicts with split, group, label, n_annotations) and the total."""
        if offset < 0 or not 1 <= limit <= PAGE:
            raise InvalidInput(f"offset must be ≥ 0 and limit 1..{PAGE}, got offset={offset} limit={limit}")
        self._check_split(split)
        d = DatasetImageRow
        where = [d.version_id == self.id] + ([d.split == split] if split else [])
        with self.ws.session() as s:
            total = int(s.scalar(select(func.count()).select_from(d).where(*where)) or 0)
            rows = s.scalars(select(d).where(*where).order_by(d.position).offset(offset).limit(limit)).all()
        return [_entry(r) for r in rows], total

    def summary(self, *, schema: bool = True) -> dict[str, Any]:
        """What ``dataset show`` prints: identity, spec, counts per split and class, hash (and the schema)."""
        out: dict[str, Any] = {
            "ref": self.ref,
            "name": self.name,
            "version": self.version,
            "content_hash": self.content_hash,
            "created_at": self.created_at.isoformat(),
            "created_by": self.created_by,
            "spec": self.spec,
            "counts": self.counts,
        }
        if schema:
            out["classes"] = self.classes()
        return out

    def __repr__(self) -> str:
        return f"DatasetVersion({self.ref!r}, images={len(self)}, hash={self.content_hash[:12]})"

    def _check_split(self, split: str | None) -> None:
        if split is not None and split not in self.splits:
            raise InvalidInput(f"{self.ref} has no split {split!r}; its splits: {', '.join(self.splits)}")

    def _image(self, image_id: str) -> DatasetImageRow:
        """The version's row of an image: by full id, or a unique prefix or name (``Workspace.find_image``)."""
        from gigavision.store.catalog import IMAGE_ID

        if not IMAGE_ID.fullmatch(image_id):
            image_id = self.ws.find_image(image_id)
        d = DatasetImageRow
        with self.ws.session() as s:
            row = s.scalars(select(d).where(d.version_id == self.id, d.image_id == image_id)).first()
        if row is None:
            raise NotFound(f"image {image_id!r} is not in dataset {self.ref}")
        return row

    def _rows(self, split: str | None) -> Iterator[DatasetImageRow]:
        self._check_split(split)
        d = DatasetImageRow
        last = -1
        while True:
            stmt = select(d).where(d.version_id == self.id, d.position > last)
            if split is not None:
                stmt = stmt.where(d.split == split)
            with self.ws.session() as s:
                rows = s.scalars(stmt.order_by(d.position).limit(PAGE)).all()
            yield from rows
            if len(rows) < PAGE:
                return
            last = rows[-1].position


def _entry(row: DatasetImageRow) -> dict[str, Any]:
    return {
        "id": row.image_id,
        "name": row.name,
        "width": row.width,
        "height": row.height,
        "bands": row.bands,
        "split": row.split,
        "group": row.group_index,
        "label": row.label,
        "n_annotations": row.n_annotations,
        "annotations_sha": row.annotations_sha,
    }


# -- opening and listing ------------------------------------------------------------------------------------
def open_version(ws: Workspace, ref: str) -> DatasetVersion:
    """``NAME@N``, ``NAME@latest`` or ``NAME`` (the newest version)."""
    name, number = parse_ref(ref)
    v = DatasetVersionRow
    with ws.session() as s:
        versions = s.scalars(select(v.version).where(v.name == name).order_by(v.version)).all()
        if not versions:
            known = s.scalars(select(v.name).distinct().order_by(v.name).limit(20)).all()
            hint = f"; datasets: {', '.join(known)}" if known else "; none created yet (gigavision dataset create)"
            raise NotFound(f"no dataset named {name!r}{hint}")
        wanted = versions[-1] if number is None else number
        row = s.scalars(select(v).where(v.name == name, v.version == wanted)).first()
    if row is None:
        raise NotFound(f"dataset {name!r} has no version {number}; its versions: {_ranges(list(versions))}")
    return DatasetVersion(ws, row)


def list_versions(ws: Workspace, name: str | None = None) -> list[DatasetVersion]:
    """Every version (of one dataset when ``name`` is given), by name then version."""
    v = DatasetVersionRow
    stmt = select(v).order_by(v.name, v.version)
    if name is not None:
        stmt = stmt.where(v.name == check_name(name))
    with ws.session() as s:
        rows = s.scalars(stmt).all()
    return [DatasetVersion(ws, r) for r in rows]


def _ranges(numbers: list[int]) -> str:
    """``[1, 2, 3, 5]`` -> ``"1-3, 5"``."""
    runs: list[list[int]] = []
    for n in numbers:
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    return ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)


# -- creating -----------------------------------------------------------------------------------------------
def create_version(
    ws: Workspace,
    name: str,
    *,
    filters: Sequence[str] | Mapping[str, str | Sequence[str]] | None = None,
    split: str | Mapping[str, float] = DEFAULT_SPLIT,
    stratify: bool = False,
    group_by: str = "image",
    seed: int = 0,
    statuses: Sequence[str] | None = None,
    dup_distance: int | None = DEFAULT_DUP_DISTANCE,
    dedupe: str | None = None,
    reshuffle: bool = False,
    split_hints: bool = True,
    allow_duplicate: bool = False,
    qc_submissions: bool = False,
    actor: str = "anonymous",
    progress: Progress | None = None,
) -> DatasetVersion:
    """Freeze images + annotations + schema + split assignment into the next version ``NAME@N``.

    ``filters``: ``key=value[,value...]`` texts (keys: image, image_id, label, source, status, kind, has,
    meta:KEY). ``statuses``: annotation statuses to freeze (default accepted + adjudicated: the consensus);
    annotators' submissions to multi-annotator QC are left out (their consensus is frozen) unless
    ``qc_submissions``.
    ``split``: ``train=0.8,val=0.1,test=0.1``. ``group_by``: ``image`` or ``meta:KEY``; near-duplicate
    images (perceptual hashes within ``dup_distance`` bits; None: off) join one group, and so do the pairs
    ``dedupe`` finds (``embed:INDEX[@COSINE]``: embedding near-duplicates by an image index, issue 15); a
    group never spans splits. Unless ``reshuffle``, images of the dataset's latest version keep their split there;
    with ``split_hints``, images whose metadata ``split`` names one of the splits (set by imports whose layout
    says it: COCO ``instances_val.json``, YOLO ``images/val/``, CVAT ``subset``) go there, and so does their group.
    ``stratify``: every split gets its share of each class (an image's class: its majority label).
    Raises ``Conflict`` naming the version of ``name`` that already holds identical content (same hash),
    unless ``allow_duplicate``. ``progress(done, total, message)`` is called as work advances.
    """
    check_name(name)
    parsed = _resolve_image_ids(ws, parse_filters(filters))
    if statuses is not None and parsed.status is not None:
        raise InvalidInput("give the statuses once: either --status or --filter status=..., not both")
    wanted_statuses = parse_statuses(statuses) if statuses is not None else (parsed.status or parse_statuses(None))
    ratios = parse_split(split)
    grouping = parse_group_by(group_by)
    distance = parse_dup_distance(dup_distance)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise InvalidInput(f"seed must be an integer 0..2^63-1, got {seed!r}")
    if not actor or len(actor) > 256:
        raise InvalidInput("actor must be 1 to 256 characters")

    def report(done: int, total: int, message: str) -> None:
        if progress is not None:
            progress(done, total, message)

    report(0, 1, "selecting images")
    candidates = freeze.select_images(ws, parsed)
    frozen = freeze.freeze_images(
        ws, candidates, parsed, wanted_statuses, qc_submissions=qc_submissions, progress=progress
    )
    if not frozen:
        freeze.check_selection(frozen, ws.catalog.count())
    schema = freeze.freeze_schema(ws.labels.by_name(), freeze.used_kinds(frozen), parsed.label)

    # groups: whole images, joined by a shared metadata value and by near-identical pixels
    uf = UnionFind(len(frozen))
    ungrouped = 0
    if grouping.startswith("meta:"):
        key = grouping[5:]
        first_of: dict[str, int] = {}
        for i, image in enumerate(frozen):
            if key not in image.meta or image.meta[key] in (None, ""):
                ungrouped += 1
                continue
            uf.union(first_of.setdefault(str(image.meta[key]), i), i)
    dup_pairs = 0
    dup_images: set[int] = set()
    if distance is not None:
        hashes = perceptual_hashes(ws, [f.id for f in frozen], progress)
        for i, j in near_duplicate_pairs(hashes, distance).tolist():
            dup_pairs += 1
            dup_images.update((i, j))
            uf.union(i, j)
    if dedupe:
        # the search stage is a layer up: named, not imported (it reads the index's vectors)
        for i, j in import_path(DEDUPE_PAIRS)(ws, dedupe, [f.id for f in frozen], progress).tolist():
            dup_pairs += 1
            dup_images.update((i, j))
            uf.union(i, j)
    groups = uf.groups()
    group_of = [0] * len(frozen)
    for g, members in enumerate(groups):
        for i in members:
            group_of[i] = g

    # splits: keep what the latest version decided (unless reshuffled), fill the rest greedily
    report(0, 1, "assigning splits")
    base = None if reshuffle else _latest(ws, name)
    inherited = _inherited_splits(ws, base, ratios) if base is not None else {}
    split_names = list(ratios)
    fixed: dict[int, int] = {}  # group -> split index, by majority of its members' previous splits
    hinted = 0
    for g, members in enumerate(groups):
        votes = Counter(split_names.index(inherited[frozen[i].id]) for i in members if frozen[i].id in inherited)
        if not votes and split_hints:
            votes = Counter(
                split_names.index(hint) for i in members if (hint := frozen[i].meta.get(SPLIT_HINT)) in ratios
            )
            hinted += sum(votes.values())
        if votes:
            fixed[g] = min(votes, key=lambda k: (-votes[k], k))
    strata = [(f.majority_label or NO_LABEL) if stratify else "" for f in frozen]
    order_keys = [group_order_key(seed, [frozen[i].id for i in members]) for members in groups]
    chosen = assign_splits(groups, strata, ratios, order_keys, fixed)
    image_split = [split_names[chosen[group_of[i]]] for i in range(len(frozen))]
    kept = sum(1 for f, s in zip(frozen, image_split, strict=True) if inherited.get(f.id) == s)
    moved = sum(1 for f, s in zip(frozen, image_split, strict=True) if f.id in inherited and inherited[f.id] != s)

    content_hash = compute_content_hash(
        schema, ratios, ((f.id, s, f.annotations_sha) for f, s in zip(frozen, image_split, strict=True))
    )
    spec = {
        "filters": parsed.as_dict(),
        "statuses": list(wanted_statuses),
        "qc_submissions": bool(qc_submissions),
        "split": ratios,
        "stratify": bool(stratify),
        "group_by": grouping,
        "seed": seed,
        "dup_distance": distance,
        "dedupe": dedupe,
        "split_hints": bool(split_hints),
        "base": base.ref if base is not None else None,
    }
    counts = _counts(frozen, image_split, ratios, len(groups), dup_pairs, len(dup_images), ungrouped)
    counts.update({"kept": kept, "moved": moved, "hinted": hinted})
    report(0, 1, "writing")
    row = _insert(ws, name, content_hash, actor, spec, schema, counts, frozen, image_split, group_of, allow_duplicate)
    report(1, 1, "done")
    return DatasetVersion(ws, row)


def _resolve_image_ids(ws: Workspace, filters: Filters) -> Filters:
    """``filters`` with its ``image_id`` values (ids, unique id prefixes or unique names, as people type them)
    turned into full image ids, so the stored spec names exactly the images it selected."""
    if not filters.image_id:
        return filters
    try:
        found = ws.find_images(filters.image_id)
    except NotFound as exc:
        raise InvalidInput(f"filter image_id: {exc}") from exc
    return dataclasses.replace(filters, image_id=tuple(sorted(set(found.values()))))


def compute_content_hash(
    schema: list[dict[str, Any]], ratios: Mapping[str, float], images: Iterator[tuple[str, str, str]]
) -> str:
    """sha256 over the canonical schema and ratios, then every (image id, split, annotations sha) by id."""
    h = hashlib.sha256(freeze.canonical_json({"format": HASH_FORMAT, "schema": schema, "split": dict(ratios)}))
    for image_id, split, sha in sorted(images):
        h.update(f"\n{image_id} {split} {sha}".encode())
    return h.hexdigest()


def _latest(ws: Workspace, name: str) -> DatasetVersion | None:
    v = DatasetVersionRow
    with ws.session() as s:
        row = s.scalars(select(v).where(v.name == name).order_by(v.version.desc()).limit(1)).first()
    return DatasetVersion(ws, row) if row is not None else None


def _inherited_splits(ws: Workspace, base: DatasetVersion, ratios: Mapping[str, float]) -> dict[str, str]:
    """image id -> split in ``base``, for splits that still exist."""
    d = DatasetImageRow
    with ws.session() as s:
        rows = s.execute(select(d.image_id, d.split).where(d.version_id == base.id)).all()
    return {image_id: split for image_id, split in rows if split in ratios}


def _counts(
    frozen: list[freeze.FrozenImage],
    image_split: list[str],
    ratios: Mapping[str, float],
    n_groups: int,
    dup_pairs: int,
    dup_images: int,
    ungrouped: int,
) -> dict[str, Any]:
    n = len(frozen)
    per_split: dict[str, dict[str, Any]] = {
        s: {"images": 0, "annotations": 0, "ratio": r, "achieved": 0.0, "labels": Counter(), "classes": Counter()}
        for s, r in ratios.items()
    }
    labels: Counter[str] = Counter()
    classes: Counter[str] = Counter()
    for f, s in zip(frozen, image_split, strict=True):
        part = per_split[s]
        part["images"] += 1
        part["annotations"] += f.n_annotations
        part["labels"].update(f.labels)
        part["classes"][f.majority_label or NO_LABEL] += 1
        labels.update(f.labels)
        classes[f.majority_label or NO_LABEL] += 1
    for part in per_split.values():
        part["achieved"] = round(part["images"] / n, 6)
        part["labels"] = dict(sorted(part["labels"].items()))
        part["classes"] = dict(sorted(part["classes"].items()))
    return {
        "images": n,
        "annotations": sum(f.n_annotations for f in frozen),
        "groups": n_groups,
        "near_duplicates": {"pairs": dup_pairs, "images": dup_images},
        "ungrouped": ungrouped,
        "labels": dict(sorted(labels.items())),
        "classes": dict(sorted(classes.items())),
        "splits": per_split,
    }


def _insert(
    ws: Workspace,
    name: str,
    content_hash: str,
    actor: str,
    spec: dict[str, Any],
    schema: list[dict[str, Any]],
    counts: dict[str, Any],
    frozen: list[freeze.FrozenImage],
    image_split: list[str],
    group_of: list[int],
    allow_duplicate: bool,
) -> DatasetVersionRow:
    """Write the version and its images in one transaction, numbered after the newest version of ``name``."""
    v = DatasetVersionRow
    try:
        with ws.session.begin() as s:
            same = s.scalars(
                select(v.ref).where(v.name == name, v.content_hash == content_hash).order_by(v.version.desc())
            ).first()
            if same is not None and not allow_duplicate:
                raise Conflict(
                    f"{same} already holds exactly this content (hash {content_hash[:12]}…): nothing changed; "
                    "pass --allow-duplicate (allow_duplicate=True) to number it as a new version anyway"
                )
            number = int(s.scalar(select(func.max(v.version)).where(v.name == name)) or 0) + 1
            row = DatasetVersionRow(
                ref=f"{name}@{number}",
                name=name,
                version=number,
                content_hash=content_hash,
                created_at=utcnow(),
                created_by=actor,
                spec=spec,
                label_schema=schema,
                counts=counts,
            )
            s.add(row)
            s.flush()
            values = [
                {
                    "version_id": row.id,
                    "position": position,
                    "image_id": f.id,
                    "name": f.name,
                    "width": f.width,
                    "height": f.height,
                    "bands": f.bands,
                    "split": image_split[position],
                    "group_index": group_of[position],
                    "label": f.majority_label,
                    "n_annotations": f.n_annotations,
                    "annotations_sha": f.annotations_sha,
                    "annotations_key": f.annotations_key,
                }
                for position, f in enumerate(frozen)
            ]
            for start in range(0, len(values), INSERT_CHUNK):
                s.execute(insert(DatasetImageRow), values[start : start + INSERT_CHUNK])
    except IntegrityError as exc:
        raise Conflict(f"another version of {name!r} was created at the same time; run the command again") from exc
    return row
