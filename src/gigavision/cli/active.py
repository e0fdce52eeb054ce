"""``gigavision active``: active learning (select what to label next) and label-error finding."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from gigavision.cli.common import JsonOpt, WorkspaceOpt, err_console, open_ws, out_console, print_json, progress_bar

active_app = typer.Typer(
    help="Active learning: choose what experts label next; find wrong labels.", no_args_is_help=True
)

STRATEGY_HELP = (
    "entropy | margin | least-confidence (most uncertain), coreset (k-center over embeddings), badge (gradient"
    " embeddings, classifiers), hybrid (uncertain, then spread out), random. Without --model: coreset or random."
)


@active_app.command("select")
def select_cmd(
    budget: Annotated[int, typer.Option("--budget", "-n", min=1, help="How many images to pick.")],
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="Model id, prefix or alias; leave out for a cold start (no model yet)."),
    ] = None,
    pool: Annotated[
        list[str] | None,
        typer.Option(
            "--pool",
            help="Which images (repeatable, AND): image=GLOB, image_id=ID, meta:KEY=VALUE, dataset=NAME@N;"
            " default every image. Images labelled by a human or waiting in a selection task are left out.",
        ),
    ] = None,
    strategy: Annotated[str, typer.Option("--strategy", "-s", help=STRATEGY_HELP)] = "hybrid",
    seed: Annotated[int, typer.Option(min=0, help="Seed of the random draws (random, badge, coreset's start).")] = 0,
    dup_distance: Annotated[
        int,
        typer.Option(
            min=-1,
            max=32,
            help="Near-duplicates (perceptual hashes within this many bits, as dataset versions) are not picked"
            " twice nor next to a labelled one; -1: off.",
        ),
    ] = 4,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the picks without creating review tasks.")] = False,
    actor: Annotated[str, typer.Option("--as", help="Who creates the tasks (recorded).")] = "cli",
    workspace: WorkspaceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Pick the images most worth labelling next and create review tasks (reason "selected") for them."""
    from gigavision.active.pool_selection import SelectRequest, select_images

    request = SelectRequest(
        budget=budget,
        strategy=strategy,
        model=model,
        pool=tuple(pool or ()),
        seed=seed,
        dup_distance=None if dup_distance == -1 else dup_distance,
        create_tasks=not dry_run,
    )
    ws = open_ws(workspace)
    with progress_bar("selecting", quiet=json_out) as progress:
        result = select_images(ws, request, actor=actor, progress=progress)
    if json_out:
        print_json(result)
        return
    for note in result["notes"]:
        err_console.print(f"note: {note}")
    table = Table("rank", "image", "name", "score", "uncertainty", "predicted")
    for p in result["selected"]:
        u = "" if p.get("uncertainty") is None else f"{p['uncertainty']:.3f}"
        predicted = f"{p['label']} {p['predicted_score']:.2f}" if "label" in p else ""
        table.add_row(
            str(p["rank"]),
            p["image_id"][:12],
            p["name"],
            f"{p['score']:.4f}",
            u,
            predicted,
        )
    out_console.print(table)
    pool_info = result["pool"]
    verb = "would create" if dry_run else "created"
    out_console.print(
        f"{len(result['selected'])} of {pool_info['candidates']} candidates by {result['strategy']}"
        f" ({pool_info['labelled']} labelled and {pool_info['pending']} pending left out);"
        f" {verb} {len(result['selected']) if dry_run else result['tasks_created']} review tasks, run {result['run']}"
    )


from gigavision.cli.label_errors import label_errors_cmd  # noqa: E402 - label-errors lives in its own module

active_app.command("label-errors")(label_errors_cmd)

from gigavision.cli.regions import regions_cmd  # noqa: E402 - region selection lives in its own module

active_app.command("regions")(regions_cmd)
