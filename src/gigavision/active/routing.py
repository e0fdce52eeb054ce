"""Routing stored predictions to experts (issue 14): a policy per model (or alias), optionally per label.

A prediction whose ``attributes.uncertainty`` is above the policy's ``threshold`` stays ``proposed`` and becomes
a review task (reason ``uncertain``, priority = its uncertainty); the others are stored ``accepted``, and a
share ``audit_share`` of them also becomes a task (reason ``audit``), so the error rate of what is accepted
without a look is measured (``active.monitor``), not assumed. Which confident predictions are audited is a
hash of the annotation id: reruns and other processes agree, and no generator state is kept. Audits get a
priority drawn from the same hash, so the audits answered at any time are a random sample of all audits.

A prediction without an uncertainty cannot be judged confident: under a policy it goes to review (priority 1).
Without a policy for the model, predictions are stored exactly as before. ``store_routed`` is the one door,
called by ``models.predict.store_predictions`` (``predict --store``, predict jobs, ``POST /api/v1/predict``
with ``store``).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field, replace
from datetime import UTC
from typing import Any

import numpy as np
from sqlalchemy import delete, select
from sqlalchemy.orm import sessionmaker

from gigavision.annotations import Annotations
from gigavision.errors import InvalidInput, NotFound
from gigavision.store.annotations import ANALYZE_AFTER, AnnotationStore
from gigavision.store.reviews import NewTask, ReviewStore
from gigavision.store.schema import ModelAliasRow, RoutingPolicyRow, utcnow
from gigavision.workspace import Workspace

CHUNK = ANALYZE_AFTER - 1  # inside one transaction: never refresh statistics on another connection
ALL_LABELS = ""


@dataclass(frozen=True)
class Policy:
    """Where the stored predictions of ``model_ref`` (a model id or an alias) with ``label`` ("": any) go."""

    model_ref: str
    label: str
    threshold: float
    audit_share: float
    updated_by: str = ""
    updated_at: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model_ref,
            "label": self.label or None,
            "threshold": self.threshold,
            "audit_share": self.audit_share,
            "updated_by": self.updated_by,
            "updated_at": self.updated_at,
        }


@dataclass
class Routed:
    """What ``store_routed`` did with one image's predictions."""

    ids: list[int]
    uncertain: int = 0
    audit: int = 0
    accepted: int = 0
    unrouted: int = 0  # no policy for their label
    task_ids: list[int] = field(default_factory=list)

    def summary(self) -> dict[str, int]:
        return {"uncertain": self.uncertain, "audit": self.audit, "auto_accepted": self.accepted}


