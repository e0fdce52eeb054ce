"""Annotation storage: bulk insert, viewport queries through the spatial index, versioned edits, history.

Every change is recorded in ``annotation_events`` (who, when, before, after) in the same transaction,
and an edit names the version it was based on: a stale edit raises ``Conflict`` (HTTP 409) instead of
overwriting someone else's work.

Sized for millions of polygons per slide (DESIGN.md §6; migration 0006): a row names its image by a small
``image_key`` (``annotation_images``), not the 64-character id; geometry is stored losslessly but compactly
by ``geometry_codec``; empty attributes are NULL. Bulk inserts bypass the ORM (``executemany`` on SQLite,
binary ``COPY`` on PostgreSQL) yet stay one all-or-nothing transaction, and reads decode the geometry of
all hits of a viewport at once.
"""

from __future__ import annotations

import gc
import json
import math
from collections import Counter
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from itertools import repeat
from typing import Any, TypedDict, Unpack, cast

import numpy as np
from sqlalchemy import (
    Connection,
    CursorResult,
    Engine,
    LargeBinary,
    ScalarSelect,
    and_,
    func,
    select,
    text,
    type_coerce,
    update,
)
from sqlalchemy.orm import Session, sessionmaker

from gigavision.annotations import STATUSES, Annotations, Canvas
from gigavision.errors import Conflict, InvalidInput, NotFound
from gigavision.store import geometry_codec
from gigavision.store.labels import LabelSchema
from gigavision.store.schema import AnnotationEventRow, AnnotationImageRow, AnnotationRow, utcnow
from gigavision.store.source_patterns import SourceFilter

CHUNK = 10_000
MAX_LIMIT = 1_000_000  # most records one query returns
ANALYZE_AFTER = 50_000  # rows added at once after which query-planner statistics are refreshed
# PostgreSQL: COPY rows in Hilbert order of their boxes, so a viewport's rows share heap pages. At 5 M polygons:
# 1024² records p50 13.0 → 9.0 ms, p95 16.6 → 14.4 ms; ingest +18 %, primary key 22.5 → 29.5 B/row (measured).
PG_SPATIAL_ORDER = True
# SQLite loads of at least BULK_ROWS fill the R*Tree in Hilbert order with its trigger dropped (1 M rows: 16 s
# instead of 32-41 s through the trigger), with this page cache, restored afterwards (2.5 M: 53 s, not 63 s).
BULK_ROWS = 20_000
# ``query_page(sample=True)`` reads the boxes of at most this many matches to choose its spread sample from
# (a few ms per 10k rows); beyond it, the sample is drawn from the first SAMPLE_SCAN the spatial index yields.
SAMPLE_SCAN = 200_000
SAMPLE_GRID = 16  # the sample is spread over SAMPLE_GRID² cells of the viewport
BULK_CACHE_KIB = 256 * 1024
EDITABLE = ("label", "status", "attributes", "geometry", "bbox", "score", "mask")
COLUMNS = (
    "id, image_key, kind, label, x0, y0, x1, y1, geometry, mask, score, source, status, attributes, "
    "version, deleted, created_by, created_at, updated_at"
)
# binary COPY types of COLUMNS: varchar and json columns take text
COPY_TYPES = ["int8", "int4", "text", "text", "float8", "float8", "float8", "float8", "bytea", "text", "float8"]
COPY_TYPES += ["text", "text", "text", "int4", "bool", "text", "timestamptz", "timestamptz"]


def image_key(image_id: str) -> ScalarSelect[int]:
    """The small integer key of ``image_id``'s annotations (``annotation_images``), as a SQL scalar subquery.

    For WHERE clauses: ``AnnotationRow.image_key == image_key(image_id)`` selects the image's annotations
    through the ``image_key`` index (none for an image that never had any).
    """
    return select(AnnotationImageRow.image_key).where(AnnotationImageRow.image_id == image_id).scalar_subquery()


def _hilbert_order(x: np.ndarray, y: np.ndarray, bits: int = 16) -> np.ndarray:
    """Indices that sort points along a Hilbert curve over their bounding box (neighbours stay close)."""
    side = (1 << bits) - 1
    span = max(float(np.ptp(x)) if len(x) else 0.0, float(np.ptp(y)) if len(y) else 0.0) or 1.0
    xi = ((x - x.min()) * (side / span)).astype(np.int64) if len(x) else x.astype(np.int64)
    yi = ((y - y.min()) * (side / span)).astype(np.int64) if len(y) else y.astype(np.int64)
    d = np.zeros(len(x), dtype=np.int64)
    s = 1 << (bits - 1)
    while s > 0:
        rx = (xi & s) > 0
        ry = (yi & s) > 0
        d += s * s * ((3 * rx.astype(np.int64)) ^ ry.astype(np.int64))
        flip = ~ry & rx
        xi = np.where(flip, s - 1 - xi, xi)
        yi = np.where(flip, s - 1 - yi, yi)
        xi, yi = np.where(~ry, yi, xi), np.where(~ry, xi, yi)
        s >>= 1
    return np.argsort(d, kind="stable")


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cycle collector while building thousands of small acyclic objects (records, GeoJSON tuples).

    Otherwise every ~700 new tuples trigger a collection that promotes the half-built result, and the
    full collections that follow scan every object of the process: 3× the p95 of a 1024² viewport at 5 M
    polygons (measured). Objects freed by reference counting before the next collection cost it nothing.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _spatial_order(ann: Annotations, *, with_tags: bool = True) -> np.ndarray:
    """Row indices with the boxes in Hilbert order of their centres (then the tags, when asked for)."""
    tag = ann.kind == "tag"
    spatial = np.flatnonzero(~tag)
    b = ann.xyxy[spatial]
    order = spatial[_hilbert_order(b[:, 0] + b[:, 2], b[:, 1] + b[:, 3])]
    return np.concatenate([order, np.flatnonzero(tag)]) if with_tags else order


