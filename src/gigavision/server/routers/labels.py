"""Label-schema migrations over REST: rename, merge and remove classes; the schema's change log; the palette.

Listing and setting classes are ``GET /api/v1/labels`` and ``PUT /api/v1/labels/{name}``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from gigavision.server.auth import Allow, LoginDep, acting_as
from gigavision.server.deps import WorkspaceDep
from gigavision.store.labels import palette_color

router = APIRouter(prefix="/api/v1/labels", tags=["labels"])


class Rename(BaseModel):
    to: str = Field(min_length=1, max_length=256)
    actor: str = Field("anonymous", max_length=256)


class Merge(BaseModel):
    sources: list[str] = Field(min_length=1, description="classes folded into `into` and then removed")
    into: str = Field(min_length=1, max_length=256, description="an existing class, or a new one")
    actor: str = Field("anonymous", max_length=256)


@router.get("/events", dependencies=[Allow("data.read")])
def label_events(ws: WorkspaceDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict[str, Any]]:
    """Schema changes, newest first, with how many annotations each moved."""
    return [e.as_dict() for e in ws.labels.events(limit)]


@router.get("/palette", dependencies=[Allow("view")])
def label_palette(
    name: Annotated[list[Annotated[str, Field(max_length=256)]], Query(min_length=1, max_length=1000)],
) -> dict[str, str]:
    """The palette colour of each ``name``: the colour a class of that name gets when it is given none. The
    viewer draws labels without a class (an empty schema takes any label) in it, so it keeps no palette."""
    return {n: palette_color(n) for n in name}


@router.post("/merge", dependencies=[Allow("schema")])
def merge_labels(body: Merge, ws: WorkspaceDep, login: LoginDep) -> dict[str, Any]:
    """Relabel every annotation of ``sources`` as ``into``; 400 if the kinds differ."""
    return ws.labels.merge(body.sources, body.into, acting_as(login, body.actor)).as_dict()


@router.post("/{name}/rename", dependencies=[Allow("schema")])
def rename_label(name: str, body: Rename, ws: WorkspaceDep, login: LoginDep) -> dict[str, Any]:
    """Rename a class and relabel its annotations; 409 if the new name exists (merge instead)."""
    return ws.labels.rename(name, body.to, acting_as(login, body.actor)).as_dict()


@router.delete("/{name}", status_code=204, dependencies=[Allow("schema")])
def remove_label(
    name: str, ws: WorkspaceDep, login: LoginDep, actor: Annotated[str, Query(max_length=256)] = "anonymous"
) -> Response:
    """Remove an unused class; 409 while annotations use it."""
    ws.labels.remove(name, acting_as(login, actor))
    return Response(status_code=204)
