"""``classify``: binary, multi-class (softmax) and multi-label (sigmoid) image or patch classification.

Labels are image-level tags. On patches of big images whose schema has shape classes, a patch's labels are
the classes of the shapes inside it, and single-label training adds a ``background`` class for patches with
none (with tags only, a patch takes its image's tags). Imbalance: inverse
frequency class weights and/or focal loss; optional center loss pulls each class's embeddings together.
Multi-label thresholds are tuned per class on the validation split (best F1) and saved with the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gigavision.annotations import Annotations
from gigavision.errors import InvalidInput
from gigavision.models.backbones import feature_dim, recipe_backbone, timm_normalization
from gigavision.models.side import standardisation
from gigavision.models.task import BACKGROUND, Evaluation, Task

if TYPE_CHECKING:
    from gigavision.models.recipe import Recipe

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


class ClassifyTask(Task):
    name = "classify"
    default_arch = "resnet18"
    supports_side = True

    def __init__(self, recipe: Recipe, classes: Sequence[str]) -> None:
        super().__init__(recipe, classes)
        self.multi_label = recipe.multi_label
        self.index = {c: i for i, c in enumerate(self.classes)}
        self.class_weight: torch.Tensor | None = None
        self.thresholds = np.full(len(self.classes), 0.5)
        if not self.multi_label and len(self.classes) < 2:
            raise InvalidInput(
                f"classify needs at least two classes, the dataset has {self.classes}; add a class"
                " (or use multi_label for a single present/absent tag)"
            )

    @classmethod
    def label_map(cls, schema: Sequence[dict[str, Any]], recipe: Recipe) -> list[str]:
        tags = [c["name"] for c in schema if c.get("kind") == "tag"]
        shapes = [c["name"] for c in schema if c.get("kind") != "tag"]
        if shapes and (recipe.patch is not None or not tags):
            # patches (or a schema of shapes only): a sample's classes are the shapes inside it
            if not recipe.multi_label and BACKGROUND not in shapes:
                shapes = [BACKGROUND, *shapes]
            return shapes
        return tags

    # -- network ---------------------------------------------------------------------------------------------
    def build(self, init_weights: bool = True) -> nn.Module:
        r = self.recipe
        backbone = recipe_backbone(self.arch, r.pretrained, r.weights, init_weights)
        return ClassifierNet(backbone, len(self.classes), self.multi_label, r.center_loss > 0, len(r.side_features))

    def fit_side(self, net: nn.Module, values: np.ndarray) -> None:
        assert isinstance(net, ClassifierNet)
        net.set_side_statistics(*standardisation(values))

    def normalization(self, net: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return timm_normalization(net.backbone if isinstance(net, ClassifierNet) else net)

    def output_names(self) -> list[str]:
        return ["probabilities"]

    # -- data ------------------------------------------------------------------------------------------------
    def target(self, annotations: Annotations, height: int, width: int) -> torch.Tensor | None:
        present = sorted({self.index[lab] for lab in annotations.label if lab in self.index})
        if self.multi_label:
            hot = torch.zeros(len(self.classes))
            hot[present] = 1.0
            return hot
        if len(present) == 1:
            return torch.tensor(present[0])
        if not present and BACKGROUND in self.index:
            return torch.tensor(self.index[BACKGROUND])
        return None  # no label, or several: not a single-label sample

    def configure(self, train_targets: Sequence[Any]) -> None:
        if self.multi_label:
            counts = torch.stack(list(train_targets)).sum(0).numpy()
        else:
            counts = np.bincount([int(t) for t in train_targets], minlength=len(self.classes))
        rare = [f"{self.classes[i]!r} ({int(n)})" for i, n in enumerate(counts) if n < 2]
        if rare:
            raise InvalidInput(
                f"class(es) {', '.join(rare)} have fewer than 2 training examples in this dataset version;"
                " annotate more, or merge/remove the class (gigavision labels merge|remove) and create a new version"
            )
        if self.recipe.class_weights:
            freq = counts / counts.sum()
            self.class_weight = torch.tensor(1.0 / (len(counts) * freq), dtype=torch.float32)

    # -- training --------------------------------------------------------------------------------------------
    def loss(self, net: nn.Module, images: Any, targets: torch.Tensor) -> torch.Tensor:
        assert isinstance(net, ClassifierNet)
        logits, feats = net.logits(*images) if isinstance(images, tuple) else net.logits(images)
        weight = None if self.class_weight is None else self.class_weight.to(logits.device)
        if self.multi_label:
            if self.recipe.loss == "focal":
                from torchvision.ops import sigmoid_focal_loss

                loss: torch.Tensor = sigmoid_focal_loss(logits, targets, reduction="mean")
            else:
                loss = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=weight)
        elif self.recipe.loss == "focal":
            loss = focal_loss(logits, targets, weight)
        else:
            loss = F.cross_entropy(logits, targets, weight=weight)
        if net.centers is not None and not self.multi_label:
            loss = loss + self.recipe.center_loss * ((feats - net.centers[targets]) ** 2).sum(1).mean()
        return loss

    # -- inference -------------------------------------------------------------------------------------------
    def decode(self, outputs: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]]) -> list[Annotations]:
        probs = np.asarray(outputs[0], dtype=np.float64)
        out = []
        for row in probs:
            scores = {c: round(float(p), 6) for c, p in zip(self.classes, row, strict=True)}
            if self.multi_label:
                keep = np.nonzero(row >= self.thresholds)[0]
                labels = [self.classes[i] for i in keep]
                score = row[keep]
            else:
                best = int(np.argmax(row))
                labels, score = [self.classes[best]], row[[best]]
            attrs = [{"scores": scores}] * len(labels)
            out.append(Annotations.from_tags(labels, score=score, attributes=attrs, source=["model"] * len(labels)))
        return out

    def _scores(self, predictions: Sequence[Annotations]) -> np.ndarray:
        rows = []
        for p in predictions:
            scores = p.attributes[0]["scores"] if len(p) else None
            rows.append([scores[c] for c in self.classes] if scores else [0.0] * len(self.classes))
        return np.asarray(rows, dtype=np.float64).reshape(len(predictions), len(self.classes))

    def _truth(self, truths: Sequence[Annotations]) -> np.ndarray:
        hot = np.zeros((len(truths), len(self.classes)), dtype=np.int64)
        for i, t in enumerate(truths):
            for lab in t.label:
                if lab in self.index:
                    hot[i, self.index[lab]] = 1
            if not self.multi_label and not hot[i].any() and BACKGROUND in self.index:
                hot[i, self.index[BACKGROUND]] = 1
        return hot

    # -- evaluation ------------------------------------------------------------------------------------------
    def calibrate(self, truths: Sequence[Annotations], predictions: Sequence[Annotations]) -> None:
        if self.multi_label and truths:
            from gigavision.metrics.classification import tune_thresholds

            self.thresholds = np.asarray(
                tune_thresholds(self._truth(truths), self._scores(predictions), self.classes), dtype=np.float64
            )

    def state(self) -> dict[str, Any]:
        return {"thresholds": [float(t) for t in self.thresholds]} if self.multi_label else {}

    def load_state(self, state: dict[str, Any]) -> None:
        if "thresholds" in state:
            self.thresholds = np.asarray(state["thresholds"], dtype=np.float64)

    def evaluate(self, truths: Sequence[Annotations], predictions: Sequence[Annotations]) -> Evaluation:
        from gigavision.metrics.classification import evaluate_classification, evaluate_multilabel

        scores = self._scores(predictions)
        truth = self._truth(truths)
        if self.multi_label:
            ml = evaluate_multilabel(truth, scores, labels=self.classes, thresholds=self.thresholds)
            metrics = {
                "micro_f1": ml.micro.f1,
                "macro_f1": ml.macro.f1,
                "micro_precision": ml.micro.precision,
                "micro_recall": ml.micro.recall,
                "thresholds": ml.thresholds,
                "n_samples": ml.n_samples,
            }
            return Evaluation(metrics, "micro_f1", ml)
        labelled = truth.any(axis=1)
        y = [self.classes[int(i)] for i in truth[labelled].argmax(1)]
        result = evaluate_classification(y, scores=scores[labelled], labels=self.classes)
        metrics = {
            "accuracy": result.accuracy,
            "balanced_accuracy": result.balanced_accuracy,
            "macro_f1": result.macro.f1,
            "roc_auc": result.roc_auc,
            "n_samples": result.n_samples,
        }
        if result.operating_point is not None:
            op = result.operating_point
            metrics["sensitivity"] = op.sensitivity
            metrics["specificity"] = op.specificity
        # balanced accuracy ranks epochs and models: plain accuracy rewards "always background" on patch grids
        return Evaluation(metrics, "balanced_accuracy", result)

    def errors(self, truths: Sequence[Annotations], predictions: Sequence[Annotations]) -> np.ndarray:
        """1 − the score given to the true class(es): confidently wrong first."""
        truth, scores = self._truth(truths), self._scores(predictions)
        worst: np.ndarray = (
            np.abs(truth - scores).max(axis=1) if self.multi_label else 1.0 - (scores * truth).sum(axis=1)
        )
        return worst

    def describe(self, truth: Annotations, prediction: Annotations) -> str:
        t = ", ".join(sorted(str(v) for v in truth.label)) or BACKGROUND
        p = ", ".join(f"{lab} {s:.2f}" for lab, s in zip(prediction.label, prediction.score, strict=True)) or "none"
        return f"truth {t} / predicted {p}"
