"""Vendor whole-slide formats (Aperio SVS, Hamamatsu NDPI/VMS, Leica SCN, Philips TIFF, Ventana BIF, ...)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from gigavision.errors import InvalidImage
from gigavision.images.registry import register_reader
from gigavision.images.source import ImageInfo, ImageSource, Level

TILE = 512
GENERIC = {
    None,
    "generic-tiff",
}  # plain tiled TIFFs go to the tifffile reader, which can pass JPEG tiles through


def _is_vendor_slide(path: Path, head: bytes) -> bool:
    import openslide

    try:
        return openslide.OpenSlide.detect_format(str(path)) not in GENERIC
    except Exception:
        return False


@register_reader("openslide", sniff=_is_vendor_slide, priority=20, description="vendor whole-slide images (OpenSlide)")
class SlideSource(ImageSource):
    """Whole-slide images through OpenSlide; tiles are 512² windows of its levels, composited on white."""

    def _probe(self) -> ImageInfo:
        import openslide

        try:
            self._slide: Any = openslide.OpenSlide(str(self.path))
        except Exception as exc:
            raise InvalidImage(f"{self.path.name}: OpenSlide cannot read this slide: {exc}") from exc
        s = self._slide
        w, h = s.dimensions
        levels = [
            Level(int(lw), int(lh), float(ds), TILE, TILE)
            for (lw, lh), ds in zip(s.level_dimensions, s.level_downsamples, strict=True)
        ]
        props = s.properties

        def prop_float(key: str) -> float | None:
            try:
                value = float(props[key])
            except (KeyError, ValueError):
                return None
            return value if value > 0 else None

        return ImageInfo(
            width=int(w),
            height=int(h),
            levels=levels,
            bands=3,
            dtype="uint8",
            reader=self.name,
            format=str(props.get("openslide.vendor", "slide")),
            mpp_x=prop_float("openslide.mpp-x"),
            mpp_y=prop_float("openslide.mpp-y"),
            modality="SM",
            tiled=True,
            metadata={"objective_power": prop_float("openslide.objective-power")},
        )

    def _read_tile(self, level: int, tx: int, ty: int) -> np.ndarray:
        lvl = self.levels[level]
        x0 = round(tx * TILE * lvl.downsample)
        y0 = round(ty * TILE * lvl.downsample)
        rgba = np.asarray(self._slide.read_region((x0, y0), level, (TILE, TILE)))
        alpha = rgba[:, :, 3:4].astype(np.uint16)
        # OpenSlide returns premultiplied RGBA with alpha 0 outside scanned areas: composite on white
        rgb = rgba[:, :, :3].astype(np.uint16) + (255 - alpha)
        out: np.ndarray = np.clip(rgb, 0, 255).astype(np.uint8)
        return out

    def close(self) -> None:
        slide = getattr(self, "_slide", None)
        if slide is not None:
            slide.close()
            self._slide = None
