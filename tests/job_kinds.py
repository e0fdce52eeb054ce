"""Job kinds for tests/test_job_durability.py and benchmarks/bench_job_crashes.py.

A module of its own, light to import: a ``gigavision worker`` subprocess and the child processes of isolated
kinds import it, so that they know these kinds too.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from gigavision.jobs import JobContext, registry


def hold(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    """Appends this process's id to ``output/runs`` (one line per run), then, with ``release``, reports
    progress until that file exists (or, with ``until_cancelled``, until cancelled)."""
    with (ctx.output_dir / "runs").open("a") as runs:
        runs.write(f"{os.getpid()}\n")
    release = Path(params["release"]) if params.get("release") else None
    while (release is not None and not release.exists()) or params.get("until_cancelled"):
        ctx.progress(0, 1, "holding")  # raises JobCancelled once a cancel was requested
        time.sleep(0.02)  # the job's own pace
    return {"pid": os.getpid()}


def die(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    """Dies the way ``how`` says: ``exit`` (os._exit), ``sigkill`` (as the OOM killer does), ``memory`` (an
    impossible allocation), ``grow`` (allocates until its memory limit)."""
    how = params["how"]
    if how == "exit":
        os._exit(3)
    if how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if how == "memory":
        import numpy as np

        np.ones(1 << 60, dtype=np.uint8)  # 1 EiB: numpy raises MemoryError
    if how == "grow":  # really run out of memory, under a 1 GiB address-space limit of this process only
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, resource.getrlimit(resource.RLIMIT_AS)[1]))
        chunks = []
        while True:
            chunks.append(bytearray(64 << 20))
    raise ValueError(f"how must be exit, sigkill, memory or grow, got {how!r}")


def stubborn(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    """Never reports progress, so never sees a cancel request: only killing its process stops it."""
    (ctx.output_dir / "started").touch()
    while True:
        time.sleep(0.05)


KINDS = {
    "test.hold": (hold, False),  # in a thread of the worker
    "test.hold.child": (hold, True),  # in a child process
    "test.die": (die, True),
    "test.stubborn": (stubborn, True),
}


def register_all() -> None:
    for kind, (function, isolated) in KINDS.items():
        registry.register(kind, function, isolated=isolated)


def discard_all() -> None:
    for kind in KINDS:
        registry.register(kind, "tests.job_kinds:hold")  # resets the isolated flag
        registry.KINDS.discard(kind)
