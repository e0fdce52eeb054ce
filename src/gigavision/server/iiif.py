"""IIIF Image API 3.0 request parsing (pure functions): region, size, rotation, quality, format.

https://iiif.io/api/image/3.0/ — we implement level 2 plus ``square`` regions, upscaling (``^``) and
mirroring. Syntax errors raise ``InvalidInput`` (400); valid but unsupported values raise
``NotImplementedFeature`` (501).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from gigavision.errors import GigavisionError, InvalidInput, LimitExceeded
from gigavision.geometry import Region

FORMATS = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
QUALITIES = ("default", "color", "gray", "bitonal")
FEATURES = [
    "baseUriRedirect",
    "canonicalLinkHeader",
    "cors",
    "jsonldMediaType",
    "mirroring",
    "profileLinkHeader",
    "regionByPct",
    "regionByPx",
    "regionSquare",
    "rotationBy90s",
    "sizeByConfinedWh",
    "sizeByH",
    "sizeByPct",
    "sizeByW",
    "sizeByWh",
    "sizeUpscaling",
]
_INT = r"(0|[1-9][0-9]{0,9})"
_NUM = r"([0-9]+(?:\.[0-9]+)?|\.[0-9]+)"
_PX = re.compile(rf"^{_INT},{_INT},{_INT},{_INT}$")
_PCT = re.compile(rf"^pct:{_NUM},{_NUM},{_NUM},{_NUM}$")


class NotImplementedFeature(GigavisionError):
    code = "not_implemented"
    http_status = 501


@dataclass(frozen=True, slots=True)
class ImageRequest:
    region: Region
    width: int
    height: int
    rotation: int  # 0, 90, 180, 270 clockwise
    mirror: bool
    quality: str
    format: str

    def canonical(self, image_width: int, image_height: int, max_size: tuple[int, int]) -> str:
        r = self.region
        region = (
            "full"
            if (r.x, r.y, r.width, r.height) == (0, 0, image_width, image_height)
            else (f"{r.x},{r.y},{r.width},{r.height}")
        )
        size = "max" if (self.width, self.height) == max_size else f"{self.width},{self.height}"
        if self.width > r.width or self.height > r.height:
            size = "^" + size
        rotation = f"{'!' if self.mirror else ''}{self.rotation}"
        return f"{region}/{size}/{rotation}/{self.quality}.{self.format}"


def parse_region(text: str, width: int, height: int) -> Region:
    """The requested region, cropped to the image; 400 when it is malformed or entirely outside."""
    if text == "full":
        return Region(0, 0, width, height)
    if text == "square":
        side = min(width, height)
        return Region((width - side) // 2, (height - side) // 2, side, side)
    if m := _PX.match(text):
        x, y, w, h = (int(v) for v in m.groups())
    elif m := _PCT.match(text):
        px, py, pw, ph = (float(v) for v in m.groups())
        if not all(math.isfinite(v) and v <= 100 for v in (px, py)) or not all(math.isfinite(v) for v in (pw, ph)):
            raise InvalidInput(f"region {text!r}: percentages must be finite, x and y at most 100")
        pw, ph = min(pw, 100.0), min(ph, 100.0)
        x, y = math.floor(px * width / 100), math.floor(py * height / 100)
        w, h = math.ceil(pw * width / 100), math.ceil(ph * height / 100)
    else:
        raise InvalidInput(f"region {text!r} is not full, square, x,y,w,h or pct:x,y,w,h")
    if w <= 0 or h <= 0:
        raise InvalidInput(f"region {text!r} has zero width or height")
    if x >= width or y >= height:
        raise InvalidInput(f"region {text!r} lies outside the image ({width}x{height})")
    return Region(x, y, min(w, width - x), min(h, height - y))


def max_size(rw: int, rh: int, max_pixels: int) -> tuple[int, int]:
    """``max``: the region's own size, scaled down (aspect kept) to fit ``max_pixels``."""
    if rw * rh <= max_pixels:
        return rw, rh
    scale = math.sqrt(max_pixels / (rw * rh))
    return max(1, math.floor(rw * scale)), max(1, math.floor(rh * scale))


