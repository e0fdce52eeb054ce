"""Jobs that survive crashes (issue 13): leases, the reaper, child processes, cancel in every state.

Tiny leases (``[jobs] lease_seconds``) keep this quick; every wait polls the job's state with a deadline.
The 20-worker SIGKILL figure is benchmarks/bench_job_crashes.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

import gigavision as gv
from gigavision.jobs import registry
from gigavision.jobs.manager import INLINE
from gigavision.server.main import create_app
from gigavision.store.schema import JobRow, utcnow
from tests import job_kinds
from tests.conftest import IN_CI

REDIS_URL = os.environ.get("GIGAVISION_TEST_REDIS", "redis://127.0.0.1:6379/15")
ROOT = Path(__file__).resolve().parents[1]
LEASE = 0.5
LOCAL = "http://127.0.0.1"  # a name of the server (the Host check refuses TestClient's "testserver")
# `gigavision worker -w ROOT` in a process of its own that knows the test job kinds
WORKER = (
    "import sys, tests.job_kinds as k; k.register_all(); "
    "import gigavision.cli.main as m; m.main(['-w', sys.argv[1], 'worker'])"
)


@pytest.fixture(autouse=True)
def _kinds() -> Iterator[None]:
    job_kinds.register_all()
    yield
    job_kinds.discard_all()


def _workspace(path: Path, lease: float = LEASE, max_retries: int = 2, queue: str = "sqlite") -> gv.Workspace:
    """A workspace whose gigavision.toml sets the lease, so worker subprocesses use it too."""
    ws = gv.init_workspace(path)
    config = ws.root / "gigavision.toml"
    config.write_text(config.read_text() + f"\n[jobs]\nlease_seconds = {lease}\nmax_retries = {max_retries}\n")
    if queue == "redis":
        problem = _redis_problem()
        if problem:
            ws.close()
            if IN_CI:
                pytest.fail(f"Redis at {REDIS_URL} is required under CI=true: {problem}")
            pytest.skip(f"Redis not reachable: {problem}")
        config.write_text(f'queue_url = "{REDIS_URL}"\n' + config.read_text())
    ws.close()
    return gv.open_workspace(path)


def _redis_problem() -> str | None:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
        return None
    except Exception as exc:
        return str(exc)


@pytest.fixture(params=["sqlite", "redis"])
def queued_ws(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[gv.Workspace]:
    """A workspace on the SQLite queue and one on Redis (SQLite database for both). Its lease is long: a
    loaded test machine that stalls a heartbeat past a tiny lease would rightly hand the job to another
    worker, which is not what these tests are about."""
    ws = _workspace(tmp_path / "ws", lease=10.0, queue=request.param)
    yield ws
    if request.param == "redis":
        ws.jobs.huey.storage.flush_queue()
    ws.close()


def _until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.01)
    return value


def _row(ws: gv.Workspace, job_id: str) -> JobRow:
    with ws.session() as s:
        row = s.get(JobRow, job_id)
        assert row is not None
        return row


def _runs(ws: gv.Workspace, job_id: str) -> list[str]:
    path = ws.jobs.folder(job_id) / "output" / "runs"
    return path.read_text().split() if path.exists() else []


def test_a_sigkilled_worker_s_job_is_requeued_within_two_leases_and_finishes(tmp_path: Path) -> None:
    ws = _workspace(tmp_path / "ws", lease=1.0)
    release = tmp_path / "release"
    job = ws.jobs.submit("test.hold", {"release": str(release)}, "ana")
    worker = subprocess.Popen([sys.executable, "-c", WORKER, str(ws.root)], cwd=ROOT, stderr=subprocess.DEVNULL)
    try:
        holding = (f"{os.uname().nodename}:{worker.pid}", "holding")
        _until(lambda: (_row(ws, job["id"]).worker, _row(ws, job["id"]).message) == holding, 20, "the worker runs it")
    finally:
        worker.kill()  # SIGKILL: no clean-up, the lease just stops being renewed
        worker.wait()
    killed = time.monotonic()
    consumer = ws.jobs.start_consumer()  # a surviving consumer: its reaper notices
    try:
        _until(lambda: _row(ws, job["id"]).attempts == 2, 2 * 1.0, "requeued and taken again")
        took = time.monotonic() - killed
        release.touch()
        done = ws.jobs.wait(job["id"], timeout=10)
    finally:
        consumer.stop(graceful=True)
        ws.close()
    assert took <= 2.0
    assert done["status"] == "done" and done["result"] == {"pid": os.getpid()}
    assert _runs(ws, job["id"]) == [str(worker.pid), str(os.getpid())]  # run by the worker, then here


def test_a_worker_that_lost_its_lease_stops_and_overwrites_nothing(tmp_path: Path) -> None:
    ws = _workspace(tmp_path / "ws")
    job_id = ws.jobs.submit("test.hold", {"release": str(tmp_path / "never")}, "ana")["id"]
    consumer = ws.jobs.start_consumer(1)
    try:
        _until(lambda: _row(ws, job_id).message == "holding", 10, "the job runs")
        with ws.session.begin() as s:  # meanwhile the reaper gave the job to another worker (claim 2)
            theirs = {"attempts": 2, "worker": "other:2", "message": "theirs", "lease_until": utcnow() + timedelta(60)}
            s.execute(update(JobRow).where(JobRow.id == job_id).values(**theirs))
        # the heartbeat notices, the job stops at its next progress report, and the only thread is free again
        after = ws.jobs.wait(ws.jobs.submit("test.hold", {}, "ana")["id"], timeout=10)
        row = _row(ws, job_id)
    finally:
        consumer.stop(graceful=True)
        ws.close()
    assert after["status"] == "done"
    assert (row.status, row.attempts, row.worker, row.message) == ("running", 2, "other:2", "theirs")


def _stale(ws: gv.Workspace, kind: str, *, worker: str = "elsewhere:1", attempts: int = 1, cancel: bool = False) -> str:
    """A job left ``running`` by a worker that died: its lease expired a second ago."""
    row = ws.jobs._create(kind, {}, "ana")
    with ws.session.begin() as s:
        s.execute(
            update(JobRow)
            .where(JobRow.id == row.id)
            .values(
                status="running",
                worker=worker,
                attempts=attempts,
                cancel_requested=cancel,
                lease_until=utcnow() - timedelta(seconds=1),
            )
        )
    return row.id


def test_the_reaper_requeues_fails_or_cancels_jobs_whose_worker_died(tmp_path: Path) -> None:
    ws = _workspace(tmp_path / "ws", max_retries=1)
    try:
        retry = _stale(ws, "test.hold", attempts=1)
        spent = _stale(ws, "test.hold", attempts=2)
        inline = _stale(ws, "test.hold", worker="laptop:7" + INLINE)
        cancelled = _stale(ws, "test.hold", cancel=True)
        live = ws.jobs._create("test.hold", {}, "ana").id  # queued, with no queue message
        with ws.session.begin() as s:  # a running job whose worker is alive: its lease is still valid
            s.execute(
                update(JobRow).where(JobRow.id == live).values(status="running", lease_until=utcnow() + timedelta(60))
            )
        assert ws.jobs.reap() == {"requeued": 1, "failed": 2, "cancelled": 1, "enqueued": 0}
        assert ws.jobs.reap() == {"requeued": 0, "failed": 0, "cancelled": 0, "enqueued": 0}  # nothing twice
        assert [t.args for t in ws.jobs.huey.pending()] == [(retry,)]
        got = {i: ws.jobs.get(i) for i in (retry, spent, inline, cancelled, live)}
    finally:
        ws.close()
    assert got[retry]["status"] == "queued"
    assert got[retry]["message"] == "requeued: its worker (elsewhere:1) died (attempt 1 of 2)"
    assert got[spent]["status"] == "failed"
    assert got[spent]["error"].startswith("its worker (elsewhere:1) died while running it (no heartbeat for 0.5 s)")
    assert got[inline]["status"] == "failed" and got[inline]["error"] == "the command running it (laptop:7) stopped"
    assert got[cancelled]["status"] == "cancelled" and got[live]["status"] == "running"


def test_a_queued_job_without_a_queue_message_runs_after_a_restart(queued_ws: gv.Workspace) -> None:
    ws = queued_ws
    lost = ws.jobs._create("test.hold", {}, "ana").id  # the process died between the commit and the enqueue
    sent = ws.jobs.submit("test.hold", {}, "ana")["id"]  # this one has its message
    consumer = ws.jobs.start_consumer()
    try:
        done = [ws.jobs.wait(i, timeout=10)["status"] for i in (lost, sent)]
    finally:
        consumer.stop(graceful=True)
    assert done == ["done", "done"]
    assert len(_runs(ws, lost)) == 1 and len(_runs(ws, sent)) == 1  # the one with a message was not sent twice
    assert ws.jobs.huey.pending() == []


def test_two_consumers_never_run_one_job_twice(queued_ws: gv.Workspace) -> None:
    ws = queued_ws
    other = gv.open_workspace(ws.root)  # a second process's view: its own engine, queue client and consumer
    other.settings.queue_url = ws.settings.queue_url
    ids = [ws.jobs.submit("test.hold", {}, "ana")["id"] for _ in range(12)]
    for job_id in ids * 2:  # each job's message three times over
        ws.jobs._enqueue(job_id)
    consumers = [ws.jobs.start_consumer(2), other.jobs.start_consumer(2)]
    try:
        ended = [ws.jobs.wait(i, timeout=20)["status"] for i in ids]
        _until(lambda: not ws.jobs.huey.pending(), 10, "duplicate messages consumed")
    finally:
        _stop(consumers)
        other.close()
    assert ended == ["done"] * 12
    assert [len(_runs(ws, i)) for i in ids] == [1] * 12
    assert {_row(ws, i).attempts for i in ids} == {1}


def _stop(consumers: list[Any]) -> None:
    """Stop consumers at the same time (each waits up to a second for a blocking Redis read)."""
    stopping = [threading.Thread(target=c.stop, kwargs={"graceful": True}) for c in consumers]
    for t in stopping:
        t.start()
    for t in stopping:
        t.join()


def test_concurrent_claims_of_one_job_have_one_winner(workspace: gv.Workspace) -> None:
    job_id = workspace.jobs._create("test.hold", {}, "ana").id
    start = threading.Barrier(8)
    won: list[object] = []

    def claim() -> None:
        start.wait()
        won.append(workspace.jobs._claim(job_id))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(c is not None for c in won) == 1
    assert _row(workspace, job_id).attempts == 1


def test_a_dying_child_fails_its_job_and_the_api_stays_up(tmp_path: Path) -> None:
    ws = _workspace(tmp_path / "ws")
    ws.settings.job_workers = 3
    try:
        with TestClient(create_app(ws), base_url=LOCAL) as client:
            ids = {how: ws.jobs.submit("test.die", {"how": how}, "ana")["id"] for how in ("exit", "sigkill", "memory")}
            ended = {how: ws.jobs.wait(job_id, timeout=30) for how, job_id in ids.items()}
            assert client.get("/healthz").status_code == 200
    finally:
        ws.close()
    assert {how: job["status"] for how, job in ended.items()} == dict.fromkeys(ids, "failed")
    assert ended["exit"]["error"] == "the job's process exited with code 3 before it finished"
    assert ended["sigkill"]["error"] == "the job's process was killed by SIGKILL (out of memory?) before it finished"
    assert ended["memory"]["error"].startswith("MemoryError: ")


def test_an_isolated_job_whose_process_cannot_start_fails_with_the_reason(tmp_path: Path) -> None:
    ws = _workspace(tmp_path / "ws")
    registry.register("test.lambda", lambda ctx, params: {}, isolated=True)  # a child cannot import a lambda
    try:
        job_id = ws.jobs._create("test.lambda", {}, "ana").id
        ws.jobs.consume(job_id)  # what the queue's task does, here in this thread
        failed = ws.jobs.get(job_id)
    finally:
        registry.KINDS.discard("test.lambda")
        ws.close()
    assert failed["status"] == "failed"
    assert failed["error"].startswith("job kind 'test.lambda' runs isolated, but its process could not start: ")


def test_cancel_works_in_every_state(tmp_path: Path) -> None:
    ws = _workspace(tmp_path / "ws")
    ws.settings.job_workers = 2
    try:
        queued = ws.jobs.submit("test.hold", {}, "ana")["id"]
        # queued: cancelled at once, and never starts once a consumer runs
        assert ws.jobs.cancel(queued)["status"] == "cancelled"
        # a running job whose worker died: cancelled at once, nobody would act on the request
        dead = _stale(ws, "test.hold")
        assert ws.jobs.cancel(dead)["message"] == "cancelled (its worker had stopped)"
        with TestClient(create_app(ws), base_url=LOCAL) as client:
            cooperative = ws.jobs.submit("test.hold.child", {"until_cancelled": True}, "ana")["id"]
            stubborn = ws.jobs.submit("test.stubborn", {}, "ana")["id"]
            _until(lambda: (ws.jobs.folder(stubborn) / "output" / "started").exists(), 30, "child started")
            _until(lambda: ws.jobs.get(cooperative)["message"] == "holding", 30, "child reported")
            for job_id in (cooperative, stubborn):  # running: asked, then ...
                assert client.post(f"/api/v1/jobs/{job_id}/cancel").json()["cancel_requested"] is True
            stopped = {i: ws.jobs.wait(i, timeout=10) for i in (cooperative, stubborn)}
            done = ws.jobs.wait(ws.jobs.submit("test.hold", {}, "ana")["id"], timeout=10)
            finished = client.post(f"/api/v1/jobs/{done['id']}/cancel")
            again = client.post(f"/api/v1/jobs/{queued}/cancel")
    finally:
        ws.close()
    assert stopped[cooperative]["status"] == "cancelled" and stopped[cooperative]["message"] == "cancelled"
    assert _runs(ws, cooperative) != [str(os.getpid())]  # it ran in a child process
    assert stopped[stubborn]["status"] == "cancelled"  # ... killed after one lease of ignoring it
    assert stopped[stubborn]["message"] == f"cancelled (stopped after {LEASE:g} s)"
    assert _runs(ws, queued) == [] and ws.jobs.get(queued)["started_at"] is None
    assert finished.status_code == 409 and "already finished (done)" in finished.json()["error"]["message"]
    assert again.status_code == 200 and again.json()["status"] == "cancelled"  # cancelling twice: a no-op
