"""Background windows skipped between the windows of one batch keep the stitchers' row-major order, for every
task, through the one prediction entry point (``infer.request``).

A batch of windows spans several grid rows; the skipped windows inside it used to be reported only before
the next batch, after windows of a later row had been painted, and the heatmap stitcher refused them
("starts at mask row …, above rows already written"). Found by the README's tiled-predict example
(``gigavision predict CLASSIFY_MODEL BIG.jpg --tile 256 --overlap 0 --skip-background``). Each task runs on a
checkerboard of real tissue and white cells, with and without ``--skip-background``, one window per batch
and several: the same windows run and the same results come out whatever the batch size."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

import gigavision as gv
from gigavision.images.registry import open_image
from gigavision.infer.engine import InferResult
from gigavision.infer.request import PredictRequest
from gigavision.models.store import ModelInfo
from tests.conftest import DETECT_SIZE, SEGMENT_SIZE, Trained
from tests.realdata import digits_version
from tests.seeding import TRAIN_SEED

ROWS, COLS = 3, 4  # 12 cells, tissue where (row + col) is even: every grid row alternates
BATCHES = (1, 5)  # a batch of 5 of the 6 tissue windows spans all three rows and the white cells between


@pytest.fixture(scope="module")
def digits_classifier(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelInfo]:
    from gigavision.train.recipe import load_recipe
    from gigavision.train.trainer import train

    root = tmp_path_factory.mktemp("skip-order")
    ws = gv.init_workspace(root / "ws")
    digits_version(ws, root / "digits", limit=120, scale=2)
    recipe = {"task": "classify", "dataset": "digits", "arch": "resnet10t", "image_size": 16, "epochs": 1}
    yield train(ws, load_recipe(overrides={**recipe, "seed": TRAIN_SEED, "batch_size": 32}))
    ws.close()


def _checkerboard(path: Path, cell: int) -> Path:
    """Real IHC tissue (foreground) in alternate cells, white (background) in the others."""
    tissue = data.immunohistochemistry()
    mosaic = np.full((ROWS * cell, COLS * cell, 3), 255, dtype=np.uint8)
    for r in range(ROWS):
        for c in range(COLS):
            if (r + c) % 2 == 0:
                ys, xs = slice(r * cell, (r + 1) * cell), slice(c * cell, (c + 1) * cell)
                mosaic[ys, xs] = tissue[ys, xs]
    Image.fromarray(mosaic).save(path)
    return path


def _predict(info: ModelInfo, path: Path, cell: int, batch: int, skip: bool, out: Path) -> InferResult:
    request = PredictRequest(
        model=info.id,
        images=(str(path),),
        tile=cell,
        overlap=0,
        batch=batch,
        skip_background=skip,
        min_foreground=0.5,
        out_dir=out,
    )
    (result,) = request.resolve(None, info=info).predict().items
    assert isinstance(result, InferResult)
    return result


def _runs(info: ModelInfo, cell: int, tmp_path: Path) -> dict[tuple[bool, int], InferResult]:
    path = _checkerboard(tmp_path / "checkerboard.png", cell)
    runs = {}
    for skip in (False, True):
        for batch in BATCHES:
            result = _predict(info, path, cell, batch, skip, tmp_path / f"{skip}-{batch}")
            total = ROWS * COLS
            assert result.tiles_total == total and not result.failed_regions
            assert (result.tiles_run, result.tiles_skipped) == ((total // 2, total // 2) if skip else (total, 0))
            runs[(skip, batch)] = result
    for skip in (False, True):
        one, many = runs[(skip, BATCHES[0])], runs[(skip, BATCHES[1])]
        assert list(one.annotations.label) == list(many.annotations.label)
        assert np.allclose(one.annotations.xyxy, many.annotations.xyxy, atol=1e-3, equal_nan=True)  # tags: NaN
        assert one.image_scores == pytest.approx(many.image_scores, abs=1e-5)
    return runs


def _cells(path: Path) -> np.ndarray:
    """Per cell of the checkerboard, whether any pixel of the label raster is non-zero (not background)."""
    with open_image(path) as raster:
        pixels = raster.read_window(0, 0, 0, raster.width, raster.height)
    pixels = pixels.reshape(pixels.shape[0], pixels.shape[1], -1)[:, :, 0]
    ch, cw = pixels.shape[0] // ROWS, pixels.shape[1] // COLS
    return np.array(
        [[pixels[r * ch : (r + 1) * ch, c * cw : (c + 1) * cw].any() for c in range(COLS)] for r in range(ROWS)]
    )


TISSUE = np.add.outer(np.arange(ROWS), np.arange(COLS)) % 2 == 0


def test_classify_skips_background_inside_a_batch(digits_classifier: ModelInfo, tmp_path: Path) -> None:
    runs = _runs(digits_classifier, 64, tmp_path)
    for result in runs.values():
        assert len(result.annotations) == 1 and set(result.image_scores) == set(digits_classifier.classes)
        assert Path(result.outputs["heatmap"]).is_file()
        assert result.window_boxes is not None and len(result.window_boxes) == result.tiles_run


def test_detect_skips_background_inside_a_batch(scenes_detector: Trained, tmp_path: Path) -> None:
    runs = _runs(scenes_detector.info, DETECT_SIZE, tmp_path)
    for (skip, _), result in runs.items():
        if skip:  # nothing is found in a cell that was not run
            cells = (result.annotations.xyxy[:, :2] // DETECT_SIZE).astype(int)
            assert all(TISSUE[r, c] for c, r in cells)


def test_segment_skips_background_inside_a_batch(scenes_segmenter: Trained, tmp_path: Path) -> None:
    runs = _runs(scenes_segmenter.info, SEGMENT_SIZE, tmp_path)
    masks = {key: Path(r.outputs["mask"]) for key, r in runs.items()}
    for (skip, _), path in masks.items():
        if skip:
            assert not (_cells(path) & ~TISSUE).any()  # skipped cells are background (0)
    for skip in (False, True):
        with open_image(masks[(skip, 1)]) as a, open_image(masks[(skip, 5)]) as b:
            assert np.array_equal(a.read_window(0, 0, 0, a.width, a.height), b.read_window(0, 0, 0, b.width, b.height))
