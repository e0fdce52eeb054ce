"""The child process an isolated job runs in (``registry.ISOLATED``: training, evaluation, prediction, import).

The worker starts it with ``multiprocessing`` (``context``: no threads, locks or open databases inherited
from a server) and watches it (``JobManager._in_child``). The child opens the workspace itself,
runs the job function, and talks to its parent over one pipe: progress and the outcome up, a cancel request
down. The worker alone writes the job's row, so a crash, an OOM kill or a segfault here leaves the worker —
and the API it may live in — untouched, and the worker records how the child died.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from typing import TYPE_CHECKING, Any

from gigavision.jobs.context import JobCancelled, JobContext
from gigavision.registry import import_path

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.context import ForkServerContext, SpawnContext

    from gigavision.config import Settings
    from gigavision.jobs.registry import JobFunction

# What a fork server imports once, so that each child starts in milliseconds instead of a fresh
# interpreter's 1-2 s of imports (SQLAlchemy, the schema, the catalogue); nothing in it opens a database.
PRELOAD = ["gigavision.jobs.child", "gigavision.workspace"]
# Added when the job that starts the fork server loads the training stack (``registry.TRAINING_STACK``):
# every later training, evaluation or loop child then starts in ~0.4 s instead of importing these itself.
# A server whose first jobs are imports or ingests keeps a light fork server (the preload would cost them
# ~9 s). A missing module is skipped (multiprocessing ignores an ImportError in the preload). Importing them
# opens no database and initialises no CUDA (Lightning counts GPUs through NVML to stay fork-safe); the
# intra-op thread pool torch starts is rebuilt in each forked child. onnx (which torch's ONNX export imports)
# and scikit-learn's metrics (evaluation) were another 1.4 s of a small training's 4.6 s; neither starts a
# thread (onnxruntime does, on import: not preloaded).
TRAINING_PRELOAD = ["torch", "lightning", "timm", "onnx", "sklearn.metrics"]
ORPHANED = 70  # exit status of a child whose worker died: its job is the reaper's now, not this process's


def context(kind: str) -> ForkServerContext | SpawnContext:
    """How a child of ``kind`` starts: from a fork server (forked from a process that has only imported
    ``PRELOAD``, and ``TRAINING_PRELOAD`` when ``kind`` started it and needs it; never from the threaded
    server itself) where the platform has one, else spawned. The preload only counts before the fork
    server starts, i.e. for the first isolated job of this process."""
    from gigavision.jobs.registry import TRAINING_STACK

    if "forkserver" in multiprocessing.get_all_start_methods():
        forkserver = multiprocessing.get_context("forkserver")
        forkserver.set_forkserver_preload(PRELOAD + (TRAINING_PRELOAD if kind in TRAINING_STACK else []))
        return forkserver
    return multiprocessing.get_context("spawn")


def _listen(conn: Connection, cancelled: threading.Event) -> None:
    """Set ``cancelled`` when the worker asks; exit at once when the worker is gone (the pipe's end closed),
    so a SIGKILLed worker leaves no orphan still running a job that the reaper hands to another worker."""
    try:
        while True:
            if conn.recv() == "cancel":
                cancelled.set()
    except (EOFError, OSError):
        os._exit(ORPHANED)


def main(
    settings: Settings,
    job_id: str,
    kind: str,
    actor: str,
    target: str | JobFunction,
    params: dict[str, Any],
    conn: Connection,
) -> None:
    """Run one job and send ``("done", result, message)``, ``("cancelled",)`` or ``("failed", error)``."""
    from gigavision.jobs.manager import failure
    from gigavision.workspace import Workspace

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C in a worker's terminal: the worker decides
    cancelled = threading.Event()
    threading.Thread(target=_listen, args=(conn, cancelled), name="gigavision-job-listen", daemon=True).start()

    def report(fraction: float, message: str) -> None:
        conn.send(("progress", fraction, message))

    outcome: tuple[Any, ...]
    ws = Workspace(settings)
    try:
        function: JobFunction = import_path(target) if isinstance(target, str) else target
        ctx = JobContext(ws, job_id, actor, settings.jobs_dir / job_id, report, cancelled.is_set)
        result = function(ctx, params)
        outcome = ("done", result, ctx.outcome)
    except JobCancelled:
        outcome = ("cancelled",)
    except Exception as exc:
        outcome = ("failed", failure(kind, exc)[0])
    finally:
        ws.close()
    conn.send(outcome)
