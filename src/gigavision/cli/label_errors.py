"""``gigavision active label-errors DATASET@N --recipe R``: rank suspected wrong labels by k-fold predictions.

Registered on ``gigavision active`` by one line in ``cli/active.py``; the work is
``gigavision.active.label_errors`` (ranking) over ``gigavision.train.folds`` (the out-of-fold training).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from gigavision.cli.common import JsonOpt, WorkspaceOpt, err_console, open_ws, out_console, print_json, progress_bar
from gigavision.errors import InvalidInput
from gigavision.extras import require

SHOWN = 20  # suspects printed as a table (all of them with --json)


def label_errors_cmd(
    dataset: Annotated[str, typer.Argument(help="Dataset version NAME@N whose training split is checked.")],
    recipe: Annotated[
        Path | None, typer.Option("--recipe", "-r", help="Training recipe file (.toml, .yaml or .json).")
    ] = None,
    task: Annotated[
        str | None, typer.Option("--task", help="classify, probe, detect or segment (when no recipe names it).")
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="FIELD=VALUE for any recipe field, e.g. epochs=5 (repeatable).")
    ] = None,
    folds: Annotated[int, typer.Option("--folds", "-k", help="k: k models, each predicts the fold it skipped.")] = 5,
    tasks: Annotated[
        bool, typer.Option("--tasks", help="Create review tasks (reason suspect) for the suggested cut.")
    ] = False,
    limit: Annotated[
        int | None, typer.Option("--limit", min=0, help="With --tasks: this many suspects instead of the cut.")
    ] = None,
    actor: Annotated[str, typer.Option("--as", help="Who creates the review tasks (recorded).")] = "cli",
    workspace: WorkspaceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Train k models on k-1 folds of a dataset version's training split, predict the fold each skipped, and
    rank the labels those predictions contradict (confident learning for classify; missing, spurious,
    wrong-class and poorly placed boxes for detect; regions of disagreement for segment)."""
    require("train", feature="gigavision active label-errors")
    from gigavision.active.label_errors import create_review_tasks, find_label_errors
    from gigavision.cli.models import _quiet_lightning
    from gigavision.train.recipe import load_recipe, parse_assignment

    if recipe is None and task is None:
        raise InvalidInput("name the task: --task classify (or give --recipe FILE)")
    overrides: dict[str, Any] = {}
    for text in set_ or []:
        key, value = parse_assignment(text)
        overrides[key] = value
    overrides.update({"task": task, "dataset": dataset})
    resolved = load_recipe(recipe, overrides)
    _quiet_lightning()
    with open_ws(workspace) as ws:
        with progress_bar(f"label errors ({folds} folds)", quiet=json_out) as progress:
            result = find_label_errors(ws, resolved, folds=folds, progress=progress)
        created = create_review_tasks(ws, result, actor=actor, limit=limit) if tasks else None
    if json_out:
        print_json({**result.as_dict(), "tasks_created": created})
        return
    out_console.print(
        f"{result.dataset}: {len(result.suspects)} suspect(s) among {result.images} training image(s)"
        f" ({result.task}, {result.folds} folds); suggested cut: {result.suggested}",
        highlight=False,
    )
    table = Table("rank", "image", "kind", "given", "predicted", "score", "fold", "region")
    for rank, s in enumerate(result.suspects[:SHOWN], start=1):
        region = "" if s.region is None else ",".join(f"{v:.0f}" for v in s.region)
        table.add_row(
            str(rank), s.image_id[:12], s.kind, s.given or "", s.predicted or "", f"{s.score:.3f}", str(s.fold), region
        )
    if result.suspects:
        out_console.print(table)
    if len(result.suspects) > SHOWN:
        err_console.print(f"{len(result.suspects) - SHOWN} more (--json lists them all)")
    if created is not None:
        out_console.print(f"{created} review task(s) created (reason suspect)", highlight=False)
