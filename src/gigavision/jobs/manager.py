"""Submit, run, watch and cancel jobs of one workspace."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import re
import shutil
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NotRequired

from sqlalchemy import ColumnElement, and_, func, or_, select, update
from typing_extensions import TypedDict  # pydantic (REST responses) needs this one on Python 3.11

from gigavision.errors import ConfigError, Conflict, GigavisionError, InvalidInput, NotFound
from gigavision.extras import from_import_error
from gigavision.jobs import registry
from gigavision.jobs.context import JobCancelled, JobContext
from gigavision.store import refs
from gigavision.store.roles import LOCAL_USER
from gigavision.store.schema import JobRow, utcnow

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

    from huey import Huey

    from gigavision.jobs.queue import JobConsumer
    from gigavision.workspace import Workspace

log = logging.getLogger(__name__)

JOB_STATUSES = ("queued", "running", "done", "failed", "cancelled")
FINISHED = ("done", "failed", "cancelled")
IN_FLIGHT = ("queued", "running")
JOB_ID = re.compile(r"^[0-9a-f]{32}$")
ProgressCallback = Callable[[float, str], None]
INLINE = " (inline)"  # ends the worker name of a job run by a command (``run``): never requeued, see ``reap``
CHILD_POLL_S = 0.25  # how often a worker looks at its child, its lease and a cancel request between messages


def worker_name() -> str:
    """Who holds a lease: ``host:pid`` (informative; a claim is identified by its attempt number)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def failure(kind: str, exc: Exception) -> tuple[str, Exception]:
    """The error a job that raised ``exc`` records, and the exception ``run`` raises for it: a gigavision
    error's message; a missing extra's one line; else (a bug) the exception's type and text, logged in full."""
    if isinstance(exc, GigavisionError):
        return str(exc), exc
    if isinstance(exc, ImportError):  # a worker without an extra: the one-line message, not the raw import error
        missing = from_import_error(exc, f"a {kind} job")
        if missing is not None:
            missing.__cause__ = exc
            return str(missing), missing
    log.error("job of kind %s crashed", kind, exc_info=exc)
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__, exc


def _died(exitcode: int | None) -> str:
    """How a child process ended, in words."""
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        return f"was killed by {name}" + (" (out of memory?)" if -exitcode == signal.SIGKILL else "")
    return f"exited with code {exitcode}"


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
    cancelled_by: str | None  # who asked for the cancel
    attempts: int  # claims so far: above 1, a worker died and the job was requeued
    worker: str | None  # host:pid that claimed it last
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
        "cancelled_by": row.cancelled_by,
        "attempts": row.attempts or 0,
        "worker": row.worker,
    }


@dataclass
class _Claim:
    """A job this worker holds: what to run, and the attempt number that identifies this claim of it."""

    job_id: str
    kind: str
    params: dict[str, Any]
    actor: str
    attempt: int


@dataclass
class _Ending:
    """How a run ended: the columns to record, and for ``run`` the exception to raise."""

    values: dict[str, Any]
    error: Exception | None = None


class _Lease(threading.Thread):
    """Renews a claimed job's lease every third of ``lease_seconds``; sets ``lost`` once the job is no longer
    this claim's (the reaper requeued it after a stall, or it was cancelled meanwhile)."""

    def __init__(self, manager: JobManager, claim: _Claim) -> None:
        super().__init__(name=f"gigavision-lease-{claim.job_id[:8]}", daemon=True)
        self.manager = manager
        self.claim = claim
        self.lost = threading.Event()
        self._done = threading.Event()

    def run(self) -> None:
        interval = self.manager.ws.settings.jobs.lease_seconds / 3
        while not self._done.wait(interval):
            try:
                if not self.manager._renew(self.claim):
                    self.lost.set()
                    return
            except Exception:  # a busy or restarting database: the next beat tries again, within the lease
                log.warning("job %s: lease renewal failed", self.claim.job_id, exc_info=True)

    def stop(self) -> None:
        self._done.set()
        self.join()


