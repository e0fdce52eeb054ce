"""Georeferencing: an image's CRS and the affine transform from its level-0 pixels to map coordinates.

Readers put ``crs`` (``EPSG:<code>``) and ``transform`` on ``ImageInfo`` and ingest stores both on the image
row. ``transform`` is six numbers ``a, b, c, d, e, f`` in rasterio's ``Affine`` order:
``x = a·col + b·row + c``, ``y = d·col + e·row + f``, with pixel corners at integer coordinates (the TIFF reader
already shifts RasterPixelIsPoint rasters to the corner). This module is the one place pixels become map
coordinates; exports in map coordinates (GeoJSON, GeoParquet) go through it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gigavision.errors import InvalidInput

_EPSG = re.compile(r"^EPSG:(\d+)$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Georef:
    """A CRS (``EPSG:32633``, or anything PROJ reads) and the pixel → map affine transform."""

    crs: str
    transform: tuple[float, float, float, float, float, float]

    @classmethod
    def of(cls, crs: str | None, transform: Sequence[float] | None) -> Georef | None:
        """The georeferencing an image row or ``ImageInfo`` records; None unless both parts are known."""
        if not crs or transform is None or len(transform) != 6:
            return None
        a, b, c, d, e, f = (float(v) for v in transform)
        return cls(crs, (a, b, c, d, e, f))

    def to_map(self, xy: Any) -> np.ndarray:
        """Level-0 pixel coordinates ``(N, 2)`` (x right, y down) to map coordinates ``(N, 2)``."""
        pts = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        a, b, c, d, e, f = self.transform
        return np.column_stack((a * pts[:, 0] + b * pts[:, 1] + c, d * pts[:, 0] + e * pts[:, 1] + f))

    def geometry_to_map(self, geometry: Any) -> Any:
        """A shapely geometry (or an array of them) in level-0 pixels, moved to map coordinates."""
        import shapely

        return shapely.transform(geometry, self.to_map)

    @property
    def epsg(self) -> int | None:
        """The EPSG code when the CRS is written ``EPSG:<code>`` (what the TIFF reader records)."""
        m = _EPSG.match(self.crs.strip())
        return int(m.group(1)) if m else None

    def projjson(self) -> dict[str, Any]:
        """The CRS as PROJJSON (GeoParquet's ``crs``), through PROJ as rasterio ships it (extra ``geo``)."""
        try:
            from rasterio.crs import CRS
            from rasterio.errors import CRSError
        except ImportError as exc:
            raise InvalidInput("map coordinates need PROJ through rasterio: pip install 'gigavision[geo]'") from exc
        try:
            out: dict[str, Any] = CRS.from_user_input(self.crs).to_dict(projjson=True)
        except CRSError as exc:
            raise InvalidInput(f"CRS {self.crs!r} is not one PROJ knows: {exc}") from exc
        return out
