"""Tiled / pyramidal TIFF, BigTIFF, OME-TIFF and GeoTIFF through tifffile, one tile at a time.

Tiles are read with ``os.pread`` (no shared file position, so threads never contend) and decoded with the
page's own codec (imagecodecs). We go below tifffile's zarr store because the tile server also needs the
raw stored JPEG bytes of a tile, and a decoded-tile cache keyed by (level, tile).
"""

from __future__ import annotations

import io
import math
import os
import re
import threading
from pathlib import Path
from typing import Any

import numpy as np

from gigavision.errors import InvalidImage, LimitExceeded
from gigavision.images.registry import register_reader
from gigavision.images.sniff import is_tiff
from gigavision.images.source import ImageInfo, ImageSource, Level

JPEG = 7
PHOTOMETRIC_MINISWHITE, PHOTOMETRIC_MINISBLACK, PHOTOMETRIC_RGB, PHOTOMETRIC_YCBCR = 0, 1, 2, 6
RESUNIT_CM, RESUNIT_INCH = 3, 2
MAX_SEGMENT_PIXELS = 64 * 1024 * 1024  # a "tile" bigger than this is a malformed file, not a real tile
MAX_SEGMENT_BYTES = 256 * 1024 * 1024  # decoded size of one tile/strip: bounds what a tiny file can allocate


def _is_generic_tiff(path: Path, head: bytes) -> bool:
    return is_tiff(head)


