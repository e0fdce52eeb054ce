"""Window grids: coverage, edges, downsampled levels, foreground filtering (numbers checked by hand)."""

from __future__ import annotations

import numpy as np
import pytest

from gigavision.errors import InvalidInput
from gigavision.tiling import GridSpec, MaskIndex, axis_starts, foreground_fractions, level_extent, window_grid


def coverage(windows: np.ndarray, width: int, height: int) -> np.ndarray:
    hits = np.zeros((height, width), dtype=np.int32)
    for x0, y0, x1, y1 in windows:
        hits[max(y0, 0) : min(y1, height), max(x0, 0) : min(x1, width)] += 1
    return hits


def test_shift_edges_cover_every_pixel_with_windows_inside() -> None:
    w = window_grid(1000, 600, 256)
    assert w.dtype == np.int64 and w.shape == (12, 4)
    assert sorted(set(w[:, 0].tolist())) == [0, 256, 512, 744]
    assert sorted(set(w[:, 1].tolist())) == [0, 256, 344]
    assert (w[:, 2] - w[:, 0] == 256).all() and (w[:, 3] - w[:, 1] == 256).all()
    assert w[:, 2].max() == 1000 and w[:, 3].max() == 600 and w.min() == 0
    assert coverage(w, 1000, 600).min() == 1
    # row-major: the first row left to right, then the next row
    assert w[:4, 1].tolist() == [0, 0, 0, 0] and w[:4, 0].tolist() == [0, 256, 512, 744]
    assert w[4].tolist() == [0, 256, 256, 512]


def test_pad_keeps_the_stride_and_reaches_past_the_edge() -> None:
    w = window_grid(1000, 600, 256, edge="pad")
    assert sorted(set(w[:, 0].tolist())) == [0, 256, 512, 768]
    assert sorted(set(w[:, 1].tolist())) == [0, 256, 512]
    assert w[:, 2].max() == 1024 and w[:, 3].max() == 768
    assert coverage(w, 1000, 600).min() == 1


def test_drop_keeps_only_whole_windows() -> None:
    w = window_grid(1000, 600, 256, edge="drop")
    assert len(w) == 6 and w[:, 2].max() == 768 and w[:, 3].max() == 512
    assert coverage(w, 1000, 600)[:, 768:].max() == 0


def test_overlap_and_stride() -> None:
    w = window_grid(1000, 256, 256, overlap=56)
    assert w[:, 0].tolist() == [0, 200, 400, 600, 744]
    assert window_grid(1000, 256, 256, stride=(300, 256))[:, 0].tolist() == [0, 300, 600, 744]
    rect = window_grid(1000, 600, (400, 200), overlap=(100, 0))
    assert sorted(set(rect[:, 0].tolist())) == [0, 300, 600] and sorted(set(rect[:, 1].tolist())) == [0, 200, 400]
    with pytest.raises(InvalidInput, match="overlap 256x256 must be smaller"):
        window_grid(1000, 600, 256, overlap=256)
    with pytest.raises(InvalidInput, match="edge must be one of shift, pad, drop"):
        window_grid(1000, 600, 256, edge="wrap")  # type: ignore[arg-type]


def test_image_smaller_than_a_window() -> None:
    assert window_grid(100, 80, 256).tolist() == [[0, 0, 256, 256]]
    assert window_grid(100, 80, 256, edge="pad").tolist() == [[0, 0, 256, 256]]
    assert window_grid(100, 80, 256, edge="drop").shape == (0, 4)
    assert axis_starts(256, 256, 128, "drop").tolist() == [0]


def test_grid_at_a_downsampled_level_is_in_level0_pixels() -> None:
    # the 1-gigapixel slide at level 2 (downsample 4): 10,000 x 6,250 level pixels, 512² patches
    w = window_grid(40_000, 25_000, 512, downsample=4.0)
    assert len(w) == 20 * 13
    assert (w[:, 2] - w[:, 0] == 2048).all()
    assert w[:, 0].max() == 4 * 9488 and w[:, 2].max() == 40_000 and w[:, 3].max() == 25_000
    # a non-integer downsample (40,000 / 312) still ends exactly on the image edge
    ds = 40_000 / 312
    assert level_extent(40_000, 25_000, ds) == (312, 195)
    v = window_grid(40_000, 25_000, 64, downsample=ds)
    assert v[:, 2].max() == 40_000 and v[:, 3].max() == 25_000 and len(v) == 5 * 4


def test_foreground_fractions_by_hand() -> None:
    mask = np.zeros((10, 10), dtype=bool)
    mask[:, :5] = True  # left half of a 1000 x 1000 image
    windows = np.array(
        [
            [0, 0, 500, 500],  # all foreground
            [250, 0, 750, 500],  # half
            [500, 500, 1000, 1000],  # none
            [-100, 0, 100, 100],  # half outside the image: outside counts as background
            [10, 10, 20, 20],  # smaller than a mask cell: the cell it touches
        ]
    )
    assert foreground_fractions(windows, mask, 1000, 1000).tolist() == [1.0, 0.5, 0.0, 0.5, 1.0]


def test_mask_fractions_match_a_direct_count() -> None:
    rng = np.random.default_rng(3)
    mask = rng.random((64, 100)) < 0.3
    index = MaskIndex(mask, 10_000, 6_400)  # one cell = 100 x 100 level-0 pixels
    cells = rng.integers(0, 60, size=(200, 2))
    sizes = rng.integers(1, 30, size=(200, 2))
    windows = np.concatenate([cells * 100, (cells + sizes) * 100], axis=1)
    expected = [
        mask[y0 // 100 : y1 // 100, x0 // 100 : x1 // 100].sum() / ((x1 - x0) // 100 * ((y1 - y0) // 100))
        for x0, y0, x1, y1 in windows
    ]
    np.testing.assert_allclose(index.fractions(windows), expected)


def test_grid_spec_filters_windows_by_tissue() -> None:
    # a disc of tissue of radius 300 in a 1000 x 1000 image, mask at 1/10 resolution
    yy, xx = np.mgrid[0:100, 0:100]
    mask = (xx + 0.5 - 50) ** 2 + (yy + 0.5 - 50) ** 2 <= 30**2
    spec = GridSpec(size=100, min_foreground=0.5)
    kept = spec.windows(1000, 1000, mask=mask)
    all_windows = GridSpec(size=100).windows(1000, 1000)
    assert len(all_windows) == 100
    centres = (kept[:, :2] + kept[:, 2:]) / 2
    # a 100² window is at least half tissue when its centre lies well inside the disc
    assert (np.hypot(centres[:, 0] - 500, centres[:, 1] - 500) < 300 + 50).all()
    assert 24 <= len(kept) <= 32  # disc area 0.283 M px ≈ 28 windows
    assert len(GridSpec(size=100, min_foreground=1.0).windows(1000, 1000, mask=mask)) < len(kept)
    with pytest.raises(InvalidInput, match="needs a foreground mask"):
        spec.windows(1000, 1000)
    with pytest.raises(InvalidInput, match="min_foreground"):
        GridSpec(min_foreground=1.5)
