"""Visual search: embedding indexes (``/api/v1/indexes``) and "what looks like this?" queries.

Building and adding run as ``index`` jobs (202 + the job record: embedding thousands of images or regions
takes minutes); listing, dropping and searching answer in the request. A search is by a workspace image (id,
prefix or name, optionally a ``region`` of it) or an uploaded file (multipart field ``file``), embedded by the
index's own model; the results carry a IIIF thumbnail URL of each region and a viewer link.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from gigavision.errors import GigavisionError, InvalidInput
from gigavision.search.build import RegionSpec
from gigavision.search.query import MAX_K, search
from gigavision.search.store import check_index_name, drop, get_card, list_cards
from gigavision.server.auth import Allow, LoginDep, acting_as
from gigavision.server.deps import WorkspaceDep
from gigavision.server.errors import validated
from gigavision.server.uploads import FILE_PROPERTY, multipart_body, read_json_object, receive_form

router = APIRouter(prefix="/api/v1", tags=["search"])
JOB_KIND = "index"  # jobs/registry.py: gigavision.search.jobs:run_index
MAX_JSON_BYTES = 64 * 1024


class BuildBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, description="index name (A-Z a-z 0-9 _ . -)")
    model: str = Field(min_length=1, max_length=128, description="an embed, classify or probe model (id or alias)")
    images: list[str] = Field(default_factory=list, description="image filters key=value: image, image_id, meta:KEY")
    dataset: str | None = Field(None, max_length=128, description="index the images of this version (NAME@N)")
    regions: str | None = Field(
        None, max_length=256, description="tile=256,level=1 (or mpp=…, min_foreground=…); null: whole images"
    )
    follow: bool = Field(False, description="add newly ingested images by itself")
    actor: str = Field("anonymous", min_length=1, max_length=256)


class AddBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    images: list[str] | None = Field(None, description="image ids; null: every new image the index selects")
    actor: str = Field("anonymous", min_length=1, max_length=256)


class SearchFields(BaseModel):
    """A search's fields: a JSON body, or multipart/form fields next to ``file``."""

    model_config = ConfigDict(extra="forbid")

    image_id: str | None = Field(None, description="a workspace image (id, prefix or name); or upload field file")
    region: str | list[float] | None = Field(None, description="x0,y0,x1,y1 in level-0 pixels of the image")
    k: int = Field(20, ge=1, le=MAX_K)
    label: list[str] = Field(default_factory=list, description="only images holding one of these labels")
    dataset: str | None = Field(None, max_length=128, description="only images of this dataset version (NAME@N)")
    meta: dict[str, str] = Field(default_factory=dict, description="only images with these metadata values")
    model: str | None = Field(None, max_length=128, description="the model the caller expects (409 if not the index's)")
    include_self: bool = Field(False, description="let the query image's own entries be results")


def _validated(data: dict[str, Any]) -> SearchFields:
    return validated(SearchFields, data)


_SCHEMA = SearchFields.model_json_schema()
OPENAPI_BODY: dict[str, Any] = multipart_body(
    ("POST", f"{router.prefix}/indexes/{{name}}/search"),
    {"file": FILE_PROPERTY, **{k: v for k, v in _SCHEMA["properties"].items() if k != "image_id"}},
    ["file"],
)
OPENAPI_BODY["requestBody"]["content"]["application/json"] = {
    "schema": _SCHEMA,
    "example": {"image_id": "<64 hex>", "region": "1024,2048,1280,2304", "k": 20},
}


@router.get("/indexes", dependencies=[Allow("data.read")])
def list_indexes(ws: WorkspaceDep) -> list[dict[str, Any]]:
    """Every index's card (model, what is indexed, FAISS parameters, counts)."""
    return [c.as_dict() for c in list_cards(ws)]


@router.get("/indexes/{name}", dependencies=[Allow("data.read")])
def show_index(name: str, ws: WorkspaceDep) -> dict[str, Any]:
    return get_card(ws, name).as_dict()


@router.post("/indexes", status_code=202, dependencies=[Allow("predict")])
def build_index(body: BuildBody, ws: WorkspaceDep, response: Response, login: LoginDep) -> dict[str, Any]:
    """Queue an ``index`` job that builds a new index (409 when the name is taken)."""
    from gigavision.search.build import select_images
    from gigavision.search.store import create_folder

    check_index_name(body.name)
    create_folder(ws, body.name)  # a taken name: 409 now, not a failed job later
    spec = RegionSpec.parse(body.regions) if body.regions is not None else None
    select_images(ws, body.images, None)  # bad filters: 400 now
    params = {
        "action": "build",
        "name": body.name,
        "model": body.model,
        "images": body.images,
        "dataset": body.dataset,
        "regions": body.regions if spec is not None else None,
        "follow": body.follow,
    }
    record = ws.jobs.submit(JOB_KIND, params, acting_as(login, body.actor))
    response.headers["Location"] = f"/api/v1/jobs/{record['id']}"
    return dict(record)


