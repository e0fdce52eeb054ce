"""Pipelines (issue 15): a published detect → classify pipeline against calling the two models by hand.

The same work both ways, in the same run, on the same inputs, with onnxruntime:

- ``by_hand`` (the baseline): what a user writes without pipelines — the detector's ``Predictor.predict`` on the
  images (or ``infer_image`` over a big one), then the boxes scoring ≥ 0.3 cropped (10 % padding) from the
  pixels the detector saw and classified with the classifier's ``Predictor.predict``, all crops of a batch of
  images at once;
- ``pipeline``: ``PipelinePredictor.predict`` on the same images (``infer_image`` with it over the big one).

Two cases: ``whole`` (``--images`` 128 px scenes, default 128, predicted whole in batches of 16) and ``tiled``
(one 8 × 8 mosaic of scenes, 1,024², 128 px windows overlapping by 32 px, the crops read at the engine's
resolution). After a warm-up pass, ``--repeats`` passes (default 9) run the two back to back on each part of the
work (a batch of 16 images; the mosaic), in alternating order: a slow moment of the shared machine slows both of
a pair. ``overhead_pct`` is the median pipeline/by-hand ratio of the pairs (the target); the ratios of the median
and of the best whole passes are reported too. ``identical``: the two give the same boxes, scores, labels and
classes/scores of the crops. Target: the pipeline's overhead ≤ 10 % (``overhead_pct``).

The models — ``fcos_tiny`` trained like ``tests/conftest.py::scenes_detector`` and a ``resnet10t`` classifier of
the objects' crops (digit / coin / horse, 32 px) — are built once into ``.bench/pipeline/`` and reused.

Usage::

    .venv/bin/python benchmarks/bench_pipeline.py [--quick] [--repeats N] [--images N]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _util as u

sys.path.insert(0, str(u.ROOT))  # tests/scenes.py, tests/realdata.py, tests/conftest.py

HERE = u.BENCH / "pipeline"
SIZE = 128
PADDING = 0.1
MIN_SCORE = 0.3
TARGET_OVERHEAD_PCT = 10.0


def _workspace() -> tuple[Any, Any]:
    """(workspace, pipeline model) in ``.bench/pipeline/ws``, trained and published once."""
    import torch

    import gigavision as gv
    from gigavision.errors import NotFound
    from gigavision.models.pipeline import parse_spec, publish_pipeline
    from gigavision.models.store import get_model

    root = HERE / "ws"
    if root.exists():
        ws = gv.open_workspace(root)
        try:
            return ws, get_model(ws, "bench-pipeline")
        except NotFound:
            ws.close()
            import shutil

            shutil.rmtree(HERE)
    from tests.conftest import DETECT_RECIPE
    from tests.realdata import ingest_tagged
    from tests.scenes import make_scenes, scenes_version

    from gigavision.train.recipe import load_recipe
    from gigavision.train.trainer import train

    u.log(f"training the detector and the classifier once (cached in {HERE}) ...")
    t0 = time.perf_counter()
    ws = gv.init_workspace(root)
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as tests/conftest.py: OpenMP threads spinning against other work cost 4×
    try:
        scenes_version(ws, HERE / "scenes", n=200, size=SIZE, seed=0)
        detector = train(ws, load_recipe(overrides=DETECT_RECIPE), model_id="bench-detector")
        side = gv.init_workspace(HERE / "objects-ws")  # the classes are tags there, polygons here
        crops, tags = [], []
        for scene in make_scenes(120, SIZE, seed=3):
            for (x0, y0, x1, y1), label in zip(scene.boxes, scene.labels, strict=True):
                px, py = (x1 - x0) * PADDING, (y1 - y0) * PADDING
                box = [max(0, int(x0 - px)), max(0, int(y0 - py)), int(x1 + px) + 1, int(y1 + py) + 1]
                crops.append(scene.pixels[box[1] : box[3], box[0] : box[2]])
                tags.append([label])
        ingest_tagged(side, HERE / "objects", crops, tags, "objects")
        recipe = {"task": "classify", "dataset": "objects", "arch": "resnet10t", "image_size": 32, "epochs": 4}
        classifier = train(side, load_recipe(overrides={**recipe, "lr": 3e-3, "seed": 0}), model_id="bench-kind")
        side.close()
        import shutil

        from gigavision.models.store import models_dir

        shutil.copytree(classifier.path, models_dir(ws) / classifier.id)
    finally:
        torch.set_num_threads(before)
    spec = {"detect": detector.id, "stages": [{"name": "kind", "classify": "bench-kind", "padding": PADDING}]}
    info = publish_pipeline(ws, "bench-pipeline", parse_spec(spec))
    u.log(f"  trained and published in {time.perf_counter() - t0:.0f} s")
    return ws, info


def _crop(pixels: np.ndarray, xyxy: np.ndarray) -> np.ndarray:
    x0, y0, x1, y1 = (float(v) for v in xyxy)
    px, py = (x1 - x0) * PADDING, (y1 - y0) * PADDING
    h, w = pixels.shape[:2]
    c0, r0 = max(0, math.floor(x0 - px + 1e-6)), max(0, math.floor(y0 - py + 1e-6))
    c1, r1 = min(w, math.ceil(x1 + px - 1e-6)), min(h, math.ceil(y1 + py - 1e-6))
    return pixels[r0:r1, c0:c1]


def _classify_by_hand(boxes: list[Any], images: list[np.ndarray], classifier: Any) -> list[list[tuple[str, float]]]:
    """The classifier's (label, score) per box scoring ≥ MIN_SCORE, all crops of the images in one call."""
    where = [(i, r) for i, ann in enumerate(boxes) for r in range(len(ann)) if ann.score[r] >= MIN_SCORE]
    crops = [_crop(images[i], boxes[i].xyxy[r]) for i, r in where]
    answers = classifier.predict(crops) if crops else []
    out: list[list[tuple[str, float]]] = [[("", math.nan)] * len(ann) for ann in boxes]
    for (i, r), ann in zip(where, answers, strict=True):
        out[i][r] = (str(ann.label[0]), float(ann.score[0]))
    return out


