"""``gigavision fsck``: check the workspace's files against its rows and sweep what crashes left (``store/fsck.py``)."""

from __future__ import annotations

from typing import Annotated

import typer

from gigavision.cli.common import JsonOpt, WorkspaceOpt, err_console, open_ws, out_console, print_json, progress_bar
from gigavision.store.fsck import JOB_FILES_DAYS, STALE_AFTER


def fsck(
    workspace_opt: WorkspaceOpt = None,
    repair: Annotated[
        bool, typer.Option("--repair", help="Remove orphans and abandoned temp files, rebuild derived files.")
    ] = False,
    no_hash: Annotated[
        bool, typer.Option("--no-hash", help="Compare the originals' sizes only (skip reading every byte).")
    ] = False,
    stale_after: Annotated[
        float,
        typer.Option(min=0, help="Seconds without a change before a spool or temp file counts as abandoned."),
    ] = STALE_AFTER,
    job_days: Annotated[float, typer.Option(min=0, help="Days a finished job's files are kept.")] = JOB_FILES_DAYS,
    json_out: JsonOpt = False,
) -> int:
    """Check every image's original (size, sha256), pyramid, thumbnail and mask, every model folder and the
    annotations' images; find orphans, interrupted writes, old upload spools and expired job folders.

    Exit 0 when nothing is wrong (or, with --repair, nothing is left wrong), 1 otherwise.
    """
    from gigavision.store.fsck import fsck as run_fsck

    with open_ws(workspace_opt) as ws, progress_bar("fsck", quiet=json_out) as progress:
        report = run_fsck(
            ws,
            repair=repair,
            hashes=not no_hash,
            stale_after=stale_after,
            job_days=job_days,
            progress=progress,
        )
    if json_out:
        print_json(report.as_dict())
        return 0 if report.ok else 1
    for f in report.findings:
        if f.repaired:
            state = f"repaired ({f.action})"
        elif f.kept:
            state = f.kept
        else:
            state = f"--repair: {f.action}" if f.action else "needs attention"
        out_console.print(f"{f.check:<11} {f.problem:<10} {f.path}  {f.detail}  [{state}]", soft_wrap=True)
    summary = report.as_dict()
    checked = ", ".join(f"{v:,} {k.replace('_', ' ')}" for k, v in sorted(report.checked.items()))
    err_console.print(f"checked {checked or 'an empty workspace'}")
    if not report.findings:
        err_console.print("no problems")
    else:
        freed = f", {summary['freed_bytes']:,} bytes freed" if repair else ""
        err_console.print(
            f"{summary['problems']} problems, {summary['repaired']} repaired{freed}, {summary['remaining']} left"
        )
    return 0 if report.ok else 1
