"""Rules and JSON forms of QC items, without the database: names, regions, grids, what a submission may
contain, how pool members are drawn, and what an item looks like over the CLI and REST."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, NotRequired, cast

import numpy as np
from typing_extensions import TypedDict  # pydantic (REST responses) needs this one on Python 3.11

from gigavision.active.agreement import MatchOptions
from gigavision.annotations import Annotations
from gigavision.errors import InvalidInput, LimitExceeded
from gigavision.store.schema import QcAssignmentRow, QcItemRow

ITEM_STATUSES = ("open", "agreed", "adjudication", "adjudicated")
ROLES = ("annotator", "adjudicator")
CONSENSUS = "consensus"  # source of consensus annotations
AUTO = "qc"  # who writes an automatic consensus (annotation history)
MAX_ITEMS = 100_000  # items created or assigned by one call
MAX_REQUIRED = 100
Region = tuple[float, float, float, float]


# -- the records QC hands to the CLI and REST ----------------------------------------------------------------
# Items are nested JSON documents printed as they are, so they are typed dicts; flat rows are dataclasses.
@dataclass(frozen=True, slots=True)
class Assignment:
    """What ``assign`` did on one item: who was ``added`` and who was on it already (``kept``)."""

    item: int
    role: str
    added: list[str]
    kept: list[str]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Staffing(TypedDict):
    """A person on an item: ``submitted_at`` for annotators, ``assigned_at`` for its adjudicator."""

    name: str
    status: str
    submitted_at: NotRequired[str | None]
    assigned_at: NotRequired[str | None]


class QcItem(TypedDict):
    """An item as lists show it (no labels)."""

    id: int
    image_id: str
    region: list[float] | None
    kind: str
    labels: list[str]
    required: int
    threshold: float
    iou_threshold: float  # the item's match options (MatchOptions)
    match_labels: bool
    point_radius: float
    status: str
    agreement: float | None
    annotators: list[Staffing]
    adjudicator: Staffing | None
    created_by: str
    created_at: str | None
    decided_by: str | None
    decided_at: str | None
    version: int


class Evaluation(TypedDict):
    """The agreement part of an item: all None while it is open."""

    measure: str | None
    pairwise: dict[str, Any] | None  # {"annotators": [...], "matrix": [[...]]}
    vs_consensus: dict[str, float] | None
    decision: dict[str, Any] | None  # {"how": agreement | choice | labels, "chosen": name or None}


class QueuedItem(QcItem, Evaluation):
    """An item of the adjudication queue."""


class Submission(TypedDict):
    annotator: str
    status: str
    submitted_at: str | None
    count: int | None  # None while hidden
    labels: list[dict[str, Any]] | None  # records, with verdict and matched_with (other annotators); None if hidden


class QcItemDetail(QcItem, Evaluation):
    """One item in full: submissions, agreement, decision, consensus."""

    submissions: list[Submission]
    labels_hidden: bool
    consensus: list[dict[str, Any]]  # annotation records


class ItemAgreement(Evaluation):
    item: int
    status: str
    agreement: float | None
    threshold: float


def source_of(annotator: str) -> str:
    """The ``source`` of an annotator's annotations."""
    return f"user:{annotator}"


def check_name(name: Any, what: str = "annotator") -> str:
    """A person's name: 1–200 characters, no surrounding spaces, no control characters, no ``:``."""
    if (
        not isinstance(name, str)
        or not name
        or name != name.strip()
        or len(name) > 200
        or any(ord(c) < 32 for c in name)
        or ":" in name
    ):
        raise InvalidInput(
            f"{what} name must be 1 to 200 characters without surrounding spaces, control characters or ':', "
            f"got {name!r}"
        )
    if name.lower() in (CONSENSUS, AUTO):
        raise InvalidInput(f"{what} name {name!r} is reserved")
    return name