def parse_size(text: str, rw: int, rh: int, max_pixels: int) -> tuple[int, int]:
    upscale = text.startswith("^")
    spec = text[1:] if upscale else text
    if spec == "max":
        w, h = max_size(rw, rh, max_pixels)
        if upscale:
            return w, h
    elif spec.startswith("pct:"):
        try:
            pct = float(spec[4:])
        except ValueError:
            raise InvalidInput(f"size {text!r}: pct:n needs a number") from None
        if not math.isfinite(pct) or pct <= 0 or pct > 1e6:
            raise InvalidInput(f"size {text!r}: percentage must be positive and finite")
        w, h = max(1, round(rw * pct / 100)), max(1, round(rh * pct / 100))
    else:
        confined = spec.startswith("!")
        parts = (spec[1:] if confined else spec).split(",")
        if len(parts) != 2 or not all(re.fullmatch(r"[0-9]{0,9}", p) for p in parts) or parts == ["", ""]:
            raise InvalidInput(f"size {text!r} is not max, w,  ,h  w,h  !w,h or pct:n")
        pw, ph = (int(p) if p else None for p in parts)
        if (pw is not None and pw <= 0) or (ph is not None and ph <= 0):
            raise InvalidInput(f"size {text!r}: width and height must be positive")
        if confined:
            if pw is None or ph is None:
                raise InvalidInput(f"size {text!r}: !w,h needs both w and h")
            scale = min(pw / rw, ph / rh)
            w, h = max(1, math.floor(rw * scale + 1e-9)), max(1, math.floor(rh * scale + 1e-9))
        elif pw is not None and ph is not None:
            w, h = pw, ph
        elif pw is not None:
            w, h = pw, max(1, round(rh * pw / rw))
        else:
            assert ph is not None
            w, h = max(1, round(rw * ph / rh)), ph
    if not upscale and (w > rw or h > rh):
        raise InvalidInput(f"size {text!r} ({w}x{h}) is larger than the region ({rw}x{rh}); use ^ to upscale")
    if w * h > max_pixels:
        raise LimitExceeded(f"size {w}x{h} is more than limits.max_tile_pixels ({max_pixels:,}) pixels")
    return w, h


def parse_rotation(text: str) -> tuple[int, bool]:
    mirror = text.startswith("!")
    spec = text[1:] if mirror else text
    try:
        degrees = float(spec)
    except ValueError:
        raise InvalidInput(f"rotation {text!r} is not a number of degrees") from None
    if not 0 <= degrees <= 360:
        raise InvalidInput(f"rotation {text!r} must be between 0 and 360")
    if degrees % 90:
        raise NotImplementedFeature(f"rotation {text!r}: only multiples of 90 degrees are supported")
    return int(degrees) % 360, mirror


def parse_request(
    region: str, size: str, rotation: str, quality: str, fmt: str, width: int, height: int, max_pixels: int
) -> ImageRequest:
    r = parse_region(region, width, height)
    w, h = parse_size(size, r.width, r.height, max_pixels)
    rot, mirror = parse_rotation(rotation)
    if quality not in QUALITIES:
        raise InvalidInput(f"quality {quality!r} is not one of {', '.join(QUALITIES)}")
    if fmt not in FORMATS:
        raise InvalidInput(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    return ImageRequest(r, w, h, rot, mirror, quality, fmt)


def scale_factors(width: int, height: int, tile: int) -> list[int]:
    """1, 2, 4, … until the whole image fits in one tile."""
    factors = [1]
    while max(width, height) / factors[-1] > tile:
        factors.append(factors[-1] * 2)
    return factors


def info_json(base_id: str, width: int, height: int, tile: int, max_pixels: int) -> dict[str, object]:
    factors = scale_factors(width, height, tile)
    sizes = [
        {"width": math.ceil(width / f), "height": math.ceil(height / f)}
        for f in reversed(factors)
        if math.ceil(width / f) * math.ceil(height / f) <= max_pixels
    ]
    return {
        "@context": "http://iiif.io/api/image/3/context.json",
        "id": base_id,
        "type": "ImageService3",
        "protocol": "http://iiif.io/api/image",
        "profile": "level2",
        "width": width,
        "height": height,
        "maxArea": max_pixels,
        "sizes": sizes,
        "tiles": [{"width": tile, "height": tile, "scaleFactors": factors}],
        "extraFormats": ["webp"],
        "extraQualities": ["color", "gray", "bitonal"],
        "extraFeatures": FEATURES,
    }
