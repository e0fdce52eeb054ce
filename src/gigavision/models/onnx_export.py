"""ONNX export of a task's network, checked against torch on the same input."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from gigavision.errors import GigavisionError

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


def export_onnx(task: Task, net: torch.nn.Module, path: Path, size: int) -> float:
    """Write ``net`` (eval mode, ``images -> outputs``) to ``path`` with a dynamic batch axis; returns the
    largest absolute difference between onnxruntime and torch on an example batch (must be ≤ 1e-4)."""
    net = net.eval()
    example = example_input(size)
    names = task.output_names()
    tmp = path.with_name(f".{path.name}.tmp")
    exporter = getattr(task, "export_onnx", None)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if exporter is not None:
                exporter(net, example, tmp)
            else:
                torch.onnx.export(
                    net,
                    (example,),
                    str(tmp),
                    input_names=["images"],
                    output_names=names,
                    dynamic_axes={"images": {0: "batch"}, **{n: {0: "batch"} for n in names}},
                    opset_version=OPSET,
                    dynamo=False,
                )
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        raise ExportError(f"ONNX export of {task.name}/{task.arch} failed: {type(exc).__name__}: {exc}") from exc
    diff = parity(net, tmp, example)
    if not diff <= PARITY_ATOL:
        tmp.unlink(missing_ok=True)
        raise ExportError(f"ONNX export of {task.name}/{task.arch} differs from torch by {diff:.3g} (> {PARITY_ATOL})")
    os.replace(tmp, path)
    return diff


def parity(net: torch.nn.Module, onnx_path: Path, example: torch.Tensor) -> float:
    """Max |onnxruntime − torch| over all outputs for ``example``."""
    import onnxruntime as ort

    from gigavision.train.module import to_numpy

    with torch.inference_mode():
        ref = to_numpy(net(example))
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: example.numpy()})
    if len(got) != len(ref):
        return float("inf")
    diffs = [float(np.max(np.abs(a - b))) if a.size else 0.0 for a, b in zip(got, ref, strict=True)]
    return max(diffs, default=0.0)
