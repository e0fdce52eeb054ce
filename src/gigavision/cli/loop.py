"""``gigavision loop``: retraining loops that train on new labels and promote the better model.

``create`` stores the rule (dataset, recipe, every N new labels, metric, margin, alias); rounds then start on
their own in any running job consumer (``gigavision serve``, ``gigavision worker``) once the loop is due;
``check`` says which loops are due; ``run`` runs one round here (freeze the next version, train, compare on
the same test split, promote when better by the margin); ``show`` prints a loop and its rounds;
``disable``/``enable`` stop and resume its automatic rounds. The logic is ``gigavision.active.loop``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from gigavision.cli.common import JsonOpt, WorkspaceOpt, err_console, open_ws, out_console, print_json, progress_bar
from gigavision.errors import Conflict, InvalidInput

loop_app = typer.Typer(
    help="Retraining loops: new labels -> next dataset version -> train -> compare -> promote.", no_args_is_help=True
)
AsOpt = Annotated[str, typer.Option("--as", help="Who is acting (recorded in the runs and the alias history).")]


def _recipe(path: Path | None, task: str | None, sets: list[str] | None, dataset: str) -> dict[str, Any]:
    """Recipe fields from a file, ``--task`` and ``--set FIELD=VALUE`` (dotted keys), as ``train`` reads them."""
    from gigavision.models.recipe import load_recipe, parse_assignment

    overrides: dict[str, Any] = {"task": task, "dataset": dataset}
    for text in sets or []:
        key, value = parse_assignment(text)
        overrides[key] = value
    if task is None and path is None:
        raise InvalidInput("name the task: --task classify (or a --recipe file with task = ...)")
    return load_recipe(path, overrides).resolved()


def _print_run(run: dict[str, Any]) -> None:
    by = f" (started by {run['started_by']})" if run["started_by"] else ""
    out_console.print(
        f"run {run['id']} {run['status']}{by}: {run['dataset'] or '–'}, baseline {run['baseline'] or '–'},"
        f" candidate {run['candidate'] or '–'}",
        highlight=False,
        soft_wrap=True,
    )
    if run["message"]:
        out_console.print(f"  {run['message']}", highlight=False, soft_wrap=True)


def _automatic(enabled: bool, auto: dict[str, Any]) -> str:
    """How the loop's rounds start on their own, in words."""
    if not enabled:
        text = "automatic rounds: off (loop disabled; gigavision loop enable NAME)"
    elif not auto["check_seconds"]:
        text = "automatic rounds: off ([loops] check_seconds = 0)"
    else:
        every = f"{auto['check_seconds']:g} s ([loops] check_seconds)"
        text = f"automatic rounds: on, checked every {every} by each running serve/worker"
    if auto["in_flight"]:
        flying = auto["in_flight"]
        text += f"; round {flying['status']}: job {flying['job'][:12]} by {flying['by']}"
    if auto["paused_until"]:
        text += f"; paused after a failed or cancelled round until {auto['paused_until']}"
    if auto["last_automatic"]:
        text += f"; last started automatically {auto['last_automatic']}"
    return text


