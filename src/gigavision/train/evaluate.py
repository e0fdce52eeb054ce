"""Predict a split with a network and score it: the test stage of ``train`` and ``gigavision evaluate``."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from gigavision.metrics._common import jsonable
from gigavision.models import store
from gigavision.models.side import call_net, first, to_device
from gigavision.progress import Progress
from gigavision.train.module import eval_collate, to_numpy

if TYPE_CHECKING:
    from gigavision.annotations import Annotations
    from gigavision.models.predict import Predictor
    from gigavision.models.task import Evaluation, Task
    from gigavision.train.data import SplitData

WORST_EXAMPLES = 12


@dataclass
class Clock:
    """Seconds spent in the network's forward passes and the samples they ran (images/s on this machine)."""

    seconds: float = 0.0
    samples: int = 0

    @property
    def images_per_s(self) -> float | None:
        return self.samples / self.seconds if self.seconds > 0 else None


@torch.inference_mode()
def predict_split(
    task: Task,
    net: torch.nn.Module | Predictor,
    data: SplitData,
    batch_size: int,
    progress: Progress | None = None,
    clock: Clock | None = None,
) -> tuple[list[Annotations], list[Annotations]]:
    """(truths, predictions) for every sample of ``data``, both in the network input's pixels. ``net``: a
    torch network, or an onnxruntime ``Predictor`` (an ONNX variant: fp32 or int8); ``clock`` adds up the
    forward passes' time."""
    from gigavision.train.data import EvalDataset

    device = None
    if isinstance(net, torch.nn.Module):
        net.eval()
        device = next(net.parameters()).device
    dataset = EvalDataset(data.dataset, data.dataset.transform)
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=eval_collate)
    truths: list[Annotations] = []
    preds: list[Annotations] = []
    for inputs, batch_truths in loader:
        images = first(inputs)
        started = time.perf_counter()
        if isinstance(net, torch.nn.Module):
            outputs = to_numpy(call_net(net, to_device(inputs, device)))
        else:
            side = inputs[1].numpy() if isinstance(inputs, tuple) else None
            outputs = net.run(np.ascontiguousarray(images.numpy()), side)
        if clock is not None:
            clock.seconds += time.perf_counter() - started
            clock.samples += len(images)
        size = (int(images.shape[-2]), int(images.shape[-1]))
        preds += task.decode(outputs, [size] * len(images))
        truths += batch_truths
        if progress is not None:
            progress(len(truths), len(dataset), "evaluating")
    return truths, preds


def evaluate_network(
    task: Task,
    net: torch.nn.Module | Predictor,
    data: SplitData,
    batch_size: int,
    progress: Progress | None = None,
    clock: Clock | None = None,
) -> tuple[Evaluation, list[tuple[bytes, str]]]:
    """The task's metrics on ``data`` and the worst examples as (PNG thumbnail, caption)."""
    truths, preds = predict_split(task, net, data, batch_size, progress, clock)
    evaluation = task.evaluate(truths, preds)
    return evaluation, worst_examples(task, data, truths, preds)


def worst_examples(
    task: Task, data: SplitData, truths: list[Annotations], preds: list[Annotations]
) -> list[tuple[bytes, str]]:
    """Thumbnails of the samples the task scores worst (``task.errors``), captioned truth vs prediction."""
    from PIL import Image

    errors = task.errors(truths, preds)
    if errors is None or not len(errors):
        return []
    out = []
    for i in np.argsort(-np.asarray(errors), kind="stable")[:WORST_EXAMPLES]:
        pixels, _, image_id = data.dataset.raw(int(i))
        im = Image.fromarray(pixels)
        im.thumbnail((160, 160))
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        out.append((buf.getvalue(), f"{image_id[:12]}: {task.describe(truths[int(i)], preds[int(i)])}"))
    return out


def write_evaluation(
    evaluation: Evaluation, folder: Path, title: str, examples: list[tuple[bytes, str]], split: str
) -> dict[str, Any]:
    """``metrics.json`` and ``report.html`` in ``folder``; returns the metrics written."""
    from gigavision.metrics.report import write_report

    metrics = dict(jsonable(evaluation.metrics))
    metrics["split"] = split
    metrics["headline"] = evaluation.headline
    store.write_json(folder / store.METRICS_JSON, metrics)
    write_report(evaluation.result, folder / store.REPORT_HTML, title, examples)
    return metrics
