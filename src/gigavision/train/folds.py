"""Out-of-fold predictions: every training image predicted by a model that never saw it (k-fold).

The training split's labelled images are dealt into ``folds`` folds (stratified by class for classify and
probe, seeded); for each fold a fresh network is trained with the recipe on the other folds, through the
same pieces ``train`` uses (task, transforms, ``split_data``, ``TaskModule`` on Lightning, or the task's own
``fit`` for probe), and the held-out fold is predicted by the evaluation path (``predict_split``). Nothing is
published: fold models live in memory only. Label-error finding (``gigavision.active.label_errors``) ranks
the disagreements between these predictions and the labels.

Whole images only: a patch recipe's samples are windows, not images, and are refused here.
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from gigavision.errors import InvalidInput
from gigavision.models.recipe import Recipe, resolve_image_size
from gigavision.progress import Progress

if TYPE_CHECKING:
    from gigavision.annotations import Annotations
    from gigavision.models.task import Task
    from gigavision.workspace import Workspace

FOLD_TASKS = ("classify", "probe", "detect", "segment")


@dataclass
class FoldPredictions:
    """Per training image (in the version's order): its fold, its labels and the held-out prediction, both
    in the network input's pixels; ``scale`` maps those pixels to level-0 pixels of the image."""

    task: str
    classes: list[str]
    dataset: str
    folds: int
    size: int
    image_ids: list[str] = field(default_factory=list)
    fold: list[int] = field(default_factory=list)
    truths: list[Annotations] = field(default_factory=list)
    predictions: list[Annotations] = field(default_factory=list)
    scale: list[float] = field(default_factory=list)
    sizes: list[tuple[int, int]] = field(default_factory=list)  # (width, height) in level-0 pixels
    left_out: int = 0


def assign_folds(n: int, folds: int, seed: int, strata: list[str] | None = None) -> np.ndarray:
    """Fold of each of ``n`` items: a seeded shuffle dealt round-robin, within each stratum when given (so
    every fold holds its share of each class)."""
    order = np.random.default_rng(seed).permutation(n)
    if strata is not None:
        order = order[np.argsort(np.asarray(strata, dtype=object)[order], kind="stable")]
    out = np.empty(n, dtype=np.int64)
    out[order] = np.arange(n) % folds
    return out


def check_folds(folds: int, n: int, where: str) -> None:
    """``folds`` must be at least 2 and at most the number of images."""
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise InvalidInput(f"--folds {folds!r}: needs at least 2 folds (one to hold out, one to train on)")
    if folds > n:
        raise InvalidInput(f"--folds {folds}: {where} has only {n} labelled training image(s); use at most {n}")


def out_of_fold(
    ws: Workspace,
    recipe: Recipe,
    *,
    folds: int = 5,
    progress: Progress | None = None,
) -> FoldPredictions:
    """Train ``folds`` networks with ``recipe`` on its dataset version's training split, each without one fold,
    and predict that fold. Raises ``InvalidInput`` for a task without labels to check, patch recipes and a
    fold count outside 2..images."""
    import lightning as L

    from gigavision.datasets.versions import open_version
    from gigavision.models.task import task_class
    from gigavision.train import data as tdata
    from gigavision.train.evaluate import predict_split
    from gigavision.train.trainer import _plain_batches, resolve_devices, training_sides
    from gigavision.train.transforms import build_transform

    if recipe.task not in FOLD_TASKS:
        raise InvalidInput(
            f"label errors: task {recipe.task!r} has no labels to check; use one of {', '.join(FOLD_TASKS)}"
        )
    if recipe.patch is not None:
        raise InvalidInput("label errors: patch recipes are not supported; use a whole-image recipe (no [patch])")
    version = open_version(ws, recipe.dataset)
    recipe = recipe.model_copy(update={"dataset": version.ref})
    if recipe.train_split not in version.splits:
        raise InvalidInput(
            f"dataset {version.ref} has no split {recipe.train_split!r}; it has {', '.join(version.splits)}"
        )
    recipe = resolve_image_size(recipe, training_sides(version, recipe.train_split))
    accelerator, _ = resolve_devices(recipe.model_copy(update={"devices": 1}))
    cls = task_class(recipe.task)
    task = cls(recipe, cls.label_map(version.classes(), recipe))
    task.bind(ws)
    size = recipe.input_size
    probe_net = task.build()
    mean, std = task.normalization(probe_net)
    train_tf = build_transform(recipe.augment, mean, std, size, boxes=recipe.task == "detect")
    eval_tf = build_transform(None, mean, std, size)
    data = tdata.split_data(task, version, recipe, recipe.train_split, train_tf, training=True)
    samples = data.dataset
    keep = list(samples.indices or range(len(samples)))
    check_folds(folds, len(keep), f"dataset {version.ref} ({recipe.train_split})")
    strata = None
    if recipe.task in ("classify", "probe") and data.targets is not None:
        strata = [str(_stratum(t)) for t in data.targets]
    fold_of = assign_folds(len(keep), folds, recipe.seed, strata)
    source = samples.source
    assert isinstance(source, tdata.WholeImages)
    sizes = source.images.sizes
    out = FoldPredictions(recipe.task, list(task.classes), version.ref, folds, size, left_out=data.left_out)
    results: dict[int, tuple[int, Annotations, Annotations]] = {}
    for k in range(folds):
        train_idx = [keep[i] for i in range(len(keep)) if fold_of[i] != k]
        held_idx = [keep[i] for i in range(len(keep)) if fold_of[i] == k]
        fold_progress = _sub_progress(progress, k, folds)
        L.seed_everything(recipe.seed + k, workers=True, verbose=False)
        net = task.build()
        fold_train = tdata.SampleDataset(task, source, train_tf, train_idx, samples.side)
        targets = [data.targets[i] for i in range(len(keep)) if fold_of[i] != k] if data.targets is not None else None
        if targets is not None:
            task.configure(targets)
        if samples.side is not None:
            task.fit_side(net, np.stack([samples.side[source.images.ids[i]] for i in train_idx]))
        fold_data = tdata.SplitData(recipe.train_split, fold_train, [], targets, 0)
        if not task.uses_trainer:
            net = task.fit(ws, _plain_batches(task, fold_data), fold_progress)
        else:
            net = _fit(task, net, recipe, fold_train, accelerator, fold_progress)
        held = tdata.SplitData(
            recipe.train_split, tdata.SampleDataset(task, source, eval_tf, held_idx, samples.side), [], None, 0
        )
        truths, preds = predict_split(task, net.cpu().eval(), held, recipe.batch_size)
        for index, truth, pred in zip(held_idx, truths, preds, strict=True):
            results[index] = (k, truth, pred)
        if progress is not None:
            progress(k + 1, folds, f"fold {k + 1}/{folds} predicted")
    for index in keep:
        k, truth, pred = results[index]
        width, height = (int(v) for v in sizes[index])
        out.image_ids.append(source.images.ids[index])
        out.fold.append(k)
        out.truths.append(truth)
        out.predictions.append(pred)
        out.scale.append(max(width, height) / size)
        out.sizes.append((width, height))
    return out


def _stratum(target: Any) -> Any:
    if isinstance(target, torch.Tensor):
        return int(target.argmax()) if target.ndim else int(target)
    return target


def _sub_progress(progress: Progress | None, k: int, folds: int) -> Progress | None:
    """Fold ``k``'s own progress mapped into the k-th slice of the whole run."""
    if progress is None:
        return None

    def report(done: float, total: float, message: str, /) -> None:
        share = (done / total) if total else 0.0
        progress(k + min(1.0, share), folds, f"fold {k + 1}/{folds}: {message}")

    return report


def _fit(
    task: Task, net: torch.nn.Module, recipe: Recipe, dataset: Any, accelerator: str, progress: Progress | None
) -> torch.nn.Module:
    """Train ``net`` on ``dataset`` for ``recipe.epochs`` as ``train`` does, without validation, checkpoints
    or logs (a fold model is thrown away once its fold is predicted)."""
    import lightning as L
    from lightning.pytorch.callbacks import Callback
    from torch.utils.data import DataLoader

    from gigavision.train import data as tdata
    from gigavision.train.module import TaskModule

    class FoldProgress(Callback):
        def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
            if progress is not None:
                per_epoch = max(1, int(trainer.num_training_batches))
                done = trainer.current_epoch * per_epoch + int(args[-1]) + 1
                progress(done, per_epoch * recipe.epochs, f"epoch {trainer.current_epoch + 1}/{recipe.epochs}")

    loader = DataLoader(
        dataset,
        batch_size=recipe.batch_size,
        sampler=tdata.EpochShuffle(len(dataset), recipe.seed),
        collate_fn=tdata.collate_for(task),
        drop_last=len(dataset) > recipe.batch_size,
        num_workers=recipe.num_workers,
    )
    module = TaskModule(task, net, recipe)
    with tempfile.TemporaryDirectory(prefix="gigavision-fold-") as root, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=r"You defined a `validation_step` but have no `val_dataloader`")
        warnings.filterwarnings("ignore", message=r".*LeafSpec.*")
        trainer = L.Trainer(
            max_epochs=recipe.epochs,
            accelerator=accelerator,
            devices=1,
            precision=recipe.precision if accelerator == "gpu" else "32",
            callbacks=[FoldProgress()],
            default_root_dir=root,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            deterministic=True,
        )
        trainer.fit(module, loader)
    if trainer.interrupted:
        raise InvalidInput("label errors: training a fold was interrupted")
    result: torch.nn.Module = module.net
    return result
