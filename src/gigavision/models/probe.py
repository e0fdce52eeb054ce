"""``probe``: a linear probe, logistic regression on frozen backbone features; fits in seconds on a CPU.

The backbone is a trained model of the workspace (``recipe.backbone_model``: any model whose network has a
timm ``.backbone``, e.g. classify or embed) or a timm ``arch`` (with ``pretrained``/``weights`` as usual). The
task fits itself instead of going through the trainer: features of the training split (no augmentation) are
extracted once, scikit-learn's multinomial logistic regression is fitted on standardised features, and the
result is folded into one ``nn.Linear`` (``W/σ``, ``b − W·μ/σ``) behind the frozen backbone, with a softmax.
So the published model is an ordinary ``images -> probabilities`` network: the ONNX export, the torch and
ONNX predictors and the classify decoding and metrics (inherited) work unchanged.

The backbone's timm arch is saved in the task state, so ``build`` recreates the network of a published probe
without opening the backbone model (the checkpoint holds all the weights).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from gigavision.errors import InvalidInput
from gigavision.models.backbones import create_timm, feature_dim, load_weights, timm_normalization
from gigavision.models.classify import ClassifyTask

if TYPE_CHECKING:
    from gigavision.models.recipe import Recipe
    from gigavision.train.data import SplitData
    from gigavision.workspace import Workspace

Progress = Callable[[float, float, str], None]
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


class ProbeTask(ClassifyTask):
    name = "probe"
    default_arch = "resnet18"
    uses_trainer = False

    def __init__(self, recipe: Recipe, classes: Sequence[str]) -> None:
        super().__init__(recipe, classes)
        self.backbone_arch: str | None = None  # the backbone model's arch, once known (bind / fit / load_state)
        if recipe.backbone_model is not None:
            self.arch = recipe.arch or self.default_arch  # until the backbone model is read

    def bind(self, ws: Workspace) -> None:
        """Read the backbone model's arch from the workspace (the trainer may call this before ``build``)."""
        if self.recipe.backbone_model is not None and self.backbone_arch is None:
            from gigavision.models.store import get_model

            info = get_model(ws, self.recipe.backbone_model)
            self.backbone_arch = self.arch = info.arch

    # -- network ---------------------------------------------------------------------------------------------
    def build(self, init_weights: bool = True) -> nn.Module:
        r = self.recipe
        if self.backbone_arch is not None:  # the backbone model's weights come in fit() or from the checkpoint
            backbone = create_timm(self.backbone_arch, num_classes=0)
        else:
            backbone = create_timm(self.arch, num_classes=0, pretrained=r.pretrained and init_weights)
            if init_weights and r.weights:
                load_weights(backbone, r.weights)
        return ProbeNet(backbone, len(self.classes)).eval()

    def normalization(self, net: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return timm_normalization(net.backbone if isinstance(net, ProbeNet) else net)

    def state(self) -> dict[str, Any]:
        return {**super().state(), "backbone_arch": self.backbone_arch} if self.backbone_arch else super().state()

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        if state.get("backbone_arch"):
            self.backbone_arch = self.arch = str(state["backbone_arch"])

    def loss(self, net: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise InvalidInput("probe fits a logistic regression itself; it is not trained by gradient steps")

    # -- fitting ---------------------------------------------------------------------------------------------
    def _backbone(self, ws: Workspace) -> nn.Module:
        """The frozen feature extractor: the backbone model's, or the recipe's timm arch."""
        if self.recipe.backbone_model is None:
            net = self.build()
            assert isinstance(net, ProbeNet)
            return net.backbone
        from gigavision.models.store import get_model

        before = timm_normalization(create_timm(self.arch, num_classes=0))
        self.bind(ws)
        _, source = get_model(ws, self.recipe.backbone_model).load_network()
        backbone = getattr(source, "backbone", None)
        if not isinstance(backbone, nn.Module) or not isinstance(backbone.__dict__.get("num_features"), int):
            raise InvalidInput(
                f"model {self.recipe.backbone_model} has no timm backbone to probe (use a classify or embed model)"
            )
        if timm_normalization(backbone) != before:  # the trainer normalised the splits for another arch
            raise InvalidInput(
                f"probe on {self.recipe.backbone_model}: set arch={self.backbone_arch} in the recipe so the images"
                " are normalised the way that backbone expects"
            )
        return backbone

    @torch.inference_mode()
    def _features(
        self, backbone: nn.Module, data: SplitData, progress: Progress | None
    ) -> tuple[np.ndarray, np.ndarray]:
        from torch.utils.data import DataLoader

        from gigavision.train.data import SampleDataset, collate_for
        from gigavision.train.transforms import build_transform

        train = data.dataset
        mean, std = timm_normalization(backbone)
        size = self.recipe.input_size
        plain = SampleDataset(self, train.source, build_transform(None, mean, std, size), train.indices)
        loader = DataLoader(plain, batch_size=FEATURE_BATCH, collate_fn=collate_for(self))
        feats, labels = [], []
        for batch in loader:
            if batch is None:
                continue
            images, targets = batch
            feats.append(backbone(images).float().numpy())
            labels.append(targets.numpy())
            if progress is not None:
                progress(sum(len(f) for f in feats), len(plain), "extracting features")
        if not feats:
            raise InvalidInput("probe: the training split has no labelled samples")
        return np.concatenate(feats).astype(np.float64), np.concatenate(labels).astype(np.int64)

    def fit(self, ws: Workspace, train_data: SplitData, progress: Progress | None = None) -> nn.Module:
        """Fit the logistic regression on the training split's features; returns the published network."""
        from sklearn.linear_model import LogisticRegression

        backbone = self._backbone(ws).eval()
        x, y = self._features(backbone, train_data, progress)
        present = np.unique(y)
        if len(present) < 2:
            raise InvalidInput(f"probe: the training split has only class {self.classes[int(present[0])]!r}")
        mu = x.mean(0)
        sigma = x.std(0)
        sigma[sigma < 1e-6] = 1.0  # constant features (dead channels) stay as they are
        lr = LogisticRegression(max_iter=2000, random_state=self.recipe.seed)
        lr.fit((x - mu) / sigma, y)
        coef = np.zeros((len(self.classes), x.shape[1]))
        bias = np.full(len(self.classes), -1e4)  # classes absent from training are never predicted
        if len(present) == 2:  # sklearn's binary model is one logit: p(1) = σ(w·z + b) = softmax([0, w·z + b])
            coef[present[1]], bias[present[0]], bias[present[1]] = lr.coef_[0], 0.0, lr.intercept_[0]
        else:
            coef[present], bias[present] = lr.coef_, lr.intercept_
        net = ProbeNet(backbone, len(self.classes))
        with torch.no_grad():
            net.head.weight.copy_(torch.from_numpy(coef / sigma))
            net.head.bias.copy_(torch.from_numpy(bias - (coef / sigma) @ mu))
        if progress is not None:
            progress(1, 1, "fitted")
        return net.eval()
