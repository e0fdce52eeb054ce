"""Rendering tiles and regions for IIIF and Deep Zoom from an ``ImageSource``.

A request that lines up with a stored JPEG tile is answered with the stored bytes (no decode, no
re-encode); anything else is read through ``ImageSource.read_region`` from the best level and resized once.
Encoded results are kept in a byte-bounded LRU keyed by image id + canonical request.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np

from gigavision.errors import InvalidInput, NotFound
from gigavision.geometry import Region
from gigavision.images.cache import ByteCache
from gigavision.images.display import to_uint8
from gigavision.images.pixels import Resample
from gigavision.images.source import ImageSource
from gigavision.server.iiif import FORMATS, ImageRequest

DZI_TILE = 256
RENDER_VERSION = "2"  # bump when rendering changes, so ETags change with it


@dataclass(frozen=True, slots=True)
class Rendered:
    body: bytes
    media_type: str
    passthrough: bool


def dzi_max_level(width: int, height: int) -> int:
    return max(0, math.ceil(math.log2(max(width, height))))


def dzi_level_size(width: int, height: int, level: int) -> tuple[int, int, int]:
    """(width, height, scale) of Deep Zoom ``level``; scale is the level-0 pixels per level pixel."""
    top = dzi_max_level(width, height)
    if not 0 <= level <= top:
        raise NotFound(f"Deep Zoom level {level} does not exist (0..{top})")
    scale = 2 ** (top - level)
    return math.ceil(width / scale), math.ceil(height / scale), scale


def dzi_xml(width: int, height: int, fmt: str = "jpeg") -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<Image xmlns="http://schemas.microsoft.com/deepzoom/2008" Format="{fmt}" Overlap="0" TileSize="{DZI_TILE}">'
        f'<Size Width="{width}" Height="{height}"/></Image>\n'
    )


# The tile filter (``images.pixels``): bilinear up to a 2x shrink, area average beyond, vectorised by OpenCV.
# As close to Lanczos once encoded (PSNR against a float Lanczos resize after Q85: 34.46 dB vs 34.98 dB on
# the benchmark slide; IIPImage's tiles 32.49 dB) at a twentieth of the time, which had made off-grid tiles
# half as fast as IIPImage's (benchmarks/README.md, bench_tiles). It never rings, which matters for 16-bit
# and float data that the display window stretches afterwards.
TILE_RESAMPLE: Resample = "display"


def read_scaled(source: ImageSource, region: Region, out_w: int, out_h: int) -> np.ndarray:
    """``region`` (level 0) resampled to ``out_w × out_h`` from the coarsest level that is fine enough."""
    return source.read_region(region, size=(out_w, out_h), resample=TILE_RESAMPLE)


def encode(arr: np.ndarray, fmt: str, quality: str = "default") -> bytes:
    """8-bit ``(H, W, 1|3)`` to jpg/png/webp bytes, applying an IIIF quality."""
    from PIL import Image

    im = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)
    if quality in ("gray", "bitonal") and im.mode != "L":
        im = im.convert("L")
    if quality == "bitonal":
        im = im.point(lambda v: 255 if v >= 128 else 0).convert("1")
        if fmt == "jpg":
            im = im.convert("L")
    elif quality == "color" and im.mode == "L":
        im = im.convert("RGB")
    buf = io.BytesIO()
    if fmt == "jpg":
        im.save(buf, "JPEG", quality=85)
    elif fmt == "png":
        im.save(buf, "PNG", compress_level=1)
    elif fmt == "webp":
        im.save(buf, "WEBP", quality=80, method=0)
    else:
        raise InvalidInput(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    return buf.getvalue()


class TileRenderer:
    """Renders requests for one workspace's images; safe to call from many threads."""

    def __init__(self, cache_bytes: int = 64 * 1024 * 1024) -> None:
        self.cache: ByteCache[bytes] = ByteCache(cache_bytes)

    def stored_tile(self, source: ImageSource, region: Region, out_w: int, out_h: int) -> bytes | None:
        """The stored JPEG tile that is exactly this request, if there is one."""
        if out_w != out_h or region.width % out_w or region.height % out_h:
            return None
        scale = region.width // out_w
        if region.height // out_h != scale:
            return None
        want_w, want_h = math.ceil(source.width / scale), math.ceil(source.height / scale)
        for i, lvl in enumerate(source.levels):
            if (lvl.width, lvl.height) != (want_w, want_h) or lvl.tile_width != out_w or lvl.tile_height != out_h:
                continue
            span = out_w * scale
            if region.x % span or region.y % span:
                return None
            return source.raw_jpeg_tile(i, region.x // span, region.y // span)
        return None

    def render(
        self, image_id: str, source: ImageSource, req: ImageRequest, window: tuple[float, float] | None
    ) -> Rendered:
        key = (image_id, req)
        cached = self.cache.get(key)
        if cached is not None:
            return Rendered(cached, FORMATS[req.format], False)
        plain = req.rotation == 0 and not req.mirror and req.format == "jpg"
        colour_ok = req.quality == "default" or req.quality == ("gray" if source.info.bands == 1 else "color")
        if plain and colour_ok and source.info.dtype == "uint8":
            raw = self.stored_tile(source, req.region, req.width, req.height)
            if raw is not None:
                return Rendered(raw, "image/jpeg", True)  # already on disk: not worth cache space
        arr = to_uint8(read_scaled(source, req.region, req.width, req.height), window)
        if req.mirror:
            arr = arr[:, ::-1]
        if req.rotation:
            arr = np.rot90(arr, k=-(req.rotation // 90))  # IIIF rotates clockwise
        body = encode(np.ascontiguousarray(arr), req.format, req.quality)
        self.cache.put(key, body)
        return Rendered(body, FORMATS[req.format], False)

    def dzi_tile(
        self,
        image_id: str,
        source: ImageSource,
        level: int,
        col: int,
        row: int,
        fmt: str,
        window: tuple[float, float] | None,
    ) -> Rendered:
        lw, lh, scale = dzi_level_size(source.width, source.height, level)
        x, y = col * DZI_TILE, row * DZI_TILE
        if col < 0 or row < 0 or x >= lw or y >= lh:
            raise NotFound(f"Deep Zoom tile {col}_{row} is outside level {level} ({lw}x{lh})")
        w, h = min(DZI_TILE, lw - x), min(DZI_TILE, lh - y)
        x0, y0 = x * scale, y * scale
        region = Region(x0, y0, min(w * scale, source.width - x0), min(h * scale, source.height - y0))
        req = ImageRequest(region, w, h, 0, False, "default", "jpg" if fmt in ("jpg", "jpeg") else fmt)
        return self.render(image_id, source, req, window)
