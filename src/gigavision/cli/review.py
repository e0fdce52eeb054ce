"""``gigavision review`` (answer review tasks) and ``gigavision routing`` (where a model's predictions go)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from gigavision.cli.common import JsonOpt, WorkspaceOpt, err_console, open_ws, out_console, print_json
from gigavision.errors import InvalidInput

review_app = typer.Typer(
    help="Review tasks: a model's uncertain proposals and selected items, for experts.", no_args_is_help=True
)
routing_app = typer.Typer(help="Routing policies: which stored predictions go to review.", no_args_is_help=True)

AsOpt = Annotated[str, typer.Option("--as", help="Who answers (no accounts on the command line: by convention).")]
ForOpt = Annotated[str | None, typer.Option("--as", help="Whose tasks: those assigned to this person or to nobody.")]
ReasonOpt = Annotated[str | None, typer.Option("--reason", help="uncertain | audit | selected | suspect")]
ModelOpt = Annotated[str | None, typer.Option("--model", help="Tasks about this model id's predictions.")]
LabelOpt = Annotated[str | None, typer.Option("--label", help="Tasks about this label.")]
MinOpt = Annotated[float | None, typer.Option("--min-score", help="The prediction's score at least this.")]
MaxOpt = Annotated[float | None, typer.Option("--max-score", help="The prediction's score at most this.")]
ImageOpt = Annotated[str | None, typer.Option("--image", help="Tasks on this image (id, prefix or name).")]


def _filters(
    ws: Any,
    status: str | None,
    reason: str | None,
    model: str | None,
    label: str | None,
    min_score: float | None,
    max_score: float | None,
    image: str | None,
    viewer: str | None,
) -> Any:
    from gigavision.store.reviews import TaskFilter

    return TaskFilter(
        status=status or None,
        reason=reason,
        model=model,
        label=label,
        min_score=min_score,
        max_score=max_score,
        image=ws.find_image(image) if image else None,
        viewer=viewer,
    )


def _table(tasks: list[dict[str, Any]]) -> Table:
    table = Table("id", "reason", "status", "image", "label", "score", "uncertainty", "priority", "decision")
    for t in tasks:
        table.add_row(
            str(t["id"]),
            t["reason"],
            t["status"],
            t["image_id"][:12],
            t["label"] or "",
            "" if t["score"] is None else f"{t['score']:.3f}",
            "" if t["uncertainty"] is None else f"{t['uncertainty']:.3f}",
            f"{t['priority']:.3f}",
            "" if t["decision"] is None else f"{t['decision']} by {t['decided_by']}",
        )
    return table


@review_app.command("list")
def review_list(
    status: Annotated[str, typer.Option("--status", help="open | answered | cancelled | all")] = "open",
    reason: ReasonOpt = None,
    model: ModelOpt = None,
    label: LabelOpt = None,
    min_score: MinOpt = None,
    max_score: MaxOpt = None,
    image: ImageOpt = None,
    viewer: ForOpt = None,
    offset: Annotated[int, typer.Option("--offset", min=0)] = 0,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 50,
    workspace_opt: WorkspaceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Tasks, highest priority first."""
    with open_ws(workspace_opt) as ws:
        which = None if status == "all" else status
        filters = _filters(ws, which, reason, model, label, min_score, max_score, image, viewer)
        items, total = ws.reviews.page(filters, offset=offset, limit=limit)
    if json_out:
        print_json({"items": items, "total": total})
        return
    out_console.print(_table(items))
    err_console.print(f"{len(items)} of {total} task(s)")


