"""Submit, run, watch and cancel jobs of one workspace."""

from __future__ import annotations

import logging
import re
import shutil
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NotRequired

from sqlalchemy import func, select, update
from typing_extensions import TypedDict  # pydantic (REST responses) needs this one on Python 3.11

from gigavision.errors import Conflict, GigavisionError, InvalidInput, NotFound
from gigavision.extras import from_import_error
from gigavision.jobs import registry
from gigavision.jobs.context import JobCancelled, JobContext
from gigavision.store import refs
from gigavision.store.schema import JobRow, utcnow

if TYPE_CHECKING:
    from huey import Huey

    from gigavision.jobs.queue import EmbeddedConsumer
    from gigavision.workspace import Workspace

log = logging.getLogger(__name__)

JOB_STATUSES = ("queued", "running", "done", "failed", "cancelled")
FINISHED = ("done", "failed", "cancelled")
JOB_ID = re.compile(r"^[0-9a-f]{32}$")
ProgressCallback = Callable[[float, str], None]


def _iso(at: datetime | None) -> str | None:
    """ISO 8601 in UTC (SQLite hands back naive datetimes for what was written in UTC)."""
    if at is None:
        return None
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).isoformat()


def job_ok(status: str, result: dict[str, Any] | None) -> bool | None:
    """Whether a job succeeded in full: None until it ends; a ``done`` job whose result says ``"ok": false``
    (an import that rejected or could not match something; the rest is imported) is not ok."""
    if status not in FINISHED:
        return None
    return status == "done" and (result or {}).get("ok") is not False


class JobFile(TypedDict):
    """An output file of a job: its path under the job's ``output/`` folder and its size in bytes."""

    path: str
    size: int


class JobRecord(TypedDict):
    """A job as the REST API and ``jobs --json`` show it (a JSON document, so a typed dict, not a class)."""

    id: str
    kind: str
    status: str  # one of JOB_STATUSES
    ok: bool | None  # see job_ok
    progress: float
    message: str
    params: dict[str, Any]
    result: dict[str, Any] | None  # what the job kind returned
    error: str | None
    created_by: str
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    cancel_requested: bool
    files: NotRequired[list[JobFile]]  # ``get`` only: output files of a done job


def job_record(row: JobRow) -> JobRecord:
    return {
        "id": row.id,
        "kind": row.kind,
        "status": row.status,
        "ok": job_ok(row.status, row.result),
        "progress": row.progress,
        "message": row.message,
        "params": row.params,
        "result": row.result,
        "error": row.error,
        "created_by": row.created_by,
        "created_at": _iso(row.created_at),
        "started_at": _iso(row.started_at),
        "finished_at": _iso(row.finished_at),
        "cancel_requested": row.cancel_requested,
    }


