"""Small rasters (JPEG, PNG, WebP, GIF, BMP, JPEG 2000) through Pillow, decoded once and shrunk by halves."""

from __future__ import annotations

import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from gigavision.errors import InvalidImage, LimitExceeded
from gigavision.images.registry import register_reader
from gigavision.images.sniff import raster_kind
from gigavision.images.source import ImageInfo, ImageSource, Level

SMALL_PIXELS = 64 * 1024 * 1024  # above this, the pyvips reader streams instead of decoding whole
_EXIF_SWAPS_AXES = {5, 6, 7, 8}


def _header(path: Path) -> tuple[str, int, int, str, int]:
    """(format, width, height, mode, exif orientation) from the header only; no pixel is decoded."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                return str(im.format), int(im.width), int(im.height), str(im.mode), _orientation(im)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return "bomb", 0, 0, "", 1
    except Exception as exc:
        raise InvalidImage(f"{path.name}: not a readable image: {exc}") from exc


def _orientation(im: Any) -> int:
    """The EXIF orientation tag (1 when absent). A PNG keeps EXIF in an ``eXIf`` chunk; Pillow's ``getexif()``
    decodes every pixel looking for one after the image data, so only a chunk before it (where writers,
    Pillow included, put it) counts: header and decode then agree on the orientation either way."""
    if im.format == "PNG" and "exif" not in im.info:
        return 1
    return int(im.getexif().get(0x0112, 1)) if hasattr(im, "getexif") else 1


def _is_small_raster(path: Path, head: bytes) -> bool:
    if raster_kind(head) is None:
        return False
    fmt, w, h, _, _ = _header(path)
    return fmt != "bomb" and w * h <= SMALL_PIXELS


def to_array(im: Any) -> np.ndarray:
    """A Pillow image as ``(H, W, C)``: palettes expanded, alpha composited on white, 16-bit kept."""
    from PIL import Image

    if im.mode in ("P", "PA"):
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "RGBa", "La"):
        base = "RGB" if im.mode.startswith("RGB") else "L"
        bg = Image.new(base, im.size, 255 if base == "L" else (255, 255, 255))
        bg.paste(im.convert(base), mask=im.getchannel("A"))
        im = bg
    elif im.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        im = im.convert("RGB")
    elif im.mode == "1":
        im = im.convert("L")
    arr = np.asarray(im)
    return arr if arr.ndim == 3 else arr[:, :, None]


@register_reader("pillow", sniff=_is_small_raster, priority=40, description="small JPEG/PNG/WebP/GIF/BMP (Pillow)")
class PillowSource(ImageSource):
    """Images small enough to decode whole (≤ 64 Mpx); lower levels are made by halving, on demand."""

    def _probe(self) -> ImageInfo:
        fmt, w, h, mode, orientation = _header(self.path)
        if fmt == "bomb" or w * h > self.limits.max_decode_pixels:
            raise LimitExceeded(
                f"{self.path.name}: header declares {w}x{h} pixels, more than limits.max_decode_pixels "
                f"({self.limits.max_decode_pixels:,})"
            )
        if orientation in _EXIF_SWAPS_AXES:
            w, h = h, w
        self._orientation = orientation
        self._decode_lock = threading.Lock()
        levels = [Level(w, h, 1.0, w, h)]
        lw, lh = w, h
        while max(lw, lh) > 256:
            lw, lh = -(-lw // 2), -(-lh // 2)
            levels.append(Level(lw, lh, w / lw, lw, lh))
        bands, dtype = {
            "L": (1, "uint8"),
            "1": (1, "uint8"),
            "LA": (1, "uint8"),
            "I;16": (1, "uint16"),
            "I;16B": (1, "uint16"),
            "I": (1, "int32"),
            "F": (1, "float32"),
        }.get(mode, (3, "uint8"))
        return ImageInfo(
            width=w, height=h, levels=levels, bands=bands, dtype=dtype, reader=self.name, format=fmt.lower()
        )

    def _decode(self) -> np.ndarray:
        from PIL import Image, ImageOps

        try:
            with Image.open(self.path) as opened:
                opened.load()
                im = ImageOps.exif_transpose(opened) if self._orientation != 1 else opened
                arr = to_array(im)
        except Exception as exc:
            raise InvalidImage(f"{self.path.name}: cannot decode image (truncated or corrupt?): {exc}") from exc
        if arr.shape[:2] != (self.height, self.width):
            raise InvalidImage(f"{self.path.name}: decoded size {arr.shape[1]}x{arr.shape[0]} differs from header")
        return arr.astype(self.info.dtype, copy=False)

    def _read_tile(self, level: int, tx: int, ty: int) -> np.ndarray:
        if level == 0:
            with self._decode_lock:  # decode once even when several threads ask at the same time
                cached = self.cache.get((self._key, 0, 0, 0))
                return cached if cached is not None else self._decode()
        from PIL import Image

        parent = self.tile(level - 1, 0, 0)
        lvl = self.levels[level]
        if parent.dtype == np.uint8:
            im = Image.fromarray(parent[:, :, 0] if parent.shape[2] == 1 else parent)
            arr = np.asarray(im.resize((lvl.width, lvl.height), Image.Resampling.BOX))
        else:  # 2×2 mean for 16-bit/float data, which Pillow resizes poorly
            p = parent.astype(np.float64)
            p = np.pad(p, ((0, p.shape[0] % 2), (0, p.shape[1] % 2), (0, 0)), mode="edge")
            arr = ((p[0::2, 0::2] + p[1::2, 0::2] + p[0::2, 1::2] + p[1::2, 1::2]) / 4).astype(parent.dtype)
        return arr if arr.ndim == 3 else arr[:, :, None]
