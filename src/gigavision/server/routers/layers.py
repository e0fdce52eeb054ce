"""Prediction rasters as viewer layers: ``/api/v1/images/{id}/layers`` and one Deep Zoom pyramid per layer.

The catalogue (which rasters an image has, what they hold, reading them as RGBA) is ``infer.layers``; this
router translates URLs into its calls and its results into JSON, Deep Zoom XML and PNG tiles.

**Placement**: a layer's Deep Zoom pyramid is declared at the *image's* level-0 size, not the raster's, so a
viewer overlays it with the same placement as the image (OpenSeadragon: ``x = 0, width = 1``, or the image
item's bounds). Tile ``level/col_row`` covers the same level-0 rectangle as the image's tile of that name; it
is read from the raster at ``1 / downsample`` of those coordinates, from the raster's coarsest pyramid level
that is fine enough, and answered as an RGBA PNG.

Rasters can be rewritten by a later run, so responses are revalidated (``no-cache``) against ETags that include
the file's modification time and size. A corrupt raster answers 422 (``invalid_image``) for that layer only.
"""

from __future__ import annotations

import io
import threading
from datetime import UTC, datetime

import numpy as np
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from gigavision.errors import InvalidInput, NotFound
from gigavision.infer.layers import Layer, LayerKind, LayerName, LayerRasters, find_layer, list_layers, render_layer
from gigavision.server.auth import Allow
from gigavision.server.deps import RendererDep, WorkspaceDep
from gigavision.server.render import DZI_TILE, dzi_level_size, dzi_xml
from gigavision.server.routers.tiles import etag, not_modified

router = APIRouter(tags=["layers"])

LAYER_RENDER_VERSION = "1"  # bump when layer rendering changes, so ETags change with it
REVALIDATE = "no-cache"  # a later run replaces the raster under the same URL


class LayerOut(BaseModel):
    model: str = Field(description="the model that predicted it")
    name: LayerName
    kind: LayerKind = Field(description="labels: a class index per pixel; scalar: a value 0-255 per pixel")
    classes: list[str]
    colors: list[list[int]] = Field(description="RGB per class index (class 0, the background, is transparent)")
    downsample: float = Field(description="level-0 image pixels per raster pixel")
    width: int = Field(description="the Deep Zoom pyramid's width: the image's level-0 width")
    height: int = Field(description="the Deep Zoom pyramid's height: the image's level-0 height")
    raster_width: int
    raster_height: int
    mpp: float | None = Field(description="microns per raster pixel, when the image's are known")
    updated: datetime = Field(description="when the raster was written")
    dzi: str = Field(description="Deep Zoom descriptor, in the image's level-0 pixels")


def _out(layer: Layer) -> LayerOut:
    raster_width, raster_height = layer.raster_size
    return LayerOut(
        model=layer.model,
        name=layer.name,
        kind=layer.kind,
        classes=list(layer.classes),
        colors=[list(c) for c in layer.colors],
        downsample=layer.downsample,
        width=layer.level0_width,
        height=layer.level0_height,
        raster_width=raster_width,
        raster_height=raster_height,
        mpp=layer.mpp,
        updated=datetime.fromtimestamp(layer.stamp[1] / 1e9, UTC),
        dzi=f"/dzi/layers/{layer.image_id}/{layer.model}/{layer.name}.dzi",
    )


_RASTERS_LOCK = threading.Lock()


def get_rasters(request: Request) -> LayerRasters:
    """The app's open layer rasters (made on first use; kept on ``app.state``)."""
    state = request.app.state
    with _RASTERS_LOCK:
        rasters: LayerRasters | None = getattr(state, "layer_rasters", None)
        if rasters is None:
            rasters = state.layer_rasters = LayerRasters()
    return rasters


def _tile_box(layer: Layer, level: int, col: int, row: int) -> tuple[tuple[float, float, float, float], int, int]:
    """The level-0 rectangle of Deep Zoom tile ``level/col_row`` of the image (cut at the image edge, as the
    image's own tiles are) and the tile's pixel size."""
    width, height = layer.level0_width, layer.level0_height
    lw, lh, scale = dzi_level_size(width, height, level)
    x, y = col * DZI_TILE, row * DZI_TILE
    if x >= lw or y >= lh:
        raise NotFound(f"Deep Zoom tile {col}_{row} is outside level {level} ({lw}x{lh})")
    w, h = min(DZI_TILE, lw - x), min(DZI_TILE, lh - y)
    x0, y0 = x * scale, y * scale
    return (x0, y0, min(x0 + w * scale, width), min(y0 + h * scale, height)), w, h


def _png(rgba: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgba).save(buf, "PNG", compress_level=1)
    return buf.getvalue()


# -- routes ------------------------------------------------------------------------------------------------
@router.get(
    "/api/v1/images/{image_id}/layers",
    response_model=list[LayerOut],
    responses={404: {"description": "no such image"}},
    dependencies=[Allow("view")],
)
def image_layers(image_id: str, request: Request, ws: WorkspaceDep) -> list[LayerOut]:
    """The image's prediction rasters as viewer layers (Deep Zoom pyramids at the image's level-0 size).

    ``image_id`` may be a unique prefix or name (``Workspace.find_image``); the layer tiles below and the
    ``dzi`` URLs listed here take the full id only, as the image tiles do (see ``routers/tiles.py``).
    """
    return [_out(layer) for layer in list_layers(ws, get_rasters(request), ws.find_image(image_id))]


@router.get("/dzi/layers/{image_id}/{model_id}/{name}.dzi", dependencies=[Allow("view")])
def layer_dzi(image_id: str, model_id: str, name: str, request: Request, ws: WorkspaceDep) -> Response:
    layer = find_layer(ws, get_rasters(request), image_id, model_id, name)
    tag = etag("layer", LAYER_RENDER_VERSION, image_id, model_id, name, layer.stamp, "dzi")
    if (resp := not_modified(request, tag, REVALIDATE)) is not None:
        return resp
    return Response(
        dzi_xml(layer.level0_width, layer.level0_height, fmt="png"),
        media_type="application/xml",
        headers={"ETag": tag, "Cache-Control": REVALIDATE},
    )


@router.get("/dzi/layers/{image_id}/{model_id}/{name}_files/{level}/{col}_{row}.{fmt}", dependencies=[Allow("view")])
def layer_tile(
    image_id: str,
    model_id: str,
    name: str,
    level: str,
    col: str,
    row: str,
    fmt: str,
    request: Request,
    ws: WorkspaceDep,
    renderer: RendererDep,
) -> Response:
    if fmt != "png":
        raise NotFound(f"layer tiles are PNG (with transparency), not {fmt!r}")
    if not all(v.isascii() and v.isdigit() and len(v) <= 9 for v in (level, col, row)):
        raise InvalidInput(f"Deep Zoom tile {level}/{col}_{row} must use non-negative integers")
    rasters = get_rasters(request)
    layer = find_layer(ws, rasters, image_id, model_id, name)
    tag = etag("layer", LAYER_RENDER_VERSION, image_id, model_id, name, layer.stamp, level, col, row)
    if (resp := not_modified(request, tag, REVALIDATE)) is not None:
        return resp
    key = ("layer", str(layer.path), layer.stamp, int(level), int(col), int(row))
    body = renderer.cache.get(key)
    if body is None:
        box, width, height = _tile_box(layer, int(level), int(col), int(row))
        with rasters.use(ws, layer) as raster:
            body = _png(render_layer(raster, box, width, height))
        renderer.cache.put(key, body)
    return Response(body, media_type="image/png", headers={"ETag": tag, "Cache-Control": REVALIDATE})
