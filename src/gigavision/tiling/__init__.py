"""Tiling: window grids over big images (``grid.py``); tile batching and cross-tile merge come with inference."""

from __future__ import annotations

from gigavision.tiling.grid import (
    EDGE_MODES,
    EdgeMode,
    GridSpec,
    MaskIndex,
    axis_starts,
    foreground_fractions,
    level_extent,
    window_grid,
)

__all__ = [
    "EDGE_MODES",
    "EdgeMode",
    "GridSpec",
    "MaskIndex",
    "axis_starts",
    "foreground_fractions",
    "level_extent",
    "window_grid",
]
