"""``train``: one call from a recipe to a published model directory, through Lightning.

The run lives in ``runs/<id>/`` until it is complete: Lightning checkpoints every epoch (``last.ckpt``, written
atomically) so ``resume=<id>`` continues a crashed or killed run from its last finished epoch and ends with the
same weights an uninterrupted run would have (per-epoch seeds, ``EpochShuffle``). When training ends, the best
epoch's weights are evaluated on the test split, exported to ONNX (checked against torch), and the model
folder is published into ``models/`` with one rename.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from gigavision import __version__
from gigavision.errors import InvalidInput, NotFound
from gigavision.models import store
from gigavision.models.card import ModelCard, ModelInput
from gigavision.models.recipe import Recipe, load_recipe, resolve_image_size
from gigavision.progress import Progress

if TYPE_CHECKING:
    import lightning as L

    from gigavision.datasets.versions import DatasetVersion
    from gigavision.models.task import SampleBatches, Task
    from gigavision.train.data import SplitData
    from gigavision.workspace import Workspace

KILL_AFTER_EPOCH_ENV = "GIGAVISION_FAULT_KILL_AFTER_EPOCH"  # fault injection for the resume test: SIGKILL


def resolve_devices(recipe: Recipe) -> tuple[str, int]:
    """(accelerator, devices) for Lightning; asking for GPUs on a machine without one is a clear error."""
    gpus = torch.cuda.device_count()
    if recipe.accelerator == "gpu" or (recipe.accelerator == "auto" and recipe.devices > 1):
        if gpus == 0:
            raise InvalidInput(
                f"--devices {recipe.devices} asks for GPUs but this machine has none;"
                " drop --devices (train on the CPU) or run on a machine with CUDA GPUs"
            )
        if recipe.devices > gpus:
            raise InvalidInput(f"--devices {recipe.devices} but this machine has {gpus} GPU(s); use --devices {gpus}")
        return "gpu", recipe.devices
    if recipe.accelerator == "auto" and gpus:
        return "gpu", 1
    return "cpu", 1


def _callbacks(run: Path, recipe: Recipe, progress: Progress | None, show_bar: bool, has_val: bool) -> list[Any]:
    from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, RichProgressBar

    class JobProgress(Callback):
        """Training progress as (steps done, steps in all epochs) for jobs; also where cancel takes effect."""

        def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
            if progress is not None:
                per_epoch = max(1, int(trainer.num_training_batches))
                epochs = int(trainer.max_epochs or 1)
                done = trainer.current_epoch * per_epoch + int(args[-1]) + 1
                progress(done, per_epoch * epochs, f"epoch {trainer.current_epoch + 1}/{epochs}")

    class KillAfterEpoch(Callback):
        """Fault injection (tests): SIGKILL this process once the checkpoint of epoch N is on disk."""

        def __init__(self, epoch: int) -> None:
            self.epoch = epoch

        def on_train_epoch_end(self, trainer: L.Trainer, *args: Any) -> None:
            if trainer.current_epoch + 1 >= self.epoch and (run / "last.ckpt").exists():
                os.kill(os.getpid(), signal.SIGKILL)

    monitor = "val_score" if has_val else None
    callbacks: list[Any] = [
        # best.ckpt by the validation score: the published weights, nothing else (no optimizer state, a third of
        # the bytes with Adam); last.ckpt every epoch: the whole training state, for --resume
        ModelCheckpoint(
            dirpath=run,
            filename="best",
            save_top_k=1 if has_val else 0,
            monitor=monitor,
            mode="max",
            save_weights_only=True,
        ),
        # (save_top_k=1 with no monitor keeps the newest; Lightning's save_last only follows another save)
        ModelCheckpoint(dirpath=run, filename="last", save_top_k=1, enable_version_counter=False),
        JobProgress(),
    ]
    if recipe.patience and has_val:
        callbacks.append(EarlyStopping(monitor="val_score", mode="max", patience=recipe.patience))
    if show_bar:
        callbacks.append(RichProgressBar(leave=False))
    kill = os.environ.get(KILL_AFTER_EPOCH_ENV)
    if kill:
        callbacks.append(KillAfterEpoch(int(kill)))
    return callbacks


def _atomic_io() -> Any:
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    from gigavision.files import atomic_path

    class AtomicCheckpointIO(TorchCheckpointIO):
        """Checkpoints written to a temporary file and renamed: a kill mid-write keeps the previous one."""

        def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
            with atomic_path(path) as tmp:
                super().save_checkpoint(checkpoint, tmp, storage_options)

    return AtomicCheckpointIO()


@dataclass
class _Run:
    """What the end of training needs: where the run lives and what it trained."""

    ws: Workspace
    folder: Path
    model_id: str
    task: Task
    recipe: Recipe
    version: DatasetVersion
    mean: tuple[float, ...]
    std: tuple[float, ...]
    size: int
    eval_tf: Any
    val: SplitData | None
    started: float


def train(
    ws: Workspace,
    recipe: Recipe,
    *,
    model_id: str | None = None,
    resume: str | None = None,
    progress: Progress | None = None,
    show_bar: bool = False,
) -> store.ModelInfo:
    """Train ``recipe`` and publish ``models/<id>``; ``resume=<id>`` continues that run from its last epoch."""
    import lightning as L
    from torch.utils.data import DataLoader

    from gigavision.datasets.versions import open_version
    from gigavision.models.task import task_class
    from gigavision.train import data as tdata
    from gigavision.train.module import TaskModule, eval_collate
    from gigavision.train.transforms import build_transform

    started = time.monotonic()
    if resume is not None:
        folder = store.runs_dir(ws) / store.check_model_id(resume)
        if not (folder / store.RECIPE_JSON).is_file():
            raise NotFound(f"no interrupted run {resume!r} in {store.runs_dir(ws)} to resume")
        recipe = load_recipe(base=_read_json(folder / store.RECIPE_JSON))  # the saved recipe wins
        model_id = resume
    version = open_version(ws, recipe.dataset)
    recipe = recipe.model_copy(update={"dataset": version.ref})
    recipe = resolve_image_size(recipe, training_sides(version, recipe.train_split))
    accelerator, devices = resolve_devices(recipe)
    cls = task_class(recipe.task)
    task = cls(recipe, cls.label_map(version.classes(), recipe))
    task.bind(ws)
    task.nets  # noqa: B018 - the torch half checks the architecture now, before any data is read
    if model_id is None:
        model_id = store.new_model_id(ws, version.name, recipe.task)
    if (store.models_dir(ws) / store.check_model_id(model_id)).exists():
        raise InvalidInput(f"model {model_id} already exists; pass another --id")
    folder = store.runs_dir(ws) / model_id
    if resume is None and (folder / store.RECIPE_JSON).exists():
        raise InvalidInput(
            f"an interrupted run {model_id} exists; continue it with --resume {model_id}, or pass another --id"
        )

    L.seed_everything(recipe.seed, workers=True, verbose=False)
    net = task.build()
    mean, std = task.normalization(net)
    size = recipe.input_size
    train_tf = build_transform(recipe.augment, mean, std, size, boxes=recipe.task == "detect")
    eval_tf = build_transform(None, mean, std, size)
    train_data = tdata.split_data(task, version, recipe, recipe.train_split, train_tf, training=True)
    if len(train_data.dataset) == 0:
        raise InvalidInput(
            f"dataset {version.ref} has no labelled items for {recipe.task} in split {recipe.train_split!r}"
            f" ({train_data.left_out} image(s) without a usable label); annotate, then create a new version"
        )
    if train_data.targets is not None:
        task.configure(train_data.targets)
    if train_data.dataset.side is not None:
        task.fit_side(net, np.stack(list(train_data.dataset.side.values())))
    val_data = _optional_split(task, version, recipe, recipe.val_split, eval_tf)
    folder.mkdir(exist_ok=True)
    store.write_json(folder / store.RECIPE_JSON, recipe.resolved())
    run = _Run(ws, folder, model_id, task, recipe, version, mean, std, size, eval_tf, val_data, started)

    if not task.uses_trainer:
        return _finish(run, task.fit(ws, _plain_batches(task, train_data), progress), progress)

    loader_args: dict[str, Any] = {"num_workers": recipe.num_workers, "persistent_workers": False}
    train_loader = DataLoader(
        train_data.dataset,
        batch_size=recipe.batch_size,
        sampler=tdata.EpochShuffle(len(train_data.dataset), recipe.seed, **_batch_groups(task, train_data)),
        collate_fn=tdata.collate_for(task),
        drop_last=len(train_data.dataset) > recipe.batch_size,
        **loader_args,
    )
    val_loader = None
    if val_data is not None:
        val_set = tdata.EvalDataset(val_data.dataset, eval_tf)
        val_loader = DataLoader(val_set, batch_size=recipe.batch_size, collate_fn=eval_collate, **loader_args)
    module = TaskModule(task, net, recipe)
    trainer = L.Trainer(
        max_epochs=recipe.epochs,
        accelerator=accelerator,
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        precision=recipe.precision if accelerator == "gpu" else "32",
        callbacks=_callbacks(folder, recipe, progress, show_bar, val_data is not None),
        plugins=[_atomic_io()],
        default_root_dir=str(folder),
        logger=_logger(folder),
        enable_progress_bar=show_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        deterministic=True,
        log_every_n_steps=max(1, min(50, len(train_loader))),
    )
    last = folder / "last.ckpt"
    with warnings.catch_warnings():
        # the run folder holds recipe.json (and, resumed, the old checkpoints) on purpose
        warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
        warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists and is not empty")
        trainer.fit(module, train_loader, val_loader, ckpt_path=str(last) if resume and last.exists() else None)
    if trainer.interrupted:
        raise InvalidInput(f"training {model_id} was interrupted; resume it with --resume {model_id}")
    best = folder / "best.ckpt"
    if val_data is not None and best.exists():
        module.load_state_dict(torch.load(best, map_location="cpu", weights_only=True)["state_dict"])
    return _finish(run, module.net.cpu().eval(), progress)


def training_sides(version: DatasetVersion, split: str) -> Iterator[int]:
    """The longest side (level-0 pixels) of each image of ``split`` (all images when the version lacks it)."""
    for entry in version.images(split if split in version.splits else None):
        yield max(entry.width, entry.height)


def _plain_batches(task: Task, data: SplitData) -> SampleBatches:
    """``data``'s samples without augmentation, for tasks that fit themselves (probe: features, once)."""

    def batches(mean: Sequence[float], std: Sequence[float], batch_size: int) -> tuple[Iterable[Any], int]:
        from torch.utils.data import DataLoader

        from gigavision.train.data import SampleDataset, collate_for
        from gigavision.train.transforms import build_transform

        train = data.dataset
        plain = SampleDataset(
            task, train.source, build_transform(None, mean, std, task.recipe.input_size), train.indices
        )
        return DataLoader(plain, batch_size=batch_size, collate_fn=collate_for(task)), len(plain)

    return batches