@review_app.command("next")
def review_next(
    reason: ReasonOpt = None,
    model: ModelOpt = None,
    label: LabelOpt = None,
    min_score: MinOpt = None,
    max_score: MaxOpt = None,
    image: ImageOpt = None,
    after: Annotated[int | None, typer.Option("--after", help="The task after this one (skip).")] = None,
    viewer: ForOpt = None,
    workspace_opt: WorkspaceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """The highest-priority open task (for --as: assigned to them or to nobody)."""
    with open_ws(workspace_opt) as ws:
        filters = _filters(ws, "open", reason, model, label, min_score, max_score, image, viewer)
        task, remaining = ws.reviews.next_task(filters, after=after)
    if json_out:
        print_json({"task": task, "remaining": remaining})
        return
    if task is None:
        err_console.print("no open task")
        return
    out_console.print(_table([task]))
    err_console.print(f"{remaining} open task(s)")


@review_app.command("show")
def review_show(task_id: int, workspace_opt: WorkspaceOpt = None, json_out: JsonOpt = False) -> None:
    """One task with its proposal."""
    with open_ws(workspace_opt) as ws:
        task = ws.reviews.get(task_id)
    if json_out:
        print_json(task)
        return
    out_console.print(_table([task]))
    if task["annotation"] is not None:
        out_console.print(json.dumps(task["annotation"]), highlight=False)


@review_app.command("answer")
def review_answer(
    task_id: int,
    decision: Annotated[str, typer.Argument(help="accept | correct | reject | labelled | skip")],
    actor: AsOpt,
    version: Annotated[
        int | None, typer.Option("--version", help="The task's version you answer (default: its current one).")
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file", help="correct: a JSON annotation record (the fields changed); labelled: a JSON list of records."
        ),
    ] = None,
    note: Annotated[str | None, typer.Option("--note", help="A remark kept with the answer.")] = None,
    workspace_opt: WorkspaceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Accept, correct or reject a proposal, hand in labels, or skip."""
    annotation, annotations = None, None
    if file is not None:
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"--file {file}: not a readable JSON file ({exc})") from None
        if decision == "labelled":
            if not isinstance(data, list):
                raise InvalidInput(f"--file {file}: labelled needs a JSON list of annotation records")
            annotations = data
        elif isinstance(data, dict):
            annotation = data
        else:
            raise InvalidInput(f"--file {file}: {decision} takes one JSON annotation record (an object)")
    with open_ws(workspace_opt) as ws:
        at = version if version is not None else int(ws.reviews.get(task_id)["version"])
        task = ws.reviews.answer(
            task_id, decision, at, actor, annotation=annotation, annotations=annotations, note=note, canvas=ws.canvas
        )
    if json_out:
        print_json(task)
        return
    made = f", label {task['result_annotation_id']}" if task["result_annotation_id"] else ""
    err_console.print(f"task {task_id}: {decision} by {actor}{made}")


# -- routing ---------------------------------------------------------------------------------------------------
@routing_app.command("set")
def routing_set(
    model: Annotated[str, typer.Argument(help="A model id or an alias (production, ...).")],
    threshold: Annotated[float, typer.Option("--threshold", help="Uncertainty above this (0..1) goes to review.")],
    label: Annotated[str | None, typer.Option("--label", help="Only predictions of this label.")] = None,
    audit_share: Annotated[
        float, typer.Option("--audit-share", help="Share (0..1) of the auto-accepted ones reviewed anyway.")
    ] = 0.0,
    actor: Annotated[str, typer.Option("--as", help="Who sets it.")] = "local",
    workspace_opt: WorkspaceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Create or replace a routing policy: applies to predictions stored from now on."""
    from gigavision.active.routing import set_policy

    with open_ws(workspace_opt) as ws:
        policy = set_policy(ws, model, threshold=threshold, audit_share=audit_share, label=label, actor=actor)
    if json_out:
        print_json(policy.as_dict())
        return
    err_console.print(
        f"{model}{' / ' + label if label else ''}: uncertainty > {threshold} to review, "
        f"the rest accepted, {audit_share:.0%} of those audited"
    )


@routing_app.command("list")
def routing_list(
    model: Annotated[str | None, typer.Argument(help="Only this model id or alias.")] = None,
    workspace_opt: WorkspaceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Routing policies."""
    from gigavision.active.routing import list_policies

    with open_ws(workspace_opt) as ws:
        policies = [p.as_dict() for p in list_policies(ws, model)]
    if json_out:
        print_json({"items": policies})
        return
    table = Table("model", "label", "threshold", "audit share", "set by")
    for p in policies:
        table.add_row(p["model"], p["label"] or "(any)", str(p["threshold"]), str(p["audit_share"]), p["updated_by"])
    out_console.print(table)


@routing_app.command("remove")
def routing_remove(
    model: Annotated[str, typer.Argument(help="A model id or an alias.")],
    label: Annotated[
        str | None, typer.Option("--label", help="The label's policy (default: the any-label one).")
    ] = None,
    workspace_opt: WorkspaceOpt = None,
) -> None:
    """Remove a policy: the model's predictions are stored as proposals again."""
    from gigavision.active.routing import remove_policy

    with open_ws(workspace_opt) as ws:
        remove_policy(ws, model, label)
    err_console.print(f"removed the routing policy of {model}{' / ' + label if label else ''}")
