"""Annotation storage: bulk insert, viewport queries through the spatial index, versioned edits, history.

Every change is recorded in ``annotation_events`` (who, when, before, after) in the same transaction,
and an edit names the version it was based on: a stale edit raises ``Conflict`` (HTTP 409) instead of
overwriting someone else's work.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypedDict, Unpack

import numpy as np
from sqlalchemy import Engine, and_, func, insert, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from gigavision.annotations import KINDS, STATUSES, Annotations
from gigavision.errors import Conflict, InvalidInput, NotFound
from gigavision.store.schema import AnnotationEventRow, AnnotationRow, LabelClassRow, utcnow

CHUNK = 10_000
ANALYZE_AFTER = 50_000  # rows added at once after which query-planner statistics are refreshed
EDITABLE = ("label", "status", "attributes", "geometry", "bbox", "score", "mask")


def image_key(image_id: str) -> int:
    """The first 24 bits of the image id: a small integer index for "all annotations of this image"."""
    return int(image_id[:6], 16)


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


def _record(row: AnnotationRow) -> dict[str, Any]:
    """The JSON snapshot of a row kept in events (and returned by history)."""
    import shapely

    geom = shapely.from_wkb(row.geometry) if row.geometry is not None else None
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
        "attributes": row.attributes,
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

    # -- label schema -------------------------------------------------------------------------------------
    def set_class(
        self,
        name: str,
        kind: str,
        color: str = "#ff0000",
        parent: str | None = None,
        attributes: dict[str, list[str]] | None = None,
    ) -> None:
        """Add or replace a class of the label schema (attributes: name -> allowed values)."""
        if not name or len(name) > 256:
            raise InvalidInput("class name must be 1 to 256 characters")
        if kind not in KINDS:
            raise InvalidInput(f"class {name!r}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
        with self.session.begin() as s:
            if parent is not None and parent != name and s.get(LabelClassRow, parent) is None:
                raise InvalidInput(f"class {name!r}: parent {parent!r} is not in the schema")
            s.merge(LabelClassRow(name=name, kind=kind, color=color, parent=parent, attributes=attributes or {}))

    def classes(self) -> dict[str, LabelClassRow]:
        with self.session() as s:
            return {c.name: c for c in s.scalars(select(LabelClassRow))}

    def check_labels(self, ann: Annotations) -> list[str]:
        """Problems with labels and attribute values against the schema (empty schema: anything goes)."""
        classes = self.classes()
        if not classes:
            return []
        problems = []
        unknown = sorted(set(np.unique(ann.label).tolist()) - set(classes)) if len(ann) else []
        for label in unknown:
            first = int(np.nonzero(ann.label == label)[0][0])
            problems.append(f"annotation {first}: label {label!r} is not in the schema")
        for i in np.nonzero([bool(a) for a in ann.attributes])[0]:
            cls = classes.get(str(ann.label[i]))
            if cls is None:
                continue
            for key, value in ann.attributes[i].items():
                allowed = cls.attributes.get(key)
                if allowed is None:
                    problems.append(f"annotation {i}: class {cls.name!r} has no attribute {key!r}")
                elif allowed and value not in allowed:
                    problems.append(f"annotation {i}: {key}={value!r} is not one of {allowed}")
        return problems

    # -- writes ----------------------------------------------------------------------------------------------
    def add(self, image_id: str, ann: Annotations, actor: str) -> list[int]:
        """Insert all rows in one transaction (all or nothing); returns their new ids, in order.

        Chunked Core inserts (not ORM objects), so millions of rows stream in bounded memory. Creation is
        recorded on the row itself (``created_by``, ``created_at``, version 1) rather than as an event row,
        and the first update's event keeps the created state as ``before``: nothing is lost, and a bulk
        load does not write every annotation twice. After large loads the planner statistics are refreshed.
        """
        import shapely

        problems = self.check_labels(ann)
        if problems:
            more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
            raise InvalidInput("; ".join(problems[:5]) + more)
        now = utcnow()
        key = image_key(image_id)
        ids: list[int] = []
        insert_rows = insert(AnnotationRow).returning(AnnotationRow.id, sort_by_parameter_order=True)
        with self.session.begin() as s:
            for start in range(0, len(ann), CHUNK):
                part = ann[start : start + CHUNK]
                wkb = shapely.to_wkb(part.geometry.tolist()) if len(part) else []
                values = []
                for i in range(len(part)):
                    tag = part.kind[i] == "tag"
                    box = (None,) * 4 if tag else tuple(float(v) for v in part.xyxy[i])
                    score = float(part.score[i])
                    values.append(
                        {
                            "image_id": image_id,
                            "image_key": key,
                            "kind": str(part.kind[i]),
                            "label": str(part.label[i]),
                            "x0": box[0],
                            "y0": box[1],
                            "x1": box[2],
                            "y1": box[3],
                            "geometry": wkb[i],
                            "mask": part.mask[i],
                            "score": None if math.isnan(score) else score,
                            "source": str(part.source[i]),
                            "status": str(part.status[i]),
                            "attributes": part.attributes[i],
                            "version": 1,
                            "deleted": False,
                            "created_by": actor,
                            "created_at": now,
                            "updated_at": now,
                        }
                    )
                ids.extend(s.scalars(insert_rows, values))
        if len(ids) >= ANALYZE_AFTER:
            with self.engine.begin() as conn:
                conn.execute(text("PRAGMA optimize" if self.sqlite else "ANALYZE annotations"))
        return ids

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

    def update(self, annotation_id: int, version: int, changes: dict[str, Any], actor: str) -> dict[str, Any]:
        """Apply ``changes`` if the annotation is still at ``version``; returns the new record."""
        import shapely

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
            ann = Annotations.from_records([merged])
            problems = self.check_labels(ann)
            if problems:
                raise InvalidInput("; ".join(problems))
            values: dict[str, Any] = {
                "label": str(ann.label[0]),
                "status": str(ann.status[0]),
                "attributes": dict(ann.attributes[0]),
                "mask": ann.mask[0],
                "score": None if math.isnan(float(ann.score[0])) else float(ann.score[0]),
                "geometry": shapely.to_wkb(ann.geometry[0]) if ann.geometry[0] is not None else None,
                "version": row.version + 1,
                "updated_at": utcnow(),
            }
            if ann.kind[0] != "tag":
                values.update(zip(("x0", "y0", "x1", "y1"), (float(v) for v in ann.xyxy[0]), strict=True))
            done = s.execute(
                update(AnnotationRow)
                .where(and_(AnnotationRow.id == annotation_id, AnnotationRow.version == version))
                .values(**values)
            )
            if getattr(done, "rowcount", 1) != 1:  # changed between our read and our write
                raise Conflict(f"annotation {annotation_id} changed while it was being edited; reload it")
            s.refresh(row)
            after = _record(row)
            _record_event(s, row, "update", actor, before, after)
        return after

    def delete(self, annotation_id: int, version: int, actor: str) -> None:
        """Mark deleted (kept for the history); stale versions raise ``Conflict``."""
        with self.session.begin() as s:
            row = self._locked(s, annotation_id, version)
            before = _record(row)
            row.deleted, row.version, row.updated_at = True, row.version + 1, utcnow()
            _record_event(s, row, "delete", actor, before, None)

    # -- reads -----------------------------------------------------------------------------------------------
    def query(self, image_id: str, viewport: Viewport | None = None, **options: Unpack[QueryOptions]) -> Annotations:
        """Annotations of ``image_id`` overlapping ``viewport`` (all when None), newest edits included.

        Options: ``labels``, ``sources``, ``statuses`` (filters), ``limit``, and ``simplify`` (level-0 px
        tolerance that simplifies polygons for low zoom levels, topology kept).
        """
        return Annotations.from_records(self.query_records(image_id, viewport, **options))

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
        """As ``query``, as JSON records that also carry each annotation's ``version`` (needed to edit it)."""
        import shapely

        if not 1 <= limit <= 1_000_000:
            raise InvalidInput(f"limit must be 1..1000000, got {limit}")
        a = AnnotationRow
        stmt = select(a).where(*self._viewport_filter(image_id, viewport))
        if labels:
            stmt = stmt.where(a.label.in_(list(labels)))
        if sources:
            stmt = stmt.where(a.source.in_(list(sources)))
        if statuses:
            stmt = stmt.where(a.status.in_(list(statuses)))
        stmt = stmt.order_by(a.id).limit(limit)
        with self.session() as s:
            rows = list(s.scalars(stmt))
        records = []
        for r in rows:
            rec = _record(r)
            if simplify > 0 and r.geometry is not None and r.kind == "polygon":
                geom = shapely.from_wkb(r.geometry).simplify(simplify, preserve_topology=True)
                rec["geometry"] = shapely.geometry.mapping(geom)
            records.append(rec)
        return records

    def _viewport_filter(self, image_id: str, viewport: Viewport | None) -> list[Any]:
        """WHERE clauses: live annotations of ``image_id`` overlapping ``viewport``, through the spatial index."""
        a = AnnotationRow
        key = image_key(image_id)
        clauses: list[Any] = [a.image_id == image_id, ~a.deleted]  # NOT deleted: matches the partial GiST index
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
            clauses += [a.x0.is_not(None), row_box.op("&&")(query_box)]
        # exact test: the R*Tree stores float32 bounds rounded outwards
        clauses += [a.x0 <= v.x1, a.x1 >= v.x0, a.y0 <= v.y1, a.y1 >= v.y0]
        return clauses

    def count_in(self, image_id: str, viewport: Viewport) -> int:
        """How many annotations of ``image_id`` overlap ``viewport`` (through the spatial index only)."""
        a = AnnotationRow
        with self.session() as s:
            stmt = select(func.count()).select_from(a).where(*self._viewport_filter(image_id, viewport))
            return int(s.scalar(stmt) or 0)

    def count(self, image_id: str) -> int:
        with self.session() as s:
            n = s.scalar(select(func.count()).select_from(AnnotationRow).where(*self._viewport_filter(image_id, None)))
        return int(n or 0)

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
