"""Evaluate a published model on any dataset version and split (``gigavision evaluate``, compare, sweeps).

The model is scored exactly the way training scored its test split (same samples, letterbox or patch grid,
normalisation and ``task.evaluate``), so a number here is comparable with the one in the model's metrics.json.
The model folder is never written: results go to a folder the caller names (or nowhere).
"""

from __future__ import annotations

import math
import re
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gigavision.errors import InvalidInput
from gigavision.progress import Progress

if TYPE_CHECKING:
    from gigavision.datasets.versions import DatasetVersion
    from gigavision.models.predict import Predictor
    from gigavision.models.store import ModelInfo
    from gigavision.models.task import Task
    from gigavision.train.data import SplitData
    from gigavision.train.recipe import Recipe
    from gigavision.workspace import Workspace

TIMING_SAMPLES = 256  # inputs of the split timed per variant (the first ones)
TIMING_REPEATS = 5  # alternating passes per variant; the median is reported


def default_out(ws: Workspace, model_id: str, dataset_ref: str, split: str) -> Path:
    """``<workspace>/evaluations/<model>-<dataset@N>-<split>/``."""
    name = re.sub(r"[^A-Za-z0-9._@-]", "_", f"{model_id}-{dataset_ref}-{split}")
    return Path(ws.root) / "evaluations" / name


def evaluated_on(info: ModelInfo) -> tuple[str, str | None]:
    """(dataset version, split) the model's stored metrics were computed on."""
    return info.dataset, info.card.evaluated_on


def evaluate_model(
    ws: Workspace,
    info: ModelInfo,
    dataset: str,
    split: str = "test",
    *,
    out: Path | None = None,
    batch_size: int | None = None,
    progress: Progress | None = None,
    variant: str | None = None,
) -> dict[str, Any]:
    """Metrics of ``info`` on ``split`` of ``dataset`` (NAME@N); with ``out``, also metrics.json + report.html.
    ``variant`` (fp32, int8): score that ONNX file on onnxruntime instead of the checkpoint on torch.

    Returns ``{"model", "dataset", "split", "headline", "metrics", "out"}`` (with a variant, also
    ``"variant"`` and ``"images_per_s"``: the forward passes' throughput on this machine's CPU).
    """
    from gigavision.models.predict import Predictor
    from gigavision.train.evaluate import Clock, evaluate_network

    net: Any
    if variant is None:
        task, net = info.load_network()
    else:
        net = Predictor(info, runtime="onnx", variant=variant)
        task = net.task
    version, recipe, data = eval_split(ws, info, task, dataset, split)
    clock = Clock()
    evaluation, examples = evaluate_network(task, net, data, batch_size or recipe.batch_size, progress, clock)
    written: str | None = None
    if out is not None:
        shown = info.id if variant is None else f"{info.id} ({variant}, onnxruntime)"
        metrics = _write(evaluation, examples, out, f"{shown} on {version.ref} ({split})", split)
        written = str(out)
    else:
        from gigavision.metrics._common import jsonable

        metrics = {**dict(jsonable(evaluation.metrics)), "split": split, "headline": evaluation.headline}
    result: dict[str, Any] = {
        "model": info.id,
        "dataset": version.ref,
        "split": split,
        "headline": evaluation.headline,
        "metrics": metrics,
        "out": written,
    }
    if variant is not None:
        result.update(variant=variant, images_per_s=clock.images_per_s)
    return result


def eval_split(
    ws: Workspace, info: ModelInfo, task: Task, dataset: str, split: str
) -> tuple[DatasetVersion, Recipe, SplitData]:
    """The samples of ``split`` of ``dataset`` as training's test stage read them (letterbox or patch grid,
    the model's normalisation); refused when the version shares no class with the model or nothing is left."""
    from gigavision.datasets.versions import open_version
    from gigavision.train.data import split_data
    from gigavision.train.transforms import build_transform

    version = open_version(ws, dataset)
    recipe = info.recipe().model_copy(update={"dataset": version.ref})
    wanted = task.label_map(version.classes(), recipe)
    if not set(wanted) & set(task.classes):
        raise InvalidInput(
            f"dataset {version.ref} has none of model {info.id}'s classes ({', '.join(task.classes[:10])});"
            " evaluate on a version of the data it was trained for"
        )
    transform = build_transform(None, info.input.mean, info.input.std, info.input.size)
    data = split_data(task, version, recipe, split, transform, training=False)
    if len(data.dataset) == 0:
        raise InvalidInput(f"split {split!r} of {version.ref} has no sample usable by a {task.name} model")
    return version, recipe, data


