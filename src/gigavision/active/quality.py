"""Multi-annotator quality control over a workspace's database.

The protocol labelling teams use: every item (an image, or a region of a big one) is labelled independently by
``required`` (≥ 2) annotators. When the last required submission arrives, their agreement is measured
(pairwise F1 of IoU-matched shapes; pairwise Jaccard of tag sets). At or above the item's threshold a
consensus is written automatically (source ``consensus``, status ``accepted``); below it the item waits in
the adjudication queue until someone who did not label it decides, by choosing one annotator's labels or
giving their own (status ``adjudicated``). The annotators' rows are ordinary annotations (source
``user:<name>``, status ``proposed``), marked ``accepted`` or ``rejected`` against the consensus once decided.

Independence is by convention until users and roles exist: callers name who is acting. While an item is open
nobody sees anyone else's labels through QC, and resubmission is possible only then.

Concurrency: every write to an item runs in one transaction that starts by bumping the item's version (a row
lock on PostgreSQL, the write lock on SQLite), so submissions to one item are serialised, exactly one of them
completes the item and writes its consensus, and annotations, links, verdicts and status commit together or
not at all. The verdicts then reach the annotators' rows in short transactions (``mark``), because the store
versions and logs every status change one row at a time.
"""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import and_, delete, func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from gigavision.active.agreement import (
    MatchOptions,
    jaccard,
    match_annotations,
    matched_with,
    mean_pairwise,
    shape_agreement,
    tag_agreement,
)
from gigavision.active.consensus import restamp, shape_consensus, tag_consensus
from gigavision.active.quality_db import (
    add_annotations,
    assignments_of,
    get_item,
    item_filters,
    linked_ids,
    lock_item,
    not_assigned,
    open_load,
    records_by_id,
    set_verdict,
)
from gigavision.active.quality_items import (
    AUTO,
    CONSENSUS,
    MAX_ITEMS,
    MAX_REQUIRED,
    ROLES,
    Assignment,
    ItemAgreement,
    QcItem,
    QcItemDetail,
    QueuedItem,
    Region,
    Submission,
    check_labels,
    check_name,
    check_region,
    draw,
    fit,
    grid_regions,
    inside,
    iso,
    item_evaluation,
    item_options,
    item_region,
    item_summary,
    not_in_adjudication,
    role_clash,
    source_of,
)
from gigavision.annotations import KINDS, Annotations
from gigavision.errors import Conflict, InvalidInput, LimitExceeded
from gigavision.store.annotations import AnnotationStore, Viewport
from gigavision.store.schema import QcAssignmentRow, QcItemRow, QcLabelRow, utcnow

if TYPE_CHECKING:
    from gigavision.active.quality_report import AgreementSummary, AnnotatorQuality
    from gigavision.workspace import Workspace

MARK_CHUNK = 500  # annotations re-statused per transaction after a decision


def mark_matches(item: QcItemRow, submissions: Sequence[Submission]) -> None:
    """Each handed-in label's ``matched_with``: the other annotators who labelled the same object (the item's
    match options). A label nobody else matched is a disagreement, what an adjudicator looks at first."""
    handed = [sub for sub in submissions if sub["status"] == "submitted" and sub["labels"] is not None]
    sets = [Annotations.from_records(sub["labels"] or []) for sub in handed]
    for sub, found in zip(handed, matched_with(sets, item_options(item)), strict=True):
        for rec, others in zip(sub["labels"] or [], found, strict=True):
            rec["matched_with"] = [handed[j]["annotator"] for j in others]


