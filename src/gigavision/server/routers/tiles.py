"""Tiles: IIIF Image API 3.0 under ``/iiif/3`` and Deep Zoom under ``/dzi``.

Image ids are content hashes, so every response here is immutable: strong ETags, ``immutable`` caching.

These routes take the full 64-character id only, never a prefix or a name (which ``/api/v1/images/{ref}``
accepts through ``Workspace.find_image``): what a prefix or name points at can change (a second image with
the same prefix or name makes it ambiguous), so a response cached for a year under such a URL could show the
wrong pixels; the IIIF ``id`` in info.json must also be the one canonical URL; and a viewer asks for
thousands of tiles, each of which would pay for the lookup. Clients get the full id from the images API.

A slice of a 3D volume is an image of its own, addressed ``{image_id}:{plane}:{index}[:{center},{width}]``
(``images/volumes/slices.py``): each slice has a valid info.json of its plane's size, and its URLs are as
immutable as an image id's. The plain id of a volume is its middle axial slice (what a 2D client sees).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse

from gigavision.errors import InvalidInput, NotFound
from gigavision.images.source import ImageSource
from gigavision.images.volumes import Grid, parse_slice_ref
from gigavision.images.volumes.slices import check_slice
from gigavision.server.auth import Allow
from gigavision.server.deps import RendererDep, WorkspaceDep
from gigavision.server.iiif import info_json, max_size, parse_request
from gigavision.server.render import DZI_TILE, RENDER_VERSION, Rendered, dzi_xml
from gigavision.workspace import Workspace, check_image_id

router = APIRouter(tags=["tiles"])
IMMUTABLE = "public, max-age=31536000, immutable"
PROFILE_LINK = '<http://iiif.io/api/image/3/level2.json>;rel="profile"'


def etag(*parts: object) -> str:
    """A strong ETag for what ``parts`` (and the renderer's version) determine."""
    return '"' + hashlib.sha256("|".join(map(str, (RENDER_VERSION, *parts))).encode()).hexdigest()[:32] + '"'


def _window(stored: list[float] | None) -> tuple[float, float] | None:
    return (float(stored[0]), float(stored[1])) if stored else None


@dataclass(frozen=True, slots=True)
class Target:
    """What a tile URL's id names: an image, or a slice of a volume (``key`` is its canonical id)."""

    key: str
    width: int
    height: int
    window: tuple[float, float] | None
    open: Callable[[], ImageSource]


def check_ref(ref: str) -> None:
    """A 404 / 400 for an id that is neither a full image id nor a well-formed slice reference."""
    if parse_slice_ref(ref) is None:
        check_image_id(ref)


def target(ws: Workspace, ref: str) -> Target:
    """The image or volume slice ``ref`` names; 404 for a slice a volume does not have (or a 2D image's)."""
    sliced = parse_slice_ref(ref)
    if sliced is None:
        row = ws.get_image(ref)
        return Target(ref, row.width, row.height, _window(row.display_window), lambda: ws.open_source(ref))
    row = ws.get_image(sliced.image_id)
    volume = (row.meta or {}).get("volume") if row.reader == "volume" else None
    if not isinstance(volume, dict):
        raise NotFound(f"image {row.name!r} is 2D: it has no {sliced.plane} slices")
    width, height = check_slice(Grid.of(volume), sliced)
    window = sliced.window or _window(row.display_window)
    return Target(
        str(sliced), width, height, window, lambda: ws.open_slice(sliced.image_id, sliced.plane, sliced.index)
    )


def not_modified(request: Request, tag: str, cache_control: str = IMMUTABLE) -> Response | None:
    """304 when the client already holds ``tag``, else None."""
    if request.headers.get("if-none-match") == tag:
        return Response(status_code=304, headers={"ETag": tag, "Cache-Control": cache_control})
    return None


def _image_response(rendered: Rendered, etag: str, extra: dict[str, str] | None = None) -> Response:
    headers = {"ETag": etag, "Cache-Control": IMMUTABLE, **(extra or {})}
    if rendered.passthrough:
        headers["X-Gigavision-Tile"] = "stored"
    return Response(rendered.body, media_type=rendered.media_type, headers=headers)


@router.get("/iiif/3/{image_id}", include_in_schema=False, dependencies=[Allow("view")])
def iiif_base(image_id: str, request: Request) -> RedirectResponse:
    check_ref(image_id)
    return RedirectResponse(str(request.url_for("iiif_info", image_id=image_id)), status_code=303)


@router.get("/iiif/3/{image_id}/info.json", name="iiif_info", dependencies=[Allow("view")])
def iiif_info(image_id: str, request: Request, ws: WorkspaceDep) -> Any:
    found = target(ws, image_id)
    base = str(request.url_for("iiif_base", image_id=found.key))
    tag = etag(found.key, "info", base)
    if (resp := not_modified(request, tag)) is not None:
        return resp
    body = info_json(base, found.width, found.height, DZI_TILE, ws.settings.limits.max_tile_pixels)
    accept = request.headers.get("accept", "")
    media = (
        'application/ld+json;profile="http://iiif.io/api/image/3/context.json"'
        if "ld+json" in accept
        else ("application/json")
    )
    return JSONResponse(body, media_type=media, headers={"ETag": tag, "Cache-Control": IMMUTABLE, "Link": PROFILE_LINK})


@router.get("/iiif/3/{image_id}/{region}/{size}/{rotation}/{quality}.{fmt}", dependencies=[Allow("view")])
def iiif_image(
    image_id: str,
    region: str,
    size: str,
    rotation: str,
    quality: str,
    fmt: str,
    request: Request,
    ws: WorkspaceDep,
    renderer: RendererDep,
) -> Response:
    found = target(ws, image_id)
    limit = ws.settings.limits.max_tile_pixels
    req = parse_request(region, size, rotation, quality, fmt, found.width, found.height, limit)
    canonical = req.canonical(found.width, found.height, max_size(req.region.width, req.region.height, limit))
    tag = etag(found.key, canonical)
    if (resp := not_modified(request, tag)) is not None:
        return resp
    rendered = renderer.render(found.key, found.open(), req, found.window)
    link = f'<{request.url_for("iiif_base", image_id=found.key)}/{canonical}>;rel="canonical", {PROFILE_LINK}'
    return _image_response(rendered, tag, {"Link": link})


@router.get("/dzi/{image_id}.dzi", dependencies=[Allow("view")])
def dzi_descriptor(image_id: str, request: Request, ws: WorkspaceDep) -> Response:
    found = target(ws, image_id)
    tag = etag(found.key, "dzi")
    if (resp := not_modified(request, tag)) is not None:
        return resp
    return Response(
        dzi_xml(found.width, found.height),
        media_type="application/xml",
        headers={"ETag": tag, "Cache-Control": IMMUTABLE},
    )


@router.get("/dzi/{image_id}_files/{level}/{col}_{row}.{fmt}", dependencies=[Allow("view")])
def dzi_tile(
    image_id: str,
    level: str,
    col: str,
    row: str,
    fmt: str,
    request: Request,
    ws: WorkspaceDep,
    renderer: RendererDep,
) -> Response:
    check_ref(image_id)
    if not all(re.fullmatch(r"[0-9]{1,9}", v) for v in (level, col, row)):
        raise InvalidInput(f"Deep Zoom tile {level}/{col}_{row} must use non-negative integers")
    if fmt not in ("jpeg", "jpg", "png", "webp"):
        raise InvalidInput(f"Deep Zoom tile format {fmt!r} is not jpeg, png or webp")
    found = target(ws, image_id)
    tag = etag(found.key, "dzi", level, col, row, fmt)
    if (resp := not_modified(request, tag)) is not None:
        return resp
    rendered = renderer.dzi_tile(found.key, found.open(), int(level), int(col), int(row), fmt, found.window)
    return _image_response(rendered, tag)
