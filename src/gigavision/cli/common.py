"""Shared CLI plumbing: the workspace option, JSON output, Rich consoles on stderr."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

# markup=False: names, labels and paths are user text and must print as they are (a "[b]" is not a style)
err_console = Console(stderr=True, markup=False)
out_console = Console(markup=False)

WorkspaceOpt = Annotated[
    Path | None,
    typer.Option(
        "--workspace",
        "-w",
        envvar="GIGAVISION_WORKSPACE",
        show_envvar=True,
        help="Workspace folder (default: the current folder).",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]


class State:
    debug: bool = False
    workspace: Path | None = None


def workspace_path(option: Path | None) -> Path:
    return (option or State.workspace or Path(os.environ.get("GIGAVISION_WORKSPACE", "."))).expanduser()


def open_ws(option: Path | None) -> Any:
    from gigavision.workspace import open_workspace

    return open_workspace(workspace_path(option))


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


@contextmanager
def progress_bar(description: str, quiet: bool = False) -> Iterator[Callable[[float, str], None]]:
    """A Rich progress bar on stderr; yields ``update(fraction, message)`` (the job progress callback)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[note]}", markup=False),
    )
    with Progress(*columns, console=err_console, disable=quiet) as bar:
        task = bar.add_task(description, total=1.0, note="")

        def update(fraction: float, message: str = "") -> None:
            bar.update(task, completed=fraction, note=message)

        yield update
