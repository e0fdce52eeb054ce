"""The torch half of ``segment``: segmentation-models-pytorch networks, class-map targets, CE + Dice loss."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gigavision.annotations import Annotations
from gigavision.errors import InvalidInput, MissingDependency
from gigavision.models.backbones import load_weights
from gigavision.models.nets.task import TaskNets
from gigavision.models.segment import SegmentTask, rasterize


class SegmentNet(nn.Module):
    """An smp model whose ``forward`` returns per-class probabilities (softmax over the class axis)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.model(images)
        return out

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(images), dim=1)


def check_arch(name: str, encoder: str) -> None:
    """Refuse an architecture or encoder smp does not know, naming close ones."""
    import segmentation_models_pytorch as smp

    archs = sorted(a.lower() for a in smp.MODEL_ARCHITECTURES_MAPPING)
    if name not in archs:
        raise InvalidInput(f"segment: unknown architecture {name!r}; known: {', '.join(archs)}")
    if not encoder.startswith("tu-") and encoder not in smp.encoders.get_encoder_names():
        close = [e for e in smp.encoders.get_encoder_names() if e.startswith(encoder[:4])][:8]
        hint = f"; similar: {', '.join(close)}" if close else "; timm encoders are named tu-<timm name>"
        raise InvalidInput(f"segment: unknown encoder {encoder!r}{hint}")


class SegmentNets(TaskNets[SegmentTask]):
    def __init__(self, task: SegmentTask) -> None:
        super().__init__(task)
        check_arch(task.arch_name, task.encoder)
        self.dice_loss: nn.Module | None = None

    # -- network ---------------------------------------------------------------------------------------------
    def build(self, init_weights: bool = True) -> nn.Module:
        import segmentation_models_pytorch as smp

        r = self.task.recipe
        pretrained = r.pretrained and init_weights
        try:
            model = smp.create_model(
                self.task.arch_name,
                encoder_name=self.task.encoder,
                encoder_weights="imagenet" if pretrained else None,
                in_channels=3,
                classes=len(self.task.classes),
            )
        except Exception as exc:
            if not pretrained:
                raise InvalidInput(f"segment: cannot build {self.task.arch}: {type(exc).__name__}: {exc}") from exc
            raise MissingDependency(
                f"pretrained ImageNet weights for the {self.task.encoder} encoder are not in the local cache and could"
                f" not be fetched ({type(exc).__name__}); either download them once where there is network"
                " (torch hub / Hugging Face cache), or pass --weights PATH with a local safetensors/.pt file,"
                " or train from scratch without --pretrained"
            ) from exc
        net = SegmentNet(model)
        if init_weights and r.weights:
            load_weights(net, r.weights)
        return net

    # -- data ------------------------------------------------------------------------------------------------
    def target(self, annotations: Annotations, height: int, width: int) -> Any:
        from torchvision import tv_tensors

        return tv_tensors.Mask(torch.from_numpy(rasterize(annotations, height, width, self.task.index)))

    def configure(self, train_targets: Sequence[Any]) -> None:
        counts = np.zeros(len(self.task.classes), dtype=np.int64)
        for t in train_targets:
            counts += np.bincount(np.asarray(t).ravel(), minlength=len(self.task.classes))[: len(self.task.classes)]
        missing = [repr(c) for c, n in zip(self.task.classes[1:], counts[1:], strict=True) if n == 0]
        if missing:
            raise InvalidInput(
                f"class(es) {', '.join(missing)} cover no pixel of the training images of this dataset version;"
                " annotate some, or merge/remove the class (gigavision labels merge|remove) and create a new version"
            )

    # -- training --------------------------------------------------------------------------------------------
    def loss(self, net: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        assert isinstance(net, SegmentNet)
        if self.dice_loss is None:
            from segmentation_models_pytorch.losses import DiceLoss

            self.dice_loss = DiceLoss(mode="multiclass", from_logits=True)
        logits = net.logits(images)
        target = targets.long()
        ce = F.cross_entropy(logits, target)
        dice: torch.Tensor = self.dice_loss(logits, target)
        return ce + dice