def _optional_split(task: Task, version: DatasetVersion, recipe: Recipe, split: str, tf: Any) -> SplitData | None:
    """A validation/test split, or None when the version has none or it holds no usable sample."""
    from gigavision.train.data import split_data

    if split not in version.splits or not any(True for _ in version.images(split)):
        return None
    data = split_data(task, version, recipe, split, tf, training=False)
    return data if len(data.dataset) else None


def _logger(folder: Path) -> Any:
    from lightning.pytorch.loggers import CSVLogger

    return CSVLogger(str(folder), name="logs", version="")


def _read_json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _finish(run: _Run, net: torch.nn.Module, progress: Progress | None) -> store.ModelInfo:
    """Calibrate on validation, evaluate on test, export ONNX, write the model folder and publish it."""
    from gigavision.models.onnx_export import export_onnx
    from gigavision.train.evaluate import evaluate_network, predict_split, write_evaluation

    task, recipe, version = run.task, run.recipe, run.version
    if run.val is not None:
        task.calibrate(*predict_split(task, net, run.val, recipe.batch_size))
    staging = run.folder / "model"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    torch.save({"state_dict": net.state_dict()}, staging / store.CHECKPOINT)
    store.write_json(staging / store.RECIPE_JSON, recipe.resolved())
    test = _optional_split(task, version, recipe, recipe.test_split, run.eval_tf)
    split = recipe.test_split
    if test is None and run.val is not None:
        test, split = run.val, recipe.val_split
    metrics: dict[str, Any] = {}
    headline = None
    if test is not None:
        evaluation, examples = evaluate_network(task, net, test, recipe.batch_size, progress)
        title = f"{run.model_id} on {version.ref} ({split})"
        metrics = write_evaluation(evaluation, staging, title, examples, split)
        headline = evaluation.headline
    onnx_diff = export_onnx(task, net, staging / store.ONNX_FILE, run.size)
    ModelCard(
        id=run.model_id,
        task=task.name,
        arch=task.arch,
        classes=task.classes,
        dataset=version.ref,
        dataset_hash=version.content_hash,
        input=ModelInput(
            size=run.size,
            mean=run.mean,
            std=run.std,
            patch=recipe.patch,
            side_features=list(recipe.side_features),
        ),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        headline=headline,
        metrics={k: v for k, v in metrics.items() if isinstance(v, int | float | str | None)},
        evaluated_on=split if test is not None else None,
        task_state=task.state(),
        onnx_max_abs_diff=onnx_diff,
        gigavision_version=__version__,
        train_seconds=round(time.monotonic() - run.started, 1),
    ).write(staging)
    info = store.publish(run.ws, staging, run.model_id)
    shutil.rmtree(run.folder, ignore_errors=True)
    return info


def _batch_groups(task: Task, data: SplitData) -> dict[str, Any]:
    """``EpochShuffle`` arguments that batch ``samples_per_class`` samples of a class together for tasks that
    learn from pairs within a batch (embed); nothing for the others."""
    if task.samples_per_class <= 1 or data.targets is None:
        return {}
    return {"groups": [int(t) for t in data.targets], "per_group": task.samples_per_class}
