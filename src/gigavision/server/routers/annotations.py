"""``/api/v1/images/{id}/annotations``, ``/api/v1/annotations/{id}`` and ``/api/v1/labels``.

Who acts: in a workspace with users, the login (an ``actor`` naming someone else is a 403); without users,
the ``actor`` field/parameter, recorded in the history as given. An annotator edits and deletes only their
own annotations, and no endpoint here shows anyone the other annotators' labels of an open QC item on the
image (``gigavision.active.isolation``): they are left out of lists and are a 404 one by one.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from gigavision.active.isolation import NOTHING, Hidden, annotation_owner, hidden_from, owns
from gigavision.active.quality_items import source_of
from gigavision.annotations import Annotations
from gigavision.errors import Forbidden, NotFound
from gigavision.server.auth import Allow, LoginDep, acting_as
from gigavision.server.deps import WorkspaceDep
from gigavision.store.annotations import Viewport
from gigavision.store.roles import Login
from gigavision.workspace import Workspace

router = APIRouter(tags=["annotations"])


class AnnotationPage(BaseModel):
    items: list[dict[str, Any]]
    count: int = Field(description="records on this page")
    total: int | None = Field(description="records that match in all (null with total=false)")
    truncated: bool = Field(description="more records follow: ask again with cursor=next_cursor")
    next_cursor: str | None = Field(description="the cursor of the next page; null on the last one")
    label_counts: dict[str, int] | None = Field(
        None,
        description="with counts=true: how many match per label, of every label (label and exclude_label narrow "
        "items and total, not these); null otherwise",
    )


class AddAnnotations(BaseModel):
    annotations: list[dict[str, Any]] = Field(
        description="records: kind, label, bbox [x0,y0,x1,y1] and/or GeoJSON geometry, mask (COCO RLE), "
        "score, source, status, attributes"
    )
    actor: str = Field("anonymous", max_length=256)


class EditAnnotation(BaseModel):
    version: int = Field(ge=1, description="the version your edit is based on; a newer one gives 409")
    changes: dict[str, Any]
    actor: str = Field("anonymous", max_length=256)


class LabelClass(BaseModel):
    kind: str
    color: str | None = Field(
        None, max_length=16, description="omitted: the class keeps its colour; a new one gets a palette colour"
    )
    parent: str | None = None
    attributes: dict[str, list[str]] = Field(default_factory=dict)


def _hidden(ws: Workspace, image_id: str, login: Login) -> Hidden:
    """What this login may not see of the image (others' labels of its open QC items)."""
    if login.via == "local":  # no users: one person, QC independence is by convention (``actor``)
        return NOTHING
    return hidden_from(ws, image_id, login.name, always=login.role == "annotator")


def _visible(ws: Workspace, annotation_id: int, login: Login, *, write: bool = False) -> None:
    """404 for an annotation this login may not see; 403 for an annotator's write to someone else's."""
    if login.via == "local":
        return
    owner = annotation_owner(ws, annotation_id)
    if owner is None:
        return  # the store answers 404 (or the history of a deleted row)
    image_id, created_by, source = owner
    if annotation_id in _hidden(ws, image_id, login).ids:
        raise NotFound(f"no annotation with id {annotation_id}")
    if write and login.role == "annotator" and not owns(login.name, created_by, source):
        raise Forbidden(f"{login.name} (annotator) edits only their own annotations; {annotation_id} is not")


UNNAMED_SOURCES = (None, "", "unknown", "web")
"""Sources that name nobody: a login's records that carry one are its own labels (``user:NAME``)."""


def _sourced(record: dict[str, Any], login: Login) -> dict[str, Any]:
    """A record as stored for ``login``: with users, a label drawn without a named source (the viewer's
    ``web``) is the login's own, ``user:NAME``, as QC and the isolation rules expect of annotators' labels.
    Named sources (a model's, an import's) pass as given."""
    if login.via == "local" or record.get("source") not in UNNAMED_SOURCES:
        return record
    return {**record, "source": source_of(login.name)}


@router.get(
    "/api/v1/images/{image_id}/annotations", response_model=AnnotationPage, dependencies=[Allow("annotations.read")]
)
def list_annotations(
    image_id: str,
    ws: WorkspaceDep,
    login: LoginDep,
    bbox: Annotated[str | None, Query(description="viewport x0,y0,x1,y1 in level-0 pixels")] = None,
    label: Annotated[list[str] | None, Query()] = None,
    exclude_label: Annotated[
        list[str] | None, Query(description="every label but these (a viewer's hidden classes)")
    ] = None,
    source: Annotated[
        list[str] | None,
        Query(
            description="only these sources: names or globs (* any text, ? one character), !PATTERN leaves out "
            "(source=model:* model proposals; source=!model:* everything else)"
        ),
    ] = None,
    status: Annotated[list[str] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
    cursor: Annotated[str | None, Query(max_length=32, description="next_cursor of the previous page")] = None,
    simplify: Annotated[float, Query(ge=0, le=1e6, description="polygon simplification tolerance (px)")] = 0.0,
    total: Annotated[bool, Query(description="count every match (false: skip it, e.g. per viewer pan)")] = True,
    sample: Annotated[
        bool,
        Query(
            description="more than limit match: a sample spread over every label and the whole bbox instead of "
            "the first by id (truncated: some left out; total always given; no cursor)"
        ),
    ] = False,
    counts: Annotated[
        bool,
        Query(description="label_counts: the matches per label (of every label: a legend counts hidden classes)"),
    ] = False,
) -> AnnotationPage:
    """Annotations of an image in id order, a page at a time (``cursor``), optionally inside a viewport.

    ``sample=true`` (the viewer's overlay): when more than ``limit`` match, a sample stratified by label and
    spread over the viewport rather than the first ``limit`` by id.

    Others' labels of an open QC item are left out for its annotators, from the items, ``total`` and
    ``label_counts`` alike (the store leaves them out of the query)."""
    image_id = ws.find_image(image_id)
    hidden = _hidden(ws, image_id, login)
    page = ws.annotations.query_page(
        image_id,
        Viewport.parse(bbox) if bbox else None,
        labels=label or (),
        exclude_labels=exclude_label or (),
        sources=source or (),
        statuses=status or (),
        limit=limit,
        cursor=cursor,
        simplify=simplify,
        with_total=total,
        sample=sample,
        counts=counts,
        exclude=hidden.ids,
    )
    return AnnotationPage(
        items=page.items,
        count=len(page.items),
        total=page.total,
        truncated=page.truncated,
        next_cursor=page.next_cursor,
        label_counts=page.label_counts,
    )


@router.post("/api/v1/images/{image_id}/annotations", status_code=201, dependencies=[Allow("annotations.write")])
def add_annotations(image_id: str, body: AddAnnotations, ws: WorkspaceDep, login: LoginDep) -> dict[str, Any]:
    """Add annotations in one transaction: all are stored, or none (400 naming the record and the reason).

    Each record is checked as an import's is (inside the image, valid geometry, vertex cap, a mask's RLE size
    equal to its box and within ``limits.max_tile_pixels``, checked before it is decoded), and one request
    carries at most ``limits.max_records_per_request`` records."""
    image_id = ws.find_image(image_id)
    limits = ws.settings.limits
    records = [_sourced(r, login) for r in body.annotations]
    ann = Annotations.from_records(records, canvas=ws.canvas(image_id), max_records=limits.max_records_per_request)
    ids = ws.annotations.add(image_id, ann, actor=acting_as(login, body.actor))
    return {"ids": ids, "count": len(ids)}


@router.get("/api/v1/annotations/{annotation_id}", dependencies=[Allow("annotations.read")])
def get_annotation(annotation_id: int, ws: WorkspaceDep, login: LoginDep) -> dict[str, Any]:
    """One live annotation as a record with its version (the viewer reloads one after a 409 with this)."""
    _visible(ws, annotation_id, login)
    return ws.annotations.get_record(annotation_id)


@router.patch("/api/v1/annotations/{annotation_id}", dependencies=[Allow("annotations.write")])
def edit_annotation(annotation_id: int, body: EditAnnotation, ws: WorkspaceDep, login: LoginDep) -> dict[str, Any]:
    _visible(ws, annotation_id, login, write=True)
    canvas = ws.canvas(ws.annotations.image_of(annotation_id))
    actor = acting_as(login, body.actor)
    return ws.annotations.update(annotation_id, body.version, body.changes, actor=actor, canvas=canvas)


@router.delete("/api/v1/annotations/{annotation_id}", status_code=204, dependencies=[Allow("annotations.write")])
def delete_annotation(
    annotation_id: int,
    ws: WorkspaceDep,
    login: LoginDep,
    version: Annotated[int, Query(ge=1)],
    actor: Annotated[str, Query(max_length=256)] = "anonymous",
) -> Response:
    _visible(ws, annotation_id, login, write=True)
    ws.annotations.delete(annotation_id, version, actor=acting_as(login, actor))
    return Response(status_code=204)


@router.get("/api/v1/annotations/{annotation_id}/history", dependencies=[Allow("annotations.read")])
def annotation_history(annotation_id: int, ws: WorkspaceDep, login: LoginDep) -> list[dict[str, Any]]:
    _visible(ws, annotation_id, login)
    return ws.annotations.history(annotation_id)


@router.get("/api/v1/labels", dependencies=[Allow("view")])
def list_labels(ws: WorkspaceDep) -> dict[str, LabelClass]:
    return {
        name: LabelClass(kind=c.kind, color=c.color, parent=c.parent, attributes=c.attributes)
        for name, c in ws.labels.by_name().items()
    }


@router.put("/api/v1/labels/{name}", dependencies=[Allow("schema")])
def put_label(name: str, body: LabelClass, ws: WorkspaceDep, login: LoginDep) -> LabelClass:
    actor = "rest" if login.via == "local" else login.name
    saved = ws.labels.set(name, body.kind, body.color, body.parent, body.attributes, actor=actor)
    return LabelClass.model_validate(saved.as_dict())