def _objects(values: Sequence[Any]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        out[i] = v
    return out


class QueryOptions(TypedDict, total=False):
    labels: Sequence[str]
    sources: Sequence[str]
    statuses: Sequence[str]
    limit: int
    simplify: float


@dataclass(frozen=True, slots=True)
class Viewport:
    """A level-0 query window ``[x0, x1] × [y0, y1]`` (inclusive overlap)."""

    x0: float
    y0: float
    x1: float
    y1: float

    def __post_init__(self) -> None:
        values = (self.x0, self.y0, self.x1, self.y1)
        if not all(math.isfinite(v) for v in values) or self.x1 < self.x0 or self.y1 < self.y0:
            raise InvalidInput(f"viewport must be finite with x1 >= x0 and y1 >= y0, got {values}")

    @classmethod
    def parse(cls, text_value: str) -> Viewport:
        """``"x0,y0,x1,y1"`` as used by the REST API and CLI."""
        try:
            parts = [float(v) for v in text_value.split(",")]
        except ValueError:
            raise InvalidInput(f"bbox {text_value!r} must be four numbers x0,y0,x1,y1") from None
        if len(parts) != 4:
            raise InvalidInput(f"bbox {text_value!r} must be four numbers x0,y0,x1,y1")
        return cls(*parts)


@dataclass(frozen=True, slots=True)
class RecordPage:
    """One page of ``query_page``: records in id order, how many match in all, and where the next page starts.

    ``total`` is None when it was not asked for (counting a viewport of millions costs more than the page).
    ``next_cursor`` is None on the last page; pass it back as ``cursor`` for the next one.
    ``label_counts`` (asked for with ``counts``): how many match per label, every label (see ``query_page``).
    """

    items: list[dict[str, Any]]
    total: int | None
    truncated: bool
    next_cursor: str | None
    label_counts: dict[str, int] | None = None


@dataclass(frozen=True, slots=True)
class _Scope:
    """What one ``query_page`` matches: an image, a viewport, the filters and the ids left out."""

    image_id: str
    viewport: Viewport | None
    labels: tuple[str, ...]
    exclude_labels: tuple[str, ...]
    sources: tuple[str, ...]
    statuses: tuple[str, ...]
    exclude: frozenset[int]

    @property
    def label_filtered(self) -> bool:
        return bool(self.labels or self.exclude_labels)

    def wants(self, label: str) -> bool:
        """Whether the label filters keep ``label``."""
        return (not self.labels or label in self.labels) and label not in self.exclude_labels

    def total_of(self, label_counts: dict[str, int]) -> int:
        """The matches of the label filters too, from the counts of every label."""
        return sum(n for label, n in label_counts.items() if self.wants(label))


def parse_cursor(cursor: str | None) -> int | None:
    """The annotation id a page cursor (``RecordPage.next_cursor``) continues after; None for the first page."""
    if cursor is None or cursor == "":
        return None
    if not cursor.isascii() or not cursor.isdigit() or len(cursor) > 19:
        raise InvalidInput(f"cursor {cursor[:40]!r} is not one a previous page returned (next_cursor)")
    return int(cursor)


def _record(row: AnnotationRow) -> dict[str, Any]:
    """The JSON snapshot of a row kept in events (and returned by history)."""
    import shapely

    geom = shapely.from_wkb(row.geometry) if row.geometry is not None else None  # WKB through StoredGeometry
    return {
        "id": row.id,
        "kind": row.kind,
        "label": row.label,
        "bbox": None if row.x0 is None else [row.x0, row.y0, row.x1, row.y1],
        "geometry": shapely.geometry.mapping(geom) if geom is not None else None,
        "mask": row.mask,
        "score": row.score,
        "source": row.source,
        "status": row.status,
        "attributes": row.attributes or {},
        "version": row.version,
    }


def _record_event(
    s: Session, row: AnnotationRow, action: str, actor: str, before: dict[str, Any], after: dict[str, Any] | None
) -> None:
    """Append to the audit trail, in the caller's transaction, stamped with the row's new version and time."""
    s.add(
        AnnotationEventRow(
            annotation_id=row.id,
            image_id=row.image_id,
            action=action,
            actor=actor,
            at=row.updated_at,
            version=row.version,
            before=before,
            after=after,
        )
    )


class AnnotationStore:
    """Annotations of a workspace's images in its database (SQLite R*Tree or PostgreSQL GiST)."""

    def __init__(self, engine: Engine, session: sessionmaker[Session]) -> None:
        self.engine = engine
        self.session = session
        self.sqlite = engine.dialect.name == "sqlite"
        self.labels = LabelSchema(session)  # the schema annotations are checked against (``ws.labels``)

    # -- writes ----------------------------------------------------------------------------------------------
    def add(self, image_id: str, ann: Annotations, actor: str) -> list[int]:
        """Insert all rows in one transaction (all or nothing); returns their new ids, in order.

        Ids ascend in the order of ``ann``. Rows are built column-wise per chunk of ``CHUNK`` (geometry
        encoded in bulk) and streamed in bounded memory: ``executemany`` on SQLite, where the ids follow the
        largest one (this transaction holds the write lock) and the R*Tree is filled directly in Hilbert
        order of the boxes while its per-row insert trigger is dropped, then recreated, inside the same
        transaction; binary ``COPY`` on PostgreSQL, with the ids drawn from the sequence first. Creation
        is recorded on the row itself (``created_by``, ``created_at``, version 1) rather than as an event
        row, and the first update's event keeps the created state as ``before``: nothing is lost, and a
        bulk load does not write every annotation twice. After large loads the planner statistics are
        refreshed.
        """
        problems = self.labels.check(ann)
        if problems:
            more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
            raise InvalidInput("; ".join(problems[:5]) + more)
        if not len(ann):
            return []
        now = utcnow()
        with self.session.begin() as s:
            conn = s.connection()
            key = self._claim_key(conn, image_id)
            if self.sqlite:
                ids = self._add_sqlite(conn, key, ann, actor, now)
            else:
                ids = self._add_postgresql(conn, key, ann, actor, now)
        if len(ids) >= ANALYZE_AFTER:
            with self.engine.begin() as c:
                if self.sqlite:
                    c.exec_driver_sql("PRAGMA analysis_limit = 1000")  # bounded: samples, never a full scan
                    c.exec_driver_sql("PRAGMA optimize")
                else:
                    c.exec_driver_sql("ANALYZE annotations")
        return ids

    def _claim_key(self, conn: Connection, image_id: str) -> int:
        """The image's ``annotation_images`` key, created on its first annotations (in this transaction).

        On SQLite this INSERT is the transaction's first statement on purpose: it takes the write lock, so
        the ids chosen next cannot be taken by another writer.
        """
        a = AnnotationImageRow
        if self.sqlite:
            conn.execute(text("INSERT OR IGNORE INTO annotation_images (image_id) VALUES (:i)"), {"i": image_id})
        elif conn.scalar(select(a.image_key).where(a.image_id == image_id)) is None:
            conn.execute(
                text("INSERT INTO annotation_images (image_id) VALUES (:i) ON CONFLICT (image_id) DO NOTHING"),
                {"i": image_id},
            )
        key = conn.scalar(select(a.image_key).where(a.image_id == image_id))
        if key is None:  # unreachable: the foreign key to images refuses an unknown image before this
            raise NotFound(f"no image with id {image_id!r}")
        return int(key)

    @staticmethod
    def _rows(
        ids: np.ndarray, key: int, ann: Annotations, part: slice | np.ndarray, actor: str, now: Any
    ) -> Iterator[tuple[Any, ...]]:
        """Rows ``part`` (a slice or indices) of ``ann`` as tuples in ``COLUMNS`` order, built column-wise."""
        n = len(ids[part])
        kind = ann.kind[part]
        xyxy = ann.xyxy[part]
        if (kind == "tag").any():
            box: Any = xyxy.astype(object)
            box[kind == "tag"] = None
        else:
            box = xyxy
        score = ann.score[part]
        nan = np.isnan(score)
        scores: Any = repeat(None)
        if not nan.all():
            scores = [None if m else v for m, v in zip(nan.tolist(), score.tolist(), strict=True)]
        dumps = json.dumps
        masks = [None if m is None else dumps(m) for m in ann.mask[part]]
        attributes = [dumps(a) if a else None for a in ann.attributes[part]]
        return zip(  # the repeat() columns are endless: zip stops with the lists
            ids[part].tolist(),
            repeat(key, n),
            kind.tolist(),
            ann.label[part].tolist(),
            box[:, 0].tolist(),
            box[:, 1].tolist(),
            box[:, 2].tolist(),
            box[:, 3].tolist(),
            geometry_codec.encode(ann.geometry[part]),
            masks,
            scores,
            ann.source[part].tolist(),
            ann.status[part].tolist(),
            attributes,
            repeat(1),
            repeat(False),
            repeat(actor),
            repeat(now),
            repeat(now),
        )

    def _add_sqlite(self, conn: Connection, key: int, ann: Annotations, actor: str, now: datetime) -> list[int]:
        raw = conn.connection.driver_connection
        if raw is None or not raw.in_transaction:  # _claim_key's INSERT opened it and holds the write lock
            raise RuntimeError("bulk insert outside a write transaction")
        n = len(ann)
        base = int(conn.scalar(text("SELECT coalesce(max(id), 0) FROM annotations")) or 0)
        ids = np.arange(base + 1, base + 1 + n, dtype=np.int64)
        stamp = AnnotationRow.__table__.c.created_at.type.dialect_impl(conn.dialect).bind_processor(conn.dialect)
        stored_now = stamp(now) if stamp else now  # the very text SQLAlchemy would store
        trigger = conn.scalar(
            text("SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = 'annotations_rtree_insert'")
        )
        # Big loads fill the R*Tree themselves; small ones leave it to the trigger (dropping it changes the
        # schema, which makes every other connection re-read it).
        bulk = n >= BULK_ROWS and trigger is not None
        cur = raw.cursor()
        cache = cur.execute("PRAGMA cache_size").fetchone()[0] if bulk else None
        try:
            if bulk:
                cur.execute(f"PRAGMA cache_size = {-BULK_CACHE_KIB}")
                cur.execute("DROP TRIGGER annotations_rtree_insert")  # DDL is transactional: back on failure
            sql = f"INSERT INTO annotations ({COLUMNS}) VALUES ({', '.join('?' * 19)})"  # noqa: S608
            for start in range(0, n, CHUNK):
                cur.executemany(sql, self._rows(ids, key, ann, slice(start, start + CHUNK), actor, stored_now))
            order = _spatial_order(ann, with_tags=False) if bulk else np.zeros(0, dtype=np.int64)
            for start in range(0, len(order), CHUNK):
                sel = order[start : start + CHUNK]
                box = ann.xyxy[sel]
                cur.executemany(
                    "INSERT INTO annotations_rtree VALUES (?, ?, ?, ?, ?)",
                    zip(
                        ids[sel].tolist(),
                        box[:, 0].tolist(),
                        box[:, 2].tolist(),
                        box[:, 1].tolist(),
                        box[:, 3].tolist(),
                        strict=True,
                    ),
                )
            if bulk:
                cur.execute(trigger)
        finally:
            if cache is not None:
                cur.execute(f"PRAGMA cache_size = {int(cache)}")
            cur.close()
        return ids.tolist()

    def _add_postgresql(self, conn: Connection, key: int, ann: Annotations, actor: str, now: datetime) -> list[int]:
        raw = conn.connection.driver_connection
        if raw is None:
            raise RuntimeError("no database connection")
        n = len(ann)
        seq = conn.scalar(text("SELECT pg_get_serial_sequence('annotations', 'id')"))
        with raw.cursor(binary=True) as cur:  # ids as one int8[]: a quarter of the time of n rows
            cur.execute("SELECT array_agg(nextval(%s::regclass)) FROM generate_series(1, %s)", (seq, n))
            ids = np.sort(np.asarray(cur.fetchone()[0], dtype=np.int64))  # ascending, like the input order
        with raw.cursor() as cur, cur.copy(f"COPY annotations ({COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(COPY_TYPES)
            write = copy.write_row
            order = _spatial_order(ann) if PG_SPATIAL_ORDER else np.arange(n)
            for start in range(0, n, CHUNK):
                for row in self._rows(ids, key, ann, order[start : start + CHUNK], actor, now):
                    write(row)
        return cast(list[int], ids.tolist())

    def _locked(self, s: Session, annotation_id: int, version: int) -> AnnotationRow:
        row = s.get(AnnotationRow, annotation_id)
        if row is None or row.deleted:
            raise NotFound(f"no annotation with id {annotation_id}")
        if row.version != version:
            raise Conflict(
                f"annotation {annotation_id} is at version {row.version}, not {version}: someone else changed it; "
                "reload it and apply your edit again"
            )
        return row

    @staticmethod
    def _write(s: Session, row: AnnotationRow, version: int, values: dict[str, Any]) -> None:
        """``UPDATE … WHERE id = ? AND version = ? AND NOT deleted``, bumping the version; ``Conflict`` when
        no row matched, i.e. another writer changed or deleted it after ``_locked`` read it.

        ``_locked``'s check alone is not enough: on SQLite the read runs before the write transaction begins,
        and on PostgreSQL (read committed) another transaction may commit between the two statements; the
        condition on the UPDATE itself is what refuses the stale write (the row count says it did).
        """
        a = AnnotationRow
        done = s.execute(
            update(a)
            .where(and_(a.id == row.id, a.version == version, ~a.deleted))
            .values(**values, version=version + 1, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        if cast(CursorResult[Any], done).rowcount != 1:
            raise Conflict(
                f"annotation {row.id} changed while it was being edited: reload it and apply your edit again"
            )
        s.refresh(row)

    def update(
        self, annotation_id: int, version: int, changes: dict[str, Any], actor: str, *, canvas: Canvas | None = None
    ) -> dict[str, Any]:
        """Apply ``changes`` if the annotation is still at ``version``; returns the new record.

        With a ``canvas`` (REST: the image's size and limits), changes to the shape (geometry, bbox, mask) are
        checked as a new annotation's are (``shape_problem``); a label or status change leaves the stored shape
        as it is.
        """
        unknown = sorted(set(changes) - set(EDITABLE))
        if unknown:
            raise InvalidInput(f"cannot change {unknown}; editable fields: {', '.join(EDITABLE)}")
        if "status" in changes and changes["status"] not in STATUSES:
            raise InvalidInput(f"status must be one of {', '.join(STATUSES)}")
        with self.session.begin() as s:
            row = self._locked(s, annotation_id, version)
            before = _record(row)
            merged = {**before, **changes}
            if "geometry" in changes and "bbox" not in changes:
                merged["bbox"] = None  # recomputed from the new geometry
            # validate the edited annotation with the same rules as a new one
            reshaped = canvas is not None and not {"geometry", "bbox", "mask"}.isdisjoint(changes)
            ann = Annotations.from_records([merged], canvas=canvas if reshaped else None)
            problems = self.labels.check(ann)
            if problems:
                raise InvalidInput("; ".join(problems))
            values: dict[str, Any] = {
                "label": str(ann.label[0]),
                "status": str(ann.status[0]),
                "attributes": dict(ann.attributes[0]) or None,
                "mask": ann.mask[0],
                "score": None if math.isnan(float(ann.score[0])) else float(ann.score[0]),
                "geometry": geometry_codec.encode(ann.geometry[:1])[0],
            }
            if ann.kind[0] != "tag":
                values.update(zip(("x0", "y0", "x1", "y1"), (float(v) for v in ann.xyxy[0]), strict=True))
            self._write(s, row, version, values)
            after = _record(row)
            _record_event(s, row, "update", actor, before, after)
        return after

    def delete(self, annotation_id: int, version: int, actor: str) -> None:
        """Mark deleted (kept for the history); stale versions raise ``Conflict``."""
        with self.session.begin() as s:
            row = self._locked(s, annotation_id, version)
            before = _record(row)
            self._write(s, row, version, {"deleted": True})
            _record_event(s, row, "delete", actor, before, None)

    # -- reads -----------------------------------------------------------------------------------------------
    def query(self, image_id: str, viewport: Viewport | None = None, **options: Unpack[QueryOptions]) -> Annotations:
        """Annotations of ``image_id`` overlapping ``viewport`` (all when None), newest edits included.

        Options: ``labels``, ``sources``, ``statuses`` (filters), ``limit``, and ``simplify`` (level-0 px
        tolerance that simplifies polygons for low zoom levels, topology kept).
        """
        _check_limit(options.get("limit", 10_000))
        rows = self._select(
            image_id,
            viewport,
            labels=options.get("labels", ()),
            sources=options.get("sources", ()),
            statuses=options.get("statuses", ()),
            limit=options.get("limit", 10_000),
        )
        if not rows:
            return Annotations.empty()
        with _gc_paused():
            geometry = self._geometries(rows, options.get("simplify", 0.0))
            cols = list(zip(*rows, strict=True))
            (ids, kind, label, x0, y0, x1, y1, _, mask, score, source, status, attributes, _) = cols
            xyxy = np.array([x0, y0, x1, y1], dtype=np.float64).T  # NULL (tags) becomes NaN
            return Annotations(
                kind=_objects(kind),
                label=_objects(label),
                xyxy=xyxy,
                geometry=geometry,
                mask=_objects(mask),
                score=np.array(score, dtype=np.float64),  # NULL becomes NaN
                source=_objects([v or "unknown" for v in source]),
                status=_objects([v or "proposed" for v in status]),
                attributes=_objects([v or {} for v in attributes]),
                id=np.array(ids, dtype=np.int64),
            )

    def query_records(
        self,
        image_id: str,
        viewport: Viewport | None = None,
        *,
        labels: Sequence[str] = (),
        sources: Sequence[str] = (),
        statuses: Sequence[str] = (),
        limit: int = 10_000,
        simplify: float = 0.0,
    ) -> list[dict[str, Any]]:
        """As ``query``, as JSON records that also carry each annotation's ``version`` (needed to edit it).

        Stops silently at ``limit``: use ``query_page`` to know whether there were more.
        """
        page = self.query_page(
            image_id,
            viewport,
            labels=labels,
            sources=sources,
            statuses=statuses,
            limit=limit,
            simplify=simplify,
            with_total=False,
        )
        return page.items

    def query_page(
        self,
        image_id: str,
        viewport: Viewport | None = None,
        *,
        labels: Sequence[str] = (),
        sources: Sequence[str] = (),
        statuses: Sequence[str] = (),
        limit: int = 10_000,
        cursor: str | None = None,
        simplify: float = 0.0,
        with_total: bool = True,
        sample: bool = False,
        counts: bool = False,
        exclude: Collection[int] = (),
        exclude_labels: Sequence[str] = (),
    ) -> RecordPage:
        """``query_records`` one page at a time: up to ``limit`` records after ``cursor`` (keyset on the id, so
        pages neither skip nor repeat rows while others add annotations), whether more follow, and (unless
        ``with_total`` is False) how many match in all.

        ``sample``: when more than ``limit`` match, a viewer's page instead of the first by id: every label
        keeps its fair share and each label's share is spread over the viewport (``spread_sample``), so no
        class vanishes when zoomed out. ``truncated`` then says some were left out, ``total`` is always
        given, and there is no next page.

        ``exclude_labels``: every label but these. ``counts``: ``label_counts``, how many match per label, of
        every label: the label filters narrow the records and ``total``, not the counts (a viewer's legend
        counts the classes it hides too).
        Free with ``sample`` up to ``SAMPLE_SCAN`` matches (the sample reads their labels anyway), one
        ``GROUP BY`` otherwise. ``sources``: names, globs and ``!`` exclusions (``SourceFilter``).
        ``exclude``: ids left out as if they were not there (from records, totals and counts alike)."""
        after = parse_cursor(cursor)
        _check_limit(limit)
        scope = _Scope(
            image_id,
            viewport,
            tuple(labels),
            tuple(exclude_labels),
            tuple(sources),
            tuple(statuses),
            frozenset(exclude),
        )
        if sample:
            if after is not None:
                raise InvalidInput("sample and cursor cannot be combined: a sample has no next page")
            return self._sample_page(scope, limit, simplify, counts)
        rows = self._select(
            image_id,
            viewport,
            labels=labels,
            sources=sources,
            statuses=statuses,
            limit=limit + 1,
            after=after,
            exclude=scope.exclude,
            exclude_labels=scope.exclude_labels,
        )
        truncated = len(rows) > limit
        rows = rows[:limit]
        with self.session() as s:
            label_counts = self._label_counts(s.connection(), scope) if counts else None
            if not with_total:
                total = None
            elif after is None and not truncated:
                total = len(rows)  # the whole answer is on this page
            elif label_counts is not None:
                total = scope.total_of(label_counts)
            else:
                stmt = select(func.count()).select_from(AnnotationRow).where(*self._scope_where(scope))
                total = int(s.connection().scalar(stmt) or 0)
        next_cursor = str(rows[-1][0]) if truncated else None
        return RecordPage(self._records(rows, simplify), total, truncated, next_cursor, label_counts)

    def _sample_page(self, scope: _Scope, limit: int, simplify: float, counts: bool) -> RecordPage:
        """``query_page(sample=True)``: the boxes of the matches first (cheap columns), then the chosen rows.

        With ``counts`` the boxes are read for every label (their labels are the counts), then narrowed to
        the scope's labels; past ``SAMPLE_SCAN`` matches the counts are a ``GROUP BY`` and the boxes are read
        again with the label filters, so that the sample is drawn from the labels asked for."""
        a = AnnotationRow
        columns = (a.id, a.label, a.x0, a.y0, a.x1, a.y1)
        label_counts: dict[str, int] | None = None
        with self.session() as s:
            conn = s.connection()

            def scan(every_label: bool) -> list[Any]:
                where = self._scope_where(scope, every_label=every_label)
                return list(conn.execute(select(*columns).where(*where).limit(SAMPLE_SCAN)).all())

            boxes = scan(every_label=counts)
            if counts and len(boxes) < SAMPLE_SCAN:
                label_counts = dict(Counter(str(b[1]) for b in boxes))
                if scope.label_filtered:
                    boxes = [b for b in boxes if scope.wants(str(b[1]))]
            elif counts:
                label_counts = self._label_counts(conn, scope)
                if scope.label_filtered:
                    boxes = scan(every_label=False)
            if label_counts is not None:
                total = scope.total_of(label_counts)
            elif len(boxes) >= SAMPLE_SCAN:
                total = int(conn.scalar(select(func.count()).select_from(a).where(*self._scope_where(scope))) or 0)
            else:
                total = len(boxes)
        if len(boxes) <= limit:
            chosen = [int(b[0]) for b in boxes]
        else:
            ids = np.array([b[0] for b in boxes], dtype=np.int64)
            xyxy = np.array([b[2:] for b in boxes], dtype=np.float64).reshape(-1, 4)  # tags: NaN
            v = scope.viewport
            area = None if v is None else (v.x0, v.y0, v.x1, v.y1)
            picked = spread_sample(ids, _objects([b[1] for b in boxes]), xyxy, limit, area)
            chosen = sorted(int(i) for i in ids[picked])
        rows: list[tuple[Any, ...]] = []
        for start in range(0, len(chosen), CHUNK):
            part = chosen[start : start + CHUNK]
            rows += self._select(scope.image_id, None, limit=len(part), ids=part)
        rows.sort(key=lambda r: int(r[0]))
        return RecordPage(self._records(rows, simplify), total, total > len(rows), None, label_counts)

    def _scope_where(self, scope: _Scope, *, every_label: bool = False) -> list[Any]:
        """``_where`` of a query's scope; ``every_label``: without its label filters (for the counts)."""
        return self._where(
            scope.image_id,
            scope.viewport,
            labels=() if every_label else scope.labels,
            sources=scope.sources,
            statuses=scope.statuses,
            exclude=scope.exclude,
            exclude_labels=() if every_label else scope.exclude_labels,
        )

    def _label_counts(self, conn: Connection, scope: _Scope) -> dict[str, int]:
        """Matches per label, every label (one GROUP BY over the spatial query)."""
        a = AnnotationRow
        stmt = select(a.label, func.count()).where(*self._scope_where(scope, every_label=True)).group_by(a.label)
        return {str(label): int(n) for label, n in conn.execute(stmt).all()}

    def _records(self, rows: list[tuple[Any, ...]], simplify: float) -> list[dict[str, Any]]:
        """JSON records of ``_select`` rows; polygons simplified by ``simplify`` px when > 0."""
        import shapely

        with _gc_paused():
            if simplify > 0:
                mapping = shapely.geometry.mapping
                geojson = [None if g is None else mapping(g) for g in self._geometries(rows, simplify)]
            else:
                geojson = geometry_codec.decode_geojson([r[7] for r in rows])
            return [
                {
                    "id": id_,
                    "kind": kind,
                    "label": label,
                    "bbox": None if x0 is None else [x0, y0, x1, y1],
                    "geometry": g,
                    "mask": mask,
                    "score": score,
                    "source": source,
                    "status": status,
                    "attributes": attributes or {},
                    "version": version,
                }
                for (id_, kind, label, x0, y0, x1, y1, _, mask, score, source, status, attributes, version), g in zip(
                    rows, geojson, strict=True
                )
            ]

    def _select(
        self,
        image_id: str,
        viewport: Viewport | None,
        *,
        labels: Sequence[str] = (),
        sources: Sequence[str] = (),
        statuses: Sequence[str] = (),
        limit: int = 10_000,
        after: int | None = None,
        ids: Sequence[int] = (),
        exclude: Collection[int] = (),
        exclude_labels: Sequence[str] = (),
    ) -> list[tuple[Any, ...]]:
        """The matching rows (stored geometry bytes, not WKB), in id order; ``after``: only ids above it;
        ``ids``: only these.

        ``limit`` is checked by the public callers (``query_page`` asks for one row more than its limit).
        """
        a = AnnotationRow
        columns = [getattr(a, c) for c in ("id", "kind", "label", "x0", "y0", "x1", "y1")]
        columns += [type_coerce(a.geometry, LargeBinary).label("geometry")]
        columns += [getattr(a, c) for c in ("mask", "score", "source", "status", "attributes", "version")]
        stmt = select(*columns).where(
            *self._where(
                image_id,
                viewport,
                labels=labels,
                sources=sources,
                statuses=statuses,
                exclude=exclude,
                exclude_labels=exclude_labels,
            )
        )
        if after is not None:
            stmt = stmt.where(a.id > after)
        if ids:
            stmt = stmt.where(a.id.in_(list(ids)))
        # through the session factory, not the engine: a caller that binds the store to its own transaction
        # (quality control does) must read the rows it has just written
        with self.session() as s:
            return cast(list[tuple[Any, ...]], s.connection().execute(stmt.order_by(a.id).limit(limit)).all())

    def _where(
        self,
        image_id: str,
        viewport: Viewport | None,
        *,
        labels: Sequence[str] = (),
        sources: Sequence[str] = (),
        statuses: Sequence[str] = (),
        exclude: Collection[int] = (),
        exclude_labels: Sequence[str] = (),
    ) -> list[Any]:
        """WHERE clauses of a query: the viewport's (spatial index), the label/source/status filters (sources:
        names, globs, ``!`` exclusions) and the ids and labels to leave out."""
        a = AnnotationRow
        clauses = self._viewport_filter(image_id, viewport)
        if labels:
            clauses.append(a.label.in_(list(labels)))
        if sources:
            clauses += SourceFilter.parse(sources).clauses(a.source, sqlite=self.sqlite)
        if statuses:
            clauses.append(a.status.in_(list(statuses)))
        if exclude:
            clauses.append(a.id.not_in(sorted(exclude)))
        if exclude_labels:
            clauses.append(a.label.not_in(list(exclude_labels)))
        return clauses

    @staticmethod
    def _geometries(rows: list[tuple[Any, ...]], simplify: float) -> np.ndarray:
        """Shapely geometries of ``rows``; polygons simplified by ``simplify`` px (topology kept) when > 0."""
        import shapely

        geoms = geometry_codec.decode([r[7] for r in rows])
        if simplify > 0:
            polygons = np.array([r[1] == "polygon" and r[7] is not None for r in rows], dtype=bool)
            if polygons.any():
                geoms[polygons] = shapely.simplify(geoms[polygons], simplify, preserve_topology=True)
        return geoms

    def _viewport_filter(self, image_id: str, viewport: Viewport | None) -> list[Any]:
        """WHERE clauses: live annotations of ``image_id`` overlapping ``viewport``, through the spatial index."""
        a = AnnotationRow
        key = image_key(image_id)
        clauses: list[Any] = [~a.deleted]  # NOT deleted: matches the partial GiST index
        if viewport is None:
            return [a.image_key == key, *clauses]
        v = viewport
        if self.sqlite:
            # "+ 0" keeps SQLite from walking the image_key index over every row of the image: the R*Tree
            # subquery drives the plan instead.
            clauses.append((a.image_key + 0) == key)
            hits = text(
                "SELECT id FROM annotations_rtree WHERE x0 <= :qx1 AND x1 >= :qx0 AND y0 <= :qy1 AND y1 >= :qy0"
            ).bindparams(qx0=v.x0, qy0=v.y0, qx1=v.x1, qy1=v.y1)
            clauses.append(a.id.in_(hits.columns(a.id)))
        else:
            query_box = func.box(func.point(v.x0, v.y0), func.point(v.x1, v.y1))
            row_box = func.box(func.point(a.x0, a.y0), func.point(a.x1, a.y1))
            clauses += [a.image_key == key, a.x0.is_not(None), row_box.op("&&")(query_box)]
        # exact test: the R*Tree stores float32 bounds rounded outwards
        clauses += [a.x0 <= v.x1, a.x1 >= v.x0, a.y0 <= v.y1, a.y1 >= v.y0]
        return clauses

    def count_in(self, image_id: str, viewport: Viewport) -> int:
        """How many annotations of ``image_id`` overlap ``viewport`` (through the spatial index only)."""
        stmt = select(func.count()).select_from(AnnotationRow).where(*self._viewport_filter(image_id, viewport))
        with self.session() as s:
            return int(s.connection().scalar(stmt) or 0)

    def count(self, image_id: str) -> int:
        stmt = select(func.count()).select_from(AnnotationRow).where(*self._viewport_filter(image_id, None))
        with self.session() as s:
            return int(s.connection().scalar(stmt) or 0)

    def image_of(self, annotation_id: int) -> str:
        """The id of the image a live annotation belongs to (``NotFound`` when missing or deleted)."""
        a = AnnotationRow
        with self.session() as s:
            found = s.execute(select(a.image_id).where(a.id == annotation_id, ~a.deleted)).scalar()
        if found is None:
            raise NotFound(f"no annotation with id {annotation_id}")
        return str(found)

    def get_record(self, annotation_id: int) -> dict[str, Any]:
        """One live annotation as a record with its version (``NotFound`` when missing or deleted)."""
        with self.session() as s:
            row = s.get(AnnotationRow, annotation_id)
            if row is None or row.deleted:
                raise NotFound(f"no annotation with id {annotation_id}")
            return _record(row)

    def history(self, annotation_id: int) -> list[dict[str, Any]]:
        """Creation (from the row), then every update and deletion event, oldest first."""
        with self.session() as s:
            row = s.get(AnnotationRow, annotation_id)
            if row is None:
                raise NotFound(f"no annotation with id {annotation_id}")
            events = s.scalars(
                select(AnnotationEventRow)
                .where(AnnotationEventRow.annotation_id == annotation_id)
                .order_by(AnnotationEventRow.id)
            ).all()
        created = {
            "action": "create",
            "actor": row.created_by,
            "at": row.created_at.isoformat(),
            "version": 1,
            "before": None,
            "after": None,
        }
        return [created] + [
            {
                "action": e.action,
                "actor": e.actor,
                "at": e.at.isoformat(),
                "version": e.version,
                "before": e.before,
                "after": e.after,
            }
            for e in events
        ]


def fair_shares(counts: np.ndarray, limit: int) -> np.ndarray:
    """How many of each group a sample of ``limit`` keeps: max-min fair, so a small group is kept whole and
    what it does not use is shared by the others (40 mitoses next to 20,000 nuclei all stay)."""
    shares = np.zeros(len(counts), dtype=np.int64)
    left = int(limit)
    for i, j in enumerate(np.argsort(counts, kind="stable")):
        shares[j] = min(int(counts[j]), left // (len(counts) - i))
        left -= int(shares[j])
    return shares


def spread_sample(
    ids: np.ndarray,
    labels: np.ndarray,
    xyxy: np.ndarray,
    limit: int,
    area: tuple[float, float, float, float] | None = None,
    grid: int = SAMPLE_GRID,
) -> np.ndarray:
    """Indices of at most ``limit`` annotations to draw when more are in view: stratified by label
    (``fair_shares``), and within a label spread over a ``grid`` × ``grid`` partition of ``area`` (default:
    the boxes' extent) by taking each cell's first, then each cell's second, ... so sparse regions show too.

    Within a cell the order is a hash of the id, not the id: the choice looks random yet stays the same from
    one pan to the next (a shape does not blink in and out while the view moves)."""
    n = len(ids)
    if n <= limit:
        return np.arange(n)
    centre_x = (xyxy[:, 0] + xyxy[:, 2]) / 2
    centre_y = (xyxy[:, 1] + xyxy[:, 3]) / 2
    finite = np.isfinite(centre_x) & np.isfinite(centre_y)
    if area is None and finite.any():
        xs, ys = centre_x[finite], centre_y[finite]
        area = (float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max()))
    elif area is None:
        area = (0.0, 0.0, 1.0, 1.0)
    x0, y0, x1, y1 = area
    width, height = max(x1 - x0, 1e-9), max(y1 - y0, 1e-9)
    gx = np.clip(np.nan_to_num((centre_x - x0) / width * grid), 0, grid - 1).astype(np.int64)
    gy = np.clip(np.nan_to_num((centre_y - y0) / height * grid), 0, grid - 1).astype(np.int64)
    _, group, counts = np.unique(labels.astype(str), return_inverse=True, return_counts=True)
    quota = fair_shares(counts, limit)
    cell = group * grid * grid + gy * grid + gx
    priority = (ids.astype(np.uint64) * np.uint64(2654435761)) % np.uint64(2**32)  # Knuth's multiplicative hash
    by_cell = np.lexsort((priority, cell))
    starts = np.flatnonzero(np.r_[True, np.diff(cell[by_cell]) != 0])
    rank = np.empty(n, dtype=np.int64)
    rank[by_cell] = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
    by_turn = np.lexsort((priority, rank, group))  # per label: every cell's first, then every cell's second...
    group_start = np.r_[0, np.cumsum(counts)[:-1]]
    position = np.arange(n) - group_start[group[by_turn]]
    return np.sort(by_turn[position < quota[group[by_turn]]])


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be 1..{MAX_LIMIT}, got {limit}")
