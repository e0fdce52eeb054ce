"""The torch half of ``probe``: a frozen backbone with a logistic-regression head folded into ``nn.Linear``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from gigavision.errors import InvalidInput
from gigavision.models.backbones import create_timm, feature_dim, load_weights, timm_normalization
from gigavision.models.nets.classify import ClassifyNets
from gigavision.models.probe import ProbeTask
from gigavision.progress import Progress

if TYPE_CHECKING:
    from gigavision.models.task import SampleBatches
    from gigavision.workspace import Workspace

FEATURE_BATCH = 128


class ProbeNet(nn.Module):
    """A frozen backbone, a linear head (standardisation folded in) and a softmax."""

    backbone: nn.Module

    def __init__(self, backbone: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(feature_dim(backbone), num_classes)
        for p in self.parameters():
            p.requires_grad_(False)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.backbone(images)
        return out

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.head(self.features(images)), dim=1)


class ProbeNets(ClassifyNets):
    task: ProbeTask

    # -- network ---------------------------------------------------------------------------------------------
    def build(self, init_weights: bool = True) -> nn.Module:
        r = self.task.recipe
        if self.task.backbone_arch is not None:  # the backbone model's weights come in fit() or from the checkpoint
            backbone = create_timm(self.task.backbone_arch, num_classes=0)
        else:
            backbone = create_timm(self.task.arch, num_classes=0, pretrained=r.pretrained and init_weights)
            if init_weights and r.weights:
                load_weights(backbone, r.weights)
        return ProbeNet(backbone, len(self.task.classes)).eval()

    def normalization(self, net: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return timm_normalization(net.backbone if isinstance(net, ProbeNet) else net)

    def loss(self, net: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise InvalidInput("probe fits a logistic regression itself; it is not trained by gradient steps")

    # -- fitting ---------------------------------------------------------------------------------------------
    def _backbone(self, ws: Workspace) -> nn.Module:
        """The frozen feature extractor: the backbone model's, or the recipe's timm arch."""
        if self.task.recipe.backbone_model is None:
            net = self.build()
            assert isinstance(net, ProbeNet)
            return net.backbone
        from gigavision.models.store import get_model

        before = timm_normalization(create_timm(self.task.arch, num_classes=0))
        self.task.bind(ws)
        _, source = get_model(ws, self.task.recipe.backbone_model).load_network()
        backbone = getattr(source, "backbone", None)
        if not isinstance(backbone, nn.Module) or not isinstance(backbone.__dict__.get("num_features"), int):
            raise InvalidInput(
                f"model {self.task.recipe.backbone_model} has no timm backbone to probe (use a classify or embed model)"
            )
        if timm_normalization(backbone) != before:  # the trainer normalised the splits for another arch
            raise InvalidInput(
                f"probe on {self.task.recipe.backbone_model}: set arch={self.task.backbone_arch} in the recipe so"
                " the images are normalised the way that backbone expects"
            )
        return backbone

    @torch.inference_mode()
    def _features(
        self, backbone: nn.Module, samples: SampleBatches, progress: Progress | None
    ) -> tuple[np.ndarray, np.ndarray]:
        mean, std = timm_normalization(backbone)
        batches, total = samples(mean, std, FEATURE_BATCH)
        feats, labels = [], []
        for batch in batches:
            if batch is None:
                continue
            images, targets = batch
            feats.append(backbone(images).float().numpy())
            labels.append(targets.numpy())
            if progress is not None:
                progress(sum(len(f) for f in feats), total, "extracting features")
        if not feats:
            raise InvalidInput("probe: the training split has no labelled samples")
        return np.concatenate(feats).astype(np.float64), np.concatenate(labels).astype(np.int64)

    def fit(self, ws: Workspace, samples: SampleBatches, progress: Progress | None = None) -> nn.Module:
        """Fit the logistic regression on the training split's features; returns the published network."""
        from sklearn.linear_model import LogisticRegression

        backbone = self._backbone(ws).eval()
        x, y = self._features(backbone, samples, progress)
        present = np.unique(y)
        if len(present) < 2:
            raise InvalidInput(f"probe: the training split has only class {self.task.classes[int(present[0])]!r}")
        mu = x.mean(0)
        sigma = x.std(0)
        sigma[sigma < 1e-6] = 1.0  # constant features (dead channels) stay as they are
        lr = LogisticRegression(max_iter=2000, random_state=self.task.recipe.seed)
        lr.fit((x - mu) / sigma, y)
        coef = np.zeros((len(self.task.classes), x.shape[1]))
        bias = np.full(len(self.task.classes), -1e4)  # classes absent from training are never predicted
        if len(present) == 2:  # sklearn's binary model is one logit: p(1) = σ(w·z + b) = softmax([0, w·z + b])
            coef[present[1]], bias[present[0]], bias[present[1]] = lr.coef_[0], 0.0, lr.intercept_[0]
        else:
            coef[present], bias[present] = lr.coef_, lr.intercept_
        net = ProbeNet(backbone, len(self.task.classes))
        with torch.no_grad():
            net.head.weight.copy_(torch.from_numpy(coef / sigma))
            net.head.bias.copy_(torch.from_numpy(bias - (coef / sigma) @ mu))
        if progress is not None:
            progress(1, 1, "fitted")
        return net.eval()
