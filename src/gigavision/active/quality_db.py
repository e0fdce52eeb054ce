"""Database helpers of multi-annotator QC (``gigavision.active.quality``): the item lock, filters, lookups
of assignments and linked annotations, chunked writes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from gigavision.active.quality_items import ITEM_STATUSES, item_region
from gigavision.annotations import KINDS, Annotations
from gigavision.errors import InvalidInput, NotFound
from gigavision.store.annotations import ANALYZE_AFTER, AnnotationStore, Viewport
from gigavision.store.schema import QcAssignmentRow, QcItemRow, QcLabelRow

ADD_CHUNK = min(10_000, ANALYZE_AFTER - 1)


def lock_item(s: Session, item_id: int) -> QcItemRow:
    """Bump the item's version as the transaction's first write: later writers to it wait for us."""
    done = s.execute(
        update(QcItemRow)
        .where(QcItemRow.id == item_id)
        .values(version=QcItemRow.version + 1)
        .execution_options(synchronize_session=False)
    )
    if getattr(done, "rowcount", 1) != 1:
        raise NotFound(f"no QC item with id {item_id}")
    item = s.get(QcItemRow, item_id, populate_existing=True)
    if item is None:
        raise NotFound(f"no QC item with id {item_id}")
    return item


def get_item(s: Session, item_id: int) -> QcItemRow:
    """The item, or ``NotFound``."""
    item = s.get(QcItemRow, item_id)
    if item is None:
        raise NotFound(f"no QC item with id {item_id}")
    return item


def item_filters(*, status: str | None = None, image_id: str | None = None, kind: str | None = None) -> list[Any]:
    """WHERE clauses on items, with the filter values checked."""
    if status is not None and status not in ITEM_STATUSES:
        raise InvalidInput(f"status must be one of {', '.join(ITEM_STATUSES)}, got {status!r}")
    if kind is not None and kind not in KINDS:
        raise InvalidInput(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    clauses: list[Any] = []
    if status is not None:
        clauses.append(QcItemRow.status == status)
    if image_id is not None:
        clauses.append(QcItemRow.image_id == image_id)
    if kind is not None:
        clauses.append(QcItemRow.kind == kind)
    return clauses


def assignments_of(s: Session, item_ids: Sequence[int]) -> dict[int, list[QcAssignmentRow]]:
    """Everyone on these items, per item, in assignment order."""
    out: dict[int, list[QcAssignmentRow]] = {}
    if not item_ids:
        return out
    rows = s.scalars(
        select(QcAssignmentRow).where(QcAssignmentRow.item_id.in_(list(item_ids))).order_by(QcAssignmentRow.id)
    )
    for a in rows:
        out.setdefault(a.item_id, []).append(a)
    return out


def open_load(s: Session, names: Sequence[str], role: str) -> dict[str, int]:
    """Unfinished assignments per person: open items for annotators, queued items for adjudicators."""
    busy = "open" if role == "annotator" else "adjudication"
    a = QcAssignmentRow
    rows = s.execute(
        select(a.annotator, func.count())
        .join(QcItemRow, QcItemRow.id == a.item_id)
        .where(a.annotator.in_(list(names)), a.role == role, a.status == "assigned", QcItemRow.status == busy)
        .group_by(a.annotator)
    )
    load = dict.fromkeys(names, 0)
    load.update({str(n): int(c) for n, c in rows})
    return load


def linked_ids(s: Session, item_id: int, role: str, annotator: str | None) -> list[int]:
    """Annotation ids of a submission (``annotator``) or of the consensus (``None``), ascending."""
    who = QcLabelRow.annotator.is_(None) if annotator is None else QcLabelRow.annotator == annotator
    stmt = select(QcLabelRow.annotation_id).where(QcLabelRow.item_id == item_id, QcLabelRow.role == role, who)
    return [int(i) for i in s.scalars(stmt.order_by(QcLabelRow.annotation_id))]


def records_by_id(
    store: AnnotationStore, item: QcItemRow, ids: Sequence[int], sources: Sequence[str]
) -> list[dict[str, Any]]:
    """The annotation records with these ids, looked up in the item's region (tags: on the image)."""
    if not ids:
        return []
    region = item_region(item)
    viewport = Viewport(*region) if region is not None and item.kind != "tag" else None
    wanted = set(ids)
    rows = store.query_records(item.image_id, viewport, sources=sources, limit=1_000_000)
    return [r for r in rows if r["id"] in wanted]


def not_assigned(s: Session, item_id: int, name: str, assignment: QcAssignmentRow | None) -> str:
    """Why ``name`` may not submit to the item, naming who may."""
    if assignment is not None:
        return f"{name} is the adjudicator of item {item_id}, not one of its annotators"
    names = s.scalars(
        select(QcAssignmentRow.annotator).where(QcAssignmentRow.item_id == item_id, QcAssignmentRow.role == "annotator")
    ).all()
    listed = ", ".join(names) if names else "nobody yet"
    return f"{name} is not assigned to item {item_id} (its annotators: {listed}); assign them first"


def add_annotations(store: AnnotationStore, image_id: str, ann: Annotations, actor: str) -> list[int]:
    """``store.add`` in parts small enough that it never refreshes planner statistics (which it does on
    another connection, and which would wait on this transaction's lock on SQLite)."""
    ids: list[int] = []
    for start in range(0, len(ann), ADD_CHUNK):
        ids.extend(store.add(image_id, ann[start : start + ADD_CHUNK], actor=actor))
    return ids


def set_verdict(s: Session, item_id: int, annotator: str, annotation_ids: Sequence[int], verdict: str) -> None:
    """Record accepted / rejected on these rows of an annotator's submission."""
    for start in range(0, len(annotation_ids), ADD_CHUNK):
        s.execute(
            update(QcLabelRow)
            .where(
                QcLabelRow.item_id == item_id,
                QcLabelRow.role == "submission",
                QcLabelRow.annotator == annotator,
                QcLabelRow.annotation_id.in_(list(annotation_ids[start : start + ADD_CHUNK])),
            )
            .values(verdict=verdict)
            .execution_options(synchronize_session=False)
        )
