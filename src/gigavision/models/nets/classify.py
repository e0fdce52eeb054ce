"""The torch half of ``classify`` (and ``probe``'s head): the classifier network, targets, losses."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gigavision.annotations import Annotations
from gigavision.errors import InvalidInput
from gigavision.models.backbones import feature_dim, recipe_backbone, timm_normalization
from gigavision.models.classify import ClassifyTask
from gigavision.models.nets.task import TaskNets
from gigavision.models.side import standardisation
from gigavision.models.task import BACKGROUND

SIDE_WIDTH = 32  # units the side features are mapped to before fusion


class ClassifierNet(nn.Module):
    """A timm backbone with a linear head; ``forward`` returns probabilities (softmax or sigmoid).

    With ``side`` features, ``forward(images, side)`` standardises the raw values with the training split's
    statistics (buffers: saved in the checkpoint and the ONNX graph), passes them through a small ReLU layer
    and concatenates that with the image embedding before the head.
    """

    side_mean: torch.Tensor
    side_std: torch.Tensor

    def __init__(
        self, backbone: nn.Module, num_classes: int, multi_label: bool, center_loss: bool, side: int = 0
    ) -> None:
        super().__init__()
        width = feature_dim(backbone)
        self.backbone = backbone
        self.side_net = nn.Sequential(nn.Linear(side, SIDE_WIDTH), nn.ReLU()) if side else None
        if side:
            self.register_buffer("side_mean", torch.zeros(side))
            self.register_buffer("side_std", torch.ones(side))
            width += SIDE_WIDTH
        self.head = nn.Linear(width, num_classes)
        self.multi_label = multi_label
        self.centers = nn.Parameter(torch.zeros(num_classes, width)) if center_loss else None

    def set_side_statistics(self, mean: np.ndarray, std: np.ndarray) -> None:
        self.side_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.side_std.copy_(torch.as_tensor(std, dtype=torch.float32))

    def features(self, images: torch.Tensor, side: torch.Tensor | None = None) -> torch.Tensor:
        """The pooled embedding (before the head), fused with the side features when the net has them."""
        feats: torch.Tensor = self.backbone(images)
        if self.side_net is None:
            return feats
        if side is None:
            raise InvalidInput("this classifier was trained with side features: pass them with the images")
        z = self.side_net((side.to(feats.dtype) - self.side_mean) / self.side_std)
        return torch.cat([feats, z], dim=1)

    def logits(self, images: torch.Tensor, side: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.features(images, side)
        return self.head(feats), feats

    def forward(self, images: torch.Tensor, side: torch.Tensor | None = None) -> torch.Tensor:
        logits, _ = self.logits(images, side)
        return torch.sigmoid(logits) if self.multi_label else torch.softmax(logits, dim=1)


def focal_loss(
    logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None, gamma: float = 2.0
) -> torch.Tensor:
    """Softmax focal loss (Lin et al. 2017): cross-entropy scaled by (1 − p_true)^γ."""
    logp = F.log_softmax(logits, dim=1)
    logp_t = logp.gather(1, target[:, None])[:, 0]
    loss = -((1 - logp_t.exp()) ** gamma) * logp_t
    if weight is not None:
        loss = loss * weight[target]
    return loss.mean()


class ClassifyNets(TaskNets[ClassifyTask]):
    def __init__(self, task: ClassifyTask) -> None:
        super().__init__(task)
        self.class_weight: torch.Tensor | None = None

    # -- network ---------------------------------------------------------------------------------------------
    def build(self, init_weights: bool = True) -> nn.Module:
        t, r = self.task, self.task.recipe
        backbone = recipe_backbone(t.arch, r.pretrained, r.weights, init_weights)
        return ClassifierNet(backbone, len(t.classes), t.multi_label, r.center_loss > 0, len(r.side_features))

    def fit_side(self, net: nn.Module, values: np.ndarray) -> None:
        assert isinstance(net, ClassifierNet)
        net.set_side_statistics(*standardisation(values))

    def normalization(self, net: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return timm_normalization(net.backbone if isinstance(net, ClassifierNet) else net)

    # -- data ------------------------------------------------------------------------------------------------
    def target(self, annotations: Annotations, height: int, width: int) -> torch.Tensor | None:
        t = self.task
        present = sorted({t.index[lab] for lab in annotations.label if lab in t.index})
        if t.multi_label:
            hot = torch.zeros(len(t.classes))
            hot[present] = 1.0
            return hot
        if len(present) == 1:
            return torch.tensor(present[0])
        if not present and BACKGROUND in t.index:
            return torch.tensor(t.index[BACKGROUND])
        return None  # no label, or several: not a single-label sample

    def configure(self, train_targets: Sequence[Any]) -> None:
        t = self.task
        if t.multi_label:
            counts = torch.stack(list(train_targets)).sum(0).numpy()
        else:
            counts = np.bincount([int(v) for v in train_targets], minlength=len(t.classes))
        rare = [f"{t.classes[i]!r} ({int(n)})" for i, n in enumerate(counts) if n < 2]
        if rare:
            raise InvalidInput(
                f"class(es) {', '.join(rare)} have fewer than 2 training examples in this dataset version;"
                " annotate more, or merge/remove the class (gigavision labels merge|remove) and create a new version"
            )
        if t.recipe.class_weights:
            freq = counts / counts.sum()
            self.class_weight = torch.tensor(1.0 / (len(counts) * freq), dtype=torch.float32)

    # -- training --------------------------------------------------------------------------------------------
    def loss(self, net: nn.Module, images: Any, targets: torch.Tensor) -> torch.Tensor:
        assert isinstance(net, ClassifierNet)
        recipe = self.task.recipe
        logits, feats = net.logits(*images) if isinstance(images, tuple) else net.logits(images)
        weight = None if self.class_weight is None else self.class_weight.to(logits.device)
        if self.task.multi_label:
            if recipe.loss == "focal":
                from torchvision.ops import sigmoid_focal_loss

                loss: torch.Tensor = sigmoid_focal_loss(logits, targets, reduction="mean")
            else:
                loss = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=weight)
        elif recipe.loss == "focal":
            loss = focal_loss(logits, targets, weight)
        else:
            loss = F.cross_entropy(logits, targets, weight=weight)
        if net.centers is not None and not self.task.multi_label:
            loss = loss + recipe.center_loss * ((feats - net.centers[targets]) ** 2).sum(1).mean()
        return loss
