"""Vectorising a stitched segmentation mask: GDAL's polygonizer (``geo`` extra) and our own code give the same
polygons, without collinear vertices, on a real cell-segmentation-like mask.

The mask is scikit-image's immunohistochemistry slide (nuclei stained by haematoxylin, DAB-positive tissue in
brown) turned into 3-class probabilities by colour deconvolution: hundreds of irregular cells with holes and
corner contacts, mirrored 2×2 so cells continue across the tile seams.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import shapely
from scipy import ndimage
from skimage import color, data, filters

from gigavision.errors import InvalidInput, MissingExtra
from gigavision.images.registry import open_image
from gigavision.infer.stitch import MaskStitcher, StitchResult
from gigavision.infer.vectorize import vectorize
from gigavision.tiling.grid import window_grid

CLASSES = ["background", "nucleus", "dab"]


def cell_probabilities(reps: int = 1) -> np.ndarray:
    """``(3, 1024·reps, 1024·reps)`` float32 class probabilities of the IHC slide, mirrored 2×2 then tiled."""
    hed = color.rgb2hed(data.immunohistochemistry())
    scores = []
    for channel in (0, 2):  # haematoxylin, DAB
        smooth = filters.gaussian(hed[..., channel], 2.0)
        scores.append(20.0 * (smooth - filters.threshold_otsu(smooth)) / smooth.std())
    logits = np.stack([np.zeros_like(scores[0]), *scores])
    probs = np.exp(logits - logits.max(0))
    probs /= probs.sum(0)
    mirrored = np.concatenate([np.concatenate([probs, probs[:, :, ::-1]], 2)] * 2, 1)
    mirrored[:, 512:] = mirrored[:, 512:][:, ::-1]
    return np.tile(mirrored, (1, reps, reps)).astype(np.float32)


def stitch_cells(path: Path, probs: np.ndarray, window: int = 256) -> StitchResult:
    _, h, w = probs.shape
    with MaskStitcher(path, w, h, CLASSES, window=window, overlap=0) as stitcher:
        for x0, y0, x1, y1 in window_grid(w, h, window, overlap=0):
            stitcher.add([x0, y0, x1, y1], probs[:, y0:y1, x0:x1])
        return stitcher.close()


@pytest.fixture(scope="module")
def cells(tmp_path_factory: pytest.TempPathFactory) -> StitchResult:
    return stitch_cells(tmp_path_factory.mktemp("cells") / "cells.tif", cell_probabilities())


def components(result: StitchResult) -> dict[str, np.ndarray]:
    """Pixel counts of each class's 4-connected components, sorted."""
    with open_image(result.path) as src:
        labels = src.read_window(0, 0, 0, src.width, src.height)[..., 0]
    out = {}
    for c, name in enumerate(CLASSES[1:], start=1):
        comp, _ = ndimage.label(labels == c)
        out[name] = np.sort(np.bincount(comp.ravel())[1:])
    return out


def collinear_vertices(polys: np.ndarray) -> int:
    """Vertices whose two edges are both horizontal or both vertical (every vertex of a pixel outline should
    be a turn)."""
    count = 0
    for ring in shapely.get_rings(polys):
        xy = shapely.get_coordinates(ring)[:-1]
        prev, nxt = np.roll(xy, 1, axis=0), np.roll(xy, -1, axis=0)
        count += int((((prev == xy) & (xy == nxt)).any(axis=1)).sum())
    return count


@pytest.mark.parametrize("band_rows", [1024, 150])  # one band; band borders cutting through hundreds of cells
def test_rasterio_and_own_code_give_identical_polygons(cells: StitchResult, band_rows: int) -> None:
    ours = vectorize(cells, band_rows=band_rows, backend="numpy", source="model:ihc@1")
    gdal = vectorize(cells, band_rows=band_rows, backend="rasterio", source="model:ihc@1")
    assert len(ours) == len(gdal) > 500
    assert (ours.label == gdal.label).all() and (ours.source == gdal.source).all()
    assert shapely.equals_exact(ours.geometry, gdal.geometry, tolerance=0).all()  # same vertices, same order
    assert collinear_vertices(ours.geometry) == 0  # also where outlines were joined across band borders
    np.testing.assert_array_equal(ours.score, gdal.score)
    np.testing.assert_array_equal(ours.xyxy, gdal.xyxy)

    # and they are the mask's components: one polygon each, exact pixel areas, valid, holes kept
    for name, sizes in components(cells).items():
        np.testing.assert_array_equal(np.sort(gdal.area[gdal.label == name]), sizes)
    assert shapely.is_valid(gdal.geometry).all()
    assert set(shapely.get_type_id(gdal.geometry)) == {3}  # Polygons only
    assert (shapely.get_num_interior_rings(gdal.geometry) > 0).sum() >= 10
    assert ((gdal.score > 0.5) & (gdal.score <= 1)).all()


def test_backend_choice(cells: StitchResult, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InvalidInput, match="backend must be"):
        vectorize(cells, backend="gdal")  # type: ignore[arg-type]
    auto = vectorize(cells, classes=["dab"])
    monkeypatch.setitem(__import__("sys").modules, "rasterio", None)  # the geo extra not installed
    with pytest.raises(MissingExtra, match=r"pip install 'gigavision\[geo\]'"):
        vectorize(cells, backend="rasterio")
    fallback = vectorize(cells, classes=["dab"])  # auto: our own code, the same polygons
    assert len(auto) == len(fallback) > 0
    assert shapely.equals_exact(auto.geometry, fallback.geometry, tolerance=0).all()
