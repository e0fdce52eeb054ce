"""``/api/v1/models``: train (a job), list, show, the HTML evaluation report, evaluate (a job).

Training and evaluation run as background jobs (202 + the job record; follow ``/api/v1/jobs/{id}``). The
recipe is validated in the request, so a typo in a field is a 400 naming it, not a failed job; what needs the
data (the dataset version exists, has labels) is checked by the job, which fails with that reason.
No torch import here: the API starts fast; the worker loads torch when a job runs.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from gigavision.errors import InvalidInput, NotFound
from gigavision.extras import require
from gigavision.models import store
from gigavision.server.auth import Allow, LoginDep, acting_as
from gigavision.server.deps import WorkspaceDep
from gigavision.server.uploads import FILE_PROPERTY, ReceivedForm, json_object, multipart_body, read_body, receive_form
from gigavision.train.jobs import reserve_model_id, saved_recipe
from gigavision.train.recipe import IMAGE_SIZE_MAX, Recipe, load_recipe

if TYPE_CHECKING:
    from gigavision.store.roles import Login
    from gigavision.workspace import Workspace

router = APIRouter(prefix="/api/v1/models", tags=["models"])

# The report is self-contained (inline SVG and styles, data: thumbnails, no script): allow nothing else.
REPORT_CSP = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'none'; object-src 'none'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'self'; sandbox"
)
_CONTROL_KEYS = ("id", "resume", "actor")
TRAIN_EXAMPLE = {"task": "classify", "dataset": "digits@1", "arch": "resnet18", "epochs": 5, "image_size": 64}


class ModelList(BaseModel):
    items: list[dict[str, Any]]
    count: int


class EvaluateRequest(BaseModel):
    dataset: str = Field(min_length=1, max_length=200, description="dataset version NAME@N")
    split: str = Field("test", min_length=1, max_length=64)
    actor: str = Field("anonymous", min_length=1, max_length=256)


def _record(info: store.ModelInfo) -> dict[str, Any]:
    data = info.as_dict()
    data["urls"] = {"self": f"/api/v1/models/{info.id}", "report": f"/api/v1/models/{info.id}/report"}
    return data


TRAIN_BODY: dict[str, Any] = multipart_body(
    ("POST", f"{router.prefix}/train"),
    {
        "recipe": {"type": "string", "description": "the JSON body's object as text: recipe fields, id, actor"},
        "weights": FILE_PROPERTY,
    },
    ["recipe", "weights"],
    "JSON: recipe fields (weights: the id of a model of this workspace), or multipart: the recipe as text and "
    "a weights file to start from (.safetensors, or a weights_only torch file .pt/.pth/.ckpt)",
)
TRAIN_BODY["requestBody"]["content"]["application/json"] = {
    "schema": {"type": "object", "additionalProperties": True},
    "examples": {"classify": {"value": TRAIN_EXAMPLE}},
}
MAX_JSON_BYTES = 1024 * 1024  # a recipe; weights travel as multipart
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt")


@router.post(
    "/train",
    dependencies=[Allow("train")],
    status_code=202,
    openapi_extra=TRAIN_BODY,
    responses={400: {}, 404: {}, 409: {}, 413: {}},
)
async def train_model(request: Request, ws: WorkspaceDep, login: LoginDep) -> dict[str, Any]:
    """Queue a training. Body: recipe fields (``task``, ``dataset`` NAME@N, ``arch``, ``epochs``, …, nested
    ``augment``/``patch`` tables), plus optional ``id`` (the model id) and ``actor``; or ``{"resume": RUN_ID}``
    to continue an interrupted run. ``weights`` names a model of this workspace (never a path on the server);
    to start from a weights file, send multipart: ``recipe`` (that JSON object as text) and the file ``weights``.
    ``batch_size`` × input pixels is at most ``limits.max_train_batch_pixels``. The job's result holds the model
    record."""
    require("train", feature="POST /api/v1/models/train")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json":
        body = _json_object(await read_body(request, MAX_JSON_BYTES, "a training request"))
        return await run_in_threadpool(_queue_training, ws, login, body, None)
    if kind != "multipart/form-data":
        raise InvalidInput(f"send application/json (a recipe), or multipart/form-data (recipe + weights), not {kind}")
    async with receive_form(request, ws.root, ws.settings.limits.max_upload_bytes, file_field="weights") as form:
        body = _json_object(form.fields.get("recipe", "").encode(), "recipe")
        if form.file is None:
            raise InvalidInput("weights: a multipart training carries the weights file in field weights")
        return await run_in_threadpool(_queue_training, ws, login, body, form)


def _json_object(raw: bytes, where: str = "the body") -> dict[str, Any]:
    return json_object(raw, where, "must be a JSON object of recipe fields")


def _queue_training(ws: Workspace, login: Login, body: dict[str, Any], upload: ReceivedForm | None) -> dict[str, Any]:
    fields = {k: v for k, v in body.items() if k not in _CONTROL_KEYS}
    actor = acting_as(login, str(body.get("actor") or "anonymous"))
    if body.get("resume"):
        if fields or upload is not None:
            dropped = sorted(fields) + (["the weights file"] if upload is not None else [])
            raise InvalidInput(f"resume continues a run with its saved recipe; drop {', '.join(dropped)}")
        run_id = str(body["resume"])
        saved_recipe(ws, run_id)  # 404 now when there is no such run
        return dict(ws.jobs.submit("train", {"resume": run_id}, actor))
    suffix = ""
    if upload is not None:
        assert upload.file is not None and upload.filename is not None
        if fields.get("weights") is not None:
            raise InvalidInput("weights: name a model or upload a file, not both")
        suffix = Path(upload.filename).suffix.lower()
        if suffix not in WEIGHT_SUFFIXES:
            raise InvalidInput(f"weights {upload.filename}: upload one of {', '.join(WEIGHT_SUFFIXES)}")
        if upload.size == 0:
            raise InvalidInput(f"weights {upload.filename}: empty upload (0 bytes)")
    elif fields.get("weights") is not None:
        fields["weights"] = _workspace_weights(ws, fields["weights"])
    recipe = load_recipe(base=fields)
    _check_batch_pixels(recipe, ws.settings.limits.max_train_batch_pixels)
    model_id = reserve_model_id(ws, recipe, str(body["id"]) if body.get("id") else None)
    if upload is not None and upload.file is not None:
        # kept in the run's own folder (same file system: a rename), which training removes once it publishes
        start = store.runs_dir(ws) / model_id / f"weights{suffix}"
        shutil.move(upload.file, start)
        recipe = recipe.model_copy(update={"weights": str(start)})
    return dict(ws.jobs.submit("train", {"recipe": recipe.resolved(), "model_id": model_id}, actor))


def _workspace_weights(ws: Workspace, ref: Any) -> str:
    """REST training starts from a model of this workspace (its id), never from a path on the server: the
    checkpoint file of that model."""
    try:
        store.check_model_id(ref if isinstance(ref, str) else "")  # a model folder's name: no path
    except InvalidInput as exc:
        raise InvalidInput(
            f"weights must be the id of a model of this workspace (GET /api/v1/models), not a path: {str(ref)[:80]!r}"
        ) from exc
    info = store.get_model(ws, ref)  # 404 for an unknown id
    checkpoint = info.path / store.CHECKPOINT
    if not checkpoint.is_file():
        raise NotFound(f"model {ref} has no {store.CHECKPOINT} to start from")
    return str(checkpoint)


def _check_batch_pixels(recipe: Recipe, limit: int) -> None:
    """``batch_size`` × input pixels bounds a training step's memory: at most ``limits.max_train_batch_pixels``.
    An unset ``image_size`` is derived when training starts, at most ``IMAGE_SIZE_MAX``: checked at that."""
    side = recipe.input_size if recipe.patch is not None or recipe.image_size is not None else IMAGE_SIZE_MAX
    pixels = recipe.batch_size * side * side
    if pixels > limit:
        raise InvalidInput(
            f"batch_size {recipe.batch_size} x image_size {side}x{side} = {pixels:,} pixels per batch is over "
            f"limits.max_train_batch_pixels ({limit:,}): lower batch_size or image_size"
        )


@router.get("", dependencies=[Allow("data.read")], response_model=ModelList)
def list_models(ws: WorkspaceDep) -> ModelList:
    """Published models, newest first."""
    items = [_record(m) for m in store.list_models(ws)]
    return ModelList(items=items, count=len(items))


@router.get("/{model_id}", dependencies=[Allow("data.read")])
def show_model(model_id: str, ws: WorkspaceDep) -> dict[str, Any]:
    """Task, architecture, classes, input size/normalisation, dataset lineage, headline metric and metrics."""
    return _record(store.get_model(ws, model_id))


@router.get("/{model_id}/report", dependencies=[Allow("data.read")], response_class=HTMLResponse)
def model_report(model_id: str, ws: WorkspaceDep) -> Response:
    """The evaluation report written at training time (self-contained HTML, served under a strict CSP)."""
    info = store.get_model(ws, model_id)
    path = info.path / store.REPORT_HTML
    if not path.is_file():
        raise NotFound(f"model {model_id} has no report (it had no test or validation split to evaluate)")
    return HTMLResponse(
        path.read_text(encoding="utf-8"),
        headers={"Content-Security-Policy": REPORT_CSP, "X-Content-Type-Options": "nosniff"},
    )


@router.post("/{model_id}/evaluate", dependencies=[Allow("train")], status_code=202)
def evaluate_model(model_id: str, body: EvaluateRequest, ws: WorkspaceDep, login: LoginDep) -> dict[str, Any]:
    """Queue an evaluation on a dataset version's split; metrics.json and report.html become the job's files."""
    require("train", feature=f"POST /api/v1/models/{model_id}/evaluate")
    store.get_model(ws, model_id)  # 404 now for an unknown model
    params = {"model": model_id, "dataset": body.dataset, "split": body.split}
    return dict(ws.jobs.submit("evaluate", params, acting_as(login, body.actor)))