# -- a compressed variant against fp32 (evaluate --variant, models compare --variant) -----------------------
@dataclass(frozen=True)
class VariantComparison:
    """A variant (int8) and ``model.onnx`` scored on the same split, with sizes and CPU throughput.

    ``images_per_s``: forward passes alone (no decoding or reading), the median of ``TIMING_REPEATS``
    alternating passes of both over the same ``timing_samples`` inputs, in this process on this machine.
    """

    model: str
    variant: str
    dataset: str
    split: str
    headline: str
    metrics: dict[str, Any]  # the variant's
    fp32_metrics: dict[str, Any]
    file: dict[str, Any]  # models.quantize.describe: bytes, fp32_bytes, size_ratio, method, ...
    images_per_s: float
    fp32_images_per_s: float
    timing_samples: int
    out: str | None = None

    @property
    def speedup(self) -> float:
        return self.images_per_s / self.fp32_images_per_s if self.fp32_images_per_s else math.nan

    def deltas(self) -> dict[str, float]:
        """Variant minus fp32 for every numeric metric both have (fractions: 0.01 is one point)."""
        out = {}
        for key, value in self.metrics.items():
            ref = self.fp32_metrics.get(key)
            if not (isinstance(value, int | float) and isinstance(ref, int | float)) or isinstance(value, bool):
                continue
            if math.isfinite(value) and math.isfinite(ref):
                out[key] = float(value) - float(ref)
        return out

    def as_dict(self) -> dict[str, Any]:
        delta = self.deltas()
        return {
            "model": self.model,
            "variant": self.variant,
            "dataset": self.dataset,
            "split": self.split,
            "headline": self.headline,
            "metrics": self.metrics,
            "fp32_metrics": self.fp32_metrics,
            "delta": delta,
            "headline_delta_points": round(100 * delta[self.headline], 3) if self.headline in delta else None,
            "file": {k: v for k, v in self.file.items() if k != "variant"},
            "size_ratio": self.file.get("size_ratio"),
            "images_per_s": round(self.images_per_s, 1),
            "fp32_images_per_s": round(self.fp32_images_per_s, 1),
            "speedup": round(self.speedup, 3),
            "timing_samples": self.timing_samples,
            "out": self.out,
        }


def compare_variant(
    ws: Workspace,
    info: ModelInfo,
    dataset: str,
    split: str = "test",
    variant: str = "int8",
    *,
    out: Path | None = None,
    progress: Progress | None = None,
) -> VariantComparison:
    """Score ``variant`` and fp32 (both ONNX, onnxruntime on the CPU) on ``split`` of ``dataset`` and time
    them; with ``out``, the variant's metrics.json + report.html go there."""
    from gigavision.models.predict import Predictor
    from gigavision.models.quantize import FP32, describe, variant_path

    variant_path(info, variant)  # NotFound naming the export command before anything is read
    file = describe(info, variant)
    scored = evaluate_model(ws, info, dataset, split, out=out, progress=progress, variant=variant)
    reference = evaluate_model(ws, info, dataset, split, variant=FP32)
    runners = [Predictor(info, runtime="onnx", variant=FP32), Predictor(info, runtime="onnx", variant=variant)]
    _, _, data = eval_split(ws, info, runners[0].task, dataset, split)
    batches = timing_batches(data, info.recipe().batch_size)
    fp32_speed, speed = throughput(runners, batches)
    return VariantComparison(
        model=info.id,
        variant=variant,
        dataset=str(scored["dataset"]),
        split=split,
        headline=str(scored["headline"]),
        metrics=dict(scored["metrics"]),
        fp32_metrics=dict(reference["metrics"]),
        file=file,
        images_per_s=speed,
        fp32_images_per_s=fp32_speed,
        timing_samples=sum(len(b[0]) for b in batches),
        out=scored["out"],
    )


def timing_batches(data: SplitData, batch_size: int, limit: int = TIMING_SAMPLES) -> list[list[np.ndarray]]:
    """The first ``limit`` network inputs of the split (or all it has), batched as evaluation batches them."""
    from torch.utils.data import DataLoader

    from gigavision.train.data import EvalDataset
    from gigavision.train.module import eval_collate

    loader = DataLoader(
        EvalDataset(data.dataset, data.dataset.transform), batch_size=batch_size, collate_fn=eval_collate
    )
    batches: list[list[np.ndarray]] = []
    count = 0
    for inputs, _ in loader:
        parts = inputs if isinstance(inputs, tuple) else (inputs,)
        batches.append([np.ascontiguousarray(t.numpy()) for t in parts])
        count += len(parts[0])
        if count >= limit:
            break
    return batches


def throughput(runners: list[Predictor], batches: list[list[np.ndarray]], repeats: int = TIMING_REPEATS) -> list[float]:
    """Images/s of each runner's forward passes over ``batches``: one warm-up pass each, then ``repeats``
    passes taken in turn (so load on a shared machine hits all alike); the median per runner."""
    n = sum(len(b[0]) for b in batches)
    times: list[list[float]] = [[] for _ in runners]
    for r in range(repeats + 1):
        for k, runner in enumerate(runners):
            started = time.perf_counter()
            for arrays in batches:
                runner.run(arrays[0], arrays[1] if len(arrays) > 1 else None)
            if r:  # the first pass warms caches and the session's allocations
                times[k].append(time.perf_counter() - started)
    return [n / statistics.median(t) for t in times]


def _write(evaluation: Any, examples: Any, out: Path, title: str, split: str) -> dict[str, Any]:
    """Write into a sibling temporary folder, then swap it in: ``out`` is complete or as it was."""
    from gigavision.train.evaluate import write_evaluation

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        metrics = write_evaluation(evaluation, tmp, title, examples, split)
        if out.is_dir():
            for f in tmp.iterdir():
                f.replace(out / f.name)  # keep other files a user put in --out DIR
            tmp.rmdir()
        elif out.exists():
            raise InvalidInput(f"--out {out} exists and is not a folder")
        else:
            tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return metrics
