"""``gigavision init`` and ``gigavision demo``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gigavision.cli.common import JsonOpt, err_console, print_json, workspace_path


def init(
    directory: Annotated[Path | None, typer.Argument(help="Folder to create (default: --workspace or .).")] = None,
    db_url: Annotated[str, typer.Option(help="Database URL (default: SQLite inside the workspace).")] = "",
    blob_url: Annotated[str, typer.Option(help="Blob store URL, any fsspec URL (default: ./blobs).")] = "",
    admin: Annotated[
        str | None, typer.Option(help="Make this first user, an admin (logins on; the password is prompted for).")
    ] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="With --admin: read the password from stdin.")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Create a workspace: gigavision.toml, the database, blobs/ and pyramids/ (and with --admin, its first user)."""
    from gigavision.workspace import init_workspace

    password = None
    if admin is not None:
        from gigavision.cli.users import read_password
        from gigavision.store.users import check_password, check_user_name

        check_user_name(admin)  # before anything is made: a bad answer leaves nothing
        password = check_password(read_password(password_stdin))
    with init_workspace(directory or workspace_path(None), db_url=db_url, blob_url=blob_url) as ws:
        if admin is not None and password is not None:
            from gigavision.store.users import Accounts

            Accounts(ws.session).add(admin, "admin", password)
        if json_out:
            print_json({"workspace": str(ws.root), "db_url": ws.settings.resolved_db_url()})
        else:
            err_console.print(f"workspace ready: {ws.root}")


def demo(
    directory: Annotated[Path, typer.Argument(help="Workspace folder for the demo.")] = Path("demo-workspace"),
    width: Annotated[int, typer.Option(help="Width of the generated slide (px).")] = 40_000,
    height: Annotated[int, typer.Option(help="Height of the generated slide (px).")] = 25_000,
    serve_after: Annotated[bool, typer.Option("--serve/--no-serve", help="Start the server when done.")] = True,
    port: Annotated[int, typer.Option(help="Port for the server.")] = 8000,
) -> None:
    """Make a workspace with scikit-image's real images plus a generated gigapixel slide, then serve it."""
    from gigavision.cli.images import run_ingest
    from gigavision.demo import bundled_images, make_slide
    from gigavision.workspace import init_workspace

    ws = init_workspace(directory)
    inputs = ws.root / "demo-inputs"
    err_console.print(f"writing sample images into {inputs} ...")
    files = bundled_images(inputs)
    with err_console.status(f"generating a {width:,} x {height:,} slide from real IHC texture ..."):
        files.append(make_slide(inputs / "ihc_slide.tif", width, height))
    run_ingest(ws, files, recursive=False, follow_symlinks=False, json_out=False)
    if serve_after:
        from gigavision.cli.serve import run_server

        run_server(ws, "127.0.0.1", port)
