"""Review tasks (issue 14): list, next, answer; routing policies and production monitoring of models.

Who acts: in a workspace with users, the login (an ``actor`` naming someone else is a 403); without users the
``actor`` field or parameter, else the local operator. An annotator sees and answers only tasks assigned to
them or to nobody; ``next`` always serves the acting person that way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from gigavision.active import routing
from gigavision.active.monitor import monitor
from gigavision.errors import InvalidInput, NotFound
from gigavision.server.auth import Allow, LoginDep, acting_as
from gigavision.server.deps import WorkspaceDep
from gigavision.store.reviews import TaskConflict, TaskFilter
from gigavision.store.roles import Login
from gigavision.workspace import Workspace

router = APIRouter(tags=["reviews"])
# path parameters are named as the route-and-role matrix (tests/test_roles.py) fills them: {item_id} is a task

RECORD = "an annotation record (kind, label, bbox [x0,y0,x1,y1] and/or GeoJSON geometry, mask, attributes)"


class TaskPage(BaseModel):
    items: list[dict[str, Any]]
    total: int


class NextTask(BaseModel):
    task: dict[str, Any] | None = Field(description="the highest-priority open task for you; null: none left")
    remaining: int = Field(description="open tasks for you that match the filters")


class Answer(BaseModel):
    decision: str = Field(description="accept | correct | reject | labelled | skip")
    version: int = Field(ge=1, description="the task's version you answer; another answer first gives 409")
    annotation: dict[str, Any] | None = Field(
        None, description=f"correct: {RECORD}, the fields of the proposal you changed (the rest is kept)"
    )
    annotations: list[dict[str, Any]] | None = Field(
        None, description=f"labelled: the labels made for the task's image or region, each {RECORD}"
    )
    note: str | None = Field(None, max_length=2000, description="a remark kept in the task's details")
    actor: str | None = Field(None, max_length=256, description="who answers (without users); else the login")


def _viewer(login: Login) -> str | None:
    """Whose tasks a login sees: an annotator's own and unassigned ones; others see all."""
    if login.via == "local":
        return None
    return login.name if login.role == "annotator" else None


Reason = Annotated[str | None, Query(description="uncertain | audit | selected | suspect")]
Model = Annotated[str | None, Query(description="tasks about this model id's predictions")]
Label = Annotated[str | None, Query(description="tasks about this label")]
MinScore = Annotated[float | None, Query(description="the prediction's score at least this")]
MaxScore = Annotated[float | None, Query(description="the prediction's score at most this")]
Image = Annotated[str | None, Query(description="tasks on this image (id, id prefix or name)")]


@dataclass
class TaskQuery:
    """The filters list, next and counts share (query parameters, gathered once by FastAPI)."""

    reason: Reason = None
    model: Model = None
    label: Label = None
    min_score: MinScore = None
    max_score: MaxScore = None
    image: Image = None

    def filters(self, ws: Workspace, *, viewer: str | None, status: str | None = "open") -> TaskFilter:
        return TaskFilter(
            status=None if status in (None, "", "all") else status,
            reason=self.reason or None,
            model=self.model or None,
            label=self.label or None,
            min_score=self.min_score,
            max_score=self.max_score,
            image=ws.find_image(self.image) if self.image else None,
            viewer=viewer,
        )


TaskQueryDep = Annotated[TaskQuery, Depends()]


