"""ONNX export of a task's network, checked against torch on the same input."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from gigavision.errors import GigavisionError
from gigavision.files import publish
from gigavision.models.side import SIDE_INPUT

if TYPE_CHECKING:
    from gigavision.models.task import Task

OPSET = 17
PARITY_ATOL = 1e-4


class ExportError(GigavisionError):
    code = "export_failed"
    http_status = 500


def example_input(size: int, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """A fixed, normalised-looking batch for export and parity checks."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, size, size, generator=g)


def example_inputs(task: Task, size: int, batch: int = 2) -> tuple[torch.Tensor, ...]:
    """``(images,)``, or ``(images, side)`` for a task trained with side features (raw-looking values)."""
    images = example_input(size, batch)
    n_side = len(task.recipe.side_features)
    if not n_side:
        return (images,)
    return images, torch.randn(batch, n_side, generator=torch.Generator().manual_seed(1)) * 3 + 10


def export_onnx(task: Task, net: torch.nn.Module, path: Path, size: int) -> float:
    """Write ``net`` (eval mode, ``images -> outputs``) to ``path`` with a dynamic batch axis; returns the
    largest difference between onnxruntime and torch on an example batch (``parity``; must be ≤ 1e-4)."""
    net = net.eval()
    examples = example_inputs(task, size)
    example = examples[0]
    inputs = ["images", SIDE_INPUT][: len(examples)]
    names = task.output_names()
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if not task.nets.export_onnx(net, example, tmp):  # the task's own way (detect), else this one
                torch.onnx.export(
                    net,
                    examples,
                    str(tmp),
                    input_names=inputs,
                    output_names=names,
                    dynamic_axes={**{n: {0: "batch"} for n in inputs}, **{n: {0: "batch"} for n in names}},
                    opset_version=OPSET,
                    dynamo=False,
                )
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        raise ExportError(f"ONNX export of {task.name}/{task.arch} failed: {type(exc).__name__}: {exc}") from exc
    diff = parity(net, tmp, *examples)
    if not diff <= PARITY_ATOL:
        tmp.unlink(missing_ok=True)
        raise ExportError(f"ONNX export of {task.name}/{task.arch} differs from torch by {diff:.3g} (> {PARITY_ATOL})")
    publish(tmp, path)
    return diff


def parity(net: torch.nn.Module, onnx_path: Path, *examples: torch.Tensor) -> float:
    """Max |onnxruntime − torch| / max(1, |torch|) over all outputs for the example inputs (images[, side]).

    Absolute for probabilities and scores (|x| ≤ 1), relative for larger values: a detector's box corners are
    pixel coordinates in the hundreds, where float32 rounding alone differs by ~1e-5 of the value.
    """
    import onnxruntime as ort

    from gigavision.models.nets.task import to_numpy

    with torch.inference_mode():
        ref = to_numpy(net(*examples))
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    feed = {i.name: e.numpy() for i, e in zip(session.get_inputs(), examples, strict=True)}
    got = session.run(None, feed)
    if len(got) != len(ref):
        return float("inf")
    diffs = [
        float(np.max(np.abs(a - b) / np.maximum(1.0, np.abs(b)))) if a.size else 0.0
        for a, b in zip(got, ref, strict=True)
    ]
    return max(diffs, default=0.0)
