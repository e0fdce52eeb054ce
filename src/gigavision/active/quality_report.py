"""Quality numbers over many QC items: per annotator, per annotator pair, and chance-corrected κ for tags.

Computed from what each item stored when it was evaluated and decided (the pairwise table, each annotator's tag
set, each annotator's score against the consensus), so a report reads item rows only, never annotations.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, NotRequired

import numpy as np
from typing_extensions import TypedDict

from gigavision.active.agreement import fleiss_kappa_sets, set_kappa
from gigavision.store.schema import QcAssignmentRow, QcItemRow

Rows = Sequence[tuple[QcItemRow, Sequence[QcAssignmentRow]]]


@dataclass(frozen=True, slots=True)
class AnnotatorQuality:
    """One person's row of the quality table (``annotator_quality`` says what each number means)."""

    annotator: str
    assigned: int
    submitted: int
    pending: int
    evaluated: int
    agreed: int
    disputed: int
    decided: int
    chosen: int
    adjudicated: int
    adjudicating: int
    peer_agreement: float | None
    consensus_agreement: float | None
    tag_kappa: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class PairAgreement(TypedDict):
    """Agreement of two annotators over the items they shared: Cohen's κ (tags) or mean F1 (shapes)."""

    a: str
    b: str
    items: int
    kappa: NotRequired[float]
    f1: NotRequired[float | None]


class KindAgreement(TypedDict):
    items: int
    mean_agreement: float | None
    disputed: int
    measure: str  # jaccard | f1
    pairs: list[PairAgreement]
    fleiss_kappa: NotRequired[float]  # tags only


class AgreementSummary(TypedDict):
    """``qc agreement`` without an item (JSON document: REST and ``--json`` print it as it is)."""

    items: int
    by_status: dict[str, int]
    kinds: dict[str, KindAgreement]


def _mean(values: Sequence[float]) -> float | None:
    return round(float(np.mean(values)), 6) if values else None


def annotator_quality(rows: Rows) -> list[AnnotatorQuality]:
    """One row per person, sorted by name.

    ``assigned`` / ``submitted`` / ``pending`` (assigned, item still open): labelling work;
    ``evaluated``: items whose agreement was measured, of which ``agreed`` (automatic consensus) and
    ``disputed`` (sent to adjudication); ``peer_agreement``: mean over evaluated items of their mean pairwise
    score (F1 or Jaccard) with the other annotators; ``consensus_agreement``: mean score against the decided
    consensus over ``decided`` items; ``tag_kappa``: Cohen's κ of their tag sets against the consensus over
    decided tag items; ``chosen``: disputes an adjudicator settled by taking their labels; ``adjudicated``:
    items they decided as adjudicator (``adjudicating``: still waiting for them).
    """
    stats: dict[str, dict[str, Any]] = defaultdict(
        lambda: {
            "assigned": 0,
            "submitted": 0,
            "pending": 0,
            "evaluated": 0,
            "agreed": 0,
            "disputed": 0,
            "decided": 0,
            "chosen": 0,
            "adjudicated": 0,
            "adjudicating": 0,
            "_peer": [],
            "_consensus": [],
            "_tags": [],
        }
    )
    for item, people in rows:
        result = item.result or {}
        raters: list[str] = list(result.get("annotators", []))
        for a in people:
            st = stats[a.annotator]
            if a.role == "adjudicator":
                if item.status == "adjudicated" and item.decided_by == a.annotator:
                    st["adjudicated"] += 1
                elif item.status == "adjudication":
                    st["adjudicating"] += 1
                continue
            st["assigned"] += 1
            if a.status == "submitted":
                st["submitted"] += 1
            elif item.status == "open":
                st["pending"] += 1
            if a.annotator not in raters or item.status == "open":
                continue
            k = raters.index(a.annotator)
            row = result["pairwise"][k]
            st["_peer"].append(float(np.mean([v for j, v in enumerate(row) if j != k])))
            st["evaluated"] += 1
            st["agreed" if item.status == "agreed" else "disputed"] += 1
            versus = result.get("vs_consensus") or {}
            if a.annotator in versus:
                st["decided"] += 1
                st["_consensus"].append(float(versus[a.annotator]))
                if item.kind == "tag":
                    st["_tags"].append((result["tags"][a.annotator], result.get("consensus_tags", [])))
            if (result.get("decision") or {}).get("chosen") == a.annotator:
                st["chosen"] += 1
    out = []
    for name in sorted(stats):
        st = stats[name]
        tags = st.pop("_tags")
        out.append(
            AnnotatorQuality(
                annotator=name,
                **{k: v for k, v in st.items() if not k.startswith("_")},
                peer_agreement=_mean(st["_peer"]),
                consensus_agreement=_mean(st["_consensus"]),
                tag_kappa=round(set_kappa([t for t, _ in tags], [c for _, c in tags]), 6) if tags else None,
            )
        )
    return out


def agreement_summary(rows: Rows) -> AgreementSummary:
    """Items by status, and per kind: mean agreement, share sent to adjudication, agreement per annotator
    pair over the items they shared (tags: Cohen's κ; shapes: mean F1), and for tags Fleiss' κ over all
    evaluated items."""
    by_status: dict[str, int] = defaultdict(int)
    per_kind: dict[str, list[QcItemRow]] = defaultdict(list)
    for item, _ in rows:
        by_status[item.status] += 1
        if item.status != "open" and item.result:
            per_kind[item.kind].append(item)
    kinds: dict[str, KindAgreement] = {}
    for kind, items in sorted(per_kind.items()):
        shared: dict[tuple[str, str], list[Any]] = defaultdict(list)
        for item in items:
            result = item.result or {}
            raters = result["annotators"]
            for (i, a), (j, b) in itertools.combinations(enumerate(raters), 2):
                key, swap = ((a, b), False) if a <= b else ((b, a), True)
                if kind == "tag":
                    pair = (result["tags"][a], result["tags"][b])
                    shared[key].append(pair[::-1] if swap else pair)
                else:
                    shared[key].append(result["pairwise"][i][j])
        pairs = []
        for (a, b), values in sorted(shared.items()):
            entry: PairAgreement = {"a": a, "b": b, "items": len(values)}
            if kind == "tag":
                entry["kappa"] = round(set_kappa([x for x, _ in values], [y for _, y in values]), 6)
            else:
                entry["f1"] = _mean(values)
            pairs.append(entry)
        summary: KindAgreement = {
            "items": len(items),
            "mean_agreement": _mean([float(i.agreement) for i in items if i.agreement is not None]),
            "disputed": sum(1 for i in items if i.status in ("adjudication", "adjudicated")),
            "measure": "jaccard" if kind == "tag" else "f1",
            "pairs": pairs,
        }
        if kind == "tag":
            ratings = [[(i.result or {})["tags"][r] for r in (i.result or {})["annotators"]] for i in items]
            summary["fleiss_kappa"] = round(fleiss_kappa_sets(ratings), 6)
        kinds[kind] = summary
    return {"items": len(rows), "by_status": dict(sorted(by_status.items())), "kinds": kinds}