@router.post("/indexes/{name}/add", status_code=202, dependencies=[Allow("predict")])
def add_to_index(name: str, body: AddBody, ws: WorkspaceDep, response: Response, login: LoginDep) -> dict[str, Any]:
    """Queue an ``index`` job that embeds images not yet in the index and appends them."""
    get_card(ws, name)
    images = list(ws.find_images(body.images).values()) if body.images else None
    record = ws.jobs.submit(JOB_KIND, {"action": "add", "name": name, "images": images}, acting_as(login, body.actor))
    response.headers["Location"] = f"/api/v1/jobs/{record['id']}"
    return dict(record)


@router.post(
    "/indexes/{name}/search",
    dependencies=[Allow("predict")],  # runs the model on an upload, as POST /api/v1/predict; no POST is a viewer's
    openapi_extra=OPENAPI_BODY,
    responses={400: {}, 404: {}, 409: {"description": "model is not the index's model"}, 413: {}, 422: {}},
)
async def search_index(name: str, request: Request, ws: WorkspaceDep, login: LoginDep) -> dict[str, Any]:
    """The ``k`` entries most like an image: ``image_id`` (+ optional ``region``) as JSON or form fields, or a
    multipart ``file``. ``{"index", "model", "query", "searched", "results": [{"rank", "score", "image_id",
    "name", "region", "thumbnail_url", "viewer_url"}]}``; an empty index gives no results, not an error."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json":
        what = "a JSON search (upload images as multipart)"
        fields = _validated(await read_json_object(request, MAX_JSON_BYTES, what, "image_id"))
        if fields.image_id is None:
            raise InvalidInput("give image_id (or upload an image file as multipart field file)")
        return await run_in_threadpool(_search, ws, name, fields, None)
    async with receive_form(request, ws.root, ws.settings.limits.max_upload_bytes) as form:
        data: dict[str, Any] = {k: v for k, v in form.fields.items() if v != ""}
        for key in ("label",):
            if isinstance(data.get(key), str):
                data[key] = [v for v in data[key].split(",") if v]
        if isinstance(data.get("meta"), str):
            try:
                data["meta"] = json.loads(data["meta"])
            except json.JSONDecodeError as exc:
                raise InvalidInput(f"meta must be a JSON object of KEY: value: {exc}") from exc
        fields = _validated(data)
        if (form.file is None) == (fields.image_id is None):
            raise InvalidInput("give either an image file (multipart field file) or an image_id, not both")
        if form.file is not None and form.size == 0:
            raise InvalidInput(f"{form.filename}: empty upload (0 bytes)")
        return await run_in_threadpool(_search, ws, name, fields, form.file, form.filename)


def _search(ws: Any, name: str, fields: SearchFields, upload: Path | None, shown: str | None = None) -> dict[str, Any]:
    try:
        return search(
            ws,
            name,
            image=fields.image_id,
            upload=upload,
            region=fields.region,
            k=fields.k,
            labels=fields.label,
            dataset=fields.dataset,
            meta=fields.meta,
            model=fields.model,
            include_self=fields.include_self,
        ).as_dict()
    except GigavisionError as exc:  # name an upload as the client did, never by its spool path on the server
        if upload is None or shown is None:
            raise
        raise type(exc)(str(exc).replace(str(upload), shown)) from exc


@router.get("/images/{image_id}/similar", dependencies=[Allow("view")], responses={400: {}, 404: {}})
def similar(
    image_id: str,
    ws: WorkspaceDep,
    index: Annotated[str, Query(description="the index to search")],
    region: Annotated[str | None, Query(description="x0,y0,x1,y1 in level-0 pixels")] = None,
    k: Annotated[int, Query(ge=1, le=MAX_K)] = 20,
    label: Annotated[list[str] | None, Query(description="only images holding this label (repeatable)")] = None,
    dataset: Annotated[str | None, Query(description="only images of this dataset version")] = None,
    include_self: Annotated[bool, Query(description="let this image's own entries be results")] = False,
) -> dict[str, Any]:
    """The entries of ``index`` most like this image, or a region of it (the viewer's "Find similar")."""
    fields = SearchFields(
        image_id=image_id, region=region, k=k, label=label or [], dataset=dataset, include_self=include_self
    )
    return _search(ws, index, fields, None)


@router.delete("/indexes/{name}", status_code=204, dependencies=[Allow("predict")])
def drop_index(name: str, ws: WorkspaceDep) -> Response:
    drop(ws, name)
    return Response(status_code=204)