@register_reader("tiff", sniff=_is_generic_tiff, priority=30, description="TIFF/BigTIFF/OME-TIFF/GeoTIFF (tifffile)")
class TiffSource(ImageSource):
    """Tiled, pyramidal or striped TIFF read segment by segment through tifffile."""

    def _probe(self) -> ImageInfo:
        import tifffile

        self._tif: Any = None
        self._fd: int | None = os.open(self.path, os.O_RDONLY)
        self._size = os.fstat(self._fd).st_size
        self._passthrough: dict[int, bool] = {}
        self._passthrough_lock = threading.Lock()
        try:
            self._tif = tifffile.TiffFile(self.path)
            try:
                series = self._tif.series
            except RuntimeError:
                # a description written for another layout (tifffile's JSON "shape") can make series
                # detection fail; the pages themselves are fine, so read them as a generic pyramid
                self._tif.close()
                self._tif = tifffile.TiffFile(self.path, is_shaped=False)
                series = self._tif.series
            if not series:
                raise InvalidImage(f"{self.path.name}: TIFF has no readable image data (truncated or malformed)")
            self._pages = [lvl.keyframe for lvl in series[0].levels]
        except InvalidImage:
            self.close()
            raise
        except Exception as exc:  # tifffile raises TiffFileError, ValueError, struct.error, ... on bad files
            self.close()
            raise InvalidImage(f"{self.path.name}: malformed TIFF: {exc}") from exc
        try:
            return self._info(series[0])
        except Exception:
            self.close()
            raise

    def _info(self, series: Any) -> ImageInfo:
        page0 = self._pages[0]
        if page0.planarconfig == 2 and page0.samplesperpixel > 1:
            raise InvalidImage(f"{self.path.name}: planar-separate TIFF is not supported; convert it with 'vips copy'")
        width, height = int(page0.imagewidth), int(page0.imagelength)
        if width <= 0 or height <= 0:
            raise InvalidImage(f"{self.path.name}: TIFF declares an empty image ({width}x{height})")
        pixels = width * height
        if pixels > self.limits.max_image_pixels:
            raise LimitExceeded(
                f"{self.path.name}: declares {width}x{height} = {pixels:,} pixels, more than "
                f"limits.max_image_pixels ({self.limits.max_image_pixels:,})"
            )
        levels = []
        for page in self._pages:
            lw, lh = int(page.imagewidth), int(page.imagelength)
            if page.is_tiled:
                tw, th = int(page.tilewidth), int(page.tilelength)
            else:
                tw, th = lw, min(int(page.rowsperstrip or lh), lh)
            segment_bytes = tw * th * int(page.samplesperpixel) * np.dtype(page.dtype).itemsize
            if tw * th > MAX_SEGMENT_PIXELS or segment_bytes > MAX_SEGMENT_BYTES:
                raise InvalidImage(
                    f"{self.path.name}: a tile/strip of {tw}x{th} pixels ({segment_bytes:,} bytes decoded) is larger "
                    f"than any real tile (limits {MAX_SEGMENT_PIXELS:,} pixels, {MAX_SEGMENT_BYTES:,} bytes); "
                    "the file is malformed"
                )
            self._check_offsets(page)
            levels.append(Level(lw, lh, width / lw, tw, th))
        if not page0.is_tiled and pixels > self.limits.max_decode_pixels:
            raise LimitExceeded(
                f"{self.path.name}: untiled TIFF of {pixels:,} pixels is more than limits.max_decode_pixels "
                f"({self.limits.max_decode_pixels:,})"
            )
        mpp = self._mpp(page0)
        crs, transform = self._geo(page0)
        dtype = np.dtype(page0.dtype).name
        return ImageInfo(
            width=width,
            height=height,
            levels=levels,
            bands=int(page0.samplesperpixel),
            dtype=dtype,
            reader=self.name,
            format="ome-tiff" if self._tif.is_ome else ("geotiff" if crs or transform else "tiff"),
            mpp_x=mpp[0] if mpp else None,
            mpp_y=mpp[1] if mpp else None,
            crs=crs,
            transform=transform,
            tiled=bool(page0.is_tiled),
            metadata={"compression": int(page0.compression), "photometric": int(page0.photometric)},
        )

    def _check_offsets(self, page: Any) -> None:
        offsets, counts = page.dataoffsets, page.databytecounts
        if not len(offsets):
            raise InvalidImage(f"{self.path.name}: TIFF page has no tile or strip offsets")
        ends = np.asarray(offsets, dtype=np.uint64) + np.asarray(counts, dtype=np.uint64)
        if int(ends.max()) > self._size:
            raise InvalidImage(
                f"{self.path.name}: truncated or malformed TIFF: tile data points past the end of the file"
            )
        lw, lh = int(page.imagewidth), int(page.imagelength)
        if page.is_tiled:
            expected = math.ceil(lw / page.tilewidth) * math.ceil(lh / page.tilelength)
        else:
            expected = math.ceil(lh / max(1, int(page.rowsperstrip or lh)))
        if len(offsets) < expected:
            raise InvalidImage(
                f"{self.path.name}: TIFF lists {len(offsets)} tiles/strips but its size needs {expected}"
            )

    def _mpp(self, page: Any) -> tuple[float, float] | None:
        if self._tif.is_ome and self._tif.ome_metadata:
            from defusedxml import ElementTree

            try:
                root = ElementTree.fromstring(self._tif.ome_metadata)
            except Exception:
                root = None
            if root is not None:
                for el in root.iter():
                    if el.tag.endswith("Pixels") and el.get("PhysicalSizeX"):
                        unit_scale = {"µm": 1.0, "um": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4, "m": 1e6}
                        sx = float(el.get("PhysicalSizeX", "0")) * unit_scale.get(
                            el.get("PhysicalSizeXUnit", "µm"), 1.0
                        )
                        sy = float(el.get("PhysicalSizeY", el.get("PhysicalSizeX", "0")))
                        sy *= unit_scale.get(el.get("PhysicalSizeYUnit", "µm"), 1.0)
                        if sx > 0 and sy > 0:
                            return sx, sy
        desc = page.description or ""
        m = re.search(r"MPP\s*=\s*([0-9.]+)", desc)
        if m and float(m.group(1)) > 0:
            return float(m.group(1)), float(m.group(1))
        unit = page.tags.get("ResolutionUnit")
        xres, yres = page.tags.get("XResolution"), page.tags.get("YResolution")
        # Only centimetre resolution is trusted as physical: photos carry a meaningless 72 dpi.
        if unit is not None and int(unit.value) == RESUNIT_CM and xres is not None and yres is not None:
            xr = xres.value[0] / xres.value[1] if xres.value[1] else 0
            yr = yres.value[0] / yres.value[1] if yres.value[1] else 0
            if xr > 1 and yr > 1:  # libvips writes 1 px/mm ("no resolution") as 10 px/cm
                mx, my = 1e4 / xr, 1e4 / yr
                if mx < 1000:  # coarser than 1 mm/px is a placeholder, not a measurement
                    return mx, my
        return None

    def _geo(self, page: Any) -> tuple[str | None, tuple[float, float, float, float, float, float] | None]:
        tags = page.tags
        scale, tie, matrix, keys = (tags.get(k) for k in (33550, 33922, 34264, 34735))
        transform = None
        if matrix is not None and len(matrix.value) >= 8:
            m = [float(v) for v in matrix.value]
            transform = (m[0], m[1], m[3], m[4], m[5], m[7])
        elif scale is not None and tie is not None and len(tie.value) >= 6:
            sx, sy = float(scale.value[0]), float(scale.value[1])
            i, j, _, x, y, _ = (float(v) for v in tie.value[:6])
            transform = (sx, 0.0, x - i * sx, 0.0, -sy, y + j * sy)
        crs = None
        if keys is not None:
            values = [int(v) for v in keys.value]
            entries = {values[k]: values[k + 3] for k in range(4, len(values) - 3, 4) if values[k + 1] == 0}
            code = entries.get(3072) or entries.get(2048)  # ProjectedCSType, GeographicType
            if code and code not in (0, 32767):
                crs = f"EPSG:{code}"
            if transform is not None and entries.get(1025) == 2:  # RasterPixelIsPoint: shift to corner
                a, b, c, d, e, f = transform
                transform = (a, b, c - 0.5 * (a + b), d, e, f - 0.5 * (d + e))
        return crs, transform

    # -- pixels -----------------------------------------------------------------------------------------
    def _segment_index(self, level: int, tx: int, ty: int) -> int:
        lvl = self.levels[level]
        return ty * lvl.tiles_across + tx if self._pages[level].is_tiled else ty

    def _segment_bytes(self, level: int, index: int) -> bytes | None:
        page = self._pages[level]
        offset, count = int(page.dataoffsets[index]), int(page.databytecounts[index])
        if count == 0 or offset == 0:
            return None  # sparse tile: tifffile fills it
        if self._fd is None:
            raise InvalidImage(f"{self.path.name}: image is closed")
        data = os.pread(self._fd, count, offset)
        if len(data) != count:
            raise InvalidImage(f"{self.path.name}: tile data truncated at offset {offset}")
        return data

    def _read_tile(self, level: int, tx: int, ty: int) -> np.ndarray:
        page = self._pages[level]
        index = self._segment_index(level, tx, ty)
        data = self._segment_bytes(level, index)
        segment, _, _ = page.decode(data, index, jpegtables=page.jpegtables)
        tile: np.ndarray = np.asarray(segment)[0]  # (depth=1, h, w, samples) -> (h, w, samples)
        if tile.ndim == 2:
            tile = tile[:, :, None]
        if page.photometric == PHOTOMETRIC_MINISWHITE and tile.dtype == np.uint8:
            tile = 255 - tile
        return tile

    def raw_jpeg_tile(self, level: int, tx: int, ty: int) -> bytes | None:
        page = self._pages[level]
        lvl = self.levels[level]
        if (
            page.compression != JPEG
            or not page.is_tiled
            or page.dtype != np.uint8
            or page.samplesperpixel not in (1, 3)
            or page.photometric not in (PHOTOMETRIC_MINISBLACK, PHOTOMETRIC_RGB, PHOTOMETRIC_YCBCR)
            or (tx + 1) * lvl.tile_width > lvl.width
            or (ty + 1) * lvl.tile_height > lvl.height
        ):
            return None
        data = self._segment_bytes(level, self._segment_index(level, tx, ty))
        if data is None or not data.startswith(b"\xff\xd8"):
            return None
        jpeg = page.jpegtables[:-2] + data[2:] if page.jpegtables else data
        if not self._passthrough_ok(level, tx, ty, jpeg):
            return None
        return bytes(jpeg)

    def _passthrough_ok(self, level: int, tx: int, ty: int, jpeg: bytes) -> bool:
        """Once per level: does a browser-style decode of the stored bytes equal the TIFF decode?

        TIFF may signal colour space (RGB vs YCbCr) outside the JPEG stream; only when the stream alone
        decodes to the same pixels can its bytes be served without re-encoding.
        """
        with self._passthrough_lock:
            known = self._passthrough.get(level)
        if known is not None:
            return known
        from PIL import Image

        try:
            with Image.open(io.BytesIO(jpeg)) as im:
                standalone = np.asarray(im.convert("L" if self.info.bands == 1 else "RGB"))
            if standalone.ndim == 2:
                standalone = standalone[:, :, None]
            decoded = self._read_tile(level, tx, ty)
            ok = standalone.shape == decoded.shape and int(np.abs(standalone.astype(int) - decoded).max()) <= 2
        except Exception:
            ok = False
        with self._passthrough_lock:
            self._passthrough[level] = ok
        return ok

    def close(self) -> None:
        tif = getattr(self, "_tif", None)
        if tif is not None:
            tif.close()
            self._tif = None
        fd = getattr(self, "_fd", None)
        if fd is not None:
            os.close(fd)
            self._fd = None
