"""Per-image numeric side features (visual-field indices next to an eye scan, patient age, …).

A ``classify`` recipe may name image metadata keys (``side_features = ["md", "psd"]``, set with
``gigavision images meta``). Their values are read per image, standardised with statistics of the training
split (kept as buffers of the network, so the checkpoint and the ONNX graph carry them and callers pass raw
values) and fused with the image embedding before the head.

The network input is then a pair: ``net(images, side)`` with ``side`` a float32 ``(N, K)`` tensor in the
recipe's order; the ONNX graph has two inputs, ``images`` and ``side``. Everything that moves batches around
(datasets, collate, validation, evaluation, export, predictors) goes through ``stack_inputs``/``call_net`` so
one code path serves both forms.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from gigavision.errors import InvalidInput

if TYPE_CHECKING:
    import torch

    from gigavision.workspace import Workspace

SIDE_INPUT = "side"


def side_values(names: Sequence[str], meta: Mapping[str, Any], what: str) -> np.ndarray:
    """The ``names`` values of one image's metadata as float32; missing or non-numeric ones are an error
    naming the image and the key (a silent fill would train on made-up numbers)."""
    out = np.empty(len(names), dtype=np.float32)
    for k, name in enumerate(names):
        value = meta.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            state = "is missing" if value is None else f"is {value!r}, not a finite number"
            raise InvalidInput(
                f"{what}: side feature {name!r} {state}; set it with gigavision images meta ID {name}=VALUE"
            )
        out[k] = float(value)
    return out


def side_table(ws: Workspace, image_ids: Sequence[str], names: Sequence[str]) -> dict[str, np.ndarray]:
    """Side-feature vectors of workspace images by id, from their current metadata."""
    return {i: side_values(names, ws.get_image(i, fresh=True).meta or {}, f"image {i[:12]}") for i in image_ids}


def standardisation(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) per feature; a constant feature gets std 1 (it carries no information, and must not
    divide by zero)."""
    mean = values.mean(axis=0).astype(np.float32)
    std = values.std(axis=0).astype(np.float32)
    return mean, np.where(std > 1e-12, std, 1.0).astype(np.float32)


def stack_inputs(items: Sequence[Any]) -> Any:
    """A batch from per-sample inputs: tensors stacked, or ``(image, side)`` pairs stacked part by part."""
    import torch

    if items and isinstance(items[0], tuple):
        return tuple(torch.stack(list(parts)) for parts in zip(*items, strict=True))
    return torch.stack(list(items))


def first(inputs: Any) -> torch.Tensor:
    """The image tensor of a batch (its size and length)."""
    images: torch.Tensor = inputs[0] if isinstance(inputs, tuple) else inputs
    return images


def to_device(inputs: Any, device: Any) -> Any:
    return tuple(t.to(device) for t in inputs) if isinstance(inputs, tuple) else inputs.to(device)


def call_net(net: Any, inputs: Any) -> Any:
    """``net(images)`` or ``net(images, side)``."""
    return net(*inputs) if isinstance(inputs, tuple) else net(inputs)
