"""The task contract: what the trainer, the model directory, the predictors and ``evaluate`` ask of a task.

A task turns ``Annotations`` into training targets, builds the network, computes the loss, turns network
outputs back into ``Annotations`` and scores predictions against the truth. Everything else (data, trainer,
checkpoints, ONNX, model directories, jobs, CLI, REST) is shared, so a new task is two modules plus a line in
``TASKS``: ``models/<task>.py``, the torch-free half (label map, decode, evaluate, learned state: NumPy only),
and ``models/nets/<task>.py``, the torch half (network, training targets, loss, ONNX export), imported on first
use by ``Task.nets``, so deployment with onnxruntime never imports torch.

Network contract: ``net(images)`` on a float32 ``(N, 3, H, W)`` batch, already normalised with ``mean``/``std``,
returns the *inference* outputs (a tensor or a tuple of tensors) in eval mode. That same forward is exported to
ONNX, so torch and onnxruntime give the same numbers and ``decode`` serves both. Tasks with
``supports_side`` take per-image numeric side features as a second input, ``net(images, side)``
(``models/side.py``).
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from gigavision.errors import InvalidInput
from gigavision.registry import Registry

if TYPE_CHECKING:
    import torch
    from torch import nn

    from gigavision.annotations import Annotations
    from gigavision.models.nets.task import TaskNets
    from gigavision.models.recipe import Recipe
    from gigavision.progress import Progress
    from gigavision.workspace import Workspace

# The class classify and segment give to what none of the labelled shapes covers ("none of the classes").
BACKGROUND = "background"

# task name -> "module:Class", imported on first use (torch is heavy; `gigavision --help` must stay fast)
TASKS: Registry[str] = Registry("task")
for _name, _path in (
    ("classify", "gigavision.models.classify:ClassifyTask"),
    ("detect", "gigavision.models.detect:DetectTask"),
    ("segment", "gigavision.models.segment:SegmentTask"),
    ("embed", "gigavision.models.embed:EmbedTask"),
    ("probe", "gigavision.models.probe:ProbeTask"),
):
    TASKS.add(_name, _path)


class SampleBatches(Protocol):
    """The training split for tasks that fit themselves (probe): ``(batches, count)``, the samples without
    augmentation, normalised with ``mean``/``std``, collated by the task in batches of ``batch_size`` (None
    for a batch without a labelled sample). Training builds it, so models never import the data pipeline."""

    def __call__(
        self, mean: Sequence[float], std: Sequence[float], batch_size: int
    ) -> tuple[Iterable[tuple[Any, Any] | None], int]: ...


@dataclass(frozen=True)
class Evaluation:
    """What ``Task.evaluate`` returns: JSON-able ``metrics`` (for metrics.json and compare), ``headline`` (the
    one number models are ranked by, higher is better) and ``result``, the ``gigavision.metrics`` result object
    the HTML report renders."""

    metrics: dict[str, Any]
    headline: str
    result: Any


class Task(ABC):
    """One kind of model. Instances hold the recipe and the label map (class names, in output order).

    The methods under "network", "data" and "training" belong to the torch half (``nets``) and are passed on
    to it; the rest runs on NumPy outputs (torch's or onnxruntime's alike).
    """

    name: ClassVar[str]
    default_arch: ClassVar[str]
    nets_class: ClassVar[str]  # "module:Class" of the torch half (a TaskNets)
    uses_trainer: ClassVar[bool] = True  # False: the task fits itself (probe)
    supports_side: ClassVar[bool] = False  # True: recipe.side_features feed a second network input
    samples_per_class: ClassVar[int] = 1  # > 1: training batches are runs of that many samples of one class

    def __init__(self, recipe: Recipe, classes: Sequence[str]) -> None:
        if not classes:
            raise InvalidInput(
                f"{self.name}: no labelled items to learn from: the dataset version's label schema has no class"
                " this task uses; add classes and annotations, then create a new version"
            )
        if recipe.side_features and not self.supports_side:
            raise InvalidInput(f"side_features: {self.name} does not take per-image side features (classify does)")
        self.recipe = recipe
        self.classes = list(classes)
        self.arch = recipe.arch or self.default_arch

    # -- label map -------------------------------------------------------------------------------------------
    @classmethod
    def label_map(cls, schema: Sequence[dict[str, Any]], recipe: Recipe) -> list[str]:
        """Output classes, in order, from the dataset version's schema (dicts with name and kind)."""
        return [c["name"] for c in schema]

    def bind(self, ws: Workspace) -> None:  # noqa: B027 - optional hook
        """Read what the task needs from the workspace before ``build`` (probe: the backbone model's arch)."""

    # -- the torch half --------------------------------------------------------------------------------------
    @cached_property
    def nets(self) -> TaskNets[Any]:
        """The torch half of this task (imports torch on first use)."""
        module, _, attr = self.nets_class.partition(":")
        cls: type[TaskNets[Any]] = getattr(importlib.import_module(module), attr)
        return cls(self)

    # -- network ---------------------------------------------------------------------------------------------
    def build(self, init_weights: bool = True) -> nn.Module:
        """The network; ``init_weights``: initialise from the recipe (``pretrained`` or ``weights``), else leave
        the random init for a checkpoint to replace (no download, no weights file needed)."""
        return self.nets.build(init_weights)

    def normalization(self, net: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel (mean, std) applied to 0..1 pixels before the network (the backbone's own config)."""
        return self.nets.normalization(net)

    def output_names(self) -> list[str]:
        """Names of the network's outputs (ONNX output names, in order)."""
        return ["output"]

    # -- data ------------------------------------------------------------------------------------------------
    def target(self, annotations: Annotations, height: int, width: int) -> Any:
        """The training target of one sample from its annotations in the sample's pixel coordinates.

        May hold ``torchvision.tv_tensors`` (``BoundingBoxes``, ``Mask``) so that augmentation moves them with
        the image. Return None to leave the sample out (e.g. single-label classify with no or several labels).
        """
        return self.nets.target(annotations, height, width)

    def collate(self, images: list[Any], targets: list[Any]) -> tuple[Any, Any]:
        """A batch from samples: stacked inputs (images, or (images, side)); targets stacked when tensors,
        else kept as a list."""
        return self.nets.collate(images, targets)

    # -- training --------------------------------------------------------------------------------------------
    def loss(self, net: nn.Module, images: torch.Tensor, targets: Any) -> torch.Tensor:
        """Training loss of a batch (``net`` in train mode)."""
        return self.nets.loss(net, images, targets)

    def fit(self, ws: Workspace, samples: SampleBatches, progress: Progress | None) -> nn.Module:
        """Tasks with ``uses_trainer = False`` fit themselves here and return the network to publish."""
        return self.nets.fit(ws, samples, progress)

    def configure(self, train_targets: Sequence[Any]) -> None:
        """Called once with every training target before training (class weights, priors)."""
        self.nets.configure(train_targets)

    def fit_side(self, net: nn.Module, values: np.ndarray) -> None:
        """Learn the side features' standardisation from the training split's ``(N, K)`` values."""
        self.nets.fit_side(net, values)

    # -- inference -------------------------------------------------------------------------------------------
    @abstractmethod
    def decode(self, outputs: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]]) -> list[Annotations]:
        """Annotations per image from the network's outputs (NumPy, torch or ONNX alike).

        ``sizes`` are the original (height, width) of each image; the network saw them resized to
        ``image_size``, so shapes are scaled back to the original pixels.
        """

    # -- evaluation ------------------------------------------------------------------------------------------
    @abstractmethod
    def evaluate(self, truths: Sequence[Annotations], predictions: Sequence[Annotations]) -> Evaluation:
        """Score predictions against the truth, image by image."""

    def calibrate(self, truths: Sequence[Annotations], predictions: Sequence[Annotations]) -> None:  # noqa: B027
        """Called with the validation predictions after training (e.g. tune per-class thresholds)."""

    def state(self) -> dict[str, Any]:
        """JSON-able state learned besides the weights (thresholds), saved in model.json as ``task_state``."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:  # noqa: B027
        """Restore what ``state`` returned."""

    def errors(self, truths: Sequence[Annotations], predictions: Sequence[Annotations]) -> np.ndarray | None:
        """A badness score per sample (higher = worse) picking the report's worst examples; None: no examples."""
        return None

    def describe(self, truth: Annotations, prediction: Annotations) -> str:
        """A short caption for a worst example."""
        return f"truth {len(truth)} / predicted {len(prediction)}"


def task_class(name: str) -> type[Task]:
    """The task class registered as ``name``."""
    cls: type[Task] = TASKS.load(name)
    return cls