class QualityControl:
    """Items, assignments, submissions, agreement, adjudication and consensus of one workspace."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws

    # -- items -------------------------------------------------------------------------------------------
    def add_items(
        self,
        image_id: str,
        kind: str,
        *,
        actor: str,
        regions: Sequence[Sequence[float]] | None = None,
        grid: tuple[int, int] | None = None,
        labels: Sequence[str] = (),
        required: int = 2,
        threshold: float = 0.8,
        options: MatchOptions | None = None,
    ) -> list[QcItem]:
        """Create items: the whole image (default), the given ``regions``, or a ``grid`` of cells.

        ``kind`` is what annotators label (tag / box / polygon / mask / point); ``labels`` the candidate
        classes (empty: any); ``threshold`` the least agreement (tags: mean pairwise Jaccard, shapes: mean
        pairwise F1) for an automatic consensus; ``options`` how shapes are matched.
        """
        actor = check_name(actor, "actor")
        if kind not in KINDS:
            raise InvalidInput(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        if isinstance(required, bool) or not isinstance(required, int) or not 2 <= required <= MAX_REQUIRED:
            raise InvalidInput(
                f"required must be a whole number from 2 to {MAX_REQUIRED} (independent labellings per item), "
                f"got {required!r}"
            )
        if not (isinstance(threshold, int | float) and 0.0 <= threshold <= 1.0):
            raise InvalidInput(f"threshold must be between 0 and 1 (an agreement score), got {threshold!r}")
        candidates = check_labels(labels)
        self._check_schema(candidates, kind)
        opts = options or MatchOptions()
        if regions is not None and grid is not None:
            raise InvalidInput("give regions or a grid, not both")
        image_id = self.ws.find_image(image_id)
        image = self.ws.get_image(image_id)
        boxes: list[Region | None]
        if grid is not None:
            boxes = list(grid_regions(image.width, image.height, *grid))
        elif regions is not None:
            if not regions:
                raise InvalidInput("regions is empty: give at least one [x0, y0, x1, y1]")
            if len(regions) > MAX_ITEMS:
                raise LimitExceeded(f"{len(regions)} regions at once; the limit is {MAX_ITEMS}")
            boxes = [check_region(r, image.width, image.height) for r in regions]
        else:
            boxes = [None]
        now = utcnow()
        params = {
            "iou_threshold": opts.iou_threshold,
            "match_labels": opts.match_labels,
            "point_radius": opts.point_radius,
        }
        rows = [
            QcItemRow(
                image_id=image_id,
                x0=None if b is None else b[0],
                y0=None if b is None else b[1],
                x1=None if b is None else b[2],
                y1=None if b is None else b[3],
                kind=kind,
                labels=candidates,
                required=required,
                threshold=float(threshold),
                params=params,
                status="open",
                version=1,
                created_by=actor,
                created_at=now,
            )
            for b in boxes
        ]
        with self.ws.session.begin() as s:
            s.add_all(rows)
        return [item_summary(r, []) for r in rows]

    def _check_schema(self, labels: Sequence[str], kind: str) -> None:
        """Refuse candidate labels that a submission would fail on: absent from a non-empty label schema, or a
        class of another kind than the item's (an empty schema accepts any label, as the annotation store does).
        """
        classes = self.ws.labels.by_name()
        if not classes:
            return
        for label in labels:
            cls = classes.get(label)
            if cls is None:
                raise InvalidInput(
                    f"label {label!r} is not in the label schema; add it first: "
                    f"gigavision labels add {shlex.quote(label)} --kind {kind} "
                    f'(REST: PUT /api/v1/labels/{label} with {{"kind": "{kind}"}})'
                )
            if cls.kind != kind:
                raise InvalidInput(
                    f"label {label!r} is a {cls.kind} class in the label schema, so a {kind} item cannot use it: "
                    f"make the item --kind {cls.kind}, or use a {kind} class"
                )

    def list_items(
        self,
        *,
        status: str | None = None,
        annotator: str | None = None,
        image_id: str | None = None,
        kind: str | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> tuple[list[QcItem], int]:
        """A page of items (oldest first) and the total matching; ``annotator``: items the person is on."""
        if offset < 0 or not 1 <= limit <= 10_000:
            raise InvalidInput(f"offset must be ≥ 0 and limit 1..10000, got offset={offset} limit={limit}")
        clauses = item_filters(status=status, image_id=self._image(image_id), kind=kind)
        if annotator is not None:
            on_item = select(QcAssignmentRow.item_id).where(QcAssignmentRow.annotator == annotator)
            clauses.append(QcItemRow.id.in_(on_item))
        with self.ws.session() as s:
            total = s.scalar(select(func.count()).select_from(QcItemRow).where(*clauses)) or 0
            items = list(
                s.scalars(select(QcItemRow).where(*clauses).order_by(QcItemRow.id).offset(offset).limit(limit))
            )
            people = assignments_of(s, [i.id for i in items])
        return [item_summary(i, people.get(i.id, [])) for i in items], int(total)

    def image_of(self, item_id: int) -> str:
        """The id of the image item ``item_id`` is on (``NotFound`` when there is no such item)."""
        with self.ws.session() as s:
            return get_item(s, item_id).image_id

    def item(self, item_id: int, viewer: str | None = None) -> QcItemDetail:
        """One item: assignments, submissions, pairwise agreement, decision and consensus.

        While the item is open, a submission's labels are shown only to the annotator who made it.
        """
        with self.ws.session() as s:
            item = get_item(s, item_id)
            people = assignments_of(s, [item_id]).get(item_id, [])
            links = list(s.scalars(select(QcLabelRow).where(QcLabelRow.item_id == item_id).order_by(QcLabelRow.id)))
        revealed = item.status != "open"
        submissions: list[Submission] = []
        verdicts = {k.annotation_id: k.verdict for k in links if k.role == "submission"}
        for a in people:
            if a.role != "annotator":
                continue
            ids = [k.annotation_id for k in links if k.role == "submission" and k.annotator == a.annotator]
            labels = None
            if revealed or viewer == a.annotator:
                labels = records_by_id(self.ws.annotations, item, ids, [source_of(a.annotator), a.annotator])
                for rec in labels:  # accepted / rejected against the consensus once decided
                    rec["verdict"] = verdicts.get(rec["id"])
            submissions.append(
                {
                    "annotator": a.annotator,
                    "status": a.status,
                    "submitted_at": iso(a.submitted_at),
                    "count": None if labels is None else len(labels),
                    "labels": labels,
                }
            )
        if revealed:
            mark_matches(item, submissions)
        consensus_ids = [k.annotation_id for k in links if k.role == "consensus"]
        return {
            **item_summary(item, people),
            "submissions": submissions,
            "labels_hidden": not revealed,
            **item_evaluation(item),
            "consensus": records_by_id(self.ws.annotations, item, consensus_ids, [CONSENSUS]) if revealed else [],
        }

    # -- assignment --------------------------------------------------------------------------------------
    def assign(
        self,
        item_ids: Sequence[int],
        *,
        actor: str,
        annotators: Sequence[str] = (),
        pool: Sequence[str] = (),
        role: str = "annotator",
    ) -> list[Assignment]:
        """Put people on items: an explicit list, or from a ``pool`` balancing open work.

        Annotators (role ``annotator``): open items only; with a pool each item gets enough distinct members
        to reach its ``required`` count, least-loaded first, in pool order on ties. Adjudicators (role
        ``adjudicator``): items in adjudication only, one per item, never one of the item's annotators.
        Assigning someone already on the item in the same role changes nothing (reported as ``kept``).
        """
        actor = check_name(actor, "actor")
        if role not in ROLES:
            raise InvalidInput(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        if bool(annotators) == bool(pool):
            raise InvalidInput("give either annotators (names) or a pool to draw them from")
        names = [check_name(n) for n in (annotators or pool)]
        if len(set(names)) != len(names):
            raise InvalidInput(f"a name is given twice: {names}")
        if role == "adjudicator" and annotators and len(names) != 1:
            raise InvalidInput(f"an item has one adjudicator; got {names} (use a pool to spread items over several)")
        ids = sorted({int(i) for i in item_ids})
        if not ids:
            raise InvalidInput("no items to assign")
        if len(ids) > MAX_ITEMS:
            raise LimitExceeded(f"{len(ids)} items at once; the limit is {MAX_ITEMS}")
        wanted_status = "open" if role == "annotator" else "adjudication"
        report: list[Assignment] = []
        with self._transaction() as (s, _store):
            load: dict[str, int] | None = None
            for turn, item_id in enumerate(ids):
                item = lock_item(s, item_id)  # first, so the transaction starts with a write (see _lock)
                if load is None:
                    load = open_load(s, names, role) if pool else {}
                if item.status != wanted_status:
                    raise Conflict(
                        f"item {item_id} is {item.status}: {role}s are assigned to {wanted_status} items only"
                    )
                people = {a.annotator: a for a in assignments_of(s, [item_id]).get(item_id, [])}
                chosen = draw(item, people, names, load, role, turn) if pool else names
                added, kept = [], []
                for name in chosen:
                    current = people.get(name)
                    if current is not None:
                        if current.role != role:
                            raise InvalidInput(role_clash(item_id, name, current.role))
                        kept.append(name)
                        continue
                    if role == "adjudicator":
                        holder = next((a for a in people.values() if a.role == "adjudicator"), None)
                        if holder is not None:
                            raise Conflict(f"item {item_id} already has adjudicator {holder.annotator}")
                    s.add(
                        QcAssignmentRow(
                            item_id=item_id,
                            annotator=name,
                            role=role,
                            status="assigned",
                            assigned_by=actor,
                            assigned_at=utcnow(),
                        )
                    )
                    added.append(name)
                report.append(Assignment(item_id, role, added, kept))
        return report

    def unstaffed(self, role: str = "annotator", *, image_id: str | None = None) -> list[int]:
        """Ids of open items with fewer annotators than required (role annotator), or of items in
        adjudication without an adjudicator (role adjudicator), oldest first."""
        if role not in ROLES:
            raise InvalidInput(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        image_id = self._image(image_id)
        a = QcAssignmentRow
        if role == "annotator":
            staffed = (
                select(func.count()).select_from(a).where(a.item_id == QcItemRow.id, a.role == "annotator")
            ).scalar_subquery()
            clauses = [*item_filters(status="open", image_id=image_id), staffed < QcItemRow.required]
        else:
            claimed = select(a.item_id).where(a.role == "adjudicator")
            clauses = [*item_filters(status="adjudication", image_id=image_id), QcItemRow.id.not_in(claimed)]
        with self.ws.session() as s:
            return [int(i) for i in s.scalars(select(QcItemRow.id).where(*clauses).order_by(QcItemRow.id))]

    # -- labelling -----------------------------------------------------------------------------------------
    def submit(self, item_id: int, annotator: str, annotations: Annotations | None = None) -> QcItemDetail:
        """Hand in ``annotator``'s labels for an item; the last required submission triggers the agreement.

        With ``annotations`` those are stored (source ``user:<name>``, status proposed) and replace any earlier
        submission of theirs (whose rows are deleted, history kept). Without, their current proposed
        annotations of the item's kind whose box centre lies in the item's region (tags: on the image) are
        taken, restricted to the item's candidate labels. Tags have no position, so tag items on a region
        need the labels given. Resubmitting is allowed while the item is open.
        """
        name = check_name(annotator)
        with self._transaction() as (s, store):
            item = lock_item(s, item_id)
            assignment = s.scalar(
                select(QcAssignmentRow).where(QcAssignmentRow.item_id == item_id, QcAssignmentRow.annotator == name)
            )
            if assignment is None or assignment.role != "annotator":
                raise InvalidInput(not_assigned(s, item_id, name, assignment))
            if item.status != "open":
                raise Conflict(
                    f"item {item_id} is {item.status}: submissions closed when its {item.required} labellings were in"
                )
            previous = linked_ids(s, item_id, "submission", name)
            if annotations is None:
                records = self._collect(store, item, name)
                ids = [int(r["id"]) for r in records]
            else:
                fitted = fit(item, annotations, f"{name}'s labels")
                ids = add_annotations(store, item.image_id, restamp(fitted, source_of(name), "proposed"), name)
                stale = sorted(set(previous) - set(ids))
                for rec in records_by_id(store, item, stale, [source_of(name), name]):
                    store.delete(int(rec["id"]), int(rec["version"]), actor=name)
            s.execute(
                delete(QcLabelRow).where(
                    QcLabelRow.item_id == item_id, QcLabelRow.role == "submission", QcLabelRow.annotator == name
                )
            )
            s.add_all(QcLabelRow(item_id=item_id, annotation_id=i, annotator=name, role="submission") for i in ids)
            assignment.status, assignment.submitted_at = "submitted", utcnow()
            s.flush()
            done = s.scalar(
                select(func.count())
                .select_from(QcAssignmentRow)
                .where(
                    QcAssignmentRow.item_id == item_id,
                    QcAssignmentRow.role == "annotator",
                    QcAssignmentRow.status == "submitted",
                )
            )
            decided = (done or 0) >= item.required and self._evaluate(s, store, item)
        if decided:
            self.mark(item_id)
        return self.item(item_id, viewer=name)

    def adjudicate(
        self,
        item_id: int,
        adjudicator: str,
        *,
        choose: str | None = None,
        annotations: Annotations | None = None,
        own: bool = False,
    ) -> QcItemDetail:
        """Decide an item in adjudication; the decision becomes its consensus (status ``adjudicated``).

        Exactly one of: ``choose`` (take that annotator's labels), ``annotations`` (the adjudicator's own
        labels), ``own=True`` (the adjudicator's proposed annotations in the item, as ``submit`` collects
        them). The adjudicator must not be one of the item's annotators; an unassigned item is claimed.
        """
        name = check_name(adjudicator, "adjudicator")
        if (choose is not None) + (annotations is not None) + bool(own) != 1:
            raise InvalidInput(
                "decide with exactly one of: choose=<annotator> (take their labels), annotations (your own "
                "labels) or own=True (your proposed annotations in the item)"
            )
        with self._transaction() as (s, store):
            item = lock_item(s, item_id)
            if item.status != "adjudication":
                raise Conflict(not_in_adjudication(item))
            people = assignments_of(s, [item_id]).get(item_id, [])
            if any(a.annotator == name and a.role == "annotator" for a in people):
                raise InvalidInput(f"{name} labelled item {item_id} and cannot adjudicate it; ask someone who did not")
            holder = next((a for a in people if a.role == "adjudicator"), None)
            if holder is not None and holder.annotator != name:
                raise Conflict(f"item {item_id} is assigned to adjudicator {holder.annotator}, not {name}")
            if holder is None:
                holder = QcAssignmentRow(
                    item_id=item_id, annotator=name, role="adjudicator", status="assigned", assigned_by=name
                )
                holder.assigned_at = utcnow()
                s.add(holder)
            raters = list((item.result or {}).get("annotators", []))
            sets = [self._submission(s, store, item, r) for r in raters]
            if choose is not None:
                if choose not in raters:
                    raise InvalidInput(f"{choose} did not label item {item_id}; choose one of {', '.join(raters)}")
                decision = sets[raters.index(choose)][0]
            elif annotations is not None:
                decision = fit(item, annotations, f"{name}'s decision")
            else:
                drafts = self._collect(store, item, name)
                decision = fit(item, Annotations.from_records(drafts), f"{name}'s proposals")
                s.add_all(  # kept as the adjudicator's submission; the consensus rows are their copy
                    QcLabelRow(
                        item_id=item_id,
                        annotation_id=int(r["id"]),
                        annotator=name,
                        role="submission",
                        verdict="accepted",
                    )
                    for r in drafts
                )
            how = {"how": "choice" if choose is not None else "labels", "chosen": choose}
            self._decide(s, store, item, raters, sets, decision, "adjudicated", name, {"decision": how})
            item.status = "adjudicated"
            holder.status, holder.submitted_at = "submitted", utcnow()
        self.mark(item_id)
        return self.item(item_id, viewer=name)

    # -- queries ---------------------------------------------------------------------------------------------
    def _image(self, ref: str | None) -> str | None:
        """An image filter as people type it (id, unique prefix or name) as the image id; None stays None."""
        return None if ref is None else self.ws.find_image(ref)

    def queue(
        self, *, adjudicator: str | None = None, image_id: str | None = None, offset: int = 0, limit: int = 100
    ) -> tuple[list[QueuedItem], int]:
        """Items awaiting adjudication, lowest agreement first. With ``adjudicator``: those assigned to them
        plus unclaimed ones they did not label (what they can work on)."""
        if offset < 0 or not 1 <= limit <= 10_000:
            raise InvalidInput(f"offset must be ≥ 0 and limit 1..10000, got offset={offset} limit={limit}")
        clauses = item_filters(status="adjudication", image_id=self._image(image_id))
        if adjudicator is not None:
            a = QcAssignmentRow
            mine = select(a.item_id).where(a.annotator == adjudicator, a.role == "adjudicator")
            on_item = select(a.item_id).where(a.annotator == adjudicator)
            claimed = select(a.item_id).where(a.role == "adjudicator")
            clauses.append(
                or_(QcItemRow.id.in_(mine), and_(QcItemRow.id.not_in(on_item), QcItemRow.id.not_in(claimed)))
            )
        order = (QcItemRow.agreement, QcItemRow.id)
        with self.ws.session() as s:
            total = s.scalar(select(func.count()).select_from(QcItemRow).where(*clauses)) or 0
            items = list(s.scalars(select(QcItemRow).where(*clauses).order_by(*order).offset(offset).limit(limit)))
            people = assignments_of(s, [i.id for i in items])
        return [{**item_summary(i, people.get(i.id, [])), **item_evaluation(i)} for i in items], int(total)

    def consensus(self, *, item_id: int | None = None, image_id: str | None = None) -> list[dict[str, Any]]:
        """Consensus annotations of one item, or of every decided item of an image (records with versions)."""
        if (item_id is None) == (image_id is None):
            raise InvalidInput("give an item or an image")
        if item_id is None:
            found = self.ws.find_image(str(image_id))
            return self.ws.annotations.query_records(found, sources=[CONSENSUS], limit=1_000_000)
        with self.ws.session() as s:
            item = get_item(s, item_id)
            ids = linked_ids(s, item_id, "consensus", None)
        return records_by_id(self.ws.annotations, item, ids, [CONSENSUS])

    def agreement(self, item_id: int) -> ItemAgreement:
        """An item's agreement: the pairwise table (F1 or Jaccard), its mean, and each annotator against the
        consensus once decided. Empty while the item is open."""
        with self.ws.session() as s:
            item = get_item(s, item_id)
        return {
            "item": item.id,
            "status": item.status,
            "agreement": item.agreement,
            "threshold": item.threshold,
            **item_evaluation(item),
        }

    def annotators(self, *, kind: str | None = None, image_id: str | None = None) -> list[AnnotatorQuality]:
        """Per-annotator quality table (see ``gigavision.active.quality_report.annotator_quality``)."""
        from gigavision.active.quality_report import annotator_quality

        return annotator_quality(self._rows(kind=kind, image_id=image_id))

    def summary(self, *, kind: str | None = None, image_id: str | None = None) -> AgreementSummary:
        """Agreement over many items (see ``gigavision.active.quality_report.agreement_summary``)."""
        from gigavision.active.quality_report import agreement_summary

        return agreement_summary(self._rows(kind=kind, image_id=image_id))

    def mark(self, item_id: int) -> int:
        """Apply a decided item's verdicts to its annotators' rows (status accepted / rejected); returns how
        many changed.

        Runs after every decision, outside the decision's transaction and in short ones of ``MARK_CHUNK``
        rows: the store versions and logs each edit, which is too slow to do for thousands of rows while the
        item (on SQLite: the database) is locked. The verdicts are committed with the decision, so this is
        idempotent and can be re-run after an interruption; it only touches rows still ``proposed``, never
        a status someone set by hand since.
        """
        changed = 0
        for _attempt in range(3):
            todo, actor = self._unmarked(item_id)
            if not todo:
                break
            try:
                for start in range(0, len(todo), MARK_CHUNK):
                    with self._transaction() as (s, store):
                        lock_item(s, item_id)
                        for rec, verdict in todo[start : start + MARK_CHUNK]:
                            store.update(int(rec["id"]), int(rec["version"]), {"status": verdict}, actor)
                    changed += len(todo[start : start + MARK_CHUNK])
            except Conflict:  # someone edited one of these rows meanwhile: read them again
                continue
        return changed

    # -- internals: database -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _transaction(self) -> Iterator[tuple[Session, AnnotationStore]]:
        """One transaction for QC rows and annotations: the annotation store works on the same connection."""
        with self.ws.session.begin() as s:
            store = AnnotationStore(self.ws.engine, sessionmaker(bind=s.connection(), expire_on_commit=False))
            yield s, store

    def _rows(self, *, kind: str | None, image_id: str | None) -> list[tuple[QcItemRow, list[QcAssignmentRow]]]:
        clauses = item_filters(kind=kind, image_id=self._image(image_id))
        with self.ws.session() as s:
            items = list(s.scalars(select(QcItemRow).where(*clauses).order_by(QcItemRow.id)))
            people = assignments_of(s, [i.id for i in items])
        return [(i, people.get(i.id, [])) for i in items]

    def _collect(self, store: AnnotationStore, item: QcItemRow, name: str) -> list[dict[str, Any]]:
        """``name``'s proposed annotations that belong to the item (kind, candidate labels, centre in region)."""
        region = item_region(item)
        if item.kind == "tag" and region is not None:
            raise InvalidInput(
                f"item {item.id} is a region of its image and tags have no position: send the tags with the "
                "submission (a labels file / the annotations field)"
            )
        viewport = Viewport(*region) if region is not None else None
        rows = store.query_records(
            item.image_id, viewport, sources=[source_of(name), name], statuses=["proposed"], limit=1_000_000
        )
        rows = [r for r in rows if r["kind"] == item.kind and (not item.labels or r["label"] in item.labels)]
        if not rows:
            return []
        keep = inside(item, Annotations.from_records(rows))
        return [r for r, ok in zip(rows, keep.tolist(), strict=True) if ok]

    def _submission(
        self, s: Session, store: AnnotationStore, item: QcItemRow, name: str
    ) -> tuple[Annotations, list[dict[str, Any]]]:
        records = records_by_id(store, item, linked_ids(s, item.id, "submission", name), [source_of(name), name])
        return Annotations.from_records(records), records

    def _unmarked(self, item_id: int) -> tuple[list[tuple[dict[str, Any], str]], str]:
        """Submitted rows with a verdict that are still ``proposed``, and who decided the item."""
        with self.ws.session() as s:
            item = get_item(s, item_id)
            links = s.scalars(
                select(QcLabelRow).where(
                    QcLabelRow.item_id == item_id, QcLabelRow.role == "submission", QcLabelRow.verdict.is_not(None)
                )
            ).all()
        verdicts: dict[str, dict[int, str]] = {}
        for link in links:
            verdicts.setdefault(str(link.annotator), {})[link.annotation_id] = str(link.verdict)
        todo = []
        for name, wanted in verdicts.items():
            for rec in records_by_id(self.ws.annotations, item, list(wanted), [source_of(name), name]):
                if rec["status"] == "proposed":
                    todo.append((rec, wanted[rec["id"]]))
        return todo, item.decided_by or AUTO

    # -- internals: agreement and decisions ----------------------------------------------------------------
    def _evaluate(self, s: Session, store: AnnotationStore, item: QcItemRow) -> bool:
        """All required labellings are in: measure agreement, then write the consensus (True) or queue the
        item (False)."""
        subs = s.scalars(
            select(QcAssignmentRow)
            .where(
                QcAssignmentRow.item_id == item.id,
                QcAssignmentRow.role == "annotator",
                QcAssignmentRow.status == "submitted",
            )
            .order_by(QcAssignmentRow.submitted_at, QcAssignmentRow.id)
        ).all()
        raters = [a.annotator for a in subs][: item.required]
        sets = [self._submission(s, store, item, r) for r in raters]
        result: dict[str, Any] = {
            "annotators": raters,
            "counts": {r: len(a) for r, (a, _) in zip(raters, sets, strict=True)},
        }
        if item.kind == "tag":
            tags = [sorted(set(a.label.tolist())) for a, _ in sets]
            table = tag_agreement(tags)
            result |= {"measure": "jaccard", "tags": dict(zip(raters, tags, strict=True))}
        else:
            table = shape_agreement([a for a, _ in sets], item_options(item))
            result["measure"] = "f1"
        result["pairwise"] = np.round(table, 6).tolist()
        item.agreement = mean_pairwise(table)
        if item.agreement >= item.threshold - 1e-9:
            if item.kind == "tag":
                fused = Annotations.from_tags(tag_consensus([set(t) for t in result["tags"].values()]))
            else:
                fused = shape_consensus([a for a, _ in sets], item_options(item))
            self._decide(s, store, item, raters, sets, fused, "accepted", None, result)
            item.status = "agreed"
            return True
        item.result = result
        item.status = "adjudication"
        return False

    def _decide(
        self,
        s: Session,
        store: AnnotationStore,
        item: QcItemRow,
        raters: Sequence[str],
        sets: Sequence[tuple[Annotations, list[dict[str, Any]]]],
        decision: Annotations,
        status: str,
        decided_by: str | None,
        extra: dict[str, Any],
    ) -> None:
        """Store ``decision`` as the consensus and give each annotator's rows a verdict: accepted (matched to
        the consensus) or rejected. ``mark`` applies the verdicts to the annotations afterwards."""
        actor = decided_by or AUTO
        ids = add_annotations(store, item.image_id, restamp(decision, CONSENSUS, status), actor)
        s.add_all(QcLabelRow(item_id=item.id, annotation_id=i, annotator=None, role="consensus") for i in ids)
        versus: dict[str, float] = {}
        consensus_tags = sorted(set(decision.label.tolist()))
        s.flush()
        for name, (ann, records) in zip(raters, sets, strict=True):
            if item.kind == "tag":
                accepted = np.isin(ann.label, consensus_tags) if len(ann) else np.zeros(0, dtype=bool)
                versus[name] = jaccard(ann.label.tolist(), consensus_tags)
            else:
                matching = match_annotations(ann, decision, item_options(item))
                accepted, versus[name] = matching.matched_a, matching.f1
            ids_of = np.array([int(r["id"]) for r in records], dtype=np.int64)
            set_verdict(s, item.id, name, ids_of[accepted].tolist(), "accepted")
            set_verdict(s, item.id, name, ids_of[~accepted].tolist(), "rejected")
        result = {**(item.result or {}), **extra, "vs_consensus": versus, "consensus_count": len(ids)}
        if item.kind == "tag":
            result["consensus_tags"] = consensus_tags
        item.result = result
        item.decided_by, item.decided_at = decided_by, utcnow()