def _signature(boxes: list[Any], kinds: list[list[tuple[str, float]]]) -> list[Any]:
    return [
        [(tuple(b.xyxy[r].tolist()), float(b.score[r]), str(b.label[r]), kinds[i][r]) for r in range(len(b))]
        for i, b in enumerate(boxes)
    ]


def _of_pipeline(found: list[Any]) -> list[list[tuple[str, float]]]:
    return [[(str(a.get("kind", "")), float(a.get("kind_score", math.nan))) for a in ann.attributes] for ann in found]


def _same(a: list[Any], b: list[Any]) -> bool:
    def norm(x: Any) -> Any:
        if isinstance(x, float) and math.isnan(x):
            return "nan"
        if isinstance(x, list | tuple):
            return [norm(v) for v in x]
        return x

    return bool(norm(a) == norm(b))


def _time(
    runs: dict[str, Callable[[int], Any]], units: int, repeats: int
) -> tuple[dict[str, list[float]], list[float], dict[str, list[Any]]]:
    """Each contender on each of ``units`` parts of the work, the two back to back (order alternating) so a
    slow moment of the shared machine hits both; after a warm-up pass. Returns per contender the seconds of
    each whole pass, the pipeline/by-hand ratio of every pair, and each one's results per part of the last
    pass (compared after the timing: only the predicting is timed)."""
    outputs = {name: [fn(part) for part in range(units)] for name, fn in runs.items()}  # warm-up
    names = list(runs)
    times: dict[str, list[float]] = {name: [] for name in names}
    ratios: list[float] = []
    for k in range(repeats):
        passed = dict.fromkeys(names, 0.0)
        outputs = {name: [] for name in names}
        for part in range(units):
            took = {}
            for name in names if (k + part) % 2 == 0 else reversed(names):
                t0 = time.perf_counter()
                outputs[name].append(runs[name](part))
                took[name] = time.perf_counter() - t0
                passed[name] += took[name]
            ratios.append(took["pipeline"] / took["by_hand"])
        for name in names:
            times[name].append(passed[name])
    return times, ratios, outputs


def bench_whole(info: Any, n: int, repeats: int) -> dict[str, Any]:
    from tests.scenes import make_scenes

    from gigavision.models.pipeline import DETECTOR, PipelinePredictor, stage_info
    from gigavision.models.predict import Predictor

    images = [s.pixels for s in make_scenes(n, SIZE, seed=11)]
    pipeline = PipelinePredictor(info, runtime="onnx")
    detector = Predictor(stage_info(info, DETECTOR), runtime="onnx")
    classifier = Predictor(stage_info(info, "kind"), runtime="onnx")
    step = 16  # images per call, as predict_files takes them

    def by_hand(u: int) -> tuple[list[Any], list[list[tuple[str, float]]]]:
        chunk = images[u * step : (u + 1) * step]
        boxes = detector.predict(chunk)
        return boxes, _classify_by_hand(boxes, chunk, classifier)

    def with_pipeline(u: int) -> list[Any]:
        return pipeline.predict(images[u * step : (u + 1) * step])

    times, ratios, raw = _time({"by_hand": by_hand, "pipeline": with_pipeline}, math.ceil(n / step), repeats)
    outputs = _signatures(raw)
    boxes = sum(len(img) for img in outputs["pipeline"])
    classified = sum(1 for img in outputs["pipeline"] for row in img if row[3][0])
    return _result(times, ratios, outputs, {"images": n, "boxes": boxes, "crops_classified": classified})


