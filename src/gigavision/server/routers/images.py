"""``/api/v1/images``: list, get, thumbnail, mask, upload, metadata."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, computed_field

from gigavision.errors import InvalidInput
from gigavision.images.metadata import public_meta, user_meta_keys
from gigavision.server.auth import Allow, LoginDep, acting_as
from gigavision.server.deps import WorkspaceDep
from gigavision.server.uploads import FILE_PROPERTY, multipart_body, receive_form
from gigavision.store.image_search import ImageQuery, parse_meta, search_images
from gigavision.store.schema import ImageRow

if TYPE_CHECKING:
    from gigavision.ingest import IngestResult

router = APIRouter(prefix="/api/v1/images", tags=["images"])
IMMUTABLE = "public, max-age=31536000, immutable"


class LevelOut(BaseModel):
    width: int
    height: int
    downsample: float


class ImageOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    width: int
    height: int
    levels: list[LevelOut]
    bands: int
    dtype: str
    mpp_x: float | None
    mpp_y: float | None
    crs: str | None
    transform: list[float] | None
    modality: str | None
    reader: str
    format: str
    size_bytes: int
    foreground_fraction: float | None
    created_at: datetime
    meta: dict[str, Any] = Field(
        default_factory=dict, description="What ingest recorded (e.g. pyramid, compression) and what users set."
    )
    user_keys: list[str] = Field(default_factory=list, description="The keys of meta that users set (editable).")
    meta_by: str | None = Field(None, description="who changed the metadata last (null: only ingest wrote it)")
    meta_at: datetime | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def urls(self) -> dict[str, str]:
        return {
            "thumbnail": f"/api/v1/images/{self.id}/thumbnail",
            "mask": f"/api/v1/images/{self.id}/mask",
            "dzi": f"/dzi/{self.id}.dzi",
            "iiif": f"/iiif/3/{self.id}/info.json",
        }

    @classmethod
    def from_row(cls, row: ImageRow) -> ImageOut:
        out = cls.model_validate(row)
        out.meta, out.user_keys = public_meta(row.meta), user_meta_keys(row.meta)
        return out


class ImageMetaOut(BaseModel):
    id: str
    meta: dict[str, Any]
    user_keys: list[str]
    meta_by: str | None = Field(None, description="who changed the metadata last (null: only ingest wrote it)")
    meta_at: datetime | None = None


class ImagePage(BaseModel):
    items: list[ImageOut]
    total: int
    offset: int
    limit: int


class IngestOut(BaseModel):
    path: str
    name: str
    status: str
    id: str | None
    width: int | None
    height: int | None
    levels: int | None
    mpp: float | None
    crs: str | None
    reason: str | None


@router.get("", dependencies=[Allow("view")], response_model=ImagePage)
def list_images(
    ws: WorkspaceDep,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    q: Annotated[str | None, Query(max_length=1024, description="part of the image name (any case)")] = None,
    label: Annotated[str | None, Query(max_length=256, description="has an annotation of this label")] = None,
    status: Annotated[
        str | None, Query(max_length=16, description="has an annotation in this status (with label: the same one)")
    ] = None,
    meta: Annotated[
        str | None, Query(max_length=2048, description="KEY=VALUE: metadata KEY equals VALUE (compared as text)")
    ] = None,
    pending_review: Annotated[bool | None, Query(description="true: an open review task is on it; false: none")] = None,
) -> ImagePage:
    """Images in the order they were added; the filters narrow the page and its total."""
    query = ImageQuery(
        name=q or None,
        label=label or None,
        status=status or None,
        meta=parse_meta(meta) if meta else None,
        pending_review=pending_review,
    )
    rows, total = ws.list_images(offset, limit) if query.empty else search_images(ws.session, query, offset, limit)
    return ImagePage(items=[ImageOut.from_row(r) for r in rows], total=total, offset=offset, limit=limit)


# Every ``{image_id}`` below is an image reference as people type it: the full id, a unique prefix of 6+
# characters or a unique name (``Workspace.find_image``; 404 unknown, 400 ``ambiguous`` listing the candidates).
ImageRef = Annotated[str, Path(description="image id, a unique prefix of it (6+ characters) or a unique name")]


@router.get("/{image_id}", dependencies=[Allow("view")], response_model=ImageOut)
def get_image(image_id: ImageRef, ws: WorkspaceDep) -> ImageOut:
    # fresh: the metadata may have been changed by another process (the CLI) since this one cached the row
    return ImageOut.from_row(ws.get_image(ws.find_image(image_id), fresh=True))


@router.patch(
    "/{image_id}/meta", dependencies=[Allow("images.write")], response_model=ImageMetaOut, responses={400: {}, 404: {}}
)
def patch_image_meta(
    image_id: ImageRef,
    ws: WorkspaceDep,
    login: LoginDep,
    values: Annotated[
        dict[str, Any],
        Body(
            description="Keys to set (text, number, true/false) or, with null, to remove.",
            examples=[{"patient": "p017", "age": 61, "md": -3.2, "old_key": None}],
        ),
    ],
) -> ImageMetaOut:
    """Merge keys into the image's metadata (all or nothing); keys that ingest wrote cannot be changed."""
    image_id = ws.find_image(image_id)
    ws.set_image_meta(image_id, values, acting_as(login, None))
    row = ws.get_image(image_id, fresh=True)
    return ImageMetaOut(
        id=image_id,
        meta=public_meta(row.meta),
        user_keys=user_meta_keys(row.meta),
        meta_by=row.meta_by,
        meta_at=row.meta_at,
    )


