"""Large untiled rasters (a 30,000-px JPEG or PNG) through libvips, which decodes them to a disk-backed
buffer on first access instead of RAM. Ingest converts such files to pyramids; this reader is for
``gv.open_image`` on files outside a workspace and for the pyramid builder's input checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from gigavision.errors import InvalidImage, LimitExceeded
from gigavision.images.registry import register_reader
from gigavision.images.sniff import raster_kind
from gigavision.images.source import ImageInfo, ImageSource, Level

TILE = 512
VIPS_DTYPES = {
    "uchar": "uint8",
    "char": "int8",
    "ushort": "uint16",
    "short": "int16",
    "uint": "uint32",
    "int": "int32",
    "float": "float32",
    "double": "float64",
}


def _is_big_raster(path: Path, head: bytes) -> bool:
    return raster_kind(head) in {"jpeg", "png", "webp", "gif", "jp2"}


def vips_open(path: Path, **options: Any) -> Any:
    """``pyvips.Image.new_from_file`` with errors turned into ``InvalidImage`` naming the file."""
    import pyvips

    try:
        return pyvips.Image.new_from_file(str(path), fail=True, **options)
    except pyvips.Error as exc:
        reason = str(exc).strip().splitlines()
        raise InvalidImage(f"{path.name}: libvips cannot read it: {reason[-1] if reason else exc}") from exc


def flatten_for_output(image: Any) -> Any:
    """RGB(A)/grey(A) with alpha composited on white; CMYK/LAB to sRGB. Band formats are kept."""
    if image.interpretation in ("cmyk", "lab", "labs", "lch", "xyz", "scrgb", "hsv"):
        image = image.colourspace("srgb")
    if image.hasalpha():
        image = image.flatten(background=[255] * (image.bands - 1))
    return image


@register_reader("pyvips", sniff=_is_big_raster, priority=45, description="large untiled JPEG/PNG/WebP (libvips)")
class VipsSource(ImageSource):
    """Random access to large untiled rasters; one level, 512² windows."""

    def _probe(self) -> ImageInfo:
        header = vips_open(self.path)
        w, h = int(header.width), int(header.height)
        if w * h > self.limits.max_decode_pixels:
            raise LimitExceeded(
                f"{self.path.name}: {w}x{h} = {w * h:,} pixels is more than limits.max_decode_pixels "
                f"({self.limits.max_decode_pixels:,}) for an image without tiles"
            )
        self._image = flatten_for_output(vips_open(self.path, access="random"))
        fmt = VIPS_DTYPES.get(self._image.format)
        if fmt is None:
            raise InvalidImage(f"{self.path.name}: unsupported band format {self._image.format}")
        loader = str(header.get("vips-loader")) if header.get_typeof("vips-loader") else "vips"
        return ImageInfo(
            width=w,
            height=h,
            levels=[Level(w, h, 1.0, TILE, TILE)],
            bands=int(self._image.bands),
            dtype=fmt,
            reader=self.name,
            format=loader.removesuffix("load").removesuffix("_source"),
        )

    def _read_tile(self, level: int, tx: int, ty: int) -> np.ndarray:
        import pyvips

        lvl = self.levels[level]
        x, y = tx * TILE, ty * TILE
        w, h = min(TILE, lvl.width - x), min(TILE, lvl.height - y)
        try:
            with self._lock:
                region = self._image.crop(x, y, w, h).numpy()
        except pyvips.Error as exc:
            raise InvalidImage(f"{self.path.name}: cannot decode (truncated or corrupt?): {exc}") from exc
        region = region if region.ndim == 3 else region[:, :, None]
        out = np.zeros((TILE, TILE, region.shape[2]), dtype=region.dtype)
        out[:h, :w] = region
        return out
