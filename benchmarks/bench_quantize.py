"""int8 models (issue 15): ``export-model --quantize int8`` against the same model's fp32 ``model.onnx``.

For two models, each quantised the way ``gigavision export-model ID --quantize int8`` does it
(``train.quantize.quantize_model``: static, calibrated on 128 inputs of the model's training split, dynamic where
static fails or loses too much):

- ``digits_classifier``: timm ``resnet18`` trained on scikit-learn's 1,797 digits at 32 px, 4 epochs (``--quick``:
  400 digits, 6 epochs), the dataset built as ``bench_train.py`` builds it (``tests/realdata.py``), cached in
  ``.bench/quantize/``;
- ``scene_detector``: ``fcos_tiny`` on 200 pasted-object scenes at 128 px, ``bench_infer.py``'s detector
  (``tests/conftest.py::scenes_detector``), trained once into ``.bench/infer/models/detector``.

Baseline: the same model's ``model.onnx`` on the same onnxruntime, same inputs, same process. Measured:

- ``size_ratio``: bytes of ``model.int8.onnx`` ÷ bytes of ``model.onnx``;
- ``speedup``: images/s of ``Predictor.run`` (the forward pass ``predict`` runs: no reading, no decoding) on the
  test split's normalised inputs, int8 ÷ fp32, at batch 16 (the claim) and batch 1; each repeat times both
  arms back to back (order alternating) and the median of the per-repeat ratios is reported;
- ``headline_delta_points``: the headline metric (balanced accuracy; mAP@0.5) of int8 minus fp32 on the test
  split, scored by ``train.assess.compare_variant`` (what ``evaluate --variant int8`` prints), in points.

Targets (issue 15): speedup ≥ 1.5 on CPU, size ≤ 0.3× fp32, metric within 1 point.

Usage::

    .venv/bin/python benchmarks/bench_quantize.py [--quick] [--repeats N] [--only digits_classifier,scene_detector]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _util as u

sys.path.insert(0, str(u.ROOT))  # tests/realdata.py, tests/scenes.py, tests/conftest.py

MODELS = ("digits_classifier", "scene_detector")
TARGETS = {"speedup_min": 1.5, "size_ratio_max": 0.3, "metric_delta_points_max": 1.0}
CLAIM_BATCH = 16
HERE = u.BENCH / "quantize"


def _get_or_train(root: Path, model_id: str, build: Callable[[Any, Path], Any]) -> tuple[Any, Any]:
    """(workspace, model) of ``root/ws``, the model trained once (one torch thread, as the tests train)."""
    import torch

    import gigavision as gv
    from gigavision.errors import NotFound
    from gigavision.models.store import get_model

    if (root / "ws").exists():
        ws = gv.open_workspace(root / "ws")
        try:
            return ws, get_model(ws, model_id)
        except NotFound:
            ws.close()
            shutil.rmtree(root)
    u.log(f"training {model_id} once (cached in {root}) ...")
    t0 = time.perf_counter()
    ws = gv.init_workspace(root / "ws")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        info = build(ws, root)
    finally:
        torch.set_num_threads(before)
    u.log(f"  trained in {time.perf_counter() - t0:.0f} s")
    return ws, info


def digits_classifier(quick: bool) -> tuple[Any, Any]:
    from tests.realdata import digits_version

    from gigavision.train.recipe import load_recipe
    from gigavision.train.trainer import train

    limit, epochs = (400, 6) if quick else (None, 4)
    recipe = {"task": "classify", "dataset": "digits", "arch": "resnet18", "image_size": 32, "epochs": epochs}

    def build(ws: Any, root: Path) -> Any:
        digits_version(ws, root / "digits", limit=limit, scale=4)
        fields = {**recipe, "seed": 0, "batch_size": 32, "lr": 3e-3}
        return train(ws, load_recipe(overrides=fields), model_id="bench-digits")

    return _get_or_train(HERE / ("digits-quick" if quick else "digits"), "bench-digits", build)


def scene_detector(quick: bool) -> tuple[Any, Any]:
    import gigavision as gv
    from bench_infer import MODELS as INFER_MODELS
    from bench_infer import detector_info

    info = detector_info()  # trained once by bench_infer.py's recipe, shared with it
    return gv.open_workspace(INFER_MODELS / "detector" / "ws"), info


def _rebatch(inputs: list[np.ndarray], batch: int, samples: int) -> list[list[np.ndarray]]:
    """``samples`` inputs (the split's, cycled when it has fewer) in batches of ``batch``."""
    images = np.concatenate([b[0] for b in inputs])
    side = np.concatenate([b[1] for b in inputs]) if len(inputs[0]) > 1 else None
    rows = np.arange(samples) % len(images)
    out = []
    for start in range(0, samples, batch):
        pick = rows[start : start + batch]
        out.append([images[pick]] + ([side[pick]] if side is not None else []))
    return out


def paired_speed(fp32: Any, int8: Any, batches: list[list[np.ndarray]], repeats: int) -> dict[str, Any]:
    """Both arms back to back per repeat (order alternating, one untimed warm-up pass each)."""
    n = sum(len(b[0]) for b in batches)

    def one(runner: Any) -> float:
        started = time.perf_counter()
        for arrays in batches:
            runner.run(arrays[0], arrays[1] if len(arrays) > 1 else None)
        return time.perf_counter() - started

    one(fp32), one(int8)
    t32: list[float] = []
    t8: list[float] = []
    for rep in range(repeats):
        for name in ("fp32", "int8") if rep % 2 == 0 else ("int8", "fp32"):
            (t32 if name == "fp32" else t8).append(one(fp32 if name == "fp32" else int8))
    ratios = [a / b for a, b in zip(t32, t8, strict=True)]
    return {
        "samples": n,
        "fp32_images_per_s": u.rnd(n / statistics.median(t32), 1),
        "int8_images_per_s": u.rnd(n / statistics.median(t8), 1),
        "speedup": u.rnd(statistics.median(ratios)),
        "speedup_all": [u.rnd(r) for r in ratios],
    }


def measure(name: str, ws: Any, info: Any, args: argparse.Namespace) -> dict[str, Any]:
    from gigavision.models.predict import Predictor
    from gigavision.train.assess import compare_variant, eval_split, timing_batches
    from gigavision.train.quantize import quantize_model

    u.log(f"{name}: quantising {info.id} ({info.arch}) ...")
    t0 = time.perf_counter()
    info = quantize_model(ws, info)
    quantize_s = time.perf_counter() - t0
    record = info.card.variants["int8"]
    u.log(f"  {record.method} in {quantize_s:.1f} s: {record.reason}")
    u.log(f"{name}: scoring int8 and fp32 on {info.dataset} (test) ...")
    comparison = compare_variant(ws, info, info.dataset, "test", "int8").as_dict()
    fp32, int8 = Predictor(info, "onnx"), Predictor(info, "onnx", variant="int8")
    _, _, data = eval_split(ws, info, fp32.task, info.dataset, "test")
    inputs = timing_batches(data, CLAIM_BATCH, limit=10**9)
    speed = {}
    for batch, samples in ((CLAIM_BATCH, args.samples), (1, max(16, args.samples // 4))):
        u.log(f"{name}: timing batch {batch}, {samples} inputs, {args.repeats} repeats ...")
        speed[f"batch_{batch}"] = paired_speed(fp32, int8, _rebatch(inputs, batch, samples), args.repeats)
    delta = comparison["headline_delta_points"]
    claim = speed[f"batch_{CLAIM_BATCH}"]
    return {
        "model": {"id": info.id, "task": info.task, "arch": info.arch, "input_size": info.input.size},
        "quantization": {**record.model_dump(mode="json"), "seconds": u.rnd(quantize_s, 2)},
        "fp32_bytes": record.fp32_bytes,
        "int8_bytes": record.bytes,
        "size_ratio": u.rnd(record.bytes / record.fp32_bytes),
        "speed": speed,
        "speedup": claim["speedup"],
        "evaluated_on": f"{comparison['dataset']} ({comparison['split']})",
        "test_samples": comparison["metrics"].get("n_samples", comparison["metrics"].get("n_images")),
        "headline": comparison["headline"],
        "fp32_metric": comparison["fp32_metrics"].get(comparison["headline"]),
        "int8_metric": comparison["metrics"].get(comparison["headline"]),
        "headline_delta_points": delta,
        "delta_points": {k: u.rnd(100 * v, 3) for k, v in comparison["delta"].items() if not k.startswith("n_")},
        "met": {
            "speedup": claim["speedup"] >= TARGETS["speedup_min"],
            "size": record.bytes / record.fp32_bytes <= TARGETS["size_ratio_max"],
            "metric": delta is not None and abs(delta) <= TARGETS["metric_delta_points_max"],
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a smaller digits classifier, fewer repeats")
    ap.add_argument("--only", default=",".join(MODELS), help=f"comma-separated ({', '.join(MODELS)})")
    ap.add_argument("--repeats", type=int, help="paired timing repeats per batch size (default 9; --quick 5)")
    ap.add_argument("--samples", type=int, help="inputs timed per pass at batch 16 (default 512; --quick 256)")
    args = ap.parse_args()
    args.quick = args.quick or u.quick_requested([])
    args.repeats = args.repeats or (5 if args.quick else 9)
    args.samples = args.samples or (256 if args.quick else 512)
    wanted = [m.strip() for m in args.only.split(",") if m.strip()]
    unknown = set(wanted) - set(MODELS)
    if unknown:
        sys.exit(f"unknown --only {sorted(unknown)}; known: {', '.join(MODELS)}")
    import onnxruntime

    builders = {"digits_classifier": digits_classifier, "scene_detector": scene_detector}
    results = {}
    for name in wanted:
        ws, info = builders[name](args.quick)
        try:
            results[name] = measure(name, ws, info, args)
        finally:
            ws.close()
    u.emit(
        {
            "bench": "quantize",
            "what": "int8 (export-model --quantize int8) vs the same model's fp32 model.onnx, onnxruntime CPU",
            "quick": args.quick,
            "machine": u.machine(),
            "onnxruntime": onnxruntime.__version__,
            "threads": f"onnxruntime default (intra-op = physical cores; os.cpu_count() = {os.cpu_count()})",
            "targets": TARGETS,
            "models": results,
            "met": {name: r["met"] for name, r in results.items()},
        }
    )


if __name__ == "__main__":
    main()
