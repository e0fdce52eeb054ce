"""``/api/v1/datasets``: create, list, show, page through and diff immutable dataset versions.

Creation runs in the request by default (quick for thousands of images: annotations are frozen per image and
perceptual hashes are cached); ``"background": true`` runs it as a job with progress instead (202).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from gigavision.datasets import create_version, diff_versions, list_versions, open_version
from gigavision.datasets.spec import DEFAULT_SPLIT, check_name
from gigavision.errors import InvalidInput
from gigavision.server.auth import Allow, LoginDep, acting_as
from gigavision.server.deps import WorkspaceDep

router = APIRouter(prefix="/api/v1/datasets", tags=["datasets"])


class CreateDataset(BaseModel):
    name: str = Field(min_length=1, max_length=64, description="1-64 of A-Z a-z 0-9 _ . -")
    filters: list[str] = Field(
        default_factory=list,
        description="key=value[,value...]: image (name glob), image_id, label, source (glob), status, kind, "
        "has=annotations, meta:KEY",
    )
    split: str | dict[str, float] = Field(DEFAULT_SPLIT, description="ratios > 0 summing to 1")
    stratify: bool = False
    group_by: str = Field("image", description="'image' or 'meta:KEY'")
    seed: int = Field(0, ge=0, lt=2**63)
    statuses: list[str] | None = Field(None, description="default: accepted, adjudicated")
    dup_distance: int | None = Field(4, ge=-1, le=32, description="perceptual-hash bits; null or -1: off")
    reshuffle: bool = False
    split_hints: bool = Field(True, description="keep the split an image's metadata 'split' names (set by imports)")
    allow_duplicate: bool = False
    qc_submissions: bool = Field(False, description="also freeze annotators' QC submissions, not only consensus")
    actor: str = Field("anonymous", min_length=1, max_length=256)
    background: bool = Field(False, description="run as a job: 202 with the job record (see /api/v1/jobs)")


class VersionList(BaseModel):
    items: list[dict[str, Any]]
    count: int


class ImagePage(BaseModel):
    items: list[dict[str, Any]]
    total: int


def _ref(name: str, version: str) -> str:
    check_name(name)
    if version != "latest" and not version.isdigit():
        raise InvalidInput(f"version {version!r} must be a number ≥ 1 or 'latest'")
    return f"{name}@{version}"


@router.post("", status_code=201, dependencies=[Allow("datasets.write")])
def create_dataset(body: CreateDataset, ws: WorkspaceDep, response: Response, login: LoginDep) -> dict[str, Any]:
    """Freeze a new version NAME@N; 409 when a version of NAME already has identical content."""
    if body.background:
        check_name(body.name)
        response.status_code = 202
        return dict(
            ws.jobs.submit("dataset", body.model_dump(exclude={"actor", "background"}), acting_as(login, body.actor))
        )
    version = create_version(
        ws,
        body.name,
        filters=body.filters,
        split=body.split,
        stratify=body.stratify,
        group_by=body.group_by,
        seed=body.seed,
        statuses=body.statuses,
        dup_distance=body.dup_distance,
        reshuffle=body.reshuffle,
        split_hints=body.split_hints,
        allow_duplicate=body.allow_duplicate,
        qc_submissions=body.qc_submissions,
        actor=acting_as(login, body.actor),
    )
    return version.summary()


@router.get("", response_model=VersionList, dependencies=[Allow("data.read")])
def list_datasets(
    ws: WorkspaceDep, name: Annotated[str | None, Query(description="only this dataset")] = None
) -> VersionList:
    items = [v.summary(schema=False) for v in list_versions(ws, name)]
    return VersionList(items=items, count=len(items))


@router.get("/diff", dependencies=[Allow("data.read")])
def diff_datasets(
    ws: WorkspaceDep,
    a: Annotated[str, Query(description="NAME@N")],
    b: Annotated[str, Query(description="NAME@M")],
    limit: Annotated[int, Query(ge=0, le=100_000, description="most items listed per section")] = 1000,
) -> dict[str, Any]:
    return diff_versions(ws, a, b, limit=limit)


@router.get("/{name}/versions", response_model=VersionList, dependencies=[Allow("data.read")])
def dataset_versions(name: str, ws: WorkspaceDep) -> VersionList:
    open_version(ws, name)  # 404 naming the known datasets when there is none
    items = [v.summary(schema=False) for v in list_versions(ws, name)]
    return VersionList(items=items, count=len(items))


@router.get("/{name}/versions/{version}", dependencies=[Allow("data.read")])
def show_version(name: str, version: str, ws: WorkspaceDep) -> dict[str, Any]:
    """Spec, counts per split and class, schema and content hash (``version``: a number or ``latest``)."""
    return open_version(ws, _ref(name, version)).summary()


@router.get("/{name}/versions/{version}/images", response_model=ImagePage, dependencies=[Allow("data.read")])
def version_images(
    name: str,
    version: str,
    ws: WorkspaceDep,
    split: Annotated[str | None, Query()] = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> ImagePage:
    items, total = open_version(ws, _ref(name, version)).page(split, offset, limit)
    return ImagePage(items=items, total=total)


@router.get("/{name}/versions/{version}/images/{image_id}/annotations", dependencies=[Allow("data.read")])
def version_annotations(name: str, version: str, image_id: str, ws: WorkspaceDep) -> dict[str, Any]:
    """The frozen annotations of one image of the version (as they were when it was created); the image by id,
    unique id prefix or unique name."""
    dataset = open_version(ws, _ref(name, version))
    image_id = dataset.image(image_id)["id"]  # the full id of a prefix or name
    items = dataset.records(image_id)
    return {"image": dataset.image(image_id), "items": items, "count": len(items)}
