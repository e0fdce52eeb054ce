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

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session, sessionmaker

from gigavision.errors import InvalidInput
from gigavision.store.schema import ReviewTaskRow, utcnow

REASONS = ("uncertain", "audit", "selected", "suspect")
STATUSES = ("open", "answered", "cancelled")
DECISIONS = ("accept", "correct", "reject", "labelled", "skip")
ADD_CHUNK = 5_000


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
