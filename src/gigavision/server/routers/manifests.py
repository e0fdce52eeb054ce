"""IIIF Presentation 3 under ``/iiif/3``: an image's manifest with its annotations, a dataset version's collection.

The documents are ``gigavision.formats.iiif_manifest``'s; this router picks the image (the full 64-character
id only, as the tile routes take) and its annotations, and sends the JSON. Live annotations need
``annotations.read`` and leave out others' labels of an open QC item, as the annotation API does; dataset
versions need ``data.read``, as the dataset API does. Being under ``/iiif/``, the documents are readable
cross-origin by ``[server] cors_origins`` (Mirador or Universal Viewer on another site).
"""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from gigavision.active.isolation import NOTHING, hidden_from
from gigavision.datasets import DatasetVersion, open_version
from gigavision.formats import iiif_manifest as iiif
from gigavision.formats.source import ImageEntry
from gigavision.server.auth import Allow, LoginDep
from gigavision.server.deps import WorkspaceDep
from gigavision.store.catalog import check_image_id
from gigavision.store.roles import Login
from gigavision.workspace import Workspace

router = APIRouter(tags=["iiif"])
Located = tuple[ImageEntry, iiif.AnnotationSource, iiif.Place]

PageQuery = Annotated[int, Query(ge=1, le=10**9, description="1 for the first page")]


def _send(doc: iiif.Document, request: Request) -> Response:
    """The document as JSON-LD when asked for (``Accept: application/ld+json``), else as JSON (IIIF §6.1)."""
    media = (
        f'application/ld+json;profile="{iiif.PRESENTATION_CONTEXT}"'
        if "ld+json" in request.headers.get("accept", "")
        else "application/json"
    )
    return Response(json.dumps(doc, ensure_ascii=False), media_type=media, headers={"Cache-Control": "no-cache"})


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _live(ws: Workspace, image_id: str, login: Login, request: Request) -> Located:
    row = ws.get_image(image_id)  # 404 for an unknown or malformed id
    hidden = (
        NOTHING if login.via == "local" else hidden_from(ws, image_id, login.name, always=login.role == "annotator")
    )
    entry = ImageEntry(row.id, row.name, int(row.width), int(row.height), None, int(row.bands))
    colors = {name: c.color for name, c in ws.labels.by_name().items()}
    return entry, iiif.LiveAnnotations(ws, image_id, hidden.ids), iiif.live_place(_base(request), image_id, colors)


def _version(ws: Workspace, name: str, version: str) -> DatasetVersion:
    return open_version(ws, f"{name}@{version}")  # validates both; "latest" resolves to its number


def _frozen(ws: Workspace, name: str, version: str, image_id: str, request: Request) -> Located:
    check_image_id(image_id)
    dataset = _version(ws, name, version)
    entry = iiif.version_entry(dataset, image_id)
    source = iiif.FrozenAnnotations(dataset.annotations(image_id))
    return entry, source, iiif.version_place(_base(request), dataset, entry)


@router.get("/iiif/3/{image_id}/manifest.json", dependencies=[Allow("annotations.read")])
def image_manifest(image_id: str, request: Request, ws: WorkspaceDep, login: LoginDep) -> Response:
    """The image and its annotations (not rejected) as a IIIF Presentation 3 Manifest: open it in Mirador or
    Universal Viewer."""
    return _send(iiif.manifest(*_live(ws, image_id, login, request)), request)


@router.get("/iiif/3/{image_id}/canvas", dependencies=[Allow("annotations.read")])
def image_canvas(image_id: str, request: Request, ws: WorkspaceDep, login: LoginDep) -> Response:
    """The manifest's Canvas alone (its id)."""
    return _send(iiif.canvas(*_live(ws, image_id, login, request)), request)


@router.get("/iiif/3/{image_id}/annotations.json", dependencies=[Allow("annotations.read")])
def image_annotations(
    image_id: str, request: Request, ws: WorkspaceDep, login: LoginDep, page: PageQuery = 1
) -> Response:
    """One AnnotationPage of the image's annotations (1,000 a page, in id order; ``next`` links the following)."""
    return _send(iiif.annotation_page(*_live(ws, image_id, login, request), page), request)


@router.get("/iiif/3/datasets/{name}/{version}/collection.json", dependencies=[Allow("data.read")])
def version_collection(
    name: str,
    version: str,
    request: Request,
    ws: WorkspaceDep,
    page: Annotated[int | None, Query(ge=1, le=10**9, description="one sub-collection of a big version")] = None,
) -> Response:
    """Dataset version NAME@VERSION as a IIIF Collection of its images' manifests (frozen annotations)."""
    return _send(iiif.version_collection(_version(ws, name, version), _base(request), page), request)


@router.get("/iiif/3/datasets/{name}/{version}/images/{image_id}/manifest.json", dependencies=[Allow("data.read")])
def version_manifest(name: str, version: str, image_id: str, request: Request, ws: WorkspaceDep) -> Response:
    """An image of the dataset version with the version's frozen annotations, as a Manifest."""
    return _send(iiif.manifest(*_frozen(ws, name, version, image_id, request)), request)


@router.get("/iiif/3/datasets/{name}/{version}/images/{image_id}/canvas", dependencies=[Allow("data.read")])
def version_canvas(name: str, version: str, image_id: str, request: Request, ws: WorkspaceDep) -> Response:
    return _send(iiif.canvas(*_frozen(ws, name, version, image_id, request)), request)


@router.get("/iiif/3/datasets/{name}/{version}/images/{image_id}/annotations.json", dependencies=[Allow("data.read")])
def version_annotations(
    name: str, version: str, image_id: str, request: Request, ws: WorkspaceDep, page: PageQuery = 1
) -> Response:
    return _send(iiif.annotation_page(*_frozen(ws, name, version, image_id, request), page), request)
