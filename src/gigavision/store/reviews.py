"""Review tasks: what experts should look at, and their answers (issue 14).

A task points at an image (or a region of one) and, for a model's proposal or a suspected label, at that
annotation. Reasons: ``uncertain`` (the routing policy sent a prediction), ``audit`` (a random share of the
confident ones, so the auto-accept error rate is measured), ``selected`` (active learning picked it to be
labelled), ``suspect`` (label-error finding). Tasks are answered once; ``version`` makes a second answer a
``Conflict``.

This module owns the table; ``gigavision.active.routing`` (predictions → tasks), ``active.selection`` and
``active.label_errors`` create tasks through ``ReviewStore.add``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, func, insert, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from gigavision.annotations import Annotations, Canvas
from gigavision.errors import Conflict, InvalidInput, NotFound
from gigavision.store.annotations import ANALYZE_AFTER, AnnotationStore
from gigavision.store.schema import ReviewTaskRow, utcnow

REASONS = ("uncertain", "audit", "selected", "suspect")
STATUSES = ("open", "answered", "cancelled")
DECISIONS = ("accept", "correct", "reject", "labelled", "skip")
ADD_CHUNK = 5_000
#: decisions that need the task's proposal (``annotation_id``)
ON_PROPOSAL = ("accept", "correct", "reject")
#: what a correction may change; the rest of the proposal is kept
CORRECTABLE = ("kind", "label", "bbox", "geometry", "mask", "attributes")
LABEL_CHUNK = ANALYZE_AFTER - 1  # an add this small never refreshes statistics on another connection


@dataclass(frozen=True)
class NewTask:
    """One task to create. ``region``: level-0 ``(x0, y0, x1, y1)``, None for the whole image."""

    image_id: str
    reason: str
    region: tuple[float, float, float, float] | None = None
    annotation_id: int | None = None
    model_id: str | None = None
    label: str | None = None
    score: float | None = None
    uncertainty: float | None = None
    priority: float = 0.0
    details: dict[str, Any] | None = field(default=None)
    assignee: str | None = None

    def check(self) -> None:
        if self.reason not in REASONS:
            raise InvalidInput(f"review task reason {self.reason!r}: expected one of {', '.join(REASONS)}")
        if self.region is not None:
            x0, y0, x1, y1 = self.region
            if not (x1 > x0 and y1 > y0):
                raise InvalidInput(f"review task region {self.region} must have a positive size")


class ReviewStore:
    """The ``review_tasks`` table of one workspace (``Workspace.reviews``)."""

    def __init__(self, session: sessionmaker[Session]) -> None:
        self.session = session

    def add(self, tasks: Sequence[NewTask], *, actor: str, batch: str | None = None) -> int:
        """Create ``tasks`` (all or none); returns how many were created."""
        for task in tasks:
            task.check()
        now = utcnow()
        rows = [
            {
                "reason": t.reason,
                "status": "open",
                "image_id": t.image_id,
                "x0": t.region[0] if t.region else None,
                "y0": t.region[1] if t.region else None,
                "x1": t.region[2] if t.region else None,
                "y1": t.region[3] if t.region else None,
                "annotation_id": t.annotation_id,
                "model_id": t.model_id,
                "label": t.label,
                "score": t.score,
                "uncertainty": t.uncertainty,
                "priority": float(t.priority),
                "batch": batch,
                "details": t.details,
                "assignee": t.assignee,
                "created_by": actor,
                "created_at": now,
                "version": 1,
            }
            for t in tasks
        ]
        with self.session.begin() as s:
            for start in range(0, len(rows), ADD_CHUNK):
                s.execute(insert(ReviewTaskRow), rows[start : start + ADD_CHUNK])
        return len(rows)

    # -- reads -------------------------------------------------------------------------------------------------
    def get(self, task_id: int, *, viewer: str | None = None) -> dict[str, Any]:
        """One task as JSON (with its proposal's record); ``viewer``: 404 unless theirs or unassigned."""
        with self.session() as s:
            row = s.get(ReviewTaskRow, task_id)
            if row is None or (viewer is not None and row.assignee not in (None, viewer)):
                raise NotFound(f"no review task with id {task_id}")
            return self._json(s, row)

    def page(
        self, filters: TaskFilter | None = None, *, offset: int = 0, limit: int = 50
    ) -> tuple[list[dict[str, Any]], int]:
        """Tasks matching ``filters``, highest priority first (then oldest), one page; and how many in all."""
        if offset < 0 or not 1 <= limit <= 10_000:
            raise InvalidInput(f"offset must be ≥ 0 and limit 1..10000, got offset={offset}, limit={limit}")
        where = (filters or TaskFilter()).clauses()
        r = ReviewTaskRow
        with self.session() as s:
            total = int(s.scalar(select(func.count()).select_from(r).where(*where)) or 0)
            rows = s.scalars(select(r).where(*where).order_by(*ORDER).offset(offset).limit(limit)).all()
            return [self._json(s, row) for row in rows], total

    def next_task(
        self, filters: TaskFilter | None = None, *, after: int | None = None
    ) -> tuple[dict[str, Any] | None, int]:
        """The highest-priority open task matching ``filters`` (``after``: the one following that task in the
        same order, for skip / next), and how many open tasks match in all."""
        f = replace(filters or TaskFilter(), status="open")
        where = f.clauses()
        r = ReviewTaskRow
        with self.session() as s:
            remaining = int(s.scalar(select(func.count()).select_from(r).where(*where)) or 0)
            if after is not None:
                mark = s.get(r, after)
                if mark is None:
                    raise NotFound(f"after: no review task with id {after}")
                where = [*where, or_(r.priority < mark.priority, and_(r.priority == mark.priority, r.id > mark.id))]
            row = s.scalars(select(r).where(*where).order_by(*ORDER).limit(1)).first()
            return (self._json(s, row) if row is not None else None), remaining

    def counts(self, filters: TaskFilter | None = None) -> dict[str, Any]:
        """Open and answered tasks matching ``filters`` (their status ignored); open ones by reason and by
        label, answered ones by decision."""
        r = ReviewTaskRow
        where = replace(filters or TaskFilter(), status=None).clauses()
        with self.session() as s:
            by_status = dict(s.execute(select(r.status, func.count()).where(*where).group_by(r.status)).all())
            open_ = [*where, r.status == "open"]
            by_reason = dict(s.execute(select(r.reason, func.count()).where(*open_).group_by(r.reason)).all())
            by_label = dict(s.execute(select(r.label, func.count()).where(*open_).group_by(r.label)).all())
            answered = [*where, r.status == "answered"]
            by_decision = dict(s.execute(select(r.decision, func.count()).where(*answered).group_by(r.decision)).all())
        return {
            "open": int(by_status.get("open", 0)),
            "answered": int(by_status.get("answered", 0)),
            "by_reason": {str(k): int(v) for k, v in by_reason.items()},
            "by_label": {("" if k is None else str(k)): int(v) for k, v in by_label.items()},
            "by_decision": {str(k): int(v) for k, v in by_decision.items()},
        }

    # -- answers -----------------------------------------------------------------------------------------------
    def answer(
        self,
        task_id: int,
        decision: str,
        version: int,
        actor: str,
        *,
        annotation: Mapping[str, Any] | None = None,
        annotations: Sequence[Mapping[str, Any]] | None = None,
        note: str | None = None,
        canvas: Callable[[str], Canvas] | None = None,
        viewer: str | None = None,
    ) -> dict[str, Any]:
        """Answer an open task at ``version``; returns the answered task.

        One transaction: the task, the proposal's new status and the expert's label are all written or none.
        accept: the proposal becomes ``accepted`` and, when a model made it, a copy is stored as the expert's
        label (a person's label, as a suspect task shows, is confirmed without a copy); correct: the
        proposal ``rejected``, ``annotation`` (the proposal with the changed fields) stored as the label;
        reject: the proposal ``rejected``, no label; labelled: ``annotations`` stored (an empty list: nothing
        there to label); skip: nothing changes. Labels are ``user:<actor>``, ``accepted``, and link the task,
        prediction, model, score and uncertainty in their attributes. ``canvas(image_id)`` checks new shapes
        as REST writes are checked. A task already answered, or changed since ``version``, is a
        ``TaskConflict`` carrying the current task. ``viewer``: only a task of theirs or unassigned (404).
        """
        if decision not in DECISIONS:
            raise InvalidInput(f"decision {decision!r}: expected one of {', '.join(DECISIONS)}")
        if not actor or ":" in actor:
            raise InvalidInput(f"actor {actor!r}: a person's name (no ':') answers a task")
        with self.session.begin() as s:
            row = s.get(ReviewTaskRow, task_id)
            if row is None or (viewer is not None and row.assignee not in (None, viewer)):
                raise NotFound(f"no review task with id {task_id}")
            if row.status != "open" or row.version != version:
                raise self._conflict(s, row, version)
            if decision == "skip":
                return self._json(s, row)
            if decision in ON_PROPOSAL and row.annotation_id is None:
                raise InvalidInput(
                    f"task {task_id} ({row.reason}) has no proposal to {decision}: answer 'labelled' with the "
                    "annotations made, or 'skip'"
                )
            if decision == "correct" and annotation is None:
                raise InvalidInput("decision 'correct' needs 'annotation': the corrected proposal")
            if decision == "labelled" and annotations is None:
                raise InvalidInput("decision 'labelled' needs 'annotations' (an empty list: nothing to label there)")
            # the task first: a second answerer waits here, then finds no open row at this version
            done = s.execute(
                update(ReviewTaskRow)
                .where(ReviewTaskRow.id == task_id, ReviewTaskRow.version == version, ReviewTaskRow.status == "open")
                .values(version=version + 1)
                .execution_options(synchronize_session=False)
            )
            if getattr(done, "rowcount", 1) != 1:
                s.refresh(row)
                raise self._conflict(s, row, version)
            s.refresh(row)
            store = AnnotationStore(s.connection().engine, sessionmaker(bind=s.connection(), expire_on_commit=False))
            check = canvas(row.image_id) if canvas is not None else None
            ids = self._apply(store, row, decision, actor, annotation, annotations, check)
            row.status, row.decision, row.decided_by, row.decided_at = "answered", decision, actor, utcnow()
            row.result_annotation_id = ids[0] if ids else None
            extra: dict[str, Any] = {}
            if len(ids) > 1:
                extra["result_annotation_ids"] = ids
            if note:
                extra["note"] = note
            if extra:
                row.details = {**(row.details or {}), **extra}
            s.flush()
            return self._json(s, row, store)

    def _apply(
        self,
        store: AnnotationStore,
        row: ReviewTaskRow,
        decision: str,
        actor: str,
        annotation: Mapping[str, Any] | None,
        annotations: Sequence[Mapping[str, Any]] | None,
        canvas: Canvas | None,
    ) -> list[int]:
        """The annotation writes of one decision, in the caller's transaction; the ids of the labels made."""
        link = _link(row)
        source = f"user:{actor}"
        if decision == "labelled":
            records = [_as_label(r, link, source) for r in annotations or []]
            return _add(store, row.image_id, records, actor, canvas)
        assert row.annotation_id is not None
        try:
            proposal = store.get_record(row.annotation_id)
        except NotFound:
            raise Conflict(
                f"task {row.id}: its proposal (annotation {row.annotation_id}) was deleted; skip the task"
            ) from None
        status = "accepted" if decision == "accept" else "rejected"
        if proposal["status"] != status:
            store.update(int(proposal["id"]), int(proposal["version"]), {"status": status}, actor)
        if decision == "reject":
            return []
        if decision == "accept":
            if not str(proposal["source"]).startswith("model:"):  # a person's label (a suspect) confirmed: no copy
                return [int(proposal["id"])]
            return _add(store, row.image_id, [_as_label(_shape(proposal), link, source)], actor, None)
        assert annotation is not None
        unknown = sorted(set(annotation) - set(CORRECTABLE) - {"id", "version", "score", "source", "status"})
        if unknown:
            raise InvalidInput(f"annotation: cannot correct {unknown}; correctable: {', '.join(CORRECTABLE)}")
        corrected = _shape(proposal)
        given = {k: v for k, v in annotation.items() if k in CORRECTABLE}
        if not {"bbox", "geometry", "mask"}.isdisjoint(given):  # a new shape replaces the old one whole
            corrected = {k: v for k, v in corrected.items() if k not in ("bbox", "geometry", "mask")}
        corrected.update(given)
        if "attributes" not in given:  # the proposal's own attributes, without what only a prediction carries
            corrected["attributes"] = {
                k: v for k, v in (proposal.get("attributes") or {}).items() if k not in ("model", "uncertainty")
            }
        return _add(store, row.image_id, [_as_label(corrected, link, source)], actor, canvas)

    def _conflict(self, s: Session, row: ReviewTaskRow, version: int) -> TaskConflict:
        current = self._json(s, row)
        if row.status == "answered":
            message = (
                f"review task {row.id} was already answered by {row.decided_by} ({row.decision}"
                f"{'' if row.decided_at is None else ', ' + str(_iso(row.decided_at))}): see 'current'"
            )
        elif row.status != "open":
            message = f"review task {row.id} is {row.status}: it takes no answers"
        else:
            message = f"review task {row.id} is at version {row.version}, not {version}: reload it and answer again"
        return TaskConflict(message, current)

    def _json(self, s: Session, row: ReviewTaskRow, store: AnnotationStore | None = None) -> dict[str, Any]:
        store = store or AnnotationStore(s.connection().engine, sessionmaker(bind=s.connection()))
        record = None
        if row.annotation_id is not None:
            try:
                record = store.get_record(row.annotation_id)
            except NotFound:
                record = None
        return task_json(row, record)

    def superseded_ids(self) -> set[int]:
        """Model proposals an expert accepted, whose copy (source ``user:NAME``) is the label now: a dataset
        freeze leaves these out (as it leaves out QC submissions) so an accepted proposal is not frozen twice."""
        r = ReviewTaskRow
        stmt = select(r.annotation_id).where(
            r.status == "answered",
            r.decision == "accept",
            r.annotation_id.is_not(None),
            r.result_annotation_id.is_not(None),
            r.result_annotation_id != r.annotation_id,
        )
        with self.session() as s:
            return {int(i) for i in s.scalars(stmt) if i is not None}

    def cancel(self, task_ids: Sequence[int], actor: str) -> int:
        """Cancel open tasks (their proposals stay as they are); returns how many were open."""
        if not task_ids:
            return 0
        with self.session.begin() as s:
            done = s.execute(
                update(ReviewTaskRow)
                .where(ReviewTaskRow.id.in_(list(task_ids)), ReviewTaskRow.status == "open")
                .values(
                    status="cancelled",
                    decided_by=actor,
                    decided_at=utcnow(),
                    version=ReviewTaskRow.version + 1,
                )
                .execution_options(synchronize_session=False)
            )
            return int(getattr(done, "rowcount", 0) or 0)


ORDER = (ReviewTaskRow.priority.desc(), ReviewTaskRow.id.asc())


class TaskConflict(Conflict):
    """A second answer (409): ``current`` is the task as it is now, with who answered and how."""

    def __init__(self, message: str, current: dict[str, Any]) -> None:
        super().__init__(message)
        self.current = current


@dataclass(frozen=True)
class TaskFilter:
    """Which tasks: each given field narrows. ``viewer``: only tasks assigned to them or to nobody."""

    status: str | None = "open"
    reason: str | None = None
    model: str | None = None
    label: str | None = None
    min_score: float | None = None
    max_score: float | None = None
    image: str | None = None
    viewer: str | None = None
    batch: str | None = None

    def clauses(self) -> list[ColumnElement[bool]]:
        r = ReviewTaskRow
        if self.status is not None and self.status not in STATUSES:
            raise InvalidInput(f"status {self.status!r}: expected one of {', '.join(STATUSES)}")
        if self.reason is not None and self.reason not in REASONS:
            raise InvalidInput(f"reason {self.reason!r}: expected one of {', '.join(REASONS)}")
        for name in ("min_score", "max_score"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise InvalidInput(f"{name} must be a finite number, got {value}")
        if self.min_score is not None and self.max_score is not None and self.min_score > self.max_score:
            raise InvalidInput(f"min_score {self.min_score} is above max_score {self.max_score}")
        out: list[ColumnElement[bool]] = []
        if self.status is not None:
            out.append(r.status == self.status)
        if self.reason is not None:
            out.append(r.reason == self.reason)
        if self.model is not None:
            out.append(r.model_id == self.model)
        if self.label is not None:
            out.append(r.label == self.label)
        if self.min_score is not None:
            out.append(r.score >= self.min_score)
        if self.max_score is not None:
            out.append(r.score <= self.max_score)
        if self.image is not None:
            out.append(r.image_id == self.image)
        if self.batch is not None:
            out.append(r.batch == self.batch)
        if self.viewer is not None:
            out.append(or_(r.assignee.is_(None), r.assignee == self.viewer))
        return out


def task_json(row: ReviewTaskRow, annotation: dict[str, Any] | None) -> dict[str, Any]:
    """The REST shape of a task (docs/review.md)."""
    region = None if row.x0 is None else [row.x0, row.y0, row.x1, row.y1]
    return {
        "id": row.id,
        "reason": row.reason,
        "status": row.status,
        "image_id": row.image_id,
        "region": region,
        "annotation_id": row.annotation_id,
        "model_id": row.model_id,
        "label": row.label,
        "score": row.score,
        "uncertainty": row.uncertainty,
        "priority": row.priority,
        "batch": row.batch,
        "details": row.details,
        "assignee": row.assignee,
        "created_by": row.created_by,
        "created_at": _iso(row.created_at),
        "decision": row.decision,
        "decided_by": row.decided_by,
        "decided_at": _iso(row.decided_at),
        "result_annotation_id": row.result_annotation_id,
        "version": row.version,
        "annotation": annotation,
    }


def _iso(at: datetime | None) -> str | None:
    """An ISO time in UTC (SQLite hands back naive datetimes)."""
    if at is None:
        return None
    return (at if at.tzinfo is not None else at.replace(tzinfo=UTC)).isoformat()


def _link(row: ReviewTaskRow) -> dict[str, Any]:
    """What ties an expert's label to the task and the prediction it answers."""
    link: dict[str, Any] = {"review_task": row.id}
    if row.annotation_id is not None:
        link["prediction"] = row.annotation_id
    for key, value in (("model", row.model_id), ("score", row.score), ("uncertainty", row.uncertainty)):
        if value is not None:
            link[key] = value
    return link


def _shape(record: Mapping[str, Any]) -> dict[str, Any]:
    return {k: record[k] for k in ("kind", "label", "bbox", "geometry", "mask", "attributes") if k in record}


def _as_label(record: Mapping[str, Any], link: Mapping[str, Any], source: str) -> dict[str, Any]:
    """``record`` as an expert's accepted label: no id or score, their source, the link attributes."""
    if not isinstance(record, Mapping):
        raise InvalidInput(f"annotation record must be an object, got {type(record).__name__}")
    out = {k: v for k, v in record.items() if k not in ("id", "version", "score", "source", "status")}
    attributes = out.get("attributes") or {}
    if not isinstance(attributes, Mapping):
        raise InvalidInput("annotation attributes must be an object")
    out["attributes"] = {**attributes, **link}
    out["source"], out["status"] = source, "accepted"
    return out


def _add(
    store: AnnotationStore, image_id: str, records: Sequence[dict[str, Any]], actor: str, canvas: Canvas | None
) -> list[int]:
    if not records:
        return []
    ann = Annotations.from_records(records, canvas=canvas)
    ids: list[int] = []
    for start in range(0, len(ann), LABEL_CHUNK):
        ids.extend(store.add(image_id, ann[start : start + LABEL_CHUNK], actor=actor))
    return ids
