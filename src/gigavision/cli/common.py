"""Shared CLI plumbing: the workspace option, JSON output, Rich consoles on stderr."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console, ConsoleDimensions

if TYPE_CHECKING:
    from gigavision.progress import Progress
    from gigavision.workspace import Workspace

PIPED_WIDTH = 100_000  # columns of stdout when it is not a terminal: wide enough that nothing is cut


class OutConsole(Console):
    """stdout: on a terminal, tables fit its width (or ``COLUMNS``); piped or redirected (``| grep``,
    ``> file``, a script), no width applies, so tables and lines print their full values instead of being cut
    or wrapped at 80 columns (or at the width of a terminal that only stderr is on).

    Decided at each print, not at import: the same process can write to a terminal and to a pipe (tests).
    """

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        return size if self.is_terminal else ConsoleDimensions(PIPED_WIDTH, size.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._width, self._height = new_size


# markup=False: names, labels and paths are user text and must print as they are (a "[b]" is not a style)
err_console = Console(stderr=True, markup=False)
out_console = OutConsole(markup=False)

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


def open_ws(option: Path | None) -> Workspace:
    from gigavision.workspace import open_workspace

    return open_workspace(workspace_path(option))


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


@contextmanager
def progress_bar(description: str, quiet: bool = False) -> Iterator[Progress]:
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
