"""``gigavision serve``: the API, tiles and the viewer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from gigavision.cli.common import WorkspaceOpt, err_console, open_ws
from gigavision.errors import InvalidInput

if TYPE_CHECKING:
    from gigavision.workspace import Workspace


# A viewer's connections idle between pans; uvicorn's 5 s default closed them often enough that a request sent
# as the server closed its side was lost (3 of 123,505 tiles in benchmarks/bench_viewers.py). nginx's default.
KEEP_ALIVE_S = 75


def run_server(
    ws: Workspace, host: str, port: int, log_level: str = "warning", workers: int = 1, job_workers: int | None = None
) -> None:
    import os

    import uvicorn

    from gigavision.server.auth import loopback_refusal
    from gigavision.server.main import create_app
    from gigavision.store.users import Accounts

    # The app refuses too (server/auth.py), however it is launched; this says it before uvicorn starts.
    refusal = loopback_refusal(host, Accounts(ws.session).any_users())
    if refusal is not None:
        raise InvalidInput(f"--host {host}: {refusal}")
    if job_workers is not None:
        ws.settings.job_workers = job_workers
        os.environ["GIGAVISION_JOB_WORKERS"] = str(job_workers)  # for the worker processes below
    err_console.print(f"gigavision serving {ws.root} at http://{host}:{port}/  (Ctrl+C stops)", soft_wrap=True)
    if workers == 1:
        uvicorn.run(
            create_app(ws),
            host=host,
            port=port,
            log_level=log_level,
            access_log=False,
            timeout_keep_alive=KEEP_ALIVE_S,
        )
        return
    # Several processes: each worker opens the workspace itself (tile work is CPU-bound Python).
    os.environ["GIGAVISION_WORKSPACE"] = str(ws.root)
    ws.close()
    uvicorn.run(
        "gigavision.server.main:app_from_environment",
        factory=True,
        workers=workers,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        timeout_keep_alive=KEEP_ALIVE_S,
    )


def serve(
    workspace_opt: WorkspaceOpt = None,
    host: Annotated[
        str, typer.Option(help="Interface to bind (loopback only until the workspace has users).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "warning",
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="Server processes; one per core serves tiles fastest.")
    ] = 1,
    job_workers: Annotated[
        int | None,
        typer.Option(min=0, max=64, help="Job threads per server process (default: job_workers setting, 1)."),
    ] = None,
) -> None:
    """Serve the REST API, IIIF/Deep Zoom tiles and the web viewer; runs queued jobs too."""
    with open_ws(workspace_opt) as ws:
        run_server(ws, host, port, log_level, workers, job_workers)
