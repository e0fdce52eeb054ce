"""Freezing: the selected images' annotations as canonical, gzipped, content-addressed blobs, and the schema.

A frozen blob is ``{"format": ..., "records": [...]}`` serialised canonically (sorted keys, no spaces,
records in annotation-id order) and gzipped with ``mtime=0``. Its sha256 is taken over the uncompressed
canonical JSON, so it does not depend on the zlib version; the blob key is derived from that sha, so an image
whose annotations did not change shares its blob with earlier versions. Records keep the annotation ``id``
and ``version``: the lineage back to the live annotation and its history.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import column, inspect, select, table

from gigavision.datasets.spec import Filters
from gigavision.errors import ConfigError, InvalidInput, LimitExceeded
from gigavision.progress import Progress
from gigavision.store.schema import AnnotationRow, ImageRow

if TYPE_CHECKING:
    from gigavision.store.blobs import BlobStore
    from gigavision.workspace import Workspace

FORMAT = "gigavision.frozen-annotations/1"
MAX_ANNOTATIONS_PER_IMAGE = 1_000_000
DEFAULT_COLOR = "#ff0000"


def canonical_json(value: Any) -> bytes:
    """One byte string per value: sorted keys, no whitespace, ASCII, no NaN."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def frozen_key(sha: str) -> str:
    return f"datasets/annotations/{sha[:2]}/{sha}.json.gz"


def put_frozen(blobs: BlobStore, records: list[dict[str, Any]], scratch: str) -> tuple[str, str]:
    """Store ``records`` (once per content); returns (sha256 of the canonical JSON, blob key)."""
    payload = canonical_json({"format": FORMAT, "records": records})
    sha = hashlib.sha256(payload).hexdigest()
    key = frozen_key(sha)
    if not blobs.exists(key):
        fd, tmp = tempfile.mkstemp(prefix=".frozen-", suffix=".json.gz", dir=scratch)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(gzip.compress(payload, mtime=0))
            blobs.put_file(Path(tmp), key)
        finally:
            Path(tmp).unlink(missing_ok=True)
    return sha, key


def read_frozen(blobs: BlobStore, key: str, sha: str) -> list[dict[str, Any]]:
    """The records of a frozen blob, checked against its sha256 (a damaged blob is an error, not data)."""
    try:
        payload = gzip.decompress(blobs.local_path(key).read_bytes())
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise ConfigError(f"frozen annotations {key} cannot be read from the blob store: {exc}") from exc
    if hashlib.sha256(payload).hexdigest() != sha:
        raise ConfigError(f"frozen annotations {key} are damaged: their sha256 does not match {sha}")
    document = json.loads(payload)
    if document.get("format") != FORMAT:
        raise ConfigError(f"frozen annotations {key}: unknown format {document.get('format')!r}")
    records: list[dict[str, Any]] = document["records"]
    return records


@dataclass(frozen=True, slots=True)
class Candidate:
    """An image that passed the image filters."""

    id: str
    name: str
    width: int
    height: int
    bands: int
    meta: dict[str, Any]


@dataclass(slots=True)
class FrozenImage:
    """One selected image after its annotations were frozen."""

    id: str
    name: str
    width: int
    height: int
    bands: int
    meta: dict[str, Any]
    annotations_sha: str
    annotations_key: str
    n_annotations: int
    label_kinds: Counter[tuple[str, str]] = field(default_factory=Counter)  # annotations per (label, kind)

    @property
    def labels(self) -> Counter[str]:
        """Annotations per label."""
        out: Counter[str] = Counter()
        for (label, _kind), n in self.label_kinds.items():
            out[label] += n
        return out

    @property
    def majority_label(self) -> str | None:
        """The most frequent label (ties: alphabetical first); None without annotations."""
        if not self.labels:
            return None
        return min(self.labels.items(), key=lambda kv: (-kv[1], kv[0]))[0]


def select_images(ws: Workspace, filters: Filters) -> list[Candidate]:
    """The images passing the image filters, by (name, id) in code-point (= UTF-8 byte) order."""
    i = ImageRow
    stmt = select(i.id, i.name, i.width, i.height, i.bands, i.meta)
    if filters.image_id:
        stmt = stmt.where(i.id.in_(list(filters.image_id)))
    with ws.session() as s:
        rows = [Candidate(r[0], r[1], int(r[2]), int(r[3]), int(r[4]), dict(r[5] or {})) for r in s.execute(stmt)]
    picked = [r for r in rows if filters.image_matches(r.id, r.name, r.meta)]
    picked.sort(key=lambda r: (r.name, r.id))
    return picked