def check_region(region: Sequence[Any], width: int, height: int) -> Region:
    """``[x0, y0, x1, y1]`` in level-0 pixels, non-empty and inside the ``width × height`` image."""
    try:
        if isinstance(region, str | bytes):
            raise TypeError(region)
        x0, y0, x1, y1 = (float(v) for v in region)
    except (TypeError, ValueError):
        raise InvalidInput(f"region {region!r} must be four numbers x0,y0,x1,y1") from None
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)) or x1 <= x0 or y1 <= y0:
        raise InvalidInput(f"region {[x0, y0, x1, y1]} must be finite with x1 > x0 and y1 > y0")
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        raise InvalidInput(
            f"region {[x0, y0, x1, y1]} lies outside the image: regions must fit inside [0, 0, {width}, {height}]"
        )
    return (x0, y0, x1, y1)


def grid_regions(width: int, height: int, cell_width: int, cell_height: int | None = None) -> list[Region]:
    """Row-major cells of ``cell_width × cell_height`` (default square) covering the image, clipped at its edges."""
    cell_height = cell_width if cell_height is None else cell_height
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (cell_width, cell_height)):
        raise InvalidInput(f"grid cells must be whole numbers of pixels, got {cell_width!r}×{cell_height!r}")
    if cell_width < 1 or cell_height < 1:
        raise InvalidInput(f"grid cells must be at least 1×1 pixels, got {cell_width}×{cell_height}")
    count = math.ceil(width / cell_width) * math.ceil(height / cell_height)
    if count > MAX_ITEMS:
        raise LimitExceeded(
            f"a {cell_width}×{cell_height} grid over {width}×{height} pixels makes {count} items, more than "
            f"{MAX_ITEMS} at once; use bigger cells"
        )
    return [
        (float(x), float(y), float(min(x + cell_width, width)), float(min(y + cell_height, height)))
        for y in range(0, height, cell_height)
        for x in range(0, width, cell_width)
    ]


def item_region(item: QcItemRow) -> Region | None:
    if item.x0 is None or item.y0 is None or item.x1 is None or item.y1 is None:
        return None
    return (item.x0, item.y0, item.x1, item.y1)


def item_options(item: QcItemRow) -> MatchOptions:
    return MatchOptions(**item.params)


def iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def check_labels(labels: Sequence[str]) -> list[str]:
    """Candidate classes of an item: distinct, 1–256 characters each."""
    out = list(labels)
    for lab in out:
        if not isinstance(lab, str) or not 1 <= len(lab) <= 256:
            raise InvalidInput(f"labels must be 1 to 256 characters each, got {lab!r}")
    if len(set(out)) != len(out):
        raise InvalidInput(f"labels must not repeat, got {out}")
    return out


def inside(item: QcItemRow, ann: Annotations) -> np.ndarray:
    """Rows whose box centre lies in the item's region ``[x0, x1) × [y0, y1)`` (all rows: whole image or tags)."""
    region = item_region(item)
    if region is None or item.kind == "tag" or not len(ann):
        return np.ones(len(ann), dtype=bool)
    cx, cy = (ann.xyxy[:, 0] + ann.xyxy[:, 2]) / 2, (ann.xyxy[:, 1] + ann.xyxy[:, 3]) / 2
    x0, y0, x1, y1 = region
    keep: np.ndarray = (cx >= x0) & (cx < x1) & (cy >= y0) & (cy < y1)
    return keep


def fit(item: QcItemRow, ann: Annotations, what: str) -> Annotations:
    """Check labels sent for an item: its kind, its candidate labels, inside its region, tags once each."""
    for i in range(len(ann)):
        if ann.kind[i] != item.kind:
            raise InvalidInput(
                f"{what}: annotation {i} is a {ann.kind[i]}; item {item.id} takes {item.kind} annotations only"
            )
        if item.labels and ann.label[i] not in item.labels:
            raise InvalidInput(
                f"{what}: annotation {i} has label {ann.label[i]!r}; item {item.id} takes {', '.join(item.labels)}"
            )
    outside = np.flatnonzero(~inside(item, ann))
    if len(outside):
        i = int(outside[0])
        raise InvalidInput(
            f"{what}: annotation {i} (box {[round(float(v), 1) for v in ann.xyxy[i]]}) has its centre outside "
            f"item {item.id}'s region {list(item_region(item) or ())}"
        )
    if item.kind == "tag" and len(set(ann.label.tolist())) != len(ann):
        raise InvalidInput(f"{what}: a tag is given twice ({sorted(ann.label.tolist())})")
    return ann


