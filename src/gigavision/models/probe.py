"""``probe``: a linear probe, logistic regression on frozen backbone features; fits in seconds on a CPU.

The backbone is a trained model of the workspace (``recipe.backbone_model``: any model whose network has a
timm ``.backbone``, e.g. classify or embed) or a timm ``arch`` (with ``pretrained``/``weights`` as usual). The
task fits itself instead of going through the trainer: features of the training split (no augmentation) are
extracted once, scikit-learn's multinomial logistic regression is fitted on standardised features, and the
result is folded into one ``nn.Linear`` (``W/σ``, ``b − W·μ/σ``) behind the frozen backbone, with a softmax.
So the published model is an ordinary ``images -> probabilities`` network: the ONNX export, the torch and
ONNX predictors and the classify decoding and metrics (inherited) work unchanged.

The backbone's timm arch is saved in the task state, so ``build`` recreates the network of a published probe
without opening the backbone model (the checkpoint holds all the weights). The network and the fitting are
the torch half, ``models/nets/probe.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from gigavision.models.classify import ClassifyTask

if TYPE_CHECKING:
    from gigavision.models.recipe import Recipe
    from gigavision.workspace import Workspace


class ProbeTask(ClassifyTask):
    name = "probe"
    default_arch = "resnet18"
    nets_class = "gigavision.models.nets.probe:ProbeNets"
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

    def state(self) -> dict[str, Any]:
        return {**super().state(), "backbone_arch": self.backbone_arch} if self.backbone_arch else super().state()

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        if state.get("backbone_arch"):
            self.backbone_arch = self.arch = str(state["backbone_arch"])
