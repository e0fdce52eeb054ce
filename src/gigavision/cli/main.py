"""``gigavision`` command line (Typer). Errors: one line on stderr, exit code 2; ``--debug`` for tracebacks."""

from __future__ import annotations

import sys
from typing import Annotated

import click
import typer

from gigavision import __version__
from gigavision.cli import active as active_commands
from gigavision.cli import annotations as annotation_commands
from gigavision.cli import datasets as dataset_commands
from gigavision.cli import fsck, images, jobs, serve, transfer, workspace
from gigavision.cli import loop as loop_commands
from gigavision.cli import models as model_commands
from gigavision.cli import quality as quality_commands
from gigavision.cli import review as review_commands
from gigavision.cli import search as search_commands
from gigavision.cli import users as user_commands
from gigavision.cli.common import State, WorkspaceOpt, err_console
from gigavision.errors import GigavisionError

try:  # typer >= 0.29 raises its own vendored copy of click's exceptions
    from typer._click.exceptions import ClickException as _TyperClickException

    CLICK_ERRORS: tuple[type[Exception], ...] = (click.ClickException, _TyperClickException)
except ImportError:  # pragma: no cover - older typer uses click itself
    CLICK_ERRORS = (click.ClickException,)

app = typer.Typer(
    name="gigavision",
    help="Build, train and deploy image recognition on images of any size.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"gigavision {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    workspace_opt: WorkspaceOpt = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    State.debug = debug
    State.workspace = workspace_opt


app.command("init")(workspace.init)
app.command("ingest")(images.ingest)
app.command("info")(images.info)
app.add_typer(images.images_app, name="images")
app.command("serve")(serve.serve)
app.command("demo")(workspace.demo)
app.add_typer(annotation_commands.labels_app, name="labels")
app.add_typer(annotation_commands.annotations_app, name="annotations")
app.add_typer(jobs.jobs_app, name="jobs")
app.command("worker")(jobs.worker)
app.command("fsck")(fsck.fsck)
app.add_typer(dataset_commands.dataset_app, name="dataset")
app.add_typer(quality_commands.qc_app, name="qc")
app.command("import")(transfer.import_cmd)
app.command("export")(transfer.export_cmd)
app.command("train")(model_commands.train_cmd)
app.command("sweep")(model_commands.sweep_cmd)
app.command("evaluate")(model_commands.evaluate_cmd)
app.command("predict")(model_commands.predict_cmd)
app.command("export-model")(model_commands.export_model_cmd)
app.add_typer(model_commands.models_app, name="models")
app.add_typer(user_commands.users_app, name="users")
app.add_typer(review_commands.review_app, name="review")
app.add_typer(review_commands.routing_app, name="routing")
app.add_typer(active_commands.active_app, name="active")
app.add_typer(loop_commands.loop_app, name="loop")
app.add_typer(search_commands.index_app, name="index")
app.command("search")(search_commands.search_cmd)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code instead of exiting (tests call this)."""
    try:
        result = app(args=argv, prog_name="gigavision", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except (click.exceptions.Exit, typer.Exit) as exc:
        return int(exc.exit_code)
    except (click.exceptions.Abort, typer.Abort):
        err_console.print("aborted")
        return 130
    except CLICK_ERRORS as exc:
        exc.show()  # type: ignore[attr-defined]
        return int(exc.exit_code)  # type: ignore[attr-defined]
    except GigavisionError as exc:
        if State.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:  # an extra's module imported on a path no require() guarded: same one line
        from gigavision.extras import from_import_error

        missing = from_import_error(exc, _command_name(sys.argv[1:] if argv is None else argv))
        if missing is None or State.debug:
            raise
        print(f"error: {missing}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _command_name(argv: list[str]) -> str:
    """``gigavision COMMAND`` from the arguments (root options and their values skipped), for messages."""
    words = iter(argv)
    for word in words:
        if word in ("-w", "--workspace"):
            next(words, None)
        elif not word.startswith("-"):
            return f"gigavision {word}"
    return "gigavision"


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