def _fraction(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise InvalidInput(f"{name} must be between 0 and 1, got {value}")
    return value


def _ref(ws: Workspace, model_ref: str) -> str:
    """``model_ref`` if it names an alias, a model an alias points at, or a published model (else ``NotFound``)."""
    from gigavision.models.store import get_model

    ref = str(model_ref).strip()
    if not ref:
        raise InvalidInput("model: give a model id or an alias")
    with ws.session() as s:
        aliased = s.scalar(
            select(ModelAliasRow.name).where((ModelAliasRow.name == ref) | (ModelAliasRow.model_id == ref)).limit(1)
        )
    if aliased is not None:
        return ref
    try:
        return get_model(ws, ref).id
    except (NotFound, InvalidInput):
        raise NotFound(
            f"no model or alias {ref!r}: neither a published model nor an alias (or a model one names)"
        ) from None


def _policy(row: RoutingPolicyRow) -> Policy:
    at = row.updated_at
    stamp = None if at is None else (at if at.tzinfo else at.replace(tzinfo=UTC)).isoformat()
    return Policy(row.model_ref, row.label, row.threshold, row.audit_share, row.updated_by, stamp)


def set_policy(
    ws: Workspace, model_ref: str, *, threshold: float, audit_share: float = 0.0, label: str | None = None, actor: str
) -> Policy:
    """Create or replace the policy of ``model_ref`` (a model id or an alias) for ``label`` (None: any)."""
    threshold = _fraction("threshold", threshold)
    audit_share = _fraction("audit_share", audit_share)
    ref = _ref(ws, model_ref)
    key = (ref, label or ALL_LABELS)
    with ws.session.begin() as s:
        row = s.get(RoutingPolicyRow, key)
        if row is None:
            row = RoutingPolicyRow(model_ref=ref, label=key[1])
            s.add(row)
        row.threshold, row.audit_share, row.updated_by, row.updated_at = threshold, audit_share, actor, utcnow()
        s.flush()
        return _policy(row)


def get_policy(ws: Workspace, model_ref: str, label: str | None = None) -> Policy:
    with ws.session() as s:
        row = s.get(RoutingPolicyRow, (model_ref, label or ALL_LABELS))
        if row is None:
            what = f" for label {label!r}" if label else ""
            raise NotFound(f"no routing policy for {model_ref!r}{what}")
        return _policy(row)


def list_policies(ws: Workspace, model_ref: str | None = None) -> list[Policy]:
    stmt = select(RoutingPolicyRow).order_by(RoutingPolicyRow.model_ref, RoutingPolicyRow.label)
    if model_ref is not None:
        stmt = stmt.where(RoutingPolicyRow.model_ref == model_ref)
    with ws.session() as s:
        return [_policy(r) for r in s.scalars(stmt)]


def remove_policy(ws: Workspace, model_ref: str, label: str | None = None) -> None:
    """Remove a policy: the model's predictions are stored as proposals again."""
    r = RoutingPolicyRow
    with ws.session.begin() as s:
        done = s.execute(delete(r).where(r.model_ref == model_ref, r.label == (label or ALL_LABELS)))
        if not getattr(done, "rowcount", 0):
            what = f" for label {label!r}" if label else ""
            raise NotFound(f"no routing policy for {model_ref!r}{what}")


def policies_for(ws: Workspace, model_id: str) -> dict[str, Policy]:
    """label ("": any) → the policy that applies to ``model_id``'s predictions: one set on the model id wins
    over one set on an alias that points at it."""
    with ws.session() as s:
        aliases = sorted(s.scalars(select(ModelAliasRow.name).where(ModelAliasRow.model_id == model_id)))
        refs = [model_id, *aliases]
        rows = s.scalars(select(RoutingPolicyRow).where(RoutingPolicyRow.model_ref.in_(refs))).all()
    rank = {ref: i for i, ref in enumerate(refs)}
    out: dict[str, Policy] = {}
    for row in sorted(rows, key=lambda r: rank[r.model_ref], reverse=True):
        out[row.label] = _policy(row)
    return out


def draw(annotation_id: int) -> float:
    """A uniform number in [0, 1) fixed by the annotation id: the audit draw, the same on every rerun."""
    digest = hashlib.sha256(f"gigavision-audit:{int(annotation_id)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def uncertainty_of(attributes: Any) -> float | None:
    value = attributes.get("uncertainty") if isinstance(attributes, dict) else None
    try:
        u = float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
    return u if u is not None and math.isfinite(u) else None


def store_routed(ws: Workspace, image_id: str, ann: Annotations, *, model_id: str, actor: str) -> Routed:
    """Store ``model_id``'s predictions on ``image_id`` and route them by its policies (see the module).

    All or nothing: the annotations and their tasks are written in one transaction."""
    policies = policies_for(ws, model_id) if len(ann) else {}
    if not policies:
        return Routed(ids=ws.annotations.add(image_id, ann, actor=actor))
    n = len(ann)
    chosen: list[Policy | None] = [policies.get(str(lab), policies.get(ALL_LABELS)) for lab in ann.label]
    unc = [uncertainty_of(a) for a in ann.attributes]
    review = np.array(
        [p is not None and (u is None or u > p.threshold) for p, u in zip(chosen, unc, strict=True)], dtype=bool
    )
    confident = np.array([p is not None for p in chosen], dtype=bool) & ~review
    status = np.array(ann.status, dtype=object)
    status[confident] = "accepted"
    routed = replace(ann, status=status)
    with ws.session.begin() as s:
        bound = sessionmaker(bind=s.connection(), expire_on_commit=False)
        store = AnnotationStore(ws.engine, bound)
        ids: list[int] = []
        for start in range(0, n, CHUNK):
            ids.extend(store.add(image_id, routed[start : start + CHUNK], actor=actor))
        result = Routed(ids=ids, unrouted=int(n - review.sum() - confident.sum()))
        tasks: list[NewTask] = []
        for i in range(n):
            policy = chosen[i]
            if policy is None:
                continue
            uncertainty = unc[i]
            if review[i]:
                reason, priority = "uncertain", 1.0 if uncertainty is None else uncertainty
                result.uncertain += 1
            else:
                result.accepted += 1
                u = draw(ids[i])
                if policy.audit_share <= 0 or u >= policy.audit_share:
                    continue
                reason, priority = "audit", draw(-ids[i])  # an independent draw: audits answered in random order
                result.audit += 1
            tasks.append(_task(image_id, ann, i, ids[i], model_id, reason, priority, uncertainty, policy))
        ReviewStore(bound).add(tasks, actor=actor)
    return result


def _task(
    image_id: str,
    ann: Annotations,
    i: int,
    annotation_id: int,
    model_id: str,
    reason: str,
    priority: float,
    uncertainty: float | None,
    policy: Policy,
) -> NewTask:
    score = float(ann.score[i])
    box = ann.xyxy[i]
    region = None
    if ann.kind[i] != "tag" and np.isfinite(box).all() and box[2] > box[0] and box[3] > box[1]:
        region = (float(box[0]), float(box[1]), float(box[2]), float(box[3]))
    return NewTask(
        image_id=image_id,
        reason=reason,
        region=region,
        annotation_id=annotation_id,
        model_id=model_id,
        label=str(ann.label[i]),
        score=None if math.isnan(score) else score,
        uncertainty=uncertainty,
        priority=priority,
        details={"policy": policy.model_ref, "threshold": policy.threshold, "audit_share": policy.audit_share},
    )
