"""Multi-device training without a GPU: Lightning DDP on 2 CPU processes (gloo) validates the whole set once.

Each rank validates a shard, and the ``DistributedSampler`` pads the shards to equal length by repeating
samples. ``TaskModule`` gathers every rank's predictions, drops the repeats and evaluates the set once, so
``val_score`` (what ``best.ckpt`` and early stopping follow) is the metric a single process computes on the
same weights, not the mean of per-shard metrics. The task is a stand-in with the three methods ``TaskModule``
calls, a 3-layer net and 8×8 scikit-learn digits: the test is about the gathering, and takes a few seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from gigavision.models.recipe import Recipe
from gigavision.train.module import TaskModule, eval_collate

L = pytest.importorskip("lightning")

VAL = 7  # odd: the DistributedSampler repeats sample 0 to give both ranks 4


@dataclass
class Evaluation:
    metrics: dict[str, Any]
    headline: str
    result: Any = None


class DigitTask:
    """The parts of ``models.task.Task`` that ``TaskModule`` calls: loss, decode, evaluate."""

    def loss(self, net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(net(inputs), targets)

    def decode(self, outputs: list[np.ndarray], sizes: list[tuple[int, int]]) -> list[int]:
        return [int(k) for k in outputs[0].argmax(axis=1)]

    def evaluate(self, truths: list[int], preds: list[int]) -> Evaluation:
        return Evaluation({"accuracy": accuracy(truths, preds), "n": len(truths)}, "accuracy")


def accuracy(truths: list[int], preds: list[int]) -> float:
    return float(np.mean(np.asarray(truths) == np.asarray(preds)))


def digits() -> tuple[list[tuple[torch.Tensor, int]], list[tuple[torch.Tensor, int]]]:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = torch.from_numpy(d.images.astype(np.float32) / 16.0)[:, None]
    samples = [(images[i], int(d.target[i])) for i in range(24 + VAL)]
    return samples[:24], samples[24:]


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))


def trainer(devices: int) -> Any:
    return L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp_spawn" if devices > 1 else "auto",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        deterministic=True,
    )


def test_ddp_on_two_cpu_processes_validates_the_whole_set_once() -> None:
    train, val = digits()
    recipe = Recipe(task="classify", dataset="digits", epochs=1, batch_size=4, lr=0.05, schedule="constant")
    module = TaskModule(DigitTask(), tiny_net(), recipe)  # type: ignore[arg-type]
    val_loader = DataLoader(val, batch_size=2, collate_fn=eval_collate)

    ddp = trainer(2)
    ddp.fit(module, DataLoader(train, batch_size=4), val_loader)  # training and validation on 2 ranks
    ddp_score = float(ddp.callback_metrics["val_score"])

    single = trainer(1)  # the trained weights (rank 0's, returned to this process), validated by one process
    one = single.validate(module, val_loader, verbose=False)[0]["val_score"]
    truths, preds = [t for _, t in val], module._preds
    assert module.last_metrics["n"] == VAL
    assert ddp_score == pytest.approx(one, abs=1e-6) == accuracy(truths, preds)

    # what the ranks saw: sample k of rank r is dataset index (r + 2k) mod 7; the mean of their accuracies is
    # what val_score was before, and it differs from the set's
    shards = [[(r + 2 * k) % VAL for k in range(4)] for r in range(2)]
    per_rank = [accuracy([truths[i] for i in s], [preds[i] for i in s]) for s in shards]
    assert abs(float(np.mean(per_rank)) - one) > 0.01, (per_rank, one)
