"""Deployment (issue 14): model aliases with promote / rollback and their history, retraining loops.

- ``GET /api/v1/aliases`` · ``GET /api/v1/aliases/{name}`` · ``GET /api/v1/aliases/{name}/history``
- ``PUT /api/v1/aliases/{name}`` (set) · ``POST …/promote`` · ``POST …/rollback`` · ``DELETE …`` (``deploy``)
- ``POST /api/v1/loops`` (``deploy``) · ``GET /api/v1/loops`` · ``GET /api/v1/loops/{name}``
- ``POST /api/v1/loops/{name}/run`` (``deploy``): a ``loop`` job (202; follow ``/api/v1/jobs/{id}``)
- ``PATCH /api/v1/loops/{name}`` (``deploy``): ``{"enabled": false}`` stops its automatic rounds

A move names the alias ``version`` it was decided on (optional): when the alias moved since, 409 with where it
points now. The logic is ``gigavision.models.aliases`` and ``gigavision.active.loop``; these routes translate.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from gigavision.active import loop
from gigavision.errors import GigavisionError
from gigavision.extras import require
from gigavision.models import aliases, store
from gigavision.server.auth import Allow, LoginDep, acting_as
from gigavision.server.deps import WorkspaceDep
from gigavision.workspace import Workspace

router = APIRouter(prefix="/api/v1", tags=["deployment"])

ActorField = Field(None, max_length=256, description="who acts (without users); else the login")
VersionField = Field(None, ge=1, description="the alias version this move was decided on (409 when it moved since)")


class SetAlias(BaseModel):
    model: str = Field(min_length=1, max_length=200, description="model id (or unique prefix, or another alias)")
    force: bool = Field(False, description="allow a model of another task or label set than the one served")
    reason: str = Field("", max_length=10_000)
    version: int | None = VersionField
    actor: str | None = ActorField


class PromoteAlias(BaseModel):
    model: str = Field(min_length=1, max_length=200, description="model id (or unique prefix)")
    reason: str = Field("", max_length=10_000)
    evidence: dict[str, Any] | None = Field(None, description="what the decision rests on (free JSON)")
    version: int | None = VersionField
    actor: str | None = ActorField


class RollbackAlias(BaseModel):
    reason: str = Field("", max_length=10_000)
    version: int | None = VersionField
    actor: str | None = ActorField


class CreateLoop(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    dataset: str = Field(min_length=1, max_length=64, description="dataset NAME: each round freezes its next version")
    recipe: dict[str, Any] = Field(description="training recipe fields (task, arch, epochs, …; dotted keys allowed)")
    every: int = Field(200, ge=1, le=10_000_000, description="run when this many new labels exist")
    metric: str | None = Field(None, max_length=64, description="compared metric (default: accuracy / map50)")
    margin: float = Field(0.0, gt=-1, lt=1, description="promote when better by more than this")
    alias: str = Field("production", min_length=1, max_length=64)
    warm_start: bool = False
    actor: str | None = ActorField


class UpdateLoop(BaseModel):
    enabled: bool = Field(description="whether rounds start on their own when the loop is due")


class RunLoop(BaseModel):
    force: bool = Field(False, description="run even when fewer than 'every' new labels exist")
    actor: str | None = ActorField


def _alias_record(ws: Workspace, alias: aliases.Alias) -> dict[str, Any]:
    try:
        dataset: str | None = store.get_model(ws, alias.model_id).dataset
    except GigavisionError:
        dataset = None  # the model folder was removed
    return {**alias.as_dict(), "dataset": dataset, "urls": {"model": f"/api/v1/models/{alias.model_id}"}}


# -- aliases ------------------------------------------------------------------------------------------------
@router.get("/aliases", dependencies=[Allow("data.read")])
def list_aliases(ws: WorkspaceDep) -> dict[str, Any]:
    """Every alias, the model it serves and that model's dataset version."""
    items = [_alias_record(ws, a) for a in aliases.list_aliases(ws)]
    return {"items": items, "count": len(items)}


@router.get("/aliases/{name}", dependencies=[Allow("data.read")])
def show_alias(name: str, ws: WorkspaceDep) -> dict[str, Any]:
    """An alias and its lineage: alias -> model -> dataset version (its creator and counts) -> its labels per
    source (who made them)."""
    alias = aliases.get_alias(ws, name)
    record = _alias_record(ws, alias)
    if record["dataset"] is not None:
        record["lineage"] = aliases.lineage(ws, alias.model_id, labellers=True)
    return record


@router.get("/aliases/{name}/history", dependencies=[Allow("data.read")])
def alias_history(
    name: str, ws: WorkspaceDep, limit: Annotated[int, Query(ge=1, le=aliases.HISTORY_LIMIT)] = 100
) -> dict[str, Any]:
    """The moves of an alias, newest first: action, model, previous model, who, when, why, the evidence."""
    return {"alias": name, "items": [e.as_dict() for e in aliases.history(ws, name, limit)]}


