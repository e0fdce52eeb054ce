"""Coarse-to-fine zoom-in on a sparse scene: a cheap classifier trained on 4×-downsampled patches points at the
few cells that hold objects; the detector runs at full resolution only there, finds what exhaustive tiling
finds, and runs a small fraction of the windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import pyvips

import gigavision as gv
from gigavision.demo import write_pyramid
from gigavision.errors import InvalidInput
from gigavision.images.registry import open_image
from gigavision.infer.engine import InferOptions, infer_image, plan_windows
from gigavision.infer.zoom import ZoomSpec, parse_zoom, window_scores, zoom_plan
from gigavision.metrics.detection import evaluate_detection
from gigavision.models.predict import Predictor
from gigavision.train.recipe import load_recipe
from gigavision.train.trainer import train
from tests.conftest import DETECT_SIZE, Trained
from tests.realdata import ingest_tagged
from tests.scenes import TEXTURES, _resize, _texture, make_scene
from tests.seeding import TRAIN_SEED, measured, trained

CELLS = 16  # a 16×16 grid of 128-px cells: a 2048² scene
OBJECT_CELLS = 10


def _canvas(
    rng: np.random.Generator, cells: int, busy: set[int], texture: str | None = None
) -> tuple[np.ndarray, gv.Annotations]:
    """One continuous tinted texture (mirror-tiled at its own scale, no seams) with a scene's objects pasted
    into the ``busy`` cells of a ``cells × cells`` grid; returns the pixels and the true boxes. Made a cell row
    at a time into the uint8 canvas (the same bytes as at once), so ``benchmarks/bench_infer.py`` can build its
    16k² scene with it: whole-canvas float intermediates would take ~10 GB there."""
    size = DETECT_SIZE
    # the texture zoomed out 2.5× (as the detector's training scenes see it), mirror-tiled without seams
    tex = _resize(_texture(texture or TEXTURES[int(rng.integers(len(TEXTURES)))]), 205, 205)
    side = cells * size
    fold = np.arange(side) % (2 * tex.shape[0])  # mirror tiling (np.pad "symmetric"): 0..n-1, n-1..0, ...
    fold = np.where(fold < tex.shape[0], fold, 2 * tex.shape[0] - 1 - fold)
    tint = rng.uniform(0.5, 1.0, 3)
    canvas = np.empty((side, side, 3), dtype=np.uint8)
    for y0 in range(0, side, size):
        rows = tex[fold[y0 : y0 + size]][:, fold]
        noise = rng.normal(0.0, 2.0, (size, side, 1))  # sensor noise: mirrored cells are not pixel-identical
        canvas[y0 : y0 + size] = np.clip(np.rint(rows[:, :, None] * tint * 255 + noise), 0, 255)
    parts = []
    for cell in sorted(busy):
        r, c = divmod(cell, cells)
        scene = make_scene(rng, size)
        view = canvas[r * size : (r + 1) * size, c * size : (c + 1) * size]
        for m in scene.masks:
            view[m] = scene.pixels[m]
        parts.append(gv.Annotations.from_boxes(scene.boxes + [c * size, r * size] * 2, scene.labels))
    return canvas, gv.Annotations.merge(parts)


def _sparse_scene(folder: Path, seed: int) -> tuple[Path, gv.Annotations]:
    rng = np.random.default_rng(seed)
    busy = set(rng.choice(CELLS * CELLS, OBJECT_CELLS, replace=False).tolist())
    canvas, truth = _canvas(rng, CELLS, busy)
    path = folder / "sparse.tif"
    image = pyvips.Image.new_from_memory(canvas.tobytes(), canvas.shape[1], canvas.shape[0], 3, "uchar")
    write_pyramid(image, path, quality=95)
    return path, truth


@pytest.fixture(scope="module")
def objectness(tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    """``classify`` object vs background on 4×-downsampled 128-px cells (32 px): the cheap coarse pass."""
    root = tmp_path_factory.mktemp("objectness")
    ws = gv.init_workspace(root / "ws")
    images, tags = [], []
    n = 8
    # two canvases (random tints) per texture, half of their cells holding objects: trained on one tint per
    # texture the classifier learns the tints, and on a scene of another tint it points everywhere
    for k, texture in enumerate(TEXTURES * 2):
        rng = np.random.default_rng([7, k])
        busy = set(range(k % 2, n * n, 2))
        canvas, _ = _canvas(rng, n, busy, texture)
        small = canvas.reshape(n * 32, 4, n * 32, 4, 3).mean(axis=(1, 3)).astype(np.uint8)
        for cell in range(n * n):
            r, c = divmod(cell, n)
            images.append(small[r * 32 : (r + 1) * 32, c * 32 : (c + 1) * 32])
            tags.append(["object" if cell in busy else "background"])
    ingest_tagged(ws, root / "src", images, tags, "cells")
    recipe = {
        "task": "classify",
        "dataset": "cells",
        "arch": "resnet10t",
        "image_size": 32,
        "epochs": 8,
        "seed": TRAIN_SEED,
    }
    info = trained("objectness", train(ws, load_recipe(overrides={**recipe, "batch_size": 32, "lr": 3e-3})))
    return Predictor(info, runtime="onnx")


def _found(truth: gv.Annotations, ann: gv.Annotations) -> set[int]:
    """Indices of the true objects some prediction of the same class covers with IoU ≥ 0.5."""
    import shapely

    hits = set()
    for i in range(len(truth)):
        box = shapely.box(*truth.xyxy[i])
        for j in np.nonzero(ann.label == truth.label[i])[0]:
            other = shapely.box(*ann.xyxy[j])
            if box.intersection(other).area / box.union(other).area >= 0.5:
                hits.add(i)
                break
    return hits


def test_zoom_in_finds_what_exhaustive_finds_on_a_fraction_of_the_windows(
    scenes_detector: Trained, objectness: Predictor, tmp_path: Path
) -> None:
    path, truth = _sparse_scene(tmp_path, seed=60)
    source = open_image(path)
    assert len(source.levels) >= 3  # a pyramid: the coarse pass reads level 2 (4×)
    detector = Predictor(scenes_detector.info, runtime="onnx")
    options = InferOptions(tile=DETECT_SIZE, overlap=DETECT_SIZE // 4, batch=16)
    exhaustive = infer_image(detector, source, name="sparse", options=options, out_dir=tmp_path / "all")
    found_all = _found(truth, exhaustive.annotations)
    assert measured("zoom.exhaustive_recall", len(found_all) / len(truth)) >= 0.8  # seeds 0-4: 0.88-0.96

    plan = plan_windows(detector, source, options, name="sparse")
    narrowed, report = zoom_plan(
        detector, objectness, source, plan, parse_zoom("threshold=0.5"), options, name="sparse", out_dir=tmp_path
    )
    assert report["coarse_level"] == 2 and report["exhaustive"] == exhaustive.tiles_run
    zoomed = infer_image(detector, source, name="sparse", options=options, out_dir=tmp_path / "z", plan=narrowed)
    assert zoomed.tiles_run == report["selected"]
    assert measured("zoom.run_fraction", zoomed.tiles_run / exhaustive.tiles_run) <= 0.25  # seeds 0-4: 0.15-0.17
    found_zoom = _found(truth, zoomed.annotations)
    assert measured("zoom.kept_of_exhaustive", len(found_zoom & found_all) / len(found_all)) >= 0.99  # no recall lost
    assert evaluate_detection({0: truth}, {0: zoomed.annotations}).map50 >= (
        evaluate_detection({0: truth}, {0: exhaustive.annotations}).map50 - 0.01
    )
    assert (
        measured("zoom.max_skipped_score", report["max_skipped_score"]) < 0.5
    )  # what was not run is reported negative with its coarse score

    top = zoom_plan(detector, objectness, source, plan, ZoomSpec(topk=4), options, name="s", out_dir=tmp_path)[1]
    assert top["selected"] == 4


def test_window_scores_and_bad_zoom_specs() -> None:
    windows = np.array([[0, 0, 100, 100], [100, 0, 200, 100], [0, 100, 100, 200]])
    boxes = np.array([[150, 20, 160, 30], [10, 10, 20, 20]], dtype=np.float64)
    scores = window_scores(windows, boxes, np.array([0.9, 0.2]), 200, 200)
    np.testing.assert_allclose(scores, [0.2, 0.9, 0.0])
    # a box that only touches a window (ends where it starts) is not in it: that window is not run
    touching = window_scores(windows, np.array([[0, 0, 100, 100.0]]), np.array([0.9]), 200, 200)
    np.testing.assert_allclose(touching, [0.9, 0.0, 0.0])
    assert parse_zoom("topk=4, model=m1,level=2") == ZoomSpec(topk=4, model="m1", level=2)
    for text, message in [
        ("threshold", "expected KEY=VALUE"),
        ("speed=3", "expected KEY=VALUE"),
        ("topk=four", "not a number"),
        ("threshold=1.5", r"threshold must be in \[0, 1\]"),
        ("topk=0", "topk must be ≥ 1"),
    ]:
        with pytest.raises(InvalidInput, match=message):
            parse_zoom(text)
