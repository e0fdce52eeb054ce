"""Active learning (issue 14): choose the next images worth labelling, as review tasks.

``POST /api/v1/active/select`` runs ``active.pool_selection.select_images`` in the request by default (a
classifier over a few thousand small images takes seconds on a CPU); ``"background": true`` runs it as an
``active-select`` job with progress instead (202 with the job record, see ``/api/v1/jobs``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from gigavision.active.pool_selection import SelectRequest, select_images
from gigavision.datasets.spec import DEFAULT_DUP_DISTANCE
from gigavision.server.auth import Allow, LoginDep, acting_as
from gigavision.server.deps import WorkspaceDep

router = APIRouter(prefix="/api/v1/active", tags=["active learning"])
JOB_KIND = "active-select"  # jobs/registry.py: gigavision.active.pool_selection:run_select


class SelectBody(BaseModel):
    budget: int = Field(ge=1, le=1_000_000, description="how many images to pick (more than the pool: all of it)")
    strategy: str = Field(
        "hybrid", description="entropy | margin | least-confidence | coreset | badge | hybrid | random"
    )
    model: str | None = Field(None, description="model id, prefix or alias; null: cold start (coreset or random)")
    pool: list[str] = Field(
        default_factory=list, description="key=value[,value...]: image (name glob), image_id, meta:KEY, dataset"
    )
    seed: int = Field(0, ge=0, lt=2**63)
    dup_distance: int | None = Field(
        DEFAULT_DUP_DISTANCE, ge=-1, le=32, description="near-duplicates: perceptual-hash bits; null or -1: off"
    )
    dry_run: bool = Field(False, description="only report the picks, create no tasks")
    actor: str = Field("anonymous", min_length=1, max_length=256)
    background: bool = Field(False, description="run as a job: 202 with the job record (see /api/v1/jobs)")


@router.post("/select", dependencies=[Allow("deploy")])
def select(body: SelectBody, ws: WorkspaceDep, response: Response, login: LoginDep) -> dict[str, Any]:
    """Pick the images most worth labelling and create a ``selected`` review task for each."""
    request = SelectRequest(
        budget=body.budget,
        strategy=body.strategy,
        model=body.model,
        pool=tuple(body.pool),
        seed=body.seed,
        dup_distance=None if body.dup_distance in (None, -1) else body.dup_distance,
        create_tasks=not body.dry_run,
    )
    actor = acting_as(login, body.actor)
    if body.background:
        response.status_code = 202
        params = {
            "budget": request.budget,
            "strategy": request.strategy,
            "model": request.model,
            "pool": list(request.pool),
            "seed": request.seed,
            "dup_distance": request.dup_distance,
            "create_tasks": request.create_tasks,
        }
        return dict(ws.jobs.submit(JOB_KIND, params, actor))
    return select_images(ws, request, actor=actor)
