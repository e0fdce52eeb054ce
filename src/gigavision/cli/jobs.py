"""``gigavision jobs ...`` (watch and cancel background jobs) and ``gigavision worker`` (run them)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from gigavision.cli.common import JsonOpt, WorkspaceOpt, err_console, open_ws, out_console, print_json, progress_bar

if TYPE_CHECKING:
    from gigavision.jobs.manager import JobRecord

jobs_app = typer.Typer(help="Background jobs: list, show, wait for, cancel.", no_args_is_help=True)


def _summary(job: JobRecord) -> str:
    line = f"{job['id']}  {job['kind']}  {job['status']}  {job['progress']:.0%}"
    if job["error"]:
        line += f"  error: {job['error']}"
    elif job["message"]:
        line += f"  {job['message']}"
    return line


@jobs_app.command("list")
def list_cmd(
    workspace_opt: WorkspaceOpt = None,
    status: Annotated[str | None, typer.Option(help="queued, running, done, failed or cancelled.")] = None,
    kind: Annotated[str | None, typer.Option(help="export, import, ...")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
    json_out: JsonOpt = False,
) -> None:
    """Jobs, newest first."""
    from gigavision.store.refs import SHOWN

    with open_ws(workspace_opt) as ws:
        items, total = ws.jobs.list_jobs(0, limit, kind=kind, status=status)
    if json_out:
        print_json({"items": items, "total": total})
        return
    table = Table("id", "kind", "status", "progress", "created", "by", "message / error")
    for job in items:
        table.add_row(
            job["id"][:SHOWN],  # a unique prefix is enough for every jobs command
            job["kind"],
            job["status"],
            f"{job['progress']:.0%}",
            (job["created_at"] or "")[:19],
            job["created_by"],
            job["error"] or job["message"],
        )
    out_console.print(table)
    err_console.print(f"{len(items)} of {total} jobs")


@jobs_app.command("show")
def show_cmd(job_id: str, workspace_opt: WorkspaceOpt = None, json_out: JsonOpt = False) -> None:
    """One job: status, progress, result or error, output files."""
    with open_ws(workspace_opt) as ws:
        job = ws.jobs.get(job_id)
    if json_out:
        print_json(job)
        return
    out_console.print(_summary(job), soft_wrap=True)
    for f in job["files"]:
        out_console.print(f"  {f['path']}  {f['size']:,} bytes", soft_wrap=True)


@jobs_app.command("wait")
def wait_cmd(
    job_id: str,
    workspace_opt: WorkspaceOpt = None,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds before giving up.")] = 3600.0,
    json_out: JsonOpt = False,
) -> int:
    """Follow a job's progress until it ends; exit 0 if it succeeded in full, 1 if it failed, was cancelled or
    ended done but not ok (e.g. an import that rejected or could not match something)."""
    import time

    with open_ws(workspace_opt) as ws, progress_bar(f"job {job_id[:8]}", quiet=json_out) as update:
        job_id = ws.jobs.find(job_id)
        deadline = time.monotonic() + timeout
        while True:
            job = ws.jobs.get(job_id)
            update(job["progress"], 1.0, job["message"])
            if job["status"] in ("done", "failed", "cancelled") or time.monotonic() > deadline:
                break
            time.sleep(0.25)
    if json_out:
        print_json(job)
    else:
        out_console.print(_summary(job), soft_wrap=True)
    return 0 if job["ok"] else 1


@jobs_app.command("cancel")
def cancel_cmd(job_id: str, workspace_opt: WorkspaceOpt = None, json_out: JsonOpt = False) -> None:
    """Cancel a job: a queued one at once, a running one at its next progress report (exit 2 if it had
    already finished)."""
    with open_ws(workspace_opt) as ws:
        job = ws.jobs.cancel(job_id)
    if json_out:
        print_json(job)
    else:
        out_console.print(_summary(job), soft_wrap=True)


def worker(
    workspace_opt: WorkspaceOpt = None,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Jobs run at once (threads).")] = 1,
) -> None:
    """Run queued jobs until Ctrl+C (for `serve` with job_workers = 0, or more capacity on a shared queue).

    Training, evaluation, prediction and import jobs run in a child process each; jobs of a worker that died
    are requeued or failed by the next worker or server that notices (see `[jobs]` in gigavision.toml)."""
    with open_ws(workspace_opt) as ws:
        queue = ws.settings.queue_url or "the workspace's SQLite queue"
        err_console.print(f"gigavision worker: {workers} thread(s) on {queue} (Ctrl+C stops)")
        ws.jobs.consumer(workers, embedded=False).run()
