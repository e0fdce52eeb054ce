"""Background jobs: inline runs, the embedded SQLite queue, the Redis queue, progress, cancel, files, REST, CLI."""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import gigavision as gv
from gigavision.cli.main import main
from gigavision.errors import Conflict, InvalidInput, MissingExtra
from gigavision.jobs import JobContext, registry
from gigavision.server.main import create_app
from tests.conftest import IN_CI

REDIS_URL = os.environ.get("GIGAVISION_TEST_REDIS", "redis://127.0.0.1:6379/15")
release = threading.Event()


def count_job(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    """Counts to ``n`` reporting progress, writes the numbers to a file; can fail or wait to be cancelled."""
    n = int(params["n"])
    if params.get("fail") == "invalid":
        raise InvalidInput("n must be even")
    if params.get("fail") == "crash":
        raise ZeroDivisionError("division by zero")
    lines = []
    for i in range(n):
        lines.append(str(i))
        ctx.progress(i + 1, n, f"counted {i + 1}")
    while params.get("until_cancelled"):  # progress() raises JobCancelled once a cancel is requested
        ctx.progress(0, 1, "waiting")
        release.wait(0.05)
    (ctx.output_dir / "sub").mkdir()
    (ctx.output_dir / "sub" / "numbers.txt").write_text("\n".join(lines))
    return {"total": sum(range(n)), "actor": ctx.actor}


@pytest.fixture(autouse=True)
def _count_kind() -> Iterator[None]:
    registry.register("test.count", count_job)
    yield
    registry.KINDS.discard("test.count")


def test_inline_run_records_result_progress_and_files(workspace: gv.Workspace) -> None:
    seen: list[float] = []
    result = workspace.jobs.run("test.count", {"n": 5}, "ana", on_progress=lambda f, m: seen.append(f))
    assert result == {"total": 10, "actor": "ana"}
    assert seen[-1] == 1.0
    items, total = workspace.jobs.list_jobs()
    assert total == 1 and items[0]["status"] == "done" and items[0]["progress"] == 1.0
    job = workspace.jobs.get(items[0]["id"])
    assert job["files"] == [{"path": "sub/numbers.txt", "size": len("0\n1\n2\n3\n4")}]
    assert job["started_at"] is not None and job["finished_at"] is not None
    assert all(job[k].endswith("+00:00") for k in ("created_at", "started_at", "finished_at"))  # UTC on both DBs


def test_inline_failures_are_recorded_and_raised(workspace: gv.Workspace) -> None:
    with pytest.raises(InvalidInput, match="n must be even"):
        workspace.jobs.run("test.count", {"n": 3, "fail": "invalid"}, "ana")
    with pytest.raises(ZeroDivisionError):
        workspace.jobs.run("test.count", {"n": 3, "fail": "crash"}, "ana")
    failed, total = workspace.jobs.list_jobs(status="failed")
    assert total == 2
    assert {j["error"] for j in failed} == {"n must be even", "ZeroDivisionError: division by zero"}
    with pytest.raises(InvalidInput, match="unknown job kind 'nope'"):
        workspace.jobs.submit("nope", {}, "ana")
    assert workspace.jobs.list_jobs()[1] == 2  # nothing written for the unknown kind


def needs_torch_job(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    """A job whose code imports an extra's module (or, with ``module``, any other) that a worker may lack."""
    __import__(params.get("module", "torch"))
    return {}


def test_a_job_missing_an_extra_fails_with_the_one_line_message(
    sqlite_workspace: gv.Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # a worker without the train extra
    monkeypatch.setitem(sys.modules, "not_an_extra", None)
    registry.register("test.torch", needs_torch_job)
    try:
        message = "a test.torch job needs the 'train' extra (torch is not installed): pip install 'gigavision[train]'"
        with pytest.raises(MissingExtra) as raised:
            sqlite_workspace.jobs.run("test.torch", {}, "ana")
        assert str(raised.value) == message and raised.value.extra == "train"
        assert isinstance(raised.value.__cause__, ModuleNotFoundError)
        with pytest.raises(ModuleNotFoundError):  # an import error of no extra's module stays a crash
            sqlite_workspace.jobs.run("test.torch", {"module": "not_an_extra"}, "ana")
        with TestClient(create_app(sqlite_workspace)):  # the queue's worker records the same line
            queued = sqlite_workspace.jobs.submit("test.torch", {}, "ana")
            done = sqlite_workspace.jobs.wait(queued["id"], timeout=30)
    finally:
        registry.KINDS.discard("test.torch")
    assert done["status"] == "failed" and done["error"] == message
    errors = {j["error"] for j in sqlite_workspace.jobs.list_jobs(status="failed")[0]}
    assert errors == {message, "ModuleNotFoundError: import of not_an_extra halted; None in sys.modules"}


def test_queue_runs_jobs_and_rest_serves_them(workspace: gv.Workspace) -> None:
    with TestClient(create_app(workspace)) as client:
        job = workspace.jobs.submit("test.count", {"n": 4}, "bob")
        assert job["status"] == "queued"
        done = workspace.jobs.wait(job["id"], timeout=30)
        assert done["status"] == "done" and done["result"] == {"total": 6, "actor": "bob"}
        crashed = workspace.jobs.wait(workspace.jobs.submit("test.count", {"n": 1, "fail": "crash"}, "bob")["id"])
        assert crashed["status"] == "failed"
        after = workspace.jobs.wait(workspace.jobs.submit("test.count", {"n": 2}, "bob")["id"])
        assert after["status"] == "done"  # the worker survived the crash

        page = client.get("/api/v1/jobs", params={"status": "done"}).json()
        assert page["total"] == 2
        body = client.get(f"/api/v1/jobs/{job['id']}").json()
        assert body["result"]["total"] == 6 and body["files"][0]["path"] == "sub/numbers.txt"
        file = client.get(f"/api/v1/jobs/{job['id']}/files/sub/numbers.txt")
        assert file.status_code == 200 and file.content == b"0\n1\n2\n3"
        assert "attachment" in file.headers["content-disposition"]

        assert client.get(f"/api/v1/jobs/{'0' * 32}").status_code == 404
        assert client.get("/api/v1/jobs/not-a-job").json()["error"]["code"] == "invalid_input"
        assert client.get(f"/api/v1/jobs/{job['id']}/files/..%2F..%2Fgigavision.toml").status_code in (400, 404)
        assert client.get(f"/api/v1/jobs/{job['id']}/files/missing.txt").status_code == 404
        assert client.post(f"/api/v1/jobs/{job['id']}/cancel").status_code == 409


def test_cancel_running_and_queued_jobs(workspace: gv.Workspace) -> None:
    queued = workspace.jobs.submit("test.count", {"n": 1}, "ana")  # no consumer yet: stays queued
    assert workspace.jobs.cancel(queued["id"])["status"] == "cancelled"
    consumer = workspace.jobs.start_consumer()
    try:
        running = workspace.jobs.submit("test.count", {"n": 1, "until_cancelled": True}, "ana")
        _wait_for(workspace, running["id"], "running")
        assert workspace.jobs.cancel(running["id"])["cancel_requested"] is True
        assert workspace.jobs.wait(running["id"], timeout=30)["status"] == "cancelled"
        # the consumer skips the job cancelled while queued; a later one still runs
        assert workspace.jobs.wait(workspace.jobs.submit("test.count", {"n": 1}, "ana")["id"])["status"] == "done"
    finally:
        consumer.stop(graceful=True)
    assert workspace.jobs.get(queued["id"])["started_at"] is None
    with pytest.raises(Conflict):
        workspace.jobs.cancel(workspace.jobs.list_jobs(status="done")[0][0]["id"])


def _wait_for(ws: gv.Workspace, job_id: str, status: str, timeout: float = 30.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while ws.jobs.get(job_id)["status"] != status:
        assert time.monotonic() < deadline, f"job never reached {status}"
        time.sleep(0.02)


def _redis_available() -> str | None:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
        return None
    except Exception as exc:
        return str(exc)


def test_redis_queue(tmp_path: Path) -> None:
    problem = _redis_available()
    if problem:
        if IN_CI:
            pytest.fail(f"Redis at {REDIS_URL} is required under CI=true: {problem}")
        pytest.skip(f"Redis not reachable: {problem}")
    ws = gv.init_workspace(tmp_path / "ws")
    ws.settings.queue_url = REDIS_URL
    try:
        assert type(ws.jobs.huey).__name__ == "RedisHuey"
        consumer = ws.jobs.start_consumer(workers=2)
        try:
            ids = [ws.jobs.submit("test.count", {"n": n}, "ana")["id"] for n in (3, 4, 5)]
            results = [ws.jobs.wait(i, timeout=30)["result"]["total"] for i in ids]
        finally:
            consumer.stop(graceful=True)
        assert results == [3, 6, 10]
    finally:
        ws.jobs.huey.storage.flush_queue()
        ws.close()


def test_cli_jobs(sqlite_workspace: gv.Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    sqlite_workspace.jobs.run("test.count", {"n": 3}, "cli")
    root = str(sqlite_workspace.root)
    assert main(["-w", root, "jobs", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["total"] == 1
    job_id = listed["items"][0]["id"]
    assert main(["-w", root, "jobs", "show", job_id, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["files"][0]["path"] == "sub/numbers.txt"
    assert main(["-w", root, "jobs", "wait", job_id, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "done"
    assert main(["-w", root, "jobs", "cancel", job_id]) == 2
    assert "already finished" in capsys.readouterr().err
