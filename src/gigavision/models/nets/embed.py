"""The torch half of ``embed``: a timm backbone with a projection to unit vectors, batch-hard triplet loss."""

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
from gigavision.models.embed import EmbedTask
from gigavision.models.nets.task import TaskNets


class EmbedNet(nn.Module):
    """A timm backbone and a linear projection; ``forward`` returns L2-normalised embeddings ``(N, D)``."""

    backbone: nn.Module

    def __init__(self, backbone: nn.Module, dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.proj = nn.Linear(feature_dim(backbone), dim)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The backbone's pooled features (what a ``probe`` on this model reads)."""
        out: torch.Tensor = self.backbone(images)
        return out

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj(self.features(images)), dim=1)


def batch_hard_triplet(embeddings: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """Mean of ``relu(d(a, hardest positive) − d(a, hardest negative) + margin)`` over the anchors that have both.

    Euclidean distances of unit vectors (``sqrt(2 − 2 cos)``, clamped so the gradient stays finite).
    """
    sim = embeddings @ embeddings.T
    dist = (2.0 - 2.0 * sim).clamp_min(1e-12).sqrt()
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    positive = same & ~eye
    negative = ~same
    valid = positive.any(1) & negative.any(1)
    if not bool(valid.any()):
        return embeddings.sum() * 0.0  # no anchor with both a positive and a negative in this batch
    hardest_pos = dist.masked_fill(~positive, 0.0).amax(1)
    hardest_neg = dist.masked_fill(~negative, float("inf")).amin(1)
    return F.relu(hardest_pos - hardest_neg + margin)[valid].mean()


class EmbedNets(TaskNets[EmbedTask]):
    # -- network ---------------------------------------------------------------------------------------------
    def build(self, init_weights: bool = True) -> nn.Module:
        r = self.task.recipe
        backbone = recipe_backbone(self.task.arch, r.pretrained, r.weights, init_weights)
        return EmbedNet(backbone, r.embedding_dim)

    def normalization(self, net: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return timm_normalization(net.backbone if isinstance(net, EmbedNet) else net)

    def target(self, annotations: Annotations, height: int, width: int) -> torch.Tensor | None:
        label = self.task.label_of(annotations)
        return None if label is None else torch.tensor(label)

    def configure(self, train_targets: Sequence[Any]) -> None:
        counts = np.bincount([int(t) for t in train_targets], minlength=len(self.task.classes))
        if (counts >= 2).sum() < 1 or (counts > 0).sum() < 2:
            raise InvalidInput(
                "embed needs two or more classes in the training split and at least one with two or more"
                f" examples (counts: {dict(zip(self.task.classes, counts.tolist(), strict=True))}); annotate more"
            )

    # -- training --------------------------------------------------------------------------------------------
    def loss(self, net: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return batch_hard_triplet(net(images), targets, self.task.recipe.margin)
