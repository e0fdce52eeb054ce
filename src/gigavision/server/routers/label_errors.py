"""Finding label errors (issue 14): out-of-fold predictions rank suspected wrong labels.

``POST /api/v1/label-errors`` queues a ``label-errors`` job (202 + the job record; follow
``/api/v1/jobs/{id}``: its progress goes fold by fold, its result holds the ranked suspects and the suggested
cut). What needs no training is refused in the request: an unknown dataset version (404), a task without
labels to check, a patch or multi-label recipe, a fold count below 2 or above the training images (400).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from gigavision.active.label_errors import JOB_KIND, check_request
from gigavision.extras import require
from gigavision.models.recipe import load_recipe
from gigavision.server.auth import Allow, LoginDep, acting_as
from gigavision.server.deps import WorkspaceDep

router = APIRouter(prefix="/api/v1/label-errors", tags=["label errors"])


class LabelErrorsRequest(BaseModel):
    dataset: str = Field(min_length=1, max_length=200, description="Dataset version NAME@N (its training split).")
    recipe: dict[str, Any] = Field(
        description="Training recipe fields (task, arch, epochs, image_size, ...); dataset comes from `dataset`.",
        examples=[{"task": "classify", "arch": "resnet18", "epochs": 6, "image_size": 32}],
    )
    folds: int = Field(5, description="k: k models, each trained without one fold and predicting it (2..images).")
    tasks: bool = Field(False, description="Create review tasks (reason suspect) for the suggested cut.")
    limit: int | None = Field(None, ge=0, description="With tasks: this many suspects instead of the cut.")
    actor: str | None = Field(None, max_length=256)


@router.post("", dependencies=[Allow("deploy")], status_code=202, responses={400: {}, 404: {}})
async def find_label_errors(body: LabelErrorsRequest, ws: WorkspaceDep, login: LoginDep) -> dict[str, Any]:
    """Queue label-error finding over a dataset version's training split with a training recipe."""
    require("train", feature="POST /api/v1/label-errors")
    actor = acting_as(login, body.actor)
    recipe = load_recipe(overrides={**body.recipe, "dataset": body.dataset})

    def queue() -> dict[str, Any]:
        ref = check_request(ws, recipe, body.folds)
        params = {
            "recipe": recipe.model_copy(update={"dataset": ref}).resolved(),
            "folds": body.folds,
            "tasks": body.tasks,
            "limit": body.limit,
        }
        return dict(ws.jobs.submit(JOB_KIND, params, actor))

    return await run_in_threadpool(queue)
