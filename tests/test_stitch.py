"""Stitched segmentation masks: no seams, pyramidal output, skipped windows, polygons, bounded memory, bad input.

The "model" is a Gaussian-blurred threshold with a receptive field (radius 6 px) well inside the overlap, applied
to scikit-image's real coins photograph: stitching its windows must give what it gives on the whole image.
"""

from __future__ import annotations

import gc
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import shapely
import tifffile
from scipy import ndimage
from skimage import data

from gigavision.errors import InvalidInput
from gigavision.geometry import Region
from gigavision.images.registry import open_image
from gigavision.infer.mask_file import read_mask_info
from gigavision.infer.palette import class_colors, colorize
from gigavision.infer.stitch import MaskStitcher, StitchResult, blend_ramp
from gigavision.infer.vectorize import vectorize
from gigavision.tiling.grid import EdgeMode, level_extent, window_grid

CLASSES = ["background", "coin"]


def blur_threshold(image: np.ndarray) -> np.ndarray:
    """(2, h, w) float32 probabilities; each output pixel depends on input pixels within 6 px (2σ·3)."""
    blurred = ndimage.gaussian_filter(image, 2.0, mode="reflect", truncate=3.0)
    coin = 1.0 / (1.0 + np.exp(-(blurred - 0.45) * 20.0))
    return np.stack([1.0 - coin, coin]).astype(np.float32)


@pytest.fixture(scope="module")
def coins() -> np.ndarray:
    return np.asarray(data.coins(), dtype=np.float32) / 255.0  # 303 x 384


def read_all(path: Path | None) -> np.ndarray:
    assert path is not None
    with open_image(path) as src:
        return src.read_window(0, 0, 0, src.width, src.height)[..., 0]


def stitch(
    path: Path, image: np.ndarray, window: int, overlap: int, skip: set[int] | None = None
) -> tuple[StitchResult, np.ndarray]:
    """Run ``blur_threshold`` window by window through a stitcher; returns the result and the windows."""
    h, w = image.shape
    windows = window_grid(w, h, window, overlap=overlap)
    with MaskStitcher(path, w, h, CLASSES, window=window, overlap=overlap) as stitcher:
        for i, (x0, y0, x1, y1) in enumerate(windows):
            if skip and i in skip:
                stitcher.skip([x0, y0, x1, y1])
            else:
                stitcher.add([x0, y0, x1, y1], blur_threshold(image[y0:y1, x0:x1]))
        result = stitcher.close()
    return result, windows


