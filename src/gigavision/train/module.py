"""The LightningModule every task trains through: the task supplies the loss, decoding and metrics."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import lightning as L
import numpy as np
import torch

from gigavision.models.nets.task import to_numpy as to_numpy  # re-exported: training code imports it here
from gigavision.models.side import call_net, first, stack_inputs

if TYPE_CHECKING:
    from torch import nn

    from gigavision.annotations import Annotations
    from gigavision.models.task import Task
    from gigavision.train.recipe import Recipe


class TaskModule(L.LightningModule):
    """Train ``net`` with ``task.loss``; validate by decoding predictions and scoring them (``val_score``)."""

    def __init__(self, task: Task, net: nn.Module, recipe: Recipe) -> None:
        super().__init__()
        self.task = task
        self.net = net
        self.recipe = recipe
        self._truths: list[Annotations] = []
        self._preds: list[Annotations] = []
        self.last_metrics: dict[str, Any] = {}

    def forward(self, *inputs: torch.Tensor) -> Any:
        return self.net(*inputs)

    def on_train_epoch_start(self) -> None:
        # Augmentation and dropout draw from the global generator: reseeding it from (seed, epoch) makes each
        # epoch the same whether the run was resumed from a checkpoint or not.
        torch.manual_seed(self.recipe.seed * 100_003 + self.current_epoch)
        np.random.seed((self.recipe.seed * 100_003 + self.current_epoch) % 2**32)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        if batch is None:  # every sample of the batch was unlabelled
            return None
        inputs, targets = batch
        loss = self.task.loss(self.net, inputs, targets)
        self.log("train_loss", loss, prog_bar=True, batch_size=len(first(inputs)), on_step=True, on_epoch=True)
        return loss

    def on_validation_epoch_start(self) -> None:
        self._truths, self._preds = [], []

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        inputs, truths = batch
        outputs = call_net(self.net, inputs)
        images = first(inputs)
        size = (int(images.shape[-2]), int(images.shape[-1]))
        self._preds += self.task.decode(to_numpy(outputs), [size] * len(images))
        self._truths += list(truths)

    def on_validation_epoch_end(self) -> None:
        truths, preds = self._truths, self._preds
        if self.trainer.world_size > 1:
            truths, preds = self._gather(truths, preds)
        if not truths:
            return
        evaluation = self.task.evaluate(truths, preds)
        score = evaluation.metrics.get(evaluation.headline)
        value = float(score) if isinstance(score, int | float) and math.isfinite(score) else 0.0
        # every rank evaluated the same whole set, so all log the same value (the mean over ranks is that value)
        self.log("val_score", value, prog_bar=True, sync_dist=True)
        self.last_metrics = evaluation.metrics

    def _gather(self, truths: list[Any], preds: list[Any]) -> tuple[list[Any], list[Any]]:
        """The whole validation set's truths and predictions from every rank, each sample once, in dataset order.

        Under DDP each rank validated a shard, and a ``DistributedSampler`` pads the shards to equal length by
        repeating samples; a metric averaged over ranks is not the metric of the set (for F1 or mAP it is not
        even close). The rank's sampler says which dataset index each of its samples was, so the repeats are
        dropped and the set is evaluated once, on every rank alike.
        """
        import torch.distributed as dist

        keys = self._sample_keys(len(truths))
        gathered: list[Any] = [None] * self.trainer.world_size
        dist.all_gather_object(gathered, (keys, truths, preds))
        samples: dict[Any, tuple[Any, Any]] = {}
        for rank_keys, rank_truths, rank_preds in gathered:
            for key, truth, pred in zip(rank_keys, rank_truths, rank_preds, strict=True):
                samples.setdefault(key, (truth, pred))
        ordered = [samples[k] for k in sorted(samples)]
        return [t for t, _ in ordered], [p for _, p in ordered]

    def _sample_keys(self, count: int) -> list[Any]:
        """The dataset index of each sample this rank validated, from its validation loader's sampler."""
        loaders = self.trainer.val_dataloaders
        loader = loaders[0] if isinstance(loaders, list | tuple) and len(loaders) == 1 else loaders
        sampler = getattr(loader, "sampler", None)
        keys = list(sampler) if sampler is not None else []
        if len(keys) != count:
            raise RuntimeError(
                f"multi-device validation: rank {self.global_rank} validated {count} samples, but its sampler "
                f"lists {len(keys)}; validation needs one dataloader whose sampler yields dataset indices"
            )
        return keys

    def configure_optimizers(self) -> Any:
        r = self.recipe
        params = [p for p in self.net.parameters() if p.requires_grad]
        if r.optimizer == "sgd":
            opt: torch.optim.Optimizer = torch.optim.SGD(params, lr=r.lr, momentum=0.9, weight_decay=r.weight_decay)
        else:
            opt = torch.optim.AdamW(params, lr=r.lr, weight_decay=r.weight_decay)
        lr_lambda = schedule(r.schedule, r.epochs, r.warmup_epochs)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}


def schedule(kind: str, epochs: int, warmup: int) -> Any:
    """LR multiplier per epoch: linear warm-up, then cosine to 0, a 10× step at 2/3, or constant."""

    def factor(epoch: int) -> float:
        if warmup and epoch < warmup:
            return (epoch + 1) / (warmup + 1)
        if kind == "cosine":
            span = max(1, epochs - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(epoch - warmup, span) / span))
        if kind == "step":
            return 0.1 if epoch >= (2 * epochs) // 3 else 1.0
        return 1.0

    return factor


def eval_collate(batch: Sequence[tuple[Any, Annotations]]) -> tuple[Any, list[Annotations]]:
    return stack_inputs([b[0] for b in batch]), [b[1] for b in batch]
