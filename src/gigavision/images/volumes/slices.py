"""Slices of a volume as 2D images: what the tile server and every 2D consumer open.

A slice is addressed as ``{image_id}:{plane}:{index}`` with an optional display window
``:{center},{width}`` (``…:axial:42:-600,1500``): one IIIF image per slice, so each has a valid info.json of
its own size, and every URL under it names pixels that never change (immutable caching, like image ids).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from gigavision.errors import InvalidInput, NotFound
from gigavision.images.cache import TileCache
from gigavision.images.source import ImageInfo, ImageSource, Level
from gigavision.images.volumes.geometry import PLANES, Grid, Plane
from gigavision.images.volumes.store import VOLUME_NAME, Volume

_REF = re.compile(
    r"(?P<id>[0-9a-f]{64}):(?P<plane>[A-Za-z]{1,16}):(?P<index>[0-9]{1,9})"
    r"(?::(?P<center>-?[0-9]{1,9}(?:\.[0-9]{1,6})?),(?P<width>[0-9]{1,9}(?:\.[0-9]{1,6})?))?"
)


@dataclass(frozen=True, slots=True)
class SliceRef:
    image_id: str
    plane: Plane
    index: int
    window: tuple[float, float] | None = None  # (low, high), from the reference's centre and width

    def __str__(self) -> str:
        text = f"{self.image_id}:{self.plane}:{self.index}"
        if self.window is not None:
            lo, hi = self.window
            text += f":{(lo + hi) / 2:g},{hi - lo:g}"
        return text


def parse_slice_ref(text: str) -> SliceRef | None:
    """The slice ``text`` names, or None when it is a plain image id (no ``:``). ``InvalidInput`` (400) for a
    malformed reference or an unknown plane; whether the slice exists is ``check_slice``'s to say."""
    if ":" not in text:
        return None
    m = _REF.fullmatch(text)
    if m is None:
        raise InvalidInput(
            f"slice {text[:120]!r} is not IMAGE_ID:PLANE:INDEX[:CENTER,WIDTH] (PLANE: {', '.join(PLANES)})"
        )
    plane = m["plane"].lower()
    if plane not in PLANES:
        raise InvalidInput(f"plane {m['plane']!r} is not one of {', '.join(PLANES)}")
    window = None
    if m["center"] is not None:
        center, width = float(m["center"]), float(m["width"])
        if width <= 0:
            raise InvalidInput(f"window width must be positive, got {m['width']}")
        window = (center - width / 2, center + width / 2)
    return SliceRef(m["id"], plane, int(m["index"]), window)


def check_slice(grid: Grid, ref: SliceRef) -> tuple[int, int]:
    """The slice's display size (width, height); ``NotFound`` (404) when the plane has no such slice."""
    size = grid.plane(ref.plane)
    if not 0 <= ref.index < size.slices:
        raise NotFound(f"slice {ref.index} of the {ref.plane} plane does not exist (0..{size.slices - 1})")
    return size.width, size.height


class VolumeSlice(ImageSource):
    """One slice of a stored volume as a one-level, one-tile 2D image (``Volume.display_slice``): a slice is at
    most a few megapixels, computed once and then served from the tile cache."""

    name = "volume"

    def __init__(self, volume: Volume, plane: Plane, index: int, *, cache: TileCache | None = None) -> None:
        self.volume, self.plane, self.index = volume, plane, index
        super().__init__(volume.folder / VOLUME_NAME, cache=cache)

    def _probe(self) -> ImageInfo:
        grid = self.volume.grid
        width, height = check_slice(grid, SliceRef("0" * 64, self.plane, self.index))
        native_rows = self.volume.shape[0] if self.plane != "axial" else self.volume.shape[1]
        dtype = str(self.volume.dtype) if height == native_rows else "float32"
        sx, sy, _ = grid.spacing
        mm = sy if self.plane == "sagittal" else sx  # the horizontal spacing: display pixels are square
        return ImageInfo(
            width=width,
            height=height,
            levels=[Level(width, height, 1.0, width, height)],
            bands=1,
            dtype=dtype,
            reader=self.name,
            format="volume",
            mpp_x=mm * 1000.0,
            mpp_y=mm * 1000.0,
            modality=self.volume.modality,
            tiled=False,
            metadata={"plane": self.plane, "slice": self.index},
        )

    def _read_tile(self, level: int, tx: int, ty: int) -> np.ndarray:
        image = self.volume.display_slice(self.plane, self.index)
        return np.ascontiguousarray(image, dtype=self.info.dtype)[:, :, None]
