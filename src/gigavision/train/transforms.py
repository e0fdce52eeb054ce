"""Augmentation and normalisation with torchvision.transforms.v2: boxes and masks follow the image.

Samples enter as ``(tv_tensors.Image uint8 (C, H, W), target)``; the target may hold ``BoundingBoxes`` and
``Mask`` tv_tensors, which v2 transforms move with the pixels. The output image is float32, normalised with
the backbone's mean/std.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from gigavision.train.recipe import AugmentConfig


class StainJitter(v2.Transform):  # type: ignore[misc]  # torchvision is untyped
    """H&E stain augmentation (Tellez et al. 2018): perturb each stain channel in HED space.

    ``strength`` s draws per-channel ``alpha ~ U(1-s, 1+s)`` and ``beta ~ U(-s, s) / 10``; pixels become
    ``hed * alpha + beta`` and back to RGB. Only RGB images are touched; boxes and masks pass through.
    """

    def __init__(self, strength: float) -> None:
        super().__init__()
        self.strength = float(strength)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        s = self.strength
        alpha = torch.empty(3).uniform_(1 - s, 1 + s)
        beta = torch.empty(3).uniform_(-s, s) / 10
        return {"alpha": alpha.numpy(), "beta": beta.numpy()}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not isinstance(inpt, tv_tensors.Image) or inpt.shape[-3] != 3:
            return inpt
        from skimage.color import hed2rgb, rgb2hed

        rgb = inpt.permute(1, 2, 0).numpy().astype(np.float32) / 255.0
        hed = rgb2hed(rgb) * params["alpha"] + params["beta"]
        out = np.clip(hed2rgb(hed), 0, 1) * 255.0
        return tv_tensors.wrap(torch.from_numpy(np.rint(out).astype(np.uint8)).permute(2, 0, 1).contiguous(), like=inpt)


class RandomRotate90(v2.Transform):  # type: ignore[misc]
    """Rotate by a random multiple of 90° (slides and aerial scenes have no "up")."""

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return {"k": int(torch.randint(0, 4, ()).item())}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        k = params["k"]
        return inpt if k == 0 else v2.functional.rotate(inpt, 90.0 * k, expand=True)


def build_transform(
    augment: AugmentConfig | None,
    mean: Sequence[float],
    std: Sequence[float],
    size: int,
    *,
    boxes: bool = False,
) -> v2.Compose:
    """Training (``augment`` given) or evaluation (None) pipeline ending in float, normalised pixels."""
    steps: list[Any] = []
    if augment is not None:
        if augment.scale != (1.0, 1.0):
            steps.append(v2.RandomResizedCrop(size, scale=augment.scale, antialias=True))
        if augment.hflip:
            steps.append(v2.RandomHorizontalFlip())
        if augment.vflip:
            steps.append(v2.RandomVerticalFlip())
        if augment.rotate90:
            steps.append(RandomRotate90())
        if augment.color > 0:
            c = augment.color
            steps.append(v2.ColorJitter(brightness=c, contrast=c, saturation=c, hue=min(c / 4, 0.5)))
        if augment.stain > 0:
            steps.append(StainJitter(augment.stain))
        if boxes:
            steps.append(v2.SanitizeBoundingBoxes(labels_getter=_labels_getter))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    return v2.Compose(steps)


def _labels_getter(inputs: Any) -> Any:
    """SanitizeBoundingBoxes: the labels sit next to the boxes in the target dict."""
    target = inputs[1] if isinstance(inputs, tuple) and len(inputs) > 1 else inputs
    return target["labels"] if isinstance(target, dict) and "labels" in target else None
