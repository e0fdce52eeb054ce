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
def progress_bar(description: str, quiet: bool = False) -> Iterator[Callable[[float, float, str], None]]:
    """A Rich progress bar on stderr; yields ``update(done, total, message)`` (the job progress signature).

    Drawn only on a terminal and cleared when done, so piped stderr keeps errors to their one line.
    """
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[note]}", markup=False),
    )
    disable = quiet or not err_console.is_terminal
    with Progress(*columns, console=err_console, transient=True, disable=disable) as bar:
        task = bar.add_task(description, total=1.0, note="")

        def update(done: float, total: float, message: str = "") -> None:
            bar.update(task, completed=done / total if total else 0.0, note=message[-40:])

        yield update
