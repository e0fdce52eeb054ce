"""Regions in level-0 pixel coordinates (x right, y down), the one coordinate system of gigavision."""

from __future__ import annotations

import math
from dataclasses import dataclass

from gigavision.errors import InvalidInput


@dataclass(frozen=True, slots=True)
class Region:
    """An axis-aligned window ``[x, x+width) × [y, y+height)`` in level-0 pixels."""

    x: int
    y: int
    width: int
    height: int

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise InvalidInput(f"region must have a positive size, got {self.width}x{self.height}")

    @property
    def x1(self) -> int:
        return self.x + self.width

    @property
    def y1(self) -> int:
        return self.y + self.height

    def intersect(self, other: Region) -> Region | None:
        x0, y0 = max(self.x, other.x), max(self.y, other.y)
        x1, y1 = min(self.x1, other.x1), min(self.y1, other.y1)
        if x1 <= x0 or y1 <= y0:
            return None
        return Region(x0, y0, x1 - x0, y1 - y0)

    def scaled(self, factor: float) -> Region:
        """The smallest integer region covering this one after scaling coordinates by ``factor``."""
        x0, y0 = math.floor(self.x * factor), math.floor(self.y * factor)
        x1, y1 = math.ceil(self.x1 * factor), math.ceil(self.y1 * factor)
        return Region(x0, y0, max(1, x1 - x0), max(1, y1 - y0))