class JobManager:
    """``ws.jobs``: the queue (``submit``), inline runs (``run``), and the ``jobs`` table behind both.

    Durability: a worker *claims* a job with one conditional UPDATE (queued, or running with an expired lease
    → running, attempts + 1), so two workers never run one job, and duplicate queue messages are harmless.
    While it runs, a heartbeat renews its lease; every consumer's reaper (``reap``) requeues or fails jobs
    whose lease expired, and re-enqueues queued jobs that have no queue message (a crash between the row's
    commit and the enqueue). Every later write of a run is conditioned on its attempt number, so a worker
    that lost its lease cannot overwrite the run that replaced it.
    """

    def __init__(self, workspace: Workspace) -> None:
        self.ws = workspace
        self.root = workspace.settings.jobs_dir
        self._queue: tuple[Huey, Any] | None = None
        self._lock = threading.Lock()

    def _queued(self) -> tuple[Huey, Any]:
        with self._lock:
            if self._queue is None:
                from gigavision.jobs.queue import make_huey

                self._queue = make_huey(self.ws.settings, self.consume)
            return self._queue

    @property
    def huey(self) -> Huey:
        return self._queued()[0]

    def folder(self, job_id: str) -> Path:
        if not JOB_ID.match(job_id):
            raise InvalidInput(f"job id must be 32 hex digits, got {job_id!r}")
        return self.root / job_id

    def _lease_until(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self.ws.settings.jobs.lease_seconds)

    # -- starting jobs -------------------------------------------------------------------------------------
    def _new_row(self, kind: str, params: dict[str, Any], actor: str, *, claimed: bool = False) -> JobRow:
        registry.resolve(kind)  # unknown kinds fail before anything is written
        now = utcnow()
        row = JobRow(
            id=uuid.uuid4().hex,
            kind=kind,
            status="running" if claimed else "queued",
            progress=0.0,
            message="",
            params=params,
            created_by=actor,
            created_at=now,
            cancel_requested=False,
            attempts=1 if claimed else 0,
        )
        if claimed:
            row.started_at, row.worker, row.lease_until = now, worker_name() + INLINE, self._lease_until(now)
        return row

    def _create(
        self, kind: str, params: dict[str, Any], actor: str, *, claimed: bool = False, unique: str | None = None
    ) -> JobRow | None:
        """The job's row and folder; ``claimed``: already running here (``run``), so no consumer takes it.

        ``unique`` (a key of ``params``): None instead when a job of ``kind`` with the same ``params[unique]``
        is queued or running. The look and the insert are one transaction that first takes a lock on (kind,
        value): PostgreSQL's transaction-scoped advisory lock, SQLite's database write lock (a write that
        changes nothing, before the look). Consumers checking at the same moment create one job, not two."""
        row = self._new_row(kind, params, actor, claimed=claimed)
        with self.ws.session.begin() as s:
            if unique is not None:
                value = params[unique]
                if s.get_bind().dialect.name == "postgresql":
                    digest = hashlib.sha256(f"gigavision-job:{kind}:{value}".encode()).digest()
                    s.execute(select(func.pg_advisory_xact_lock(int.from_bytes(digest[:8], "big", signed=True))))
                else:
                    s.execute(update(JobRow).where(JobRow.id == "").values(kind=JobRow.kind))
                flying = s.scalars(select(JobRow.params).where(JobRow.kind == kind, JobRow.status.in_(IN_FLIGHT)))
                if any(isinstance(p, dict) and p.get(unique) == value for p in flying):
                    return None
            self.folder(row.id).mkdir(parents=True)
            s.add(row)
        return row

    def submit(self, kind: str, params: dict[str, Any], actor: str, inputs: dict[str, Path] | None = None) -> JobRecord:
        """Queue a job; ``inputs`` (name -> file) are moved into its input folder first. Returns its record.

        Should this process die between the row's commit and the enqueue, the next consumer's start-up
        re-enqueues the job (``reap``)."""
        row = self._create(kind, params, actor)
        assert row is not None
        if inputs:
            target = self.folder(row.id) / "input"
            target.mkdir()
            for name, path in inputs.items():
                shutil.move(path, target / name)
        self._enqueue(row.id)
        return job_record(row)

    def submit_unique(self, kind: str, params: dict[str, Any], actor: str, *, key: str) -> JobRecord | None:
        """``submit``, unless a job of ``kind`` with the same ``params[key]`` is queued or running: then None
        (atomic, see ``_create``): e.g. one retraining round per loop whatever the number of consumers."""
        row = self._create(kind, params, actor, unique=key)
        if row is None:
            return None
        self._enqueue(row.id)
        return job_record(row)

    def _enqueue(self, job_id: str) -> None:
        """Put a message for the job on the queue; a duplicate is harmless (the claim is atomic)."""
        self._queued()[1](job_id)

    def run(
        self,
        kind: str,
        params: dict[str, Any],
        actor: str,
        on_progress: ProgressCallback | None = None,
        *,
        unique: str | None = None,
    ) -> dict[str, Any]:
        """Run a job here and now (the CLI's way), recorded like a queued one; returns its result.

        It runs in this thread whatever its kind (a command's crash is the command's own). Failures raise the
        job's error after it is recorded, so callers see the same message as the table; Ctrl+C records the
        job as cancelled. Should the command be killed, the reaper fails the job (it is not requeued: the
        user who ran the command would not expect it to run later in a worker). ``unique``: a ``Conflict``
        when a job of ``kind`` with the same ``params[unique]`` is queued or running (see ``_create``).
        """
        row = self._create(kind, params, actor, claimed=True, unique=unique)
        if row is None:
            raise Conflict(f"a {kind} job with {unique} {params.get(unique or '')!r} is queued or running already")
        claim = _Claim(row.id, kind, dict(params), actor, attempt=1)
        error = self._execute(claim, on_progress, in_child=False)
        if error is not None:
            raise error
        done = self.get(row.id)
        if done["status"] == "cancelled":
            raise Conflict(f"job {row.id} was cancelled")
        if done["status"] != "done":  # this command stalled past its lease and the reaper failed the job
            raise Conflict(f"job {row.id} {done['status']}: {done['error']}")
        return dict(done["result"] or {})

    # -- running -------------------------------------------------------------------------------------------
    def consume(self, job_id: str) -> None:
        """The queue's task: run a queued job once, heavy kinds in a child process (``registry.ISOLATED``).
        A job another worker holds, or one cancelled, is skipped (the claim is atomic)."""
        claim = self._claim(job_id)
        if claim is not None:
            self._execute(claim, None, in_child=registry.isolated(claim.kind))

    def execute(self, job_id: str) -> None:
        """Run a queued job once, here in this thread whatever its kind (a test, a debugger), like ``consume``."""
        claim = self._claim(job_id)
        if claim is not None:
            self._execute(claim, None, in_child=False)

    def _retryable(self, now: datetime) -> ColumnElement[bool]:
        """Running jobs whose worker died (lease expired) that may be run again: retries left, not run by a
        command (``run``), no cancel requested."""
        return and_(
            JobRow.status == "running",
            JobRow.lease_until < now,
            JobRow.attempts <= self.ws.settings.jobs.max_retries,
            or_(JobRow.worker.is_(None), ~JobRow.worker.endswith(INLINE)),
            ~JobRow.cancel_requested,
        )

    def _claim(self, job_id: str) -> _Claim | None:
        """Take the job for this worker, atomically: queued, or running with an expired lease and retries left."""
        now = utcnow()
        with self.ws.session.begin() as s:
            taken = s.execute(
                update(JobRow)
                .where(
                    JobRow.id == job_id, ~JobRow.cancel_requested, or_(JobRow.status == "queued", self._retryable(now))
                )
                .values(
                    status="running",
                    started_at=now,
                    worker=worker_name(),
                    lease_until=self._lease_until(now),
                    attempts=JobRow.attempts + 1,
                )
            )
            if getattr(taken, "rowcount", 0) != 1:
                return None
            row = s.get(JobRow, job_id)
            assert row is not None
            return _Claim(job_id, row.kind, dict(row.params), row.created_by, row.attempts)

    def _mine(self, claim: _Claim) -> tuple[ColumnElement[bool], ...]:
        """The row, while it is still this claim's."""
        return JobRow.id == claim.job_id, JobRow.status == "running", JobRow.attempts == claim.attempt

    def _renew(self, claim: _Claim) -> bool:
        with self.ws.session.begin() as s:
            done = s.execute(update(JobRow).where(*self._mine(claim)).values(lease_until=self._lease_until(utcnow())))
            return getattr(done, "rowcount", 0) == 1

    def _record(self, claim: _Claim, **values: Any) -> None:
        with self.ws.session.begin() as s:
            s.execute(update(JobRow).where(*self._mine(claim)).values(**values))

    def _execute(self, claim: _Claim, on_progress: ProgressCallback | None, *, in_child: bool) -> Exception | None:
        """Run a claimed job, holding its lease, and record how it ended; returns the exception it failed with."""
        lease = _Lease(self, claim)
        lease.start()
        try:
            ending = self._in_child(claim, lease) if in_child else self._in_thread(claim, lease, on_progress)
        except Exception as exc:  # the child could not be started (an unpicklable function, no processes left)
            message, error = failure(claim.kind, exc)
            ending = _Ending({"status": "failed", "error": message}, error)
        except BaseException:  # Ctrl+C in a command running it, or the worker shutting down: not a failure
            self._record(claim, status="cancelled", message="interrupted", lease_until=None, finished_at=utcnow())
            raise
        finally:
            lease.stop()
        if ending is None or lease.lost.is_set():
            log.warning("job %s: lease lost (the reaper took it back); its run here is not recorded", claim.job_id)
            return None
        self._record(  # conditional on the claim: nothing is written if the lease was lost meanwhile
            claim, **ending.values, lease_until=None, finished_at=utcnow()
        )
        if on_progress is not None and ending.values["status"] == "done":
            on_progress(1.0, ending.values["message"])
        return ending.error

    def _in_thread(self, claim: _Claim, lease: _Lease, on_progress: ProgressCallback | None) -> _Ending:
        """Run the job in this thread. A run whose lease was lost (this worker stalled past it and the job went
        to another) stops at its next progress report as if cancelled: a thread cannot be killed."""

        def stop() -> bool:
            return lease.lost.is_set() or self._cancel_requested(job_id)

        def report(fraction: float, message: str) -> None:
            self._record(claim, progress=fraction, message=message)
            if on_progress is not None:
                on_progress(fraction, message)

        job_id = claim.job_id
        ctx = JobContext(self.ws, job_id, claim.actor, self.folder(job_id), report, stop)
        try:
            result = registry.resolve(claim.kind)(ctx, claim.params)
        except JobCancelled:
            return _Ending({"status": "cancelled", "message": "cancelled"})
        except Exception as exc:  # a bug in a job must not kill the worker; the job records it
            message, error = failure(claim.kind, exc)
            return _Ending({"status": "failed", "error": message}, error)
        return _Ending({"status": "done", "progress": 1.0, "message": ctx.outcome or "done", "result": result})

    def _in_child(self, claim: _Claim, lease: _Lease) -> _Ending | None:
        """Run the job in a child process (a clean one, see ``child.context``) and relay its progress; a cancel
        request is passed on, and a child that ignores it for ``lease_seconds`` is killed. A child that dies
        fails the job: rerunning what crashed or ran out of memory would most likely do it again (a *worker*
        that dies is retried instead: see ``reap``). None: the lease was lost."""
        from gigavision.jobs import child

        context = child.context(claim.kind)
        conn, child_end = context.Pipe()
        args = (self.ws.settings, claim.job_id, claim.kind, claim.actor, registry.target(claim.kind), claim.params)
        process = context.Process(target=child.main, args=(*args, child_end), name=f"gigavision-job-{claim.job_id[:8]}")
        try:
            process.start()
        except Exception as exc:  # e.g. a kind registered as a function a child cannot import (a lambda)
            conn.close()
            raise ConfigError(f"job kind {claim.kind!r} runs isolated, but its process could not start: {exc}") from exc
        finally:
            child_end.close()
        try:
            return self._watch(claim, lease, process, conn)
        finally:
            if process.is_alive():
                process.kill()
            process.join()
            conn.close()

    def _watch(self, claim: _Claim, lease: _Lease, process: BaseProcess, conn: Connection) -> _Ending | None:
        from multiprocessing.connection import wait

        grace = self.ws.settings.jobs.lease_seconds
        ending: _Ending | None = None
        open_conn = True
        cancel_sent: float | None = None
        next_check = 0.0
        while True:
            if lease.lost.is_set():
                return None
            now = time.monotonic()
            if cancel_sent is None and now >= next_check:
                next_check = now + min(1.0, grace / 3)
                if self._cancel_requested_or_not(claim.job_id):
                    with contextlib.suppress(OSError):  # the child just ended: its exit tells the rest
                        conn.send("cancel")
                    cancel_sent = now
            elif cancel_sent is not None and now - cancel_sent > grace:
                process.kill()
                process.join()
                return _Ending({"status": "cancelled", "message": f"cancelled (stopped after {grace:g} s)"})
            ready = wait([conn, process.sentinel] if open_conn else [process.sentinel], timeout=CHILD_POLL_S)
            if conn in ready:  # messages first: a child that ended may have sent its outcome just before
                try:
                    message = conn.recv()
                except (EOFError, OSError):
                    open_conn = False
                    continue
                if message[0] == "progress":
                    try:
                        self._record(claim, progress=message[1], message=message[2])
                    except Exception:  # a database hiccup loses one progress report, not the job
                        log.warning("job %s: progress not recorded", claim.job_id, exc_info=True)
                elif message[0] == "done":
                    values = {"status": "done", "progress": 1.0, "message": message[2] or "done", "result": message[1]}
                    ending = _Ending(values)
                elif message[0] == "cancelled":
                    ending = _Ending({"status": "cancelled", "message": "cancelled"})
                else:
                    ending = _Ending({"status": "failed", "error": message[1]})
            elif process.sentinel in ready:
                break
        process.join()
        if ending is None:
            if cancel_sent is not None:
                return _Ending({"status": "cancelled", "message": "cancelled"})
            return _Ending(
                {"status": "failed", "error": f"the job's process {_died(process.exitcode)} before it finished"}
            )
        return ending

    def _cancel_requested_or_not(self, job_id: str) -> bool:
        """``_cancel_requested``, False while the database cannot answer (the next look will tell)."""
        try:
            return self._cancel_requested(job_id)
        except Exception:
            log.warning("job %s: could not read its cancel request", job_id, exc_info=True)
            return False

    def _cancel_requested(self, job_id: str) -> bool:
        with self.ws.session() as s:
            return bool(s.scalar(select(JobRow.cancel_requested).where(JobRow.id == job_id)))

    # -- recovery ------------------------------------------------------------------------------------------
    def reap(self, *, orphans_after: float | None = None) -> dict[str, int]:
        """Deal with jobs whose worker died, and queued jobs without a queue message; every consumer runs this
        at start-up and then every quarter lease. Returns how many jobs it requeued, failed, cancelled and
        re-enqueued.

        A running job whose lease expired is requeued while it has retries left (``[jobs] max_retries``);
        otherwise, or if a command ran it, it fails with a message saying its worker died; if a cancel was
        requested it ends cancelled. A queued job older than ``orphans_after`` seconds (default: one lease)
        with no message on the queue gets one. Each change is one conditional UPDATE: consumers reaping at
        the same time never requeue a job twice.
        """
        jobs = self.ws.settings.jobs
        now = utcnow()
        counts = {"requeued": 0, "failed": 0, "cancelled": 0, "enqueued": 0}
        with self.ws.session() as s:
            stale = s.execute(
                select(JobRow.id, JobRow.worker, JobRow.attempts, JobRow.cancel_requested).where(
                    JobRow.status == "running", JobRow.lease_until < now
                )
            ).all()
        for job_id, worker, attempts, cancel in stale:
            who = worker or "unknown"
            values: dict[str, Any]
            if cancel:
                values = {"status": "cancelled", "message": f"cancelled (its worker {who} had stopped)"}
            elif (worker or "").endswith(INLINE):
                values = {"status": "failed", "error": f"the command running it ({who.removesuffix(INLINE)}) stopped"}
            elif attempts > jobs.max_retries:
                values = {
                    "status": "failed",
                    "error": f"its worker ({who}) died while running it (no heartbeat for {jobs.lease_seconds:g} s); "
                    f"{attempts} attempt(s), [jobs] max_retries = {jobs.max_retries}",
                }
            else:
                values = {
                    "status": "queued",
                    "message": f"requeued: its worker ({who}) died (attempt {attempts} of {jobs.max_retries + 1})",
                    "worker": None,
                }
            ended = {} if values["status"] == "queued" else {"finished_at": utcnow()}
            with self.ws.session.begin() as s:
                done = s.execute(
                    update(JobRow)
                    .where(
                        JobRow.id == job_id,
                        JobRow.status == "running",
                        JobRow.attempts == attempts,
                        JobRow.lease_until < now,
                    )
                    .values(**values, **ended, lease_until=None)
                )
            if getattr(done, "rowcount", 0) != 1:
                continue  # renewed meanwhile, or another reaper got there first
            counts["requeued" if values["status"] == "queued" else str(values["status"])] += 1
            log.warning("job %s: worker %s lost its lease; %s", job_id, who, values["status"])
            if values["status"] == "queued":
                self._enqueue(job_id)
        counts["enqueued"] = self._enqueue_orphans(now, jobs.lease_seconds if orphans_after is None else orphans_after)
        return counts

    def _enqueue_orphans(self, now: datetime, older_than: float) -> int:
        cutoff = now - timedelta(seconds=older_than)
        with self.ws.session() as s:
            queued = set(s.scalars(select(JobRow.id).where(JobRow.status == "queued", JobRow.created_at <= cutoff)))
        if not queued:
            return 0
        pending = {task.args[0] for task in self.huey.pending() if task.args}
        orphans = sorted(queued - pending)
        for job_id in orphans:
            log.warning("job %s: queued without a queue message; enqueued again", job_id)
            self._enqueue(job_id)
        return len(orphans)

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

    def cancel(self, job_id: str, actor: str = LOCAL_USER) -> JobRecord:
        """Cancel a job in any state: a queued one at once (it never starts); a running one at its next
        progress report (a job in a child process that ignores it for ``lease_seconds`` is killed); a running
        one whose worker died (lease expired) at once. A cancelled job stays so; a done or failed one is a
        ``Conflict``. The job records ``actor`` as who asked."""
        job_id = self.get(job_id)["id"]
        now = utcnow()
        ended = {"status": "cancelled", "cancel_requested": True, "lease_until": None, "finished_at": now}
        asked = {"cancelled_by": actor}
        with self.ws.session.begin() as s:
            s.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.status == "queued")
                .values(**ended, **asked, message="cancelled")
            )
            s.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.status == "running", JobRow.lease_until < now)
                .values(**ended, **asked, message="cancelled (its worker had stopped)")
            )
            s.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.status == "running")
                .values(cancel_requested=True, **asked)
            )
            status = s.scalar(select(JobRow.status).where(JobRow.id == job_id))
            if status in ("done", "failed"):
                raise Conflict(f"job {job_id} has already finished ({status})")
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
    def consumer(self, workers: int = 1, *, embedded: bool = True) -> JobConsumer:
        """A consumer of this workspace's queue with its chores: the reaper (see ``reap``) and the periodic
        checks of ``gigavision.jobs.chores`` whose interval setting is above 0 (the retraining loops'
        trigger, ``[loops] check_seconds``); ``embedded``: threads inside another program (the web server,
        a test), which keeps its own signal handlers."""
        from gigavision.jobs import chores
        from gigavision.jobs.queue import Chore, JobConsumer

        reaper = Chore("reaper", max(self.ws.settings.jobs.lease_seconds / 4, 0.05), self._reap_logged, at_start=True)
        checks = [
            Chore(name, every, functools.partial(self._check_logged, name))
            for name in chores.CHECKS
            if (every := chores.EVERY[name](self.ws.settings)) > 0
        ]
        return JobConsumer(self.huey, [reaper, *checks], workers=workers, embedded=embedded)

    def start_consumer(self, workers: int = 1) -> JobConsumer:
        """Threads in this process that run queued jobs (the embedded default; stop with ``.stop()``)."""
        consumer = self.consumer(workers)
        consumer.start()
        return consumer

    def _reap_logged(self, startup: bool) -> None:
        """``reap`` for a consumer: at start-up every queued job without a message is re-enqueued at once."""
        try:
            self.reap(orphans_after=0.0 if startup else None)
        except Exception:  # a database hiccup: the next pass tries again
            log.exception("job reaper failed")

    def _check_logged(self, name: str, _startup: bool) -> None:
        """A periodic check for a consumer; its failure is logged and the next pass tries again."""
        from gigavision.jobs import chores

        try:
            chores.CHECKS.load(name)(self.ws)
        except Exception:
            log.exception("periodic check %s failed", name)
