"""``/api/v1/jobs``: watch, cancel and download the output of background jobs (exports, imports, ...)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse
from pydantic import BaseModel

from gigavision.jobs.manager import JobRecord
from gigavision.server.auth import Allow, LoginDep, acting_as
from gigavision.server.deps import WorkspaceDep

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"])


class JobPage(BaseModel):
    items: list[JobRecord]
    total: int


@router.get("", response_model=JobPage, dependencies=[Allow("data.read")])
def list_jobs(
    ws: WorkspaceDep,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    kind: str | None = None,
    status: str | None = None,
) -> JobPage:
    """Newest first; filter by ``kind`` (export, import, ...) and ``status``."""
    items, total = ws.jobs.list_jobs(offset, limit, kind=kind, status=status)
    return JobPage(items=items, total=total)


@router.get("/{job_id}", dependencies=[Allow("data.read")])
def get_job(job_id: str, ws: WorkspaceDep) -> JobRecord:
    """Status (queued/running/done/failed/cancelled), ``ok``, progress 0–1, message, result or error, output files.

    ``ok`` is null until the job ends, and false for a failed or cancelled job and for a ``done`` one whose result
    says ``"ok": false`` (an import that rejected or left something unmatched; its message gives the counts).
    """
    return ws.jobs.get(job_id)


@router.post("/{job_id}/cancel", dependencies=[Allow("jobs.manage")])
def cancel_job(job_id: str, ws: WorkspaceDep, login: LoginDep) -> JobRecord:
    """A queued job is cancelled at once; a running one stops at its next progress report (409 if finished).
    The job records who asked (``cancelled_by``)."""
    return ws.jobs.cancel(job_id, acting_as(login, None))


@router.get("/{job_id}/files/{path:path}", dependencies=[Allow("data.read")])
def download(job_id: str, path: str, ws: WorkspaceDep) -> FileResponse:
    """An output file of a finished job, as an attachment."""
    file = ws.jobs.file_path(job_id, path)
    return FileResponse(file, filename=file.name, media_type="application/octet-stream")