@loop_app.command("create")
def create_cmd(
    name: Annotated[str, typer.Argument(help="Loop name.")],
    dataset: Annotated[
        str, typer.Option("--dataset", "-d", help="Dataset NAME (each round freezes its next version).")
    ],
    every: Annotated[
        int,
        typer.Option(
            help="A round is due when at least this many new labels exist; it starts on its own in a running"
            " `gigavision serve` (job_workers > 0) or `gigavision worker`, checked every [loops] check_seconds"
            " (0: never). `gigavision loop disable NAME` stops that for one loop."
        ),
    ] = 200,
    recipe: Annotated[Path | None, typer.Option("--recipe", "-r", help="Recipe file (.toml, .yaml or .json).")] = None,
    task: Annotated[str | None, typer.Option(help="classify or detect (or task in the recipe file).")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="FIELD=VALUE for any recipe field (repeatable).")
    ] = None,
    metric: Annotated[
        str | None,
        typer.Option(
            help="Compared metric: classify accuracy|balanced_accuracy|macro_f1|micro_f1, detect map50|map|..."
        ),
    ] = None,
    margin: Annotated[float, typer.Option(help="Promote when the new model is better by more than this.")] = 0.0,
    alias: Annotated[str, typer.Option(help="The alias the loop compares with and promotes.")] = "production",
    warm_start: Annotated[
        bool, typer.Option("--warm-start/--from-scratch", help="Start each training from the served model's weights.")
    ] = False,
    actor: AsOpt = "cli",
    workspace_opt: WorkspaceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Define a loop over a dataset (its latest version must have a test split) and a training recipe."""
    from gigavision.active import loop

    fields = _recipe(recipe, task, set_, dataset)
    with open_ws(workspace_opt) as ws:
        created = loop.create(
            ws,
            name,
            recipe=fields,
            dataset=dataset,
            every=every,
            metric=metric,
            margin=margin,
            alias=alias,
            warm_start=warm_start,
            actor=actor,
        )
    if json_out:
        print_json(created.as_dict())
        return
    out_console.print(
        f"loop {created.name}: {created.task} on {created.dataset} every {created.every} new labels,"
        f" {created.metric} better by > {created.margin:g} promotes {created.alias}",
        highlight=False,
        soft_wrap=True,
    )


@loop_app.command("list")
def list_cmd(workspace_opt: WorkspaceOpt = None, json_out: JsonOpt = False) -> None:
    """Every loop with whether it is due and whether its rounds start on their own (auto: on, off, or the
    state of its round in flight)."""
    from gigavision.active import loop

    with open_ws(workspace_opt) as ws:
        items = [
            {**x.as_dict(), "state": loop.due(ws, x.name), "auto": loop.schedule(ws, x.name)}
            for x in loop.list_loops(ws)
        ]
    if json_out:
        print_json({"items": items, "count": len(items)})
        return
    table = Table("loop", "task", "dataset", "alias", "metric", "margin", "serving", "new labels", "due", "auto")
    for x in items:
        st = x["state"]
        table.add_row(
            x["name"],
            x["task"],
            x["dataset"],
            x["alias"],
            x["metric"],
            f"{x['margin']:g}",
            st["baseline"] or "–",
            f"{st['new_labels']} / {x['every']} since {st['since']}",
            "yes" if st["due"] else "no",
            (x["auto"]["in_flight"] or {}).get("status") or ("on" if x["auto"]["automatic"] else "off"),
        )
    out_console.print(table)


@loop_app.command("show")
def show_cmd(
    name: Annotated[str, typer.Argument(help="Loop name.")],
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Most recent rounds to show.")] = 20,
    workspace_opt: WorkspaceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """A loop, whether it is due, and its rounds (newest first) with their comparison and decision."""
    from gigavision.active import loop

    with open_ws(workspace_opt) as ws:
        doc = {
            **loop.get_loop(ws, name).as_dict(),
            "state": loop.due(ws, name),
            "auto": loop.schedule(ws, name),
            "runs": loop.runs(ws, name, limit),
        }
    if json_out:
        print_json(doc)
        return
    st = doc["state"]
    out_console.print(
        f"loop {doc['name']}: {doc['task']} on {doc['dataset']}, alias {doc['alias']} serves {st['baseline'] or '–'};"
        f" {st['new_labels']} new labels of {doc['every']} since {st['since']} ({'due' if st['due'] else 'not due'})",
        highlight=False,
        soft_wrap=True,
    )
    out_console.print(f"  {_automatic(doc['enabled'], doc['auto'])}", highlight=False, soft_wrap=True)
    for run in doc["runs"]:
        _print_run(run)


@loop_app.command("run")
def run_cmd(
    name: Annotated[str, typer.Argument(help="Loop name.")],
    force: Annotated[bool, typer.Option("--force", help="Run even when fewer new labels than 'every' exist.")] = False,
    actor: AsOpt = "cli",
    workspace_opt: WorkspaceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Run one round here: next dataset version, training, comparison on the test split, promotion if better."""
    from gigavision.active import loop
    from gigavision.extras import require

    require("train", feature="gigavision loop run")
    with open_ws(workspace_opt) as ws, progress_bar(f"loop {name}", quiet=json_out) as update:
        run = loop.run_here(ws, name, force=force, actor=actor, progress=update)
    if json_out:
        print_json(run)
        return
    _print_run(run)


@loop_app.command("check")
def check_cmd(
    run: Annotated[bool, typer.Option("--run", help="Run a round of every due loop here, one after another.")] = False,
    actor: AsOpt = "cli",
    workspace_opt: WorkspaceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Which loops are due (enough new labels since the served model's dataset version); --run runs them here
    (a running serve or worker starts due rounds on its own: this is for a cron job without one)."""
    from gigavision.active import loop

    with open_ws(workspace_opt) as ws:
        states = [loop.due(ws, x.name) for x in loop.list_loops(ws)]
        rounds = []
        for st in states:
            if run and st["due"]:
                try:
                    with progress_bar(f"loop {st['loop']}", quiet=json_out) as update:
                        rounds.append(loop.run_here(ws, st["loop"], actor=actor, progress=update))
                except Conflict as exc:  # a worker runs its round already: the other loops still get theirs
                    err_console.print(str(exc), highlight=False, soft_wrap=True)
    if json_out:
        print_json({"items": states, "runs": rounds})
        return
    for st in states:
        out_console.print(
            f"{st['loop']}: {st['new_labels']} new labels of {st['every']} since {st['since']}"
            f" ({'due' if st['due'] else 'not due'})",
            highlight=False,
        )
    for r in rounds:
        _print_run(r)
    if not states:
        err_console.print("no loops (gigavision loop create)")


def _enable(name: str, enabled: bool, workspace_opt: Path | None, json_out: bool) -> None:
    from gigavision.active import loop

    with open_ws(workspace_opt) as ws:
        changed = loop.set_enabled(ws, name, enabled)
    if json_out:
        print_json(changed.as_dict())
        return
    what = (
        "rounds start on their own when it is due"
        if enabled
        else "no automatic rounds (loop run --force still runs one)"
    )
    out_console.print(f"loop {name} {'enabled' if enabled else 'disabled'}: {what}", highlight=False)


@loop_app.command("disable")
def disable_cmd(
    name: Annotated[str, typer.Argument(help="Loop name.")],
    workspace_opt: WorkspaceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Stop a loop's automatic rounds (it is never due; an automatic round still queued ends skipped)."""
    _enable(name, False, workspace_opt, json_out)


@loop_app.command("enable")
def enable_cmd(
    name: Annotated[str, typer.Argument(help="Loop name.")],
    workspace_opt: WorkspaceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Resume a loop's automatic rounds."""
    _enable(name, True, workspace_opt, json_out)