def _cache_control(ref: str, image_id: str) -> dict[str, str]:
    """Immutable only under the full id: what a prefix or a name points at can change (a second image with
    that prefix or name makes it ambiguous), so those answers must be revalidated."""
    return {"Cache-Control": IMMUTABLE if ref == image_id else "no-cache"}


@router.get("/{image_id}/thumbnail", dependencies=[Allow("view")], response_class=FileResponse)
def thumbnail(image_id: ImageRef, ws: WorkspaceDep) -> FileResponse:
    found = ws.find_image(image_id)
    return FileResponse(ws.thumbnail_path(found), media_type="image/jpeg", headers=_cache_control(image_id, found))


@router.get("/{image_id}/mask", dependencies=[Allow("view")], response_class=FileResponse)
def mask(image_id: ImageRef, ws: WorkspaceDep) -> FileResponse:
    """The foreground (tissue) mask at low resolution: white where there is something to look at."""
    found = ws.find_image(image_id)
    return FileResponse(ws.mask_path(found), media_type="image/png", headers=_cache_control(image_id, found))


UPLOAD_BODY = multipart_body(
    ("POST", router.prefix), {"file": FILE_PROPERTY}, ["file"], "one image file, multipart field file"
)


@router.post(
    "",
    dependencies=[Allow("images.write")],
    status_code=201,
    response_model=IngestOut,
    openapi_extra=UPLOAD_BODY,
    responses={
        200: {"description": "the same bytes were already ingested"},
        202: {"description": "a big image: the queued ingest job (follow /api/v1/jobs/{id})"},
        400: {},
        413: {},
        422: {},
    },
)
async def upload_image(request: Request, ws: WorkspaceDep, login: LoginDep) -> Any:
    """Upload one image (multipart field ``file``), streamed once into the workspace's upload spool under
    ``limits.max_upload_bytes``. A small image is ingested in the request (201, or 200 for bytes already
    ingested); a big one (``ingest.runs_long``: a side over ``ingest.pyramid_threshold`` or more than
    ``ingest.LONG_INGEST_BYTES``) is ingested by an ``ingest`` job (202 + the job record)."""
    from gigavision.ingest import runs_long

    limit = ws.settings.limits.max_upload_bytes
    async with receive_form(request, ws.root, limit) as form:
        if form.file is None or form.filename is None:
            raise InvalidInput("no file: send the image in the multipart field file")
        name, path = form.filename, form.file
        if form.size == 0:
            raise InvalidInput(f"{name}: empty upload (0 bytes)")
        if await run_in_threadpool(runs_long, path, ws.settings):
            actor = acting_as(login, form.fields.get("actor") or "anonymous")
            record = ws.jobs.submit("ingest", {"file": name}, actor[:256], inputs={name: path})
            return JSONResponse(record, status_code=202, headers={"Location": f"/api/v1/jobs/{record['id']}"})
        result: IngestResult = await run_in_threadpool(ws.ingest_file, path, name=name, source_path=f"upload:{name}")
    if result.reason and path.name != name:  # a long name was spooled shorter: name the client's file
        result.reason = result.reason.replace(path.name, name)
    body = result.as_dict()
    if result.status == "rejected":
        status = 413 if result.code == "limit_exceeded" else 422
        return JSONResponse(
            {"error": {"code": result.code or "invalid_image", "message": result.reason}, "result": body},
            status,
        )
    return JSONResponse(body, status_code=201 if result.status == "added" else 200)
