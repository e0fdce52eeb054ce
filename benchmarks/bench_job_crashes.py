"""Jobs that survive crashes (issue 13): SIGKILLed job workers, and job processes that die under the API.

Acceptance: 20 SIGKILLed job workers → 20/20 jobs requeued or failed within 2× the lease; a job that runs out
of memory → ``/healthz`` stays 200.

Phases, each on a fresh workspace with ``[jobs] lease_seconds = --lease``:
  requeue  (max_retries = 2) ``--workers`` ``gigavision worker`` processes (one job thread each) each take one
           job that reports progress until a file appears; once all run, every worker is SIGKILLed. A
           surviving consumer (threads of this process) reaps. ``detect_s``: per job, from its worker's SIGKILL
           to the job being requeued (queued again, or already taken by the survivor). Then the file appears:
           every job must end ``done``, having run exactly twice (the dead worker's run and the survivor's).
  fail     the same with max_retries = 0: every job must end ``failed`` (its worker died), ``detect_s`` to that.
  child    the API app (in this process) with job threads runs isolated jobs whose child process exits, is
           SIGKILLed (as the kernel's OOM killer does), raises MemoryError, or allocates until a 1 GiB limit;
           ``/healthz`` is polled all the while: every answer must be 200, every job ``failed``.

Usage: .venv/bin/python benchmarks/bench_job_crashes.py [--quick] [--workers N] [--lease S]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import _util as u

sys.path.insert(0, str(u.ROOT))  # tests.job_kinds: the job kinds the workers and children run

LOCAL = "http://127.0.0.1"  # a name of the server (its Host check refuses TestClient's "testserver")
WORKER = (
    "import sys, tests.job_kinds as k; k.register_all(); "
    "import gigavision.cli.main as m; m.main(['-w', sys.argv[1], 'worker'])"
)


def _workspace(path: Path, lease: float, max_retries: int) -> Any:
    import gigavision as gv

    ws = gv.init_workspace(path)
    config = ws.root / "gigavision.toml"
    config.write_text(config.read_text() + f"\n[jobs]\nlease_seconds = {lease}\nmax_retries = {max_retries}\n")
    ws.close()
    return gv.open_workspace(path)


def _state(ws: Any) -> dict[str, tuple[str, int, str | None, str]]:
    """Every job's status, attempts, worker and message."""
    from sqlalchemy import select

    from gigavision.store.schema import JobRow

    query = select(JobRow.id, JobRow.status, JobRow.attempts, JobRow.worker, JobRow.message)
    with ws.session() as s:
        return {i: (status, attempts, worker, message) for i, status, attempts, worker, message in s.execute(query)}


