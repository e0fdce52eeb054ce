"""``/api/v1/qc/...``: multi-annotator quality control (items, assignments, submissions, adjudication, reports).

Until users and roles exist, the acting person is the ``actor`` field and independence is by convention:
``GET /api/v1/qc/items/{id}?actor=NAME`` shows a submission's labels only to its author while the item is
open, but the plain annotation endpoints still show every annotation of the image.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from gigavision.active.agreement import MatchOptions
from gigavision.active.quality import QualityControl
from gigavision.annotations import Annotations
from gigavision.server.deps import WorkspaceDep

router = APIRouter(prefix="/api/v1/qc", tags=["quality control"])

RECORDS = (
    "annotation records (kind, label, bbox [x0,y0,x1,y1] and/or GeoJSON geometry, mask, attributes); "
    "source and status are set by QC"
)


class NewItems(BaseModel):
    image_id: str
    kind: str = Field(description="what annotators label: tag | box | polygon | mask | point")
    regions: list[list[float]] | None = Field(None, description="[[x0, y0, x1, y1], ...] in level-0 pixels")
    grid: tuple[int, int] | None = Field(None, description="[cell_width, cell_height]: cover the image with cells")
    labels: list[str] = Field(
        default_factory=list, description="candidate classes: label-schema classes of the item's kind; empty: any"
    )
    required: int = Field(2, description="independent labellings per item (≥ 2)")
    threshold: float = Field(0.8, description="least agreement (0..1) for an automatic consensus")
    iou_threshold: float = Field(0.5, description="least IoU for two shapes to match")
    match_labels: bool = Field(True, description="matched shapes must have the same label")
    point_radius: float = Field(10.0, description="largest distance (level-0 px) for two points to match")
    actor: str = Field("anonymous", max_length=256)


class NewAssignments(BaseModel):
    item_ids: list[int] = Field(default_factory=list, description="items to staff (or all_items)")
    all_items: bool = Field(
        False, description="every open item short of annotators / queued item without an adjudicator"
    )
    image_id: str | None = Field(None, description="with all_items: only this image's items")
    role: str = Field("annotator", description="annotator | adjudicator")
    annotators: list[str] = Field(default_factory=list, description="explicit names")
    pool: list[str] = Field(default_factory=list, description="names to spread items over, least loaded first")
    actor: str = Field("anonymous", max_length=256)


class Submission(BaseModel):
    actor: str = Field(max_length=256, description="the annotator handing in")
    annotations: list[dict[str, Any]] | None = Field(
        None, description=f"{RECORDS}; omitted: the actor's proposed annotations in the item"
    )


class Decision(BaseModel):
    actor: str = Field(max_length=256, description="the adjudicator (not one of the item's annotators)")
    choose: str | None = Field(None, description="take this annotator's labels as the consensus")
    annotations: list[dict[str, Any]] | None = Field(None, description=f"the adjudicator's own labels: {RECORDS}")
    own: bool = Field(False, description="use the adjudicator's proposed annotations in the item")


class ItemPage(BaseModel):
    items: list[dict[str, Any]]
    total: int


@router.post("/items", status_code=201)
def add_items(body: NewItems, ws: WorkspaceDep) -> dict[str, Any]:
    """Create items: the whole image, the given regions, or a grid of cells."""
    options = MatchOptions(
        iou_threshold=body.iou_threshold, match_labels=body.match_labels, point_radius=body.point_radius
    )
    items = QualityControl(ws).add_items(
        body.image_id,
        body.kind,
        actor=body.actor,
        regions=body.regions,
        grid=body.grid,
        labels=body.labels,
        required=body.required,
        threshold=body.threshold,
        options=options,
    )
    return {"items": items, "count": len(items)}


@router.get("/items", response_model=ItemPage)
def list_items(
    ws: WorkspaceDep,
    status: Annotated[str | None, Query(description="open | agreed | adjudication | adjudicated")] = None,
    annotator: Annotated[str | None, Query(description="items this person is on")] = None,
    image_id: str | None = None,
    kind: str | None = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> ItemPage:
    items, total = QualityControl(ws).list_items(
        status=status, annotator=annotator, image_id=image_id, kind=kind, offset=offset, limit=limit
    )
    return ItemPage(items=items, total=total)


@router.get("/items/{item_id}")
def get_item(
    item_id: int,
    ws: WorkspaceDep,
    actor: Annotated[str | None, Query(description="who is looking: sees their own labels while open")] = None,
) -> dict[str, Any]:
    """Assignments, submissions (others' labels hidden while open), pairwise agreement, consensus."""
    return dict(QualityControl(ws).item(item_id, viewer=actor))


@router.get("/items/{item_id}/agreement")
def item_agreement(item_id: int, ws: WorkspaceDep) -> dict[str, Any]:
    return dict(QualityControl(ws).agreement(item_id))


@router.get("/items/{item_id}/consensus")
def item_consensus(item_id: int, ws: WorkspaceDep) -> dict[str, Any]:
    records = QualityControl(ws).consensus(item_id=item_id)
    return {"items": records, "count": len(records)}


@router.post("/assignments")
def assign(body: NewAssignments, ws: WorkspaceDep) -> dict[str, Any]:
    """Staff items with annotators (explicit or from a pool) or adjudicators."""
    qc = QualityControl(ws)
    ids = qc.unstaffed(body.role, image_id=body.image_id) if body.all_items else body.item_ids
    if body.all_items and not ids:
        return {"assignments": []}
    report = qc.assign(ids, actor=body.actor, annotators=body.annotators, pool=body.pool, role=body.role)
    return {"assignments": [r.as_dict() for r in report]}


@router.post("/items/{item_id}/submit")
def submit(item_id: int, body: Submission, ws: WorkspaceDep) -> dict[str, Any]:
    """Hand in the actor's labels; the last required submission measures agreement and decides."""
    labels = None if body.annotations is None else Annotations.from_records(body.annotations)
    return dict(QualityControl(ws).submit(item_id, body.actor, labels))


@router.post("/items/{item_id}/adjudicate")
def adjudicate(item_id: int, body: Decision, ws: WorkspaceDep) -> dict[str, Any]:
    """Decide a disputed item: choose an annotator's labels, or give the adjudicator's own."""
    labels = None if body.annotations is None else Annotations.from_records(body.annotations)
    return dict(
        QualityControl(ws).adjudicate(item_id, body.actor, choose=body.choose, annotations=labels, own=body.own)
    )


@router.get("/queue", response_model=ItemPage)
def queue(
    ws: WorkspaceDep,
    adjudicator: Annotated[str | None, Query(description="what this person can adjudicate")] = None,
    image_id: str | None = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> ItemPage:
    """Items awaiting adjudication, lowest agreement first."""
    items, total = QualityControl(ws).queue(adjudicator=adjudicator, image_id=image_id, offset=offset, limit=limit)
    return ItemPage(items=items, total=total)


@router.get("/consensus")
def image_consensus(ws: WorkspaceDep, image_id: str) -> dict[str, Any]:
    """Every consensus annotation of an image."""
    records = QualityControl(ws).consensus(image_id=image_id)
    return {"items": records, "count": len(records)}


@router.get("/annotators")
def annotator_quality(ws: WorkspaceDep, kind: str | None = None, image_id: str | None = None) -> dict[str, Any]:
    """Per-annotator work and agreement (with peers, with the consensus, κ for tags)."""
    return {"annotators": [r.as_dict() for r in QualityControl(ws).annotators(kind=kind, image_id=image_id)]}


@router.get("/agreement")
def agreement_summary(ws: WorkspaceDep, kind: str | None = None, image_id: str | None = None) -> dict[str, Any]:
    """Agreement over many items: per kind, per annotator pair, Fleiss' κ for tags."""
    return dict(QualityControl(ws).summary(kind=kind, image_id=image_id))
