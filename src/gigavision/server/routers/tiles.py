"""Tiles: IIIF Image API 3.0 under ``/iiif/3`` and Deep Zoom under ``/dzi``.

Image ids are content hashes, so every response here is immutable: strong ETags, ``immutable`` caching.

These routes take the full 64-character id only, never a prefix or a name (which ``/api/v1/images/{ref}``
accepts through ``Workspace.find_image``): what a prefix or name points at can change (a second image with
the same prefix or name makes it ambiguous), so a response cached for a year under such a URL could show the
wrong pixels; the IIIF ``id`` in info.json must also be the one canonical URL; and a viewer asks for
thousands of tiles, each of which would pay for the lookup. Clients get the full id from the images API.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse

from gigavision.errors import InvalidInput
from gigavision.server.auth import Allow
from gigavision.server.deps import RendererDep, WorkspaceDep
from gigavision.server.iiif import info_json, max_size, parse_request
from gigavision.server.render import DZI_TILE, RENDER_VERSION, Rendered, dzi_xml
from gigavision.workspace import check_image_id

router = APIRouter(tags=["tiles"])
IMMUTABLE = "public, max-age=31536000, immutable"
PROFILE_LINK = '<http://iiif.io/api/image/3/level2.json>;rel="profile"'


def etag(*parts: object) -> str:
    """A strong ETag for what ``parts`` (and the renderer's version) determine."""
    return '"' + hashlib.sha256("|".join(map(str, (RENDER_VERSION, *parts))).encode()).hexdigest()[:32] + '"'


def _window(stored: list[float] | None) -> tuple[float, float] | None:
    return (float(stored[0]), float(stored[1])) if stored else None


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
    check_image_id(image_id)
    return RedirectResponse(str(request.url_for("iiif_info", image_id=image_id)), status_code=303)


@router.get("/iiif/3/{image_id}/info.json", name="iiif_info", dependencies=[Allow("view")])
def iiif_info(image_id: str, request: Request, ws: WorkspaceDep) -> Any:
    row = ws.get_image(image_id)
    base = str(request.url_for("iiif_base", image_id=image_id))
    tag = etag(image_id, "info", base)
    if (resp := not_modified(request, tag)) is not None:
        return resp
    body = info_json(base, row.width, row.height, DZI_TILE, ws.settings.limits.max_tile_pixels)
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
    row = ws.get_image(image_id)
    limit = ws.settings.limits.max_tile_pixels
    req = parse_request(region, size, rotation, quality, fmt, row.width, row.height, limit)
    canonical = req.canonical(row.width, row.height, max_size(req.region.width, req.region.height, limit))
    tag = etag(image_id, canonical)
    if (resp := not_modified(request, tag)) is not None:
        return resp
    window = _window(row.display_window)
    rendered = renderer.render(image_id, ws.open_source(image_id), req, window)
    link = f'<{request.url_for("iiif_base", image_id=image_id)}/{canonical}>;rel="canonical", {PROFILE_LINK}'
    return _image_response(rendered, tag, {"Link": link})


@router.get("/dzi/{image_id}.dzi", dependencies=[Allow("view")])
def dzi_descriptor(image_id: str, request: Request, ws: WorkspaceDep) -> Response:
    row = ws.get_image(image_id)
    tag = etag(image_id, "dzi")
    if (resp := not_modified(request, tag)) is not None:
        return resp
    return Response(
        dzi_xml(row.width, row.height),
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
    check_image_id(image_id)
    if not all(re.fullmatch(r"[0-9]{1,9}", v) for v in (level, col, row)):
        raise InvalidInput(f"Deep Zoom tile {level}/{col}_{row} must use non-negative integers")
    if fmt not in ("jpeg", "jpg", "png", "webp"):
        raise InvalidInput(f"Deep Zoom tile format {fmt!r} is not jpeg, png or webp")
    record = ws.get_image(image_id)
    tag = etag(image_id, "dzi", level, col, row, fmt)
    if (resp := not_modified(request, tag)) is not None:
        return resp
    window = _window(record.display_window)
    rendered = renderer.dzi_tile(
        image_id,
        ws.open_source(image_id),
        int(level),
        int(col),
        int(row),
        fmt,
        window,
    )
    return _image_response(rendered, tag)