def crash_workers(tmp: Path, n: int, lease: float, max_retries: int) -> dict[str, Any]:
    ws = _workspace(tmp / f"ws-{max_retries}", lease, max_retries)
    release = tmp / f"release-{max_retries}"
    ids = [ws.jobs.submit("test.hold", {"release": str(release)}, "bench")["id"] for _ in range(n)]
    started = time.monotonic()
    workers = [
        subprocess.Popen([u.PY, "-c", WORKER, str(ws.root)], cwd=u.ROOT, stderr=subprocess.DEVNULL) for _ in range(n)
    ]
    host = os.uname().nodename
    by_worker: dict[str, str] = {}
    try:
        while len(by_worker) < n:  # every job running (and reporting) in a worker
            state = _state(ws)
            by_worker = {w: i for i, (st, _, w, msg) in state.items() if st == "running" and w and msg == "holding"}
            if time.monotonic() - started > 600:
                counts = {st: [s[0] for s in state.values()].count(st) for st in {s[0] for s in state.values()}}
                raise SystemExit(f"only {len(by_worker)} of {n} workers run a job after 600 s: {counts}")
            time.sleep(0.05)
        u.log(f"{n} workers running a job each after {time.monotonic() - started:.1f} s; SIGKILL all")
        survivor = ws.jobs.start_consumer(n)
        held = {i: attempts for i, (_, attempts, _, _) in _state(ws).items()}  # the claims the kills end
        killed: dict[str, float] = {}
        for w in workers:
            w.kill()
            killed[by_worker[f"{host}:{w.pid}"]] = time.monotonic()
    finally:
        for w in workers:
            w.kill()
            w.wait()
    detect: dict[str, float] = {}
    while len(detect) < n and time.monotonic() - max(killed.values()) < 10 * lease:
        now = time.monotonic()
        for job_id, (status, attempts, _, _) in _state(ws).items():
            if job_id not in detect and (status != "running" or attempts > held[job_id]):
                detect[job_id] = now - killed[job_id]
        time.sleep(0.005)
    release.touch()
    final: dict[str, dict[str, Any]] = {}
    for job_id in ids:
        try:
            final[job_id] = dict(ws.jobs.wait(job_id, timeout=60))
        except TimeoutError:
            final[job_id] = {"status": "timeout"}
    survivor.stop(graceful=True)
    runs = [len((ws.jobs.folder(i) / "output" / "runs").read_text().split()) for i in ids]
    statuses = [final[i]["status"] for i in ids]
    ws.close()
    values = sorted(detect.values())
    return {
        "workers_killed": n,
        "max_retries": max_retries,
        "requeued_or_failed": len(detect),
        "within_2x_lease": sum(v <= 2 * lease for v in values),
        "detect_s": {
            "min": round(values[0], 3) if values else None,
            "median": round(statistics.median(values), 3) if values else None,
            "max": round(values[-1], 3) if values else None,
        },
        "final": {s: statuses.count(s) for s in sorted(set(statuses))},
        "runs_per_job": {str(r): runs.count(r) for r in sorted(set(runs))},
        "error_example": next((final[i].get("error") for i in ids if final[i].get("error")), None),
    }


def dying_children(tmp: Path, lease: float) -> dict[str, Any]:
    from fastapi.testclient import TestClient

    from gigavision.server.main import create_app

    ws = _workspace(tmp / "ws-child", lease, 2)
    hows = ("exit", "sigkill", "memory", "grow")
    ws.settings.job_workers = len(hows)
    codes: list[int] = []
    stop = threading.Event()
    with TestClient(create_app(ws), base_url=LOCAL) as client:

        def poll() -> None:
            while not stop.is_set():
                codes.append(client.get("/healthz").status_code)
                time.sleep(0.01)

        poller = threading.Thread(target=poll)
        poller.start()
        started = time.monotonic()
        ids = {how: ws.jobs.submit("test.die", {"how": how}, "bench")["id"] for how in hows}
        ended = {how: ws.jobs.wait(i, timeout=120) for how, i in ids.items()}
        took = time.monotonic() - started
        stop.set()
        poller.join()
        codes.append(client.get("/healthz").status_code)
    ws.close()
    return {
        "jobs": {how: {"status": j["status"], "error": j["error"]} for how, j in ended.items()},
        "all_failed": all(j["status"] == "failed" for j in ended.values()),
        "healthz_polls": len(codes),
        "healthz_non_200": sum(c != 200 for c in codes),
        "api_pid_alive": True,  # this process answered the last /healthz
        "wall_s": round(took, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=20)
    parser.add_argument("--lease", type=float, default=5.0, help="[jobs] lease_seconds")
    parser.add_argument("--quick", action="store_true", help="5 workers")
    args = parser.parse_args()
    n = 5 if u.quick_requested() else args.workers
    job_kinds = __import__("tests.job_kinds", fromlist=["register_all"])
    job_kinds.register_all()
    with tempfile.TemporaryDirectory(prefix="bench-job-crashes-") as scratch:
        tmp = Path(scratch)
        result: dict[str, Any] = {"benchmark": "job_crashes", "lease_s": args.lease, "workers": n}
        result["requeue"] = crash_workers(tmp, n, args.lease, max_retries=2)
        u.log("requeue", result["requeue"])
        result["fail"] = crash_workers(tmp, n, args.lease, max_retries=0)
        u.log("fail", result["fail"])
        result["child"] = dying_children(tmp, args.lease)
    result["machine"] = {**u.machine(), "load_average_1m": round(os.getloadavg()[0], 1)}
    u.emit(result)


if __name__ == "__main__":
    main()
