"""Display colours of segmentation classes: the palette written into masks and used to colour them.

Class 0 (background) is black; past the list, colours repeat (class 0 excluded).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0),
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (220, 190, 255),
    (170, 110, 40),
    (128, 0, 0),
    (170, 255, 195),
)


def class_colors(n: int) -> np.ndarray:
    """``(n, 3)`` uint8 display colours for class indices ``0..n-1`` (class 0 black)."""
    table = np.asarray(PALETTE, dtype=np.uint8)
    out: np.ndarray = np.concatenate([table[:1], np.resize(table[1:], (max(n - 1, 0), 3))])[:n]
    return out


def colorize(labels: np.ndarray, colors: np.ndarray | Sequence[Sequence[int]] | None = None) -> np.ndarray:
    """Labels ``(H, W)`` or ``(H, W, 1)`` uint8 → ``(H, W, 3)`` uint8 RGB for display."""
    lab = np.asarray(labels)
    if lab.ndim == 3:
        lab = lab[..., 0]
    table = class_colors(256) if colors is None else np.asarray(colors, dtype=np.uint8).reshape(-1, 3)
    if table.shape[0] < 256:
        table = np.concatenate([table, np.zeros((256 - table.shape[0], 3), dtype=np.uint8)])
    out: np.ndarray = table[lab]
    return out
