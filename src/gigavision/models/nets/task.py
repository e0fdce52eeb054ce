"""The contract of a task's torch half, and what every torch half shares."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from gigavision.annotations import Annotations
    from gigavision.models.task import SampleBatches, Task
    from gigavision.progress import Progress
    from gigavision.workspace import Workspace

T = TypeVar("T", bound="Task")


def to_numpy(outputs: Any) -> list[np.ndarray]:
    """Network outputs (a tensor or a tuple/list of tensors) as a list of NumPy arrays."""
    if isinstance(outputs, torch.Tensor):
        outputs = (outputs,)
    return [o.detach().float().cpu().numpy() for o in outputs]


class TaskNets(Generic[T]):
    """The torch half of ``task``: it builds the network, turns annotations into training targets and computes
    the loss; it may keep training state (class weights, a loss module)."""

    def __init__(self, task: T) -> None:
        self.task = task

    def build(self, init_weights: bool = True) -> nn.Module:
        raise NotImplementedError

    def normalization(self, net: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

    def target(self, annotations: Annotations, height: int, width: int) -> Any:
        raise NotImplementedError

    def collate(self, images: list[Any], targets: list[Any]) -> tuple[Any, Any]:
        from gigavision.models.side import stack_inputs

        batch = stack_inputs(images)
        if targets and isinstance(targets[0], torch.Tensor):
            return batch, torch.stack(targets)
        return batch, targets

    def loss(self, net: nn.Module, images: torch.Tensor, targets: Any) -> torch.Tensor:
        raise NotImplementedError

    def configure(self, train_targets: Sequence[Any]) -> None:
        """Called once with every training target before training (class weights, priors)."""

    def fit_side(self, net: nn.Module, values: np.ndarray) -> None:
        raise NotImplementedError(f"{self.task.name} takes no side features")

    def fit(self, ws: Workspace, samples: SampleBatches, progress: Progress | None) -> nn.Module:
        raise NotImplementedError(f"{self.task.name} trains through the Lightning trainer")

    def export_onnx(self, net: nn.Module, example: torch.Tensor, path: Any) -> bool:
        """Export ``net`` in the task's own way; False: the shared export applies."""
        return False