@router.put("/aliases/{name}", dependencies=[Allow("deploy")], responses={400: {}, 404: {}, 409: {}})
def set_alias(name: str, body: SetAlias, ws: WorkspaceDep, login: LoginDep) -> dict[str, Any]:
    """Point an alias at a model (created when new); the next prediction naming the alias uses it."""
    moved = aliases.set_alias(
        ws,
        name,
        body.model,
        actor=acting_as(login, body.actor),
        reason=body.reason,
        force=body.force,
        expected_version=body.version,
    )
    return _alias_record(ws, moved)


@router.post("/aliases/{name}/promote", dependencies=[Allow("deploy")], responses={400: {}, 404: {}, 409: {}})
def promote_alias(name: str, body: PromoteAlias, ws: WorkspaceDep, login: LoginDep) -> dict[str, Any]:
    """Point an alias at a model of the same task and label set as the one it serves, with the evidence."""
    moved = aliases.promote(
        ws,
        name,
        body.model,
        actor=acting_as(login, body.actor),
        reason=body.reason,
        evidence=body.evidence,
        expected_version=body.version,
    )
    return _alias_record(ws, moved)


@router.post("/aliases/{name}/rollback", dependencies=[Allow("deploy")], responses={400: {}, 404: {}, 409: {}})
def rollback_alias(name: str, body: RollbackAlias, ws: WorkspaceDep, login: LoginDep) -> dict[str, Any]:
    """Point an alias back at the model it served before the current one."""
    moved = aliases.rollback(
        ws, name, actor=acting_as(login, body.actor), reason=body.reason, expected_version=body.version
    )
    return _alias_record(ws, moved)


@router.delete("/aliases/{name}", dependencies=[Allow("deploy")], responses={404: {}, 409: {}})
def remove_alias(
    name: str,
    ws: WorkspaceDep,
    login: LoginDep,
    version: Annotated[int | None, Query(ge=1)] = None,
    actor: Annotated[str | None, Query(max_length=256)] = None,
) -> dict[str, Any]:
    """Delete an alias (its history stays)."""
    aliases.remove(ws, name, actor=acting_as(login, actor), expected_version=version)
    return {"removed": name}


# -- loops --------------------------------------------------------------------------------------------------
@router.post("/loops", dependencies=[Allow("deploy")], status_code=201, responses={400: {}, 404: {}, 409: {}})
def create_loop(body: CreateLoop, ws: WorkspaceDep, login: LoginDep) -> dict[str, Any]:
    """Define a retraining loop; the dataset's latest version must have a test split."""
    created = loop.create(
        ws,
        body.name,
        recipe=body.recipe,
        dataset=body.dataset,
        every=body.every,
        metric=body.metric,
        margin=body.margin,
        alias=body.alias,
        warm_start=body.warm_start,
        actor=acting_as(login, body.actor),
    )
    return {**created.as_dict(), "state": loop.due(ws, created.name)}


@router.get("/loops", dependencies=[Allow("data.read")])
def list_loops(ws: WorkspaceDep) -> dict[str, Any]:
    """Every loop with whether it is due (new labels since the served model's dataset version)."""
    items = [
        {**x.as_dict(), "state": loop.due(ws, x.name), "auto": loop.schedule(ws, x.name)} for x in loop.list_loops(ws)
    ]
    return {"items": items, "count": len(items)}


@router.get("/loops/{name}", dependencies=[Allow("data.read")])
def show_loop(name: str, ws: WorkspaceDep, limit: Annotated[int, Query(ge=1, le=1000)] = 20) -> dict[str, Any]:
    """A loop, whether it is due, how its rounds start on their own (``auto``), and its rounds (newest first)
    with who started them, their comparison and decision."""
    return {
        **loop.get_loop(ws, name).as_dict(),
        "state": loop.due(ws, name),
        "auto": loop.schedule(ws, name),
        "runs": loop.runs(ws, name, limit),
    }


@router.patch("/loops/{name}", dependencies=[Allow("deploy")], responses={404: {}})
def update_loop(name: str, body: UpdateLoop, ws: WorkspaceDep) -> dict[str, Any]:
    """Turn a loop's automatic rounds off (``enabled: false``: never due; ``force`` still runs one) or on."""
    changed = loop.set_enabled(ws, name, body.enabled)
    return {**changed.as_dict(), "state": loop.due(ws, name), "auto": loop.schedule(ws, name)}


@router.post(
    "/loops/{name}/run", dependencies=[Allow("deploy")], status_code=202, responses={400: {}, 404: {}, 409: {}}
)
def run_loop(name: str, body: RunLoop, ws: WorkspaceDep, login: LoginDep) -> dict[str, Any]:
    """Queue one round (a ``loop`` job): next dataset version, training, comparison, promotion if better.
    A loop that is not due is a 400 unless ``force``; one with a round queued or running already, a 409."""
    require("train", feature=f"POST /api/v1/loops/{name}/run")
    return loop.queue_round(ws, name, force=body.force, actor=acting_as(login, body.actor))