class JobManager:
    """``ws.jobs``: the queue (``submit``), inline runs (``run``), and the ``jobs`` table behind both."""

    def __init__(self, workspace: Workspace) -> None:
        self.ws = workspace
        self.root = workspace.settings.jobs_dir
        self._queue: tuple[Huey, Any] | None = None
        self._lock = threading.Lock()

    def _queued(self) -> tuple[Huey, Any]:
        with self._lock:
            if self._queue is None:
                from gigavision.jobs.queue import make_huey

                self._queue = make_huey(self.ws.settings, self.execute)
            return self._queue

    @property
    def huey(self) -> Huey:
        return self._queued()[0]

    def folder(self, job_id: str) -> Path:
        if not JOB_ID.match(job_id):
            raise InvalidInput(f"job id must be 32 hex digits, got {job_id!r}")
        return self.root / job_id

    # -- starting jobs -------------------------------------------------------------------------------------
    def _create(self, kind: str, params: dict[str, Any], actor: str) -> JobRow:
        registry.resolve(kind)  # unknown kinds fail before anything is written
        row = JobRow(
            id=uuid.uuid4().hex,
            kind=kind,
            status="queued",
            progress=0.0,
            message="",
            params=params,
            created_by=actor,
            created_at=utcnow(),
            cancel_requested=False,
        )
        self.folder(row.id).mkdir(parents=True)
        with self.ws.session.begin() as s:
            s.add(row)
        return row

    def submit(self, kind: str, params: dict[str, Any], actor: str, inputs: dict[str, Path] | None = None) -> JobRecord:
        """Queue a job; ``inputs`` (name -> file) are moved into its input folder first. Returns its record."""
        row = self._create(kind, params, actor)
        if inputs:
            target = self.folder(row.id) / "input"
            target.mkdir()
            for name, path in inputs.items():
                shutil.move(path, target / name)
        task = self._queued()[1]
        task(row.id)
        return job_record(row)

    def run(
        self, kind: str, params: dict[str, Any], actor: str, on_progress: ProgressCallback | None = None
    ) -> dict[str, Any]:
        """Run a job here and now (the CLI's way), recorded like a queued one; returns its result.

        Failures raise the job's error after it is recorded, so callers see the same message as the table.
        """
        row = self._create(kind, params, actor)
        error = self._execute(row.id, on_progress)
        if error is not None:
            raise error
        done = self.get(row.id)
        if done["status"] == "cancelled":
            raise Conflict(f"job {row.id} was cancelled")
        return dict(done["result"] or {})

    # -- running -------------------------------------------------------------------------------------------
    def execute(self, job_id: str) -> None:
        """Run a queued job once (the queue's task): a job another worker took, or one cancelled, is skipped."""
        self._execute(job_id, None)

    def _execute(self, job_id: str, on_progress: ProgressCallback | None) -> BaseException | None:
        """Run the job and record how it ended; returns the exception it failed with, if any."""
        with self.ws.session.begin() as s:
            taken = s.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.status == "queued", ~JobRow.cancel_requested)
                .values(status="running", started_at=utcnow())
            )
            if getattr(taken, "rowcount", 0) != 1:
                return None
            row = s.get(JobRow, job_id)
            assert row is not None
            kind, params, actor = row.kind, dict(row.params), row.created_by

        def report(fraction: float, message: str) -> None:
            self._set(job_id, progress=fraction, message=message)
            if on_progress is not None:
                on_progress(fraction, message)

        ctx = JobContext(self.ws, job_id, actor, self.folder(job_id), report, lambda: self._cancel_requested(job_id))
        try:
            result = registry.resolve(kind)(ctx, params)
        except JobCancelled:
            self._set(job_id, status="cancelled", message="cancelled", finished_at=utcnow())
        except GigavisionError as exc:
            self._set(job_id, status="failed", error=str(exc), finished_at=utcnow())
            return exc
        except ImportError as exc:  # a worker without an extra: the one-line message, not the raw import error
            missing = from_import_error(exc, f"a {kind} job")
            if missing is None:  # not an extra's module: a real bug, recorded like any crash
                return self._crashed(job_id, kind, exc)
            missing.__cause__ = exc
            self._set(job_id, status="failed", error=str(missing), finished_at=utcnow())
            return missing
        except Exception as exc:  # a bug in a job must not kill the worker; the job records it
            return self._crashed(job_id, kind, exc)
        else:
            message = ctx.outcome or "done"
            self._set(job_id, status="done", progress=1.0, message=message, result=result, finished_at=utcnow())
            if on_progress is not None:
                on_progress(1.0, message)
        return None

    def _crashed(self, job_id: str, kind: str, exc: Exception) -> Exception:
        log.error("job %s (%s) crashed:\n%s", job_id, kind, traceback.format_exc())
        self._set(job_id, status="failed", error=f"{type(exc).__name__}: {exc}", finished_at=utcnow())
        return exc

    def _set(self, job_id: str, **values: Any) -> None:
        with self.ws.session.begin() as s:
            s.execute(update(JobRow).where(JobRow.id == job_id).values(**values))

    def _cancel_requested(self, job_id: str) -> bool:
        with self.ws.session() as s:
            return bool(s.scalar(select(JobRow.cancel_requested).where(JobRow.id == job_id)))

    # -- watching ------------------------------------------------------------------------------------------
    def find(self, ref: str) -> str:
        """The id of the job ``ref`` names: its full id or a unique prefix of 6+ characters (``jobs list``
        shows 12). ``NotFound`` for none, ``Ambiguous`` listing the candidates for several."""
        if JOB_ID.match(ref):
            return ref
        prefix = refs.hex_prefix(ref, len_id=32)
        if prefix is None:
            raise InvalidInput(
                f"job id must be 32 hex digits or a prefix of at least {refs.MIN_PREFIX} of them, got {ref!r}"
            )
        with self.ws.session() as s:
            rows = refs.by_prefix(s, JobRow.id, prefix, JobRow.kind, JobRow.status)
        if not rows:
            raise NotFound(f"no job with an id starting {prefix!r}")
        if len(rows) > 1:
            listed = [f"{i[: refs.SHOWN]} ({kind}, {status})" for i, kind, status in rows]
            capped = len(rows) > refs.CANDIDATES
            head = f"{ref!r} is the start of {'several' if capped else len(rows)} job ids"
            raise refs.ambiguous(head, "give more characters of the id", listed, capped=capped)
        return str(rows[0][0])

    def get(self, job_id: str) -> JobRecord:
        """One job's record (``job_id``: the id or a unique prefix, see ``find``) with its output files."""
        job_id = self.find(job_id)
        with self.ws.session() as s:
            row = s.get(JobRow, job_id)
            if row is None:
                raise NotFound(f"no job with id {job_id}")
            record = job_record(row)
        record["files"] = self.files(job_id) if record["status"] == "done" else []
        return record

    def list_jobs(
        self, offset: int = 0, limit: int = 50, kind: str | None = None, status: str | None = None
    ) -> tuple[list[JobRecord], int]:
        if status is not None and status not in JOB_STATUSES:
            raise InvalidInput(f"status must be one of {', '.join(JOB_STATUSES)}, got {status!r}")
        where = [
            c
            for c in (JobRow.kind == kind if kind else None, JobRow.status == status if status else None)
            if c is not None
        ]
        with self.ws.session() as s:
            total = int(s.scalar(select(func.count()).select_from(JobRow).where(*where)) or 0)
            rows = s.scalars(
                select(JobRow).where(*where).order_by(JobRow.created_at.desc()).offset(offset).limit(limit)
            )
            return [job_record(r) for r in rows], total

    def wait(self, job_id: str, timeout: float = 60.0, poll: float = 0.05) -> JobRecord:
        """Block until the job has finished (done, failed or cancelled); ``TimeoutError`` after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        job_id = self.find(job_id)
        while True:
            record = self.get(job_id)
            if record["status"] in FINISHED:
                return record
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {record['status']} after {timeout} s")
            time.sleep(poll)

    def cancel(self, job_id: str) -> JobRecord:
        """Cancel a queued job at once, or ask a running one to stop at its next progress report."""
        job_id = self.get(job_id)["id"]
        with self.ws.session.begin() as s:
            s.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.status == "queued")
                .values(status="cancelled", message="cancelled", cancel_requested=True, finished_at=utcnow())
            )
            done = s.execute(
                update(JobRow).where(JobRow.id == job_id, JobRow.status == "running").values(cancel_requested=True)
            )
            if getattr(done, "rowcount", 0) == 0:
                row = s.get(JobRow, job_id)
                if row is not None and row.status in ("done", "failed"):
                    raise Conflict(f"job {job_id} has already finished ({row.status})")
        return self.get(job_id)

    # -- files ---------------------------------------------------------------------------------------------
    def files(self, job_id: str) -> list[JobFile]:
        """The output files of a job: relative path and size, sorted."""
        out = self.folder(job_id) / "output"
        if not out.is_dir():
            return []
        return [
            {"path": p.relative_to(out).as_posix(), "size": p.stat().st_size}
            for p in sorted(out.rglob("*"))
            if p.is_file() and not p.is_symlink()
        ]

    def file_path(self, job_id: str, relative: str) -> Path:
        """An output file of a job, checked to stay inside the job's output folder."""
        job_id = self.find(job_id)
        out = (self.folder(job_id) / "output").resolve()
        if "\x00" in relative or relative.startswith("/") or ".." in Path(relative).parts:
            raise InvalidInput(f"file path {relative!r} must be relative, without '..'")
        path = (out / relative).resolve()
        if not path.is_relative_to(out) or not path.is_file():
            raise NotFound(f"job {job_id} has no output file {relative!r}")
        return path

    # -- consumers -----------------------------------------------------------------------------------------
    def start_consumer(self, workers: int = 1) -> EmbeddedConsumer:
        """Threads in this process that run queued jobs (the embedded default; stop with ``.stop()``)."""
        from gigavision.jobs.queue import EmbeddedConsumer

        consumer = EmbeddedConsumer(self.huey, workers=workers)
        consumer.start()
        return consumer