@pytest.fixture(scope="module")
def stitched_coins(coins: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> StitchResult:
    result, _ = stitch(tmp_path_factory.mktemp("coins") / "coins.tif", coins, 96, 32)
    return result


# -- blending --------------------------------------------------------------------------------------------
def test_ramps_sum_to_one_where_aligned_and_are_never_zero() -> None:
    left = blend_ramp(96, 32, start=False, end=True)
    right = blend_ramp(96, 32, start=True, end=False)
    assert (left[:64] == 1).all() and (right[32:] == 1).all()  # image edges keep full weight
    np.testing.assert_allclose(left[64:] + right[:32], 1.0, atol=1e-6)
    assert left.min() > 0 and right.min() > 0 and right[0] < 0.01
    assert (blend_ramp(10, 0, start=True, end=True) == 1).all()


def test_stitched_mask_equals_the_whole_image_prediction(coins: np.ndarray, stitched_coins: StitchResult) -> None:
    whole = blur_threshold(coins)
    labels, prob = read_all(stitched_coins.path), read_all(stitched_coins.probability_path).astype(int)
    assert labels.shape == coins.shape and labels.dtype == np.uint8
    agreement = (labels == whole.argmax(0)).mean()
    diff = np.abs(prob - np.rint(whole[1] * 255)).max()
    assert agreement >= 0.999, agreement
    assert diff <= 3, f"probabilities differ by {diff}/255 from the whole-image prediction"
    assert stitched_coins.pixel_counts["coin"] == int((labels == 1).sum())
    assert sum(stitched_coins.pixel_counts.values()) == coins.size


def test_without_overlap_the_window_borders_show(coins: np.ndarray, tmp_path: Path) -> None:
    result, _ = stitch(tmp_path / "seams.tif", coins, 96, 0)
    whole = blur_threshold(coins)
    diff = np.abs(read_all(result.probability_path).astype(int) - np.rint(whole[1] * 255)).max()
    assert diff > 20, f"the model's cut-off receptive field should show at tile borders ({diff}/255)"


# -- output files ----------------------------------------------------------------------------------------
@dataclass
class BigRun:
    result: StitchResult
    peak: int  # tracemalloc peak while stitching, bytes
    nbytes: int  # the stitcher's declared buffers
    windows: np.ndarray


def smooth_probs(x0: float, y0: float, size: int) -> np.ndarray:
    """A smooth two-class field of the mask coordinates: blending must reproduce it exactly."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    fg = 0.5 + 0.5 * np.sin((x0 + xx) / 300.0) * np.cos((y0 + yy) / 250.0)
    return np.stack([1.0 - fg, fg])


def expected_labels(x: int, y: int, w: int, h: int) -> np.ndarray:
    return np.asarray(smooth_probs(x, y, max(w, h))[:, :h, :w].argmax(0), dtype=np.uint8)


@pytest.fixture(scope="module")
def big_run(tmp_path_factory: pytest.TempPathFactory) -> BigRun:
    """A 12000x10000 level-0 image read at downsample 2 (a 6000x5000 mask), 512² windows, overlap 64."""
    width, height, ds, size, overlap = 12_000, 10_000, 2.0, 512, 64
    windows = window_grid(width, height, size, overlap=overlap, downsample=ds)
    path = tmp_path_factory.mktemp("big") / "big.tif"
    tracemalloc.start()
    try:
        stitcher = MaskStitcher(path, width, height, CLASSES, window=size, overlap=overlap, downsample=ds, mpp=0.25)
        for x0, y0, x1, y1 in windows:
            stitcher.add([x0, y0, x1, y1], smooth_probs(x0 / ds, y0 / ds, size))
        result = stitcher.close()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return BigRun(result, peak, stitcher.nbytes, windows)


def test_memory_stays_a_band_of_rows(big_run: BigRun) -> None:
    r = big_run.result
    assert len(big_run.windows) == 168 and (r.width, r.height) == (6000, 5000)
    full = len(CLASSES) * r.width * r.height * 4  # the whole mask as float32 probabilities: 240 MB
    band = (len(CLASSES) + 1) * 512 * r.width * 4  # accumulators: one window row of the mask
    assert big_run.nbytes < band + 4 * 256 * r.width
    assert big_run.peak < big_run.nbytes + 16 * 1024**2, f"peak {big_run.peak / 1e6:.1f} MB"
    assert big_run.peak < full / 4, f"peak {big_run.peak / 1e6:.1f} MB vs {full / 1e6:.0f} MB for the whole mask"


def test_output_is_a_tiled_lossless_pyramid_readable_by_the_image_readers(big_run: BigRun) -> None:
    r = big_run.result
    assert r.downsample == 2.0 and r.mpp == 0.5 and r.areas["coin"] == 4 * r.pixel_counts["coin"]
    with tifffile.TiffFile(r.path) as tif:
        levels = tif.series[0].levels
        assert len(levels) >= 5
        assert all(p.keyframe.is_tiled and p.keyframe.compression == 8 for p in levels)  # deflate, never JPEG
    with open_image(r.path) as src:
        assert (src.width, src.height, src.info.bands, src.info.dtype) == (6000, 5000, 1, "uint8")
        assert [lvl.width for lvl in src.levels[:3]] == [6000, 3000, 1500]
        assert src.levels[0].tile_width == 256 and src.info.mpp_x == pytest.approx(0.5)
        got = src.read_region(Region(1500, 1100, 1024, 768))[..., 0]
        assert (got == expected_labels(1500, 1100, 1024, 768)).mean() > 0.999
        small = src.read_window(2, 0, 0, 1500, 1250)
        assert set(np.unique(small).tolist()) <= {0, 1}  # mode-shrunk levels stay class indices
    assert r.probability_path is not None
    with open_image(r.probability_path) as src:
        assert len(src.levels) >= 5 and src.info.mpp_x == pytest.approx(0.5)
        fg = src.read_window(0, 1500, 1100, 64, 64)[..., 0].astype(float) / 255
        np.testing.assert_allclose(fg, smooth_probs(1500, 1100, 64)[1], atol=1 / 255 + 1e-6)
    info = read_mask_info(r.path)
    assert info["classes"] == CLASSES and info["downsample"] == 2.0 and info["level0_width"] == 12_000
    assert info["probability_file"] == "big.prob.tif"
    assert sorted(p.name for p in r.path.parent.iterdir()) == ["big.prob.tif", "big.tif"]  # no temp files


def test_skipped_windows_read_as_background(coins: np.ndarray, tmp_path: Path) -> None:
    h, w = coins.shape
    windows = window_grid(w, h, 96, overlap=32)
    skip = {i for i, (x0, y0, _, _) in enumerate(windows) if 64 <= y0 <= 128 and x0 >= 128}
    result, _ = stitch(tmp_path / "skip.tif", coins, 96, 32, skip=skip)
    covered = np.zeros(coins.shape, dtype=bool)
    for i, (x0, y0, x1, y1) in enumerate(windows):
        if i not in skip:
            covered[y0:y1, x0:x1] = True
    labels, prob = read_all(result.path), read_all(result.probability_path)
    assert (~covered).sum() > 2000 and result.skipped == len(skip)
    assert (labels[~covered] == 0).all() and (prob[~covered] == 0).all()
    # a skipped neighbour does not dilute the windows that ran
    assert (labels[covered] == blur_threshold(coins).argmax(0)[covered]).mean() >= 0.999


@pytest.mark.parametrize(
    ("width", "height", "downsample", "edge"),
    [(50, 40, 1.0, "shift"), (1000, 700, 1.0, "pad"), (1000, 700, 1.5, "shift"), (999, 701, 3.0, "pad")],
)
def test_every_grid_layout_covers_the_mask(
    tmp_path: Path, width: int, height: int, downsample: float, edge: EdgeMode
) -> None:
    """Images smaller than a window, windows reaching past the edge, fractional downsamples: all pixels set."""
    windows = window_grid(width, height, 64, overlap=16, downsample=downsample, edge=edge)
    probs = np.stack([np.full((64, 64), 0.2, np.float32), np.full((64, 64), 0.8, np.float32)])
    with MaskStitcher(
        tmp_path / "m.tif", width, height, CLASSES, window=64, overlap=16, downsample=downsample
    ) as stitcher:
        for box in windows:
            stitcher.add(box, probs)
        result = stitcher.close()
    labels, prob = read_all(result.path), read_all(result.probability_path)
    assert labels.shape == (result.height, result.width) == level_extent(width, height, downsample)[::-1]
    assert (labels == 1).all() and (prob == 204).all()


def test_colours_give_each_class_a_display_colour() -> None:
    colors = class_colors(20)
    assert colors.shape == (20, 3) and colors[0].tolist() == [0, 0, 0] and len({tuple(c) for c in colors[:16]}) == 16
    rgb = colorize(np.array([[0, 1], [2, 1]], dtype=np.uint8), colors[:3])
    assert rgb.shape == (2, 2, 3) and rgb[0, 1].tolist() == colors[1].tolist()


# -- polygons --------------------------------------------------------------------------------------------
def test_polygons_match_the_connected_components(stitched_coins: StitchResult) -> None:
    labels = read_all(stitched_coins.path)
    components, n = ndimage.label(labels == 1)
    polys = vectorize(stitched_coins, band_rows=40, source="model:blur@1")  # 8 band borders cut through coins
    assert len(polys) == n >= 20
    assert set(polys.label) == {"coin"} and set(polys.source) == {"model:blur@1"}
    assert polys.area.sum() == pytest.approx((labels == 1).sum(), rel=0.01)
    sizes = np.sort(np.bincount(components.ravel())[1:])
    np.testing.assert_allclose(np.sort(polys.area), sizes, rtol=0.01)
    assert all(g.is_valid for g in polys.geometry)
    assert ((polys.score > 0.5) & (polys.score <= 1)).all()
    big = vectorize(stitched_coins.path, min_area=1500)
    assert 0 < len(big) == (sizes >= 1500).sum() < n


def test_polygons_of_a_big_mask_in_bounded_memory(big_run: BigRun, stitched_coins: StitchResult) -> None:
    vectorize(stitched_coins)  # imports done before measuring
    tracemalloc.start()
    try:
        polys = vectorize(big_run.result, band_rows=256)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    r = big_run.result
    assert peak < 20 * 256 * r.width, f"peak {peak / 1e6:.1f} MB for 256-row bands of a {r.width}-wide mask"
    labels = read_all(r.path)
    assert len(polys) == ndimage.label(labels == 1)[1]
    assert polys.area.sum() == pytest.approx((labels == 1).sum() * 4, rel=0.001)  # level-0 px² at downsample 2
    assert polys.xyxy[:, 2].max() <= 12_000 and polys.xyxy[:, 3].max() <= 10_000


def test_shapes_cut_by_band_borders_come_out_whole(tmp_path: Path) -> None:
    """A disc across a border, a U whose arms meet only in the next band, and a ring with its hole."""
    h, w, ds = 120, 160, 2.0
    yy, xx = np.mgrid[0:h, 0:w]
    labels = np.zeros((h, w), dtype=np.uint8)
    labels[(yy - 32) ** 2 + (xx - 30) ** 2 <= 15**2] = 1  # disc straddling row 32
    labels[20:64, 60:66] = 2  # U: two arms through bands 0 and 1 (rows 0-63) ...
    labels[20:64, 80:86] = 2
    labels[64:72, 60:86] = 2  # ... joined only by a bar in band 2 (rows 64-95)
    ring = ((yy - 80) ** 2 + (xx - 125) ** 2 <= 25**2) & ((yy - 80) ** 2 + (xx - 125) ** 2 > 10**2)
    labels[ring] = 1
    labels[110:112, 5:7] = 1  # 4 pixels: dropped by min_area
    onehot = np.stack([labels == c for c in range(3)]).astype(np.float32)
    windows = window_grid(int(w * ds), int(h * ds), 48, overlap=16, downsample=ds)
    with MaskStitcher(
        tmp_path / "shapes.tif", int(w * ds), int(h * ds), ["bg", "blob", "u"], window=48, overlap=16, downsample=ds
    ) as stitcher:
        for box in windows:
            x0, y0 = int(box[0] / ds), int(box[1] / ds)
            stitcher.add(box, onehot[:, y0 : y0 + 48, x0 : x0 + 48])
        result = stitcher.close()
    assert (read_all(result.path) == labels).all()

    polys = vectorize(result, band_rows=32, min_area=4 * ds * ds + 1)
    assert sorted(polys.label) == ["blob", "blob", "u"]
    u = polys.geometry[polys.label == "u"][0]
    assert u.geom_type == "Polygon" and u.area == (labels == 2).sum() * ds * ds
    assert u.bounds == (60 * ds, 20 * ds, 86 * ds, 72 * ds)  # level-0 pixels
    blobs = sorted(polys.geometry[polys.label == "blob"], key=lambda g: g.bounds[0])
    assert blobs[0].geom_type == "Polygon" and len(blobs[0].interiors) == 0
    assert blobs[1].geom_type == "Polygon" and len(blobs[1].interiors) == 1  # the ring keeps its hole
    assert shapely.area(blobs[1]) == ring.sum() * ds * ds
    np.testing.assert_allclose(vectorize(result, classes=["u"], band_rows=7).score, [1.0])  # mean P(not bg)
    assert len(vectorize(result, band_rows=32)) == 4  # without min_area the 4-pixel speck is kept


# -- bad input and cleanup -------------------------------------------------------------------------------
@pytest.fixture
def small(tmp_path: Path) -> MaskStitcher:
    return MaskStitcher(tmp_path / "mask.tif", 200, 100, CLASSES, window=64, overlap=16)


@pytest.mark.parametrize(
    ("box", "probs", "match"),
    [
        ([0, 0, 64, 64], np.zeros((2, 32, 64), np.float32), r"shape \(2, 64, 64\)"),
        ([0, 0, 64, 64], np.zeros((3, 64, 64), np.float32), r"C = 2 classes"),
        ([0, 0, 64, 64], np.zeros((64, 64), np.float32), r"C = 2 classes"),
        ([250, 0, 314, 64], np.zeros((2, 64, 64), np.float32), r"outside the 200x100 image"),
        ([-8, 0, 56, 64], np.zeros((2, 64, 64), np.float32), r"outside the 200x100 image"),
        ([0, 0, 128, 128], np.zeros((2, 64, 64), np.float32), r"made for 64x64 windows"),
        ([0, 0, 64, 64], np.zeros((2, 64, 64), np.uint8), r"floating-point"),
        ([0, 0, 64, 64], np.full((2, 64, 64), np.nan, np.float32), r"\[0, 1\]"),
        ([0, 0, 64, 64], np.full((2, 64, 64), 3.0, np.float32), r"softmax"),
    ],
)
def test_bad_windows_are_rejected_clearly(small: MaskStitcher, box: list[int], probs: np.ndarray, match: str) -> None:
    with small, pytest.raises(InvalidInput, match=match):
        small.add(box, probs)


def test_windows_must_come_row_major(small: MaskStitcher) -> None:
    p = np.full((2, 64, 64), 0.5, np.float32)
    with small:
        small.add([0, 36, 64, 100], p)
        with pytest.raises(InvalidInput, match="row-major"):
            small.add([48, 0, 112, 64], p)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"classes": []}, "1 to 256"),
        ({"classes": ["a", "a"]}, "distinct"),
        ({"overlap": 64}, "overlap < window"),
        ({"downsample": 0.0}, "downsample"),
        ({"width": 0}, "positive"),
    ],
)
def test_bad_settings_are_rejected(tmp_path: Path, kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"width": 200, "height": 100, "classes": CLASSES, "window": 64, "overlap": 16}
    with pytest.raises(InvalidInput, match=match):
        MaskStitcher(tmp_path / "m.tif", **{**args, **kwargs})  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_nothing_is_left_without_close(tmp_path: Path) -> None:
    p = np.full((2, 64, 64), 0.5, np.float32)
    with pytest.raises(RuntimeError), MaskStitcher(tmp_path / "a.tif", 200, 100, CLASSES, window=64, overlap=16) as s:
        s.add([0, 0, 64, 64], p)
        raise RuntimeError("the model crashed")
    s2 = MaskStitcher(tmp_path / "b.tif", 200, 100, CLASSES, window=64, overlap=16)
    s2.add([0, 0, 64, 64], p)
    s2.abort()
    s2.abort()
    with pytest.raises(InvalidInput, match="closed"):
        s2.add([0, 0, 64, 64], p)
    s3 = MaskStitcher(tmp_path / "c.tif", 200, 100, CLASSES, window=64, overlap=16)
    s3.add([0, 0, 64, 64], p)
    del s3  # dropped without close: its temporary files go with it
    gc.collect()
    assert list(tmp_path.iterdir()) == []


def test_close_twice_and_non_masks_are_rejected(tmp_path: Path) -> None:
    s = MaskStitcher(tmp_path / "m.tif", 100, 80, CLASSES, window=64, overlap=16, probabilities=False)
    result = s.close()  # nothing added: all background
    assert result.probability_path is None and result.pixel_counts == {"background": 8000, "coin": 0}
    assert (read_all(result.path) == 0).all() and len(vectorize(result)) == 0
    with pytest.raises(InvalidInput, match="closed"):
        s.close()
    other = tmp_path / "plain.tif"
    tifffile.imwrite(other, np.zeros((8, 8), np.uint8))
    with pytest.raises(InvalidInput, match="not a gigavision segmentation mask"):
        vectorize(other)
    with pytest.raises(InvalidInput, match="unknown classes"):
        vectorize(result, classes=["cat"])
