"""Training and evaluation as background jobs (kinds ``train`` and ``evaluate`` in ``gigavision.jobs``).

``run_train`` reports Lightning's step progress through ``ctx.progress``, which is also where a cancel takes
effect: a cancelled or failed job leaves its run in ``runs/<id>/`` (``{"resume": "<id>"}`` continues it) and
nothing in ``models/`` — the trainer publishes a model folder with one rename, only once it is complete.

Model ids are reserved when the job is *submitted* (``reserve_model_id`` creates an empty ``runs/<id>/``), so
jobs queued back to back never pick the same id and the caller learns the id before the job starts. The
trainer takes an empty ``runs/<id>/`` as a fresh run (an interrupted one has ``recipe.json``); a job that fails
before training starts hands its empty reservation back.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gigavision.errors import Conflict, InvalidInput, NotFound
from gigavision.models import store
from gigavision.train.recipe import Recipe, load_recipe

if TYPE_CHECKING:
    from gigavision.jobs.context import JobContext
    from gigavision.workspace import Workspace

TRAIN_KEYS = ("recipe", "model_id", "resume")
EVALUATE_KEYS = ("model", "dataset", "split")


def reserve_model_id(ws: Workspace, recipe: Recipe, model_id: str | None = None) -> str:
    """Claim ``runs/<id>/`` for a new training (``model_id`` or the next ``<dataset>-<task>-<k>``)."""
    if model_id is not None:
        store.check_model_id(model_id)
        if (store.models_dir(ws) / model_id).exists():
            raise Conflict(f"model {model_id} already exists; choose another id")
        try:
            (store.runs_dir(ws) / model_id).mkdir()
        except FileExistsError as exc:
            raise Conflict(f'a run {model_id} exists already; resume it with "resume": {model_id!r}') from exc
        return model_id
    for _ in range(100):  # mkdir is the atomic claim; lose a race, take the next number
        candidate = store.new_model_id(ws, recipe.dataset.split("@")[0], recipe.task)
        with contextlib.suppress(FileExistsError):
            (store.runs_dir(ws) / candidate).mkdir()
            return candidate
    raise Conflict("could not reserve a model id; try again")


def _release(ws: Workspace, model_id: str) -> None:
    """Drop a reserved run folder that training never started (no recipe written in it)."""
    folder = store.runs_dir(ws) / model_id
    if folder.is_dir() and not (folder / store.RECIPE_JSON).exists():
        with contextlib.suppress(OSError):
            folder.rmdir()


def run_train(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    """``params``: ``{"recipe": {...fields}, "model_id": id}`` or ``{"resume": run id}``; returns the model."""
    unknown = sorted(set(params) - set(TRAIN_KEYS))
    if unknown:
        raise InvalidInput(f"unknown train job parameters {unknown}; known: {', '.join(TRAIN_KEYS)}")
    from gigavision.train.trainer import train

    ws = ctx.workspace
    resume = params.get("resume")
    if resume:
        info = train(ws, saved_recipe(ws, str(resume)), resume=str(resume), progress=ctx.progress)
    else:
        recipe = load_recipe(base=params.get("recipe") or {})
        model_id = params.get("model_id")
        try:
            info = train(ws, recipe, model_id=model_id, progress=ctx.progress)
        except BaseException:
            if model_id:
                _release(ws, str(model_id))
            raise
    return {"model": info.id, **info.as_dict()}


EVALUATE_PIPELINE = "gigavision.infer.pipeline_eval:evaluate_pipeline"


def run_evaluate(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    """``params``: ``{"model", "dataset": NAME@N, "split": "test"}``; metrics.json and report.html become the
    job's output files (``/api/v1/jobs/{id}/files/report.html``)."""
    unknown = sorted(set(params) - set(EVALUATE_KEYS))
    if unknown:
        raise InvalidInput(f"unknown evaluate job parameters {unknown}; known: {', '.join(EVALUATE_KEYS)}")
    if not params.get("model") or not params.get("dataset"):
        raise InvalidInput("an evaluate job needs a model and a dataset (NAME@N)")
    from gigavision.registry import import_path
    from gigavision.train.assess import evaluate_model

    info = store.get_model(ctx.workspace, str(params["model"]))
    out = Path(ctx.output_dir)
    # a pipeline predicts through infer's request, a layer up: named, not imported
    evaluate = import_path(EVALUATE_PIPELINE) if info.task == store.PIPELINE else evaluate_model
    return evaluate(
        ctx.workspace,
        info,
        str(params["dataset"]),
        str(params.get("split") or "test"),
        out=out,
        progress=ctx.progress,
    ) | {"out": None}


def saved_recipe(ws: Workspace, run_id: str) -> Recipe:
    """The recipe an interrupted run was started with (what ``resume`` continues)."""
    path = store.runs_dir(ws) / store.check_model_id(run_id) / store.RECIPE_JSON
    if not path.is_file():
        runs = sorted(p.name for p in store.runs_dir(ws).iterdir() if (p / store.RECIPE_JSON).is_file())
        hint = f"; interrupted runs: {', '.join(runs[:10])}" if runs else "; there is no interrupted run"
        raise NotFound(f"no interrupted run {run_id!r} to resume{hint}")
    return load_recipe(base=json.loads(path.read_text(encoding="utf-8")))
