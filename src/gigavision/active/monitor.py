"""Production metrics of a model from the experts' answers to its review tasks (issue 14).

What a routing policy (``active.routing``) let through without a look is measured by the audit tasks: a random
share of the auto-accepted predictions, so the share of them an expert rejected or corrected estimates the
auto-accept error rate, with a Wilson 95 % interval (right at small n and near 0, where the normal one fails).
Precision by score band counts, among answered proposals of the model, those accepted as they were; uncertain
tasks are over-represented there on purpose (they are what was sent), so bands mix both reasons and say how
many answers each holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from gigavision.errors import InvalidInput, NotFound
from gigavision.store.schema import AnnotationRow, ModelAliasRow, ReviewTaskRow
from gigavision.workspace import Workspace

ERRORS = ("reject", "correct")  # an expert changed or refused what the model proposed
JUDGED = ("accept", "correct", "reject")
Z95 = 1.959963984540054


def wilson(errors: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval of a proportion ``errors / n`` (None for n = 0)."""
    if n <= 0:
        return None
    if not 0 <= errors <= n:
        raise InvalidInput(f"errors must be 0..n, got {errors} of {n}")
    p = errors / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Bands:
    """Score bands ``[edges[i], edges[i+1])``, the last one closed."""

    edges: tuple[float, ...] = tuple(i / 10 for i in range(11))

    def index(self, score: float) -> int:
        for i in range(len(self.edges) - 1):
            if score < self.edges[i + 1]:
                return max(i, 0)
        return len(self.edges) - 2


def model_of(ws: Workspace, ref: str) -> str:
    """The model id ``ref`` names: an alias, a published model, or a model that has review tasks."""
    from gigavision.models.store import get_model

    with ws.session() as s:
        alias = s.get(ModelAliasRow, ref)
        if alias is not None:
            return alias.model_id
        known = s.scalar(select(ReviewTaskRow.id).where(ReviewTaskRow.model_id == ref).limit(1))
    if known is not None:
        return ref
    try:
        return get_model(ws, ref).id
    except InvalidInput:
        raise NotFound(f"no model or alias {ref!r}") from None


def monitor(ws: Workspace, ref: str, bands: Bands | None = None) -> dict[str, Any]:
    """The production metrics of model ``ref`` (id or alias) from its review tasks and stored predictions."""
    model_id = model_of(ws, ref)
    bands = bands or Bands()
    r = ReviewTaskRow
    mine = r.model_id == model_id
    with ws.session() as s:
        by = s.execute(
            select(r.reason, r.status, r.decision, func.count()).where(mine).group_by(r.reason, r.status, r.decision)
        ).all()
        judged = s.execute(
            select(r.score, r.decision).where(mine, r.status == "answered", r.decision.in_(JUDGED))
        ).all()
        # stored accepted by a policy and untouched since (an expert's accept of a proposal bumps its version)
        untouched = s.scalar(
            select(func.count())
            .select_from(AnnotationRow)
            .where(
                AnnotationRow.source == f"model:{model_id}",
                AnnotationRow.status == "accepted",
                AnnotationRow.version == 1,
                ~AnnotationRow.deleted,
            )
        )
    count: dict[tuple[str, str, str | None], int] = {(a, b, c): int(n) for a, b, c, n in by}

    def total(reason: str | None = None, status: str | None = None, decisions: tuple[str, ...] | None = None) -> int:
        return sum(
            n
            for (a, b, c), n in count.items()
            if (reason is None or a == reason)
            and (status is None or b == status)
            and (decisions is None or c in decisions)
        )

    audit_n = total("audit", "answered", JUDGED)
    audit_errors = total("audit", "answered", ERRORS)
    uncertain = total("uncertain") - total("uncertain", "cancelled")
    audits = total("audit") - total("audit", "cancelled")
    auto_accepted = int(untouched or 0) + audit_errors  # audited ones an expert rejected left "accepted"
    ci = wilson(audit_errors, audit_n)
    per_band: list[list[int]] = [[0, 0] for _ in range(len(bands.edges) - 1)]
    for score, decision in judged:
        if score is None or not math.isfinite(score):
            continue
        cell = per_band[bands.index(float(score))]
        cell[0] += 1
        cell[1] += decision == "accept"
    return {
        "model_id": model_id,
        "predictions_routed": auto_accepted + uncertain,
        "auto_accepted": auto_accepted,
        "sent_to_review": {"uncertain": uncertain, "audit": audits},
        "answered": total(status="answered", decisions=(*JUDGED, "labelled")),
        "backlog": total(status="open"),
        "audit": {
            "n": audit_n,
            "errors": audit_errors,
            "error_rate": audit_errors / audit_n if audit_n else None,
            "ci95": list(ci) if ci is not None else None,
        },
        "uncertain": {
            "n": total("uncertain", "answered", JUDGED),
            "errors": total("uncertain", "answered", ERRORS),
        },
        "precision_by_score_band": [
            {"band": [bands.edges[i], bands.edges[i + 1]], "n": n, "precision": ok / n}
            for i, (n, ok) in enumerate(per_band)
            if n
        ],
    }