def draw(
    item: QcItemRow,
    people: dict[str, QcAssignmentRow],
    pool: Sequence[str],
    load: dict[str, int],
    role: str,
    turn: int,
) -> list[str]:
    """Pool members for one item: the least loaded not yet on it; ties go round-robin from ``turn``."""
    if role == "annotator":
        need = item.required - sum(1 for a in people.values() if a.role == "annotator")
    else:
        need = 0 if any(a.role == "adjudicator" for a in people.values()) else 1
    if need <= 0:
        return []
    free = [n for n in pool if n not in people]
    if len(free) < need:
        raise InvalidInput(
            f"item {item.id} needs {need} more {role}(s) but only {len(free)} pool member(s) are not already on "
            f"it: {', '.join(free) or 'none'}"
        )
    position = {n: (i - turn) % len(pool) for i, n in enumerate(pool)}
    chosen = sorted(free, key=lambda n: (load[n], position[n]))[:need]
    for n in chosen:
        load[n] += 1
    return chosen


def role_clash(item_id: int, name: str, role: str) -> str:
    """Why ``name``, already on the item in ``role``, cannot take the other role."""
    if role == "annotator":
        return f"{name} labelled item {item_id} and cannot adjudicate it; ask someone who did not"
    return f"{name} is the adjudicator of item {item_id} and cannot also label it"


def not_in_adjudication(item: QcItemRow) -> str:
    """Why an item that is not in adjudication cannot be adjudicated."""
    if item.status == "open":
        return f"item {item.id} is still open: only items whose annotators disagree are adjudicated"
    if item.status == "agreed":
        return f"item {item.id} was agreed automatically (agreement {item.agreement:.3f}); nothing to adjudicate"
    return f"item {item.id} was already adjudicated by {item.decided_by}"


def item_summary(item: QcItemRow, people: Sequence[QcAssignmentRow]) -> QcItem:
    """The JSON form of an item for lists (no labels)."""
    adjudicator = next((a for a in people if a.role == "adjudicator"), None)
    summary = {
        "id": item.id,
        "image_id": item.image_id,
        "region": list(item_region(item) or ()) or None,
        "kind": item.kind,
        "labels": list(item.labels),
        "required": item.required,
        "threshold": item.threshold,
        **item.params,
        "status": item.status,
        "agreement": item.agreement,
        "annotators": [
            {"name": a.annotator, "status": a.status, "submitted_at": iso(a.submitted_at)}
            for a in people
            if a.role == "annotator"
        ],
        "adjudicator": None if adjudicator is None else person(adjudicator),
        "created_by": item.created_by,
        "created_at": iso(item.created_at),
        "decided_by": item.decided_by,
        "decided_at": iso(item.decided_at),
        "version": item.version,
    }
    return cast(QcItem, summary)  # the match options come from item.params


def person(a: QcAssignmentRow) -> Staffing:
    return {"name": a.annotator, "status": a.status, "assigned_at": iso(a.assigned_at)}


def item_evaluation(item: QcItemRow) -> Evaluation:
    """The agreement part of an item (pairwise table, against-consensus scores, decision); empty while open."""
    result = item.result or {}
    if item.status == "open" or not result:
        return {"measure": None, "pairwise": None, "vs_consensus": None, "decision": None}
    return {
        "measure": result.get("measure"),
        "pairwise": {"annotators": result.get("annotators", []), "matrix": result.get("pairwise", [])},
        "vs_consensus": result.get("vs_consensus"),
        "decision": result.get("decision", {"how": "agreement", "chosen": None} if item.status == "agreed" else None),
    }
