"""``/api/v1/qc/...``: multi-annotator quality control (items, assignments, submissions, adjudication, reports).

Who acts: in a workspace with users, the login; an ``actor`` (field or parameter) naming someone else is a 403,
and an annotator lists only their own items. Without users, the acting person is the ``actor`` field, and
independence is by convention: ``GET /api/v1/qc/items/{id}?actor=NAME`` shows a submission's labels only to its
author while the item is open. With users no endpoint shows an annotator the others' labels of an open item
(the annotation endpoints leave them out too: ``gigavision.active.isolation``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field

from gigavision.active.agreement import MatchOptions
from gigavision.active.quality import QualityControl
from gigavision.annotations import Annotations
from gigavision.server.auth import Allow, LoginDep, acting_as
from gigavision.server.deps import WorkspaceDep
from gigavision.store.roles import Login
from gigavision.workspace import Workspace

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
    actor: str | None = Field(
        None, max_length=256, description="the annotator handing in (required without users; else the login)"
    )
    annotations: list[dict[str, Any]] | None = Field(
        None, description=f"{RECORDS}; omitted: the actor's proposed annotations in the item"
    )


class Decision(BaseModel):
    actor: str | None = Field(
        None,
        max_length=256,
        description="the adjudicator, not one of the item's annotators (required without users; else the login)",
    )
    choose: str | None = Field(None, description="take this annotator's labels as the consensus")
    annotations: list[dict[str, Any]] | None = Field(None, description=f"the adjudicator's own labels: {RECORDS}")
    own: bool = Field(False, description="use the adjudicator's proposed annotations in the item")


class ItemPage(BaseModel):
    items: list[dict[str, Any]]
    total: int


def _person(login: Login, given: str | None, what: str) -> str:
    """The person acting: the login, or without users the named ``actor`` (required for who labels/decides)."""
    if login.via == "local" and not given:  # as when the field was required: 422
        raise RequestValidationError(
            [{"loc": ("body", "actor"), "msg": f"Field required: the {what} (without users)", "type": "missing"}]
        )
    return acting_as(login, given)


@router.post("/items", status_code=201, dependencies=[Allow("qc.setup")])
def add_items(body: NewItems, ws: WorkspaceDep, login: LoginDep) -> dict[str, Any]:
    """Create items: the whole image, the given regions, or a grid of cells."""
    options = MatchOptions(
        iou_threshold=body.iou_threshold, match_labels=body.match_labels, point_radius=body.point_radius
    )
    items = QualityControl(ws).add_items(
        body.image_id,
        body.kind,
        actor=acting_as(login, body.actor),
        regions=body.regions,
        grid=body.grid,
        labels=body.labels,
        required=body.required,
        threshold=body.threshold,
        options=options,
    )
    return {"items": items, "count": len(items)}


@router.get("/items", response_model=ItemPage, dependencies=[Allow("qc.read")])
def list_items(
    ws: WorkspaceDep,
    login: LoginDep,
    status: Annotated[str | None, Query(description="open | agreed | adjudication | adjudicated")] = None,
    annotator: Annotated[
        str | None, Query(description="items this person is on (an annotator login: always themselves)")
    ] = None,
    image_id: str | None = None,
    kind: str | None = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> ItemPage:
    if login.role == "annotator" and login.via != "local":
        annotator = login.name
    items, total = QualityControl(ws).list_items(
        status=status, annotator=annotator, image_id=image_id, kind=kind, offset=offset, limit=limit
    )
    return ItemPage(items=items, total=total)


@router.get("/items/{item_id}", dependencies=[Allow("qc.read")])
def get_item(
    item_id: int,
    ws: WorkspaceDep,
    login: LoginDep,
    actor: Annotated[
        str | None, Query(description="who is looking (without users): sees their own labels while open")
    ] = None,
) -> dict[str, Any]:
    """Assignments, submissions (others' labels hidden while open; once revealed, each label's ``matched_with``:
    the other annotators with a matching label), pairwise agreement, consensus."""
    viewer = actor if login.via == "local" else acting_as(login, actor)
    return dict(QualityControl(ws).item(item_id, viewer=viewer))


@router.get("/items/{item_id}/agreement", dependencies=[Allow("qc.read")])
def item_agreement(item_id: int, ws: WorkspaceDep) -> dict[str, Any]:
    return dict(QualityControl(ws).agreement(item_id))


@router.get("/items/{item_id}/consensus", dependencies=[Allow("qc.read")])
def item_consensus(item_id: int, ws: WorkspaceDep) -> dict[str, Any]:
    records = QualityControl(ws).consensus(item_id=item_id)
    return {"items": records, "count": len(records)}


@router.post("/assignments", dependencies=[Allow("qc.setup")])
def assign(body: NewAssignments, ws: WorkspaceDep, login: LoginDep) -> dict[str, Any]:
    """Staff items with annotators (explicit or from a pool) or adjudicators."""
    qc = QualityControl(ws)
    ids = qc.unstaffed(body.role, image_id=body.image_id) if body.all_items else body.item_ids
    if body.all_items and not ids:
        return {"assignments": []}
    report = qc.assign(
        ids, actor=acting_as(login, body.actor), annotators=body.annotators, pool=body.pool, role=body.role
    )
    return {"assignments": [r.as_dict() for r in report]}


@router.post("/items/{item_id}/submit", dependencies=[Allow("qc.submit")])
def submit(item_id: int, body: Submission, ws: WorkspaceDep, login: LoginDep) -> dict[str, Any]:
    """Hand in the actor's labels; the last required submission measures agreement and decides. Labels are
    checked as every REST annotation write is (``POST /api/v1/images/{id}/annotations``)."""
    qc = QualityControl(ws)
    labels = _labels(ws, qc, item_id, body.annotations)
    return dict(qc.submit(item_id, _person(login, body.actor, "annotator handing in"), labels))


@router.post("/items/{item_id}/adjudicate", dependencies=[Allow("qc.review")])
def adjudicate(item_id: int, body: Decision, ws: WorkspaceDep, login: LoginDep) -> dict[str, Any]:
    """Decide a disputed item: choose an annotator's labels, or give the adjudicator's own."""
    qc = QualityControl(ws)
    labels = _labels(ws, qc, item_id, body.annotations)
    return dict(
        qc.adjudicate(
            item_id, _person(login, body.actor, "adjudicator"), choose=body.choose, annotations=labels, own=body.own
        )
    )


def _labels(
    ws: Workspace, qc: QualityControl, item_id: int, records: list[dict[str, Any]] | None
) -> Annotations | None:
    """Submitted records on the item's image, checked before anything is decoded (bounds, validity, vertex and
    mask caps, records per request)."""
    if records is None:
        return None
    canvas = ws.canvas(qc.image_of(item_id))
    return Annotations.from_records(records, canvas=canvas, max_records=ws.settings.limits.max_records_per_request)


@router.get("/queue", response_model=ItemPage, dependencies=[Allow("qc.review")])
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


@router.get("/consensus", dependencies=[Allow("qc.read")])
def image_consensus(ws: WorkspaceDep, image_id: str) -> dict[str, Any]:
    """Every consensus annotation of an image."""
    records = QualityControl(ws).consensus(image_id=image_id)
    return {"items": records, "count": len(records)}


@router.get("/annotators", dependencies=[Allow("data.read")])
def annotator_quality(ws: WorkspaceDep, kind: str | None = None, image_id: str | None = None) -> dict[str, Any]:
    """Per-annotator work and agreement (with peers, with the consensus, κ for tags)."""
    return {"annotators": [r.as_dict() for r in QualityControl(ws).annotators(kind=kind, image_id=image_id)]}


@router.get("/agreement", dependencies=[Allow("data.read")])
def agreement_summary(ws: WorkspaceDep, kind: str | None = None, image_id: str | None = None) -> dict[str, Any]:
    """Agreement over many items: per kind, per annotator pair, Fleiss' κ for tags."""
    return dict(QualityControl(ws).summary(kind=kind, image_id=image_id))