def qc_submission_ids(ws: Workspace) -> set[int]:
    """Ids of annotations that are annotators' submissions to multi-annotator QC (``gigavision.active``).

    QC marks a submission ``accepted`` when it matches the consensus, so without this the consensus and the
    submissions it was made from would all be frozen: the same object three or four times. Empty when the
    workspace has no QC tables.
    """
    if not inspect(ws.engine).has_table("qc_labels"):
        return set()
    qc_labels = table("qc_labels", column("annotation_id"), column("role"))
    with ws.session() as s:
        return {int(i) for i in s.scalars(select(qc_labels.c.annotation_id).where(qc_labels.c.role == "submission"))}


def freeze_images(
    ws: Workspace,
    images: list[Candidate],
    filters: Filters,
    statuses: tuple[str, ...],
    *,
    qc_submissions: bool = False,
    progress: Progress | None = None,
) -> list[FrozenImage]:
    """Freeze the filtered annotations of each image into the blob store; drops images left with none when
    ``has=annotations`` is asked for. QC submissions are left out unless ``qc_submissions``; model proposals
    an expert accepted are always left out (their ``user:NAME`` copy is frozen instead)."""
    with ws.session() as s:
        annotated = set(s.scalars(select(AnnotationRow.image_id).where(~AnnotationRow.deleted).distinct()))
    excluded = set() if qc_submissions else qc_submission_ids(ws)
    excluded |= ws.reviews.superseded_ids()  # an accepted model proposal: its expert copy is the label
    scratch = ws.root / "cache" / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    frozen: list[FrozenImage] = []
    for done, image in enumerate(images, 1):
        image_id, name = image.id, image.name
        records: list[dict[str, Any]] = []
        if image_id in annotated:
            records = ws.annotations.query_records(
                image_id, labels=filters.label, statuses=statuses, limit=MAX_ANNOTATIONS_PER_IMAGE
            )
            if len(records) >= MAX_ANNOTATIONS_PER_IMAGE:
                raise LimitExceeded(
                    f"image {name} ({image_id[:12]}…) has ≥ {MAX_ANNOTATIONS_PER_IMAGE:,} matching annotations; "
                    "narrow the filters (label=, kind=, source=)"
                )
            records = [r for r in records if r["id"] not in excluded and filters.annotation_matches(r)]
        if records or not filters.has_annotations:
            sha, key = put_frozen(ws.blobs, records, str(scratch))
            frozen.append(
                FrozenImage(
                    id=image_id,
                    name=name,
                    width=image.width,
                    height=image.height,
                    bands=image.bands,
                    meta=image.meta,
                    annotations_sha=sha,
                    annotations_key=key,
                    n_annotations=len(records),
                    label_kinds=Counter((str(r["label"]), str(r["kind"])) for r in records),
                )
            )
        if progress is not None:
            progress(done, len(images), "freezing annotations")
    return frozen


def freeze_schema(
    classes: Mapping[str, Any], used: Mapping[str, Counter[str]], labels: Iterable[str] = ()
) -> list[dict[str, Any]]:
    """The label classes of the version, by name: the workspace schema (only ``labels`` when given), plus any
    label used by a frozen annotation but missing from the schema (kind: its most common kind there)."""
    wanted = set(labels)
    out: dict[str, dict[str, Any]] = {}
    for name, c in classes.items():
        if wanted and name not in wanted:
            continue
        out[name] = {
            "name": name,
            "kind": c.kind,
            "color": c.color,
            "parent": c.parent,
            "attributes": {k: list(v) for k, v in sorted(dict(c.attributes or {}).items())},
        }
    for name, kinds in used.items():
        if name not in out:
            kind = min(kinds.items(), key=lambda kv: (-kv[1], kv[0]))[0]
            out[name] = {"name": name, "kind": kind, "color": DEFAULT_COLOR, "parent": None, "attributes": {}}
    return [out[name] for name in sorted(out)]


def used_kinds(frozen: Iterable[FrozenImage]) -> dict[str, Counter[str]]:
    """label -> annotation kinds counted over the frozen annotations."""
    used: dict[str, Counter[str]] = {}
    for image in frozen:
        for (label, kind), n in image.label_kinds.items():
            used.setdefault(label, Counter())[kind] += n
    return used


def check_selection(frozen: list[FrozenImage], total_images: int) -> None:
    if not frozen:
        raise InvalidInput(
            f"the filters select no images (the workspace has {total_images}); "
            "check --filter values and --status (default: accepted,adjudicated)"
        )