def bench_tiled(info: Any, repeats: int, work: Path) -> dict[str, Any]:
    from PIL import Image
    from tests.scenes import make_scenes

    from gigavision.images.registry import open_image
    from gigavision.infer.engine import InferOptions, infer_image
    from gigavision.models.pipeline import DETECTOR, PipelinePredictor, stage_info
    from gigavision.models.predict import Predictor

    cells = 8
    pixels = np.zeros((cells * SIZE, cells * SIZE, 3), dtype=np.uint8)
    for k, scene in enumerate(make_scenes(cells * cells, SIZE, seed=13)):
        r, c = divmod(k, cells)
        pixels[r * SIZE : (r + 1) * SIZE, c * SIZE : (c + 1) * SIZE] = scene.pixels
    path = work / "mosaic.png"
    Image.fromarray(pixels).save(path)
    source = open_image(path)
    options = InferOptions(overlap=32)
    pipeline = PipelinePredictor(info, runtime="onnx")
    detector = Predictor(stage_info(info, DETECTOR), runtime="onnx")
    classifier = Predictor(stage_info(info, "kind"), runtime="onnx")

    def by_hand(_: int) -> tuple[list[Any], list[list[tuple[str, float]]]]:
        found = infer_image(detector, source, name="mosaic", options=options, out_dir=work / "a").annotations
        image = source.read_region(_whole(source), 0)  # the engine reads level 0 here: crops from it
        return [found], _classify_by_hand([found], [image], classifier)

    def with_pipeline(_: int) -> list[Any]:
        return [infer_image(pipeline, source, name="mosaic", options=options, out_dir=work / "b").annotations]

    times, ratios, raw = _time({"by_hand": by_hand, "pipeline": with_pipeline}, 1, repeats)
    outputs = _signatures(raw)
    boxes = len(outputs["pipeline"][0])
    classified = sum(1 for row in outputs["pipeline"][0] if row[3][0])
    return _result(times, ratios, outputs, {"image": "1024x1024", "boxes": boxes, "crops_classified": classified})


def _signatures(raw: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """Both contenders' results as one comparable list of per-image rows."""
    by_hand = [row for boxes, kinds in raw["by_hand"] for row in _signature(boxes, kinds)]
    pipeline = [row for found in raw["pipeline"] for row in _signature(found, _of_pipeline(found))]
    return {"by_hand": by_hand, "pipeline": pipeline}


def _whole(source: Any) -> Any:
    from gigavision.geometry import Region

    return Region(0, 0, source.width, source.height)


def _result(
    times: dict[str, list[float]], ratios: list[float], outputs: dict[str, list[Any]], extra: dict[str, Any]
) -> dict[str, Any]:
    """The overhead as the median of the paired ratios (the target: robust to a busy moment of the machine,
    which slows both of a pair), and of the median and best whole passes, for reference."""
    median = {k: float(statistics.median(v)) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    return {
        **extra,
        "pairs": len(ratios),
        "overhead_pct": round((float(statistics.median(ratios)) - 1.0) * 100.0, 2),
        "by_hand_s": round(median["by_hand"], 4),
        "pipeline_s": round(median["pipeline"], 4),
        "overhead_pct_of_medians": round((median["pipeline"] / median["by_hand"] - 1.0) * 100.0, 2),
        "by_hand_best_s": round(best["by_hand"], 4),
        "pipeline_best_s": round(best["pipeline"], 4),
        "overhead_pct_of_bests": round((best["pipeline"] / best["by_hand"] - 1.0) * 100.0, 2),
        "identical": _same(outputs["by_hand"], outputs["pipeline"]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer images and repeats")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs of each contender (default 9; quick 3)")
    ap.add_argument("--images", type=int, default=None, help="scenes of the whole case (default 128; quick 32)")
    args = ap.parse_args()
    quick = u.quick_requested()
    repeats = args.repeats or (3 if quick else 9)
    n = args.images or (32 if quick else 128)
    ws, info = _workspace()
    try:
        with tempfile.TemporaryDirectory(dir=u.BENCH) as tmp:
            whole = bench_whole(info, n, repeats)
            u.log(f"whole: {whole}")
            tiled = bench_tiled(info, repeats, Path(tmp))
            u.log(f"tiled: {tiled}")
    finally:
        ws.close()
    met = {
        "identical": whole["identical"] and tiled["identical"],
        "overhead_pct_max": max(whole["overhead_pct"], tiled["overhead_pct"]) <= TARGET_OVERHEAD_PCT,
    }
    u.emit(
        {
            "benchmark": "pipeline",
            "quick": quick,
            "repeats": repeats,
            "runtime": "onnx",
            "whole": whole,
            "tiled": tiled,
            "targets": {"identical": True, "overhead_pct_max": TARGET_OVERHEAD_PCT},
            "met": met,
            "machine": u.machine(),
        }
    )


if __name__ == "__main__":
    main()
