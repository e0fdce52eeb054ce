"""Evaluate a published model on any dataset version and split (``gigavision evaluate``, compare, sweeps).

The model is scored exactly the way training scored its test split (same samples, letterbox or patch grid,
normalisation and ``task.evaluate``), so a number here is comparable with the one in the model's metrics.json.
The model folder is never written: results go to a folder the caller names (or nowhere).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gigavision.errors import InvalidInput
from gigavision.progress import Progress

if TYPE_CHECKING:
    from gigavision.models.store import ModelInfo
    from gigavision.workspace import Workspace


def default_out(ws: Workspace, model_id: str, dataset_ref: str, split: str) -> Path:
    """``<workspace>/evaluations/<model>-<dataset@N>-<split>/``."""
    name = re.sub(r"[^A-Za-z0-9._@-]", "_", f"{model_id}-{dataset_ref}-{split}")
    return Path(ws.root) / "evaluations" / name


def evaluated_on(info: ModelInfo) -> tuple[str, str | None]:
    """(dataset version, split) the model's stored metrics were computed on."""
    return info.dataset, info.card.evaluated_on


def evaluate_model(
    ws: Workspace,
    info: ModelInfo,
    dataset: str,
    split: str = "test",
    *,
    out: Path | None = None,
    batch_size: int | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Metrics of ``info`` on ``split`` of ``dataset`` (NAME@N); with ``out``, also metrics.json + report.html.

    Returns ``{"model", "dataset", "split", "headline", "metrics", "out"}``.
    """
    from gigavision.datasets.versions import open_version
    from gigavision.train.data import split_data
    from gigavision.train.evaluate import evaluate_network
    from gigavision.train.transforms import build_transform

    version = open_version(ws, dataset)
    task, net = info.load_network()
    recipe = info.recipe().model_copy(update={"dataset": version.ref})
    wanted = task.label_map(version.classes(), recipe)
    if not set(wanted) & set(task.classes):
        raise InvalidInput(
            f"dataset {version.ref} has none of model {info.id}'s classes ({', '.join(task.classes[:10])});"
            " evaluate on a version of the data it was trained for"
        )
    size = info.input.size
    transform = build_transform(None, info.input.mean, info.input.std, size)
    data = split_data(task, version, recipe, split, transform, training=False)
    if len(data.dataset) == 0:
        raise InvalidInput(f"split {split!r} of {version.ref} has no sample usable by a {task.name} model")
    evaluation, examples = evaluate_network(task, net, data, batch_size or recipe.batch_size, progress)
    written: str | None = None
    if out is not None:
        metrics = _write(evaluation, examples, out, f"{info.id} on {version.ref} ({split})", split)
        written = str(out)
    else:
        from gigavision.metrics._common import jsonable

        metrics = {**dict(jsonable(evaluation.metrics)), "split": split, "headline": evaluation.headline}
    return {
        "model": info.id,
        "dataset": version.ref,
        "split": split,
        "headline": evaluation.headline,
        "metrics": metrics,
        "out": written,
    }


def _write(evaluation: Any, examples: Any, out: Path, title: str, split: str) -> dict[str, Any]:
    """Write into a sibling temporary folder, then swap it in: ``out`` is complete or as it was."""
    from gigavision.train.evaluate import write_evaluation

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        metrics = write_evaluation(evaluation, tmp, title, examples, split)
        if out.is_dir():
            for f in tmp.iterdir():
                f.replace(out / f.name)  # keep other files a user put in --out DIR
            tmp.rmdir()
        elif out.exists():
            raise InvalidInput(f"--out {out} exists and is not a folder")
        else:
            tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return metrics