@router.get("/api/v1/reviews", response_model=TaskPage, dependencies=[Allow("annotations.read")])
def list_tasks(
    ws: WorkspaceDep,
    login: LoginDep,
    query: TaskQueryDep,
    status: Annotated[str | None, Query(description="open | answered | cancelled | all")] = "open",
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> TaskPage:
    """Tasks, highest priority first; an annotator sees those assigned to them or to nobody."""
    filters = query.filters(ws, viewer=_viewer(login), status=status)
    items, total = ws.reviews.page(filters, offset=offset, limit=limit)
    return TaskPage(items=items, total=total)


@router.get("/api/v1/reviews/next", response_model=NextTask, dependencies=[Allow("annotations.read")])
def next_task(
    ws: WorkspaceDep,
    login: LoginDep,
    query: TaskQueryDep,
    after: Annotated[int | None, Query(description="the task shown now: give the one after it (skip)")] = None,
    actor: Annotated[str | None, Query(max_length=256, description="for whom (without users)")] = None,
) -> NextTask:
    """The highest-priority open task assigned to the acting person or to nobody."""
    task, remaining = ws.reviews.next_task(query.filters(ws, viewer=acting_as(login, actor)), after=after)
    return NextTask(task=task, remaining=remaining)


@router.get("/api/v1/reviews/counts", dependencies=[Allow("annotations.read")])
def task_counts(ws: WorkspaceDep, login: LoginDep, query: TaskQueryDep) -> dict[str, Any]:
    """Open and answered tasks; open ones by reason and label, answered ones by decision."""
    return ws.reviews.counts(query.filters(ws, viewer=_viewer(login)))


@router.get("/api/v1/reviews/{item_id}", dependencies=[Allow("annotations.read")])
def get_task(item_id: int, ws: WorkspaceDep, login: LoginDep) -> dict[str, Any]:
    """One task, with its proposal's annotation record."""
    return ws.reviews.get(item_id, viewer=_viewer(login))


@router.post(
    "/api/v1/reviews/{item_id}/answer",
    dependencies=[Allow("review")],
    responses={409: {"description": "already answered or changed: 'current' is the task now"}},
)
def answer_task(item_id: int, body: Answer, ws: WorkspaceDep, login: LoginDep) -> Any:
    """Accept, correct or reject the proposal, hand in the labels made, or skip. All written, or nothing."""
    limit = ws.settings.limits.max_records_per_request
    if body.annotations is not None and len(body.annotations) > limit:
        raise InvalidInput(
            f"annotations: more than {limit} records in one answer (max_records_per_request); "
            "label the region in several tasks"
        )
    try:
        return ws.reviews.answer(
            item_id,
            body.decision,
            body.version,
            acting_as(login, body.actor),
            annotation=body.annotation,
            annotations=body.annotations,
            note=body.note,
            canvas=ws.canvas,
            viewer=_viewer(login),
        )
    except TaskConflict as exc:
        message = str(exc)
        return JSONResponse(
            {"error": {"code": exc.code, "message": message}, "detail": message, "current": exc.current},
            status_code=exc.http_status,
        )


# -- routing policies ------------------------------------------------------------------------------------------
class RoutingBody(BaseModel):
    threshold: float = Field(description="uncertainty above this (0..1) goes to review; at or below: accepted")
    audit_share: float = Field(0.0, description="share (0..1) of the accepted ones also sent to review (audit)")
    label: str | None = Field(None, max_length=256, description="only predictions of this label; omitted: any")
    actor: str | None = Field(None, max_length=256, description="who sets it (without users); else the login")


@router.get("/api/v1/routing", dependencies=[Allow("data.read")])
def list_routing(ws: WorkspaceDep) -> dict[str, Any]:
    """Every routing policy."""
    return {"items": [p.as_dict() for p in routing.list_policies(ws)]}


@router.get("/api/v1/routing/{model_id}", dependencies=[Allow("data.read")])
def get_routing(model_id: str, ws: WorkspaceDep) -> dict[str, Any]:
    """The policies of a model id or alias (one per label, "" / null: any label)."""
    found = routing.list_policies(ws, model_id)
    if not found:
        raise NotFound(f"no routing policy for {model_id!r}")
    return {"items": [p.as_dict() for p in found]}


@router.put("/api/v1/routing/{model_id}", dependencies=[Allow("deploy")])
def put_routing(model_id: str, body: RoutingBody, ws: WorkspaceDep, login: LoginDep) -> dict[str, Any]:
    """Create or replace the policy of a model id or alias (and label): applies to predictions stored next."""
    policy = routing.set_policy(
        ws,
        model_id,
        threshold=body.threshold,
        audit_share=body.audit_share,
        label=body.label,
        actor=acting_as(login, body.actor),
    )
    return policy.as_dict()


@router.delete("/api/v1/routing/{model_id}", status_code=204, dependencies=[Allow("deploy")])
def delete_routing(
    model_id: str,
    ws: WorkspaceDep,
    label: Annotated[
        str | None, Query(max_length=256, description="the label's policy; omitted: the any-label one")
    ] = None,
) -> Response:
    """Remove a policy: the model's predictions are stored as proposals again."""
    routing.remove_policy(ws, model_id, label)
    return Response(status_code=204)


@router.get("/api/v1/models/{model_id}/monitor", dependencies=[Allow("data.read")])
def model_monitor(model_id: str, ws: WorkspaceDep) -> dict[str, Any]:
    """Production metrics of a model (id or alias) from the review answers: audit error rate with its 95 %
    interval, precision by score band, backlog."""
    return monitor(ws, model_id)
