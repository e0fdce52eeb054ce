"""Background windows skipped between the windows of one batch keep the stitchers' row-major order.

A batch of windows spans several grid rows; the skipped windows inside it used to be reported only before
the next batch, after windows of a later row had been painted, and the heatmap stitcher refused them
("starts at mask row …, above rows already written"). Found by the README's tiled-predict example."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

import gigavision as gv
from gigavision.images.thumbnail import load_foreground
from gigavision.infer.engine import InferOptions, infer_image
from gigavision.models.predict import Predictor
from tests.realdata import digits_version
from tests.seeding import TRAIN_SEED


def test_skipped_windows_inside_a_batch_keep_row_order(tmp_path: Path) -> None:
    from gigavision.train.recipe import load_recipe
    from gigavision.train.trainer import train

    ws = gv.init_workspace(tmp_path / "ws")
    digits_version(ws, tmp_path / "digits", limit=120, scale=2)
    recipe = {"task": "classify", "dataset": "digits", "arch": "resnet10t", "image_size": 16, "epochs": 1}
    info = train(ws, load_recipe(overrides={**recipe, "seed": TRAIN_SEED, "batch_size": 32}))

    # a checkerboard of real IHC tissue (foreground) and white cells (background), 4 rows of 6 cells
    tissue = data.immunohistochemistry()
    cell = 64
    mosaic = np.full((4 * cell, 6 * cell, 3), 255, dtype=np.uint8)
    for r in range(4):
        for c in range(6):
            if (r + c) % 2 == 0:
                mosaic[r * cell : (r + 1) * cell, c * cell : (c + 1) * cell] = tissue[
                    r * cell : (r + 1) * cell, c * cell : (c + 1) * cell
                ]
    path = tmp_path / "checkerboard.png"
    Image.fromarray(mosaic).save(path)
    (added,) = ws.ingest([path])
    assert added.id is not None
    options = InferOptions(tile=cell, overlap=0, batch=16, skip_background=0.5)
    source = ws.open_source(added.id)
    mask = load_foreground(ws.mask_path(added.id), lambda: source)
    result = infer_image(
        Predictor(info), source, name="checkerboard", options=options, out_dir=tmp_path / "o", mask=mask
    )
    assert result.tiles_total == 24 and result.tiles_run + result.tiles_skipped == 24
    assert result.tiles_skipped == 12  # the white cells, between the windows of each batch
