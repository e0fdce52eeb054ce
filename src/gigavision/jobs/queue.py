"""The Huey queue behind jobs: a SQLite file in the workspace by default, Redis when ``queue_url`` says so."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from huey import Huey, RedisHuey, SqliteHuey
from huey.consumer import Consumer

from gigavision.config import Settings
from gigavision.errors import ConfigError

TASK_NAME = "gigavision.run_job"


def make_huey(settings: Settings, execute: Callable[[str], None]) -> tuple[Huey, Any]:
    """A Huey for this workspace and its one task, ``run_job(job_id)``, that calls ``execute``.

    Calling the returned task with a job id enqueues it.

    Job state lives in the database, so Huey's result store is off. With Redis the queue name includes a
    hash of the database URL: workspaces sharing one Redis never run each other's jobs.
    """
    url = settings.queue_url
    huey: Huey
    if not url:
        huey = SqliteHuey("gigavision", filename=str(settings.workspace / "queue.db"), results=False)
    elif url.startswith(("redis://", "rediss://", "unix://")):
        from gigavision.extras import require

        require("redis", feature="queue_url = redis://…")
        name = "gigavision-" + hashlib.sha256(settings.resolved_db_url().encode()).hexdigest()[:12]
        huey = RedisHuey(name, url=url, results=False)
    else:
        raise ConfigError(f"queue_url {url!r}: use redis://HOST:PORT/DB, or leave it empty for the embedded queue")
    return huey, huey.task(name=TASK_NAME)(execute)


@dataclass(frozen=True)
class Chore:
    """Work a consumer does every ``every`` seconds besides running jobs, in a thread of its own:
    ``run(startup)``; once more before the workers start (``startup=True``) when ``at_start``."""

    name: str
    every: float
    run: Callable[[bool], None]
    at_start: bool = False


class JobConsumer(Consumer):  # type: ignore[misc]
    """Huey's consumer (thread workers) plus its chores: the jobs' reaper, which also runs once before the
    workers start, and the periodic checks upper layers register (``gigavision.jobs.chores``), each every
    ``Chore.every`` seconds in a thread of its own so a slow one never delays the reaper.

    ``embedded``: threads inside another program (the web server, a test), which keep its signal handling —
    Huey's own handlers can only be installed from the main thread and would replace the server's. Idle
    polling backs off to at most one second, so a job submitted to an idle server starts within a second.
    """

    def __init__(
        self,
        huey: Huey,
        chores: Sequence[Chore],
        workers: int = 1,
        *,
        embedded: bool = True,
        **options: Any,
    ) -> None:
        options.setdefault("max_delay", 1.0)
        super().__init__(
            huey, workers=workers, worker_type="thread", periodic=False, check_worker_health=not embedded, **options
        )
        self.embedded = embedded
        self.chores = {c.name: c for c in chores}
        self._chores_stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._chore_loop, args=(c,), name=f"gigavision-{c.name}", daemon=True)
            for c in chores
        ]

    def start(self) -> None:
        for chore in self.chores.values():
            if chore.at_start:
                chore.run(True)
        super().start()
        for thread in self._threads:
            thread.start()

    def tick(self, *names: str) -> None:
        """Run the chores (all, or those named) once now, as their threads do when their time comes."""
        for name in names or tuple(self.chores):
            self.chores[name].run(False)

    def _chore_loop(self, chore: Chore) -> None:
        while not self._chores_stop.wait(chore.every):
            chore.run(False)

    def stop(self, graceful: bool = False) -> None:
        self._chores_stop.set()
        super().stop(graceful=graceful)
        for thread in self._threads:
            if thread.is_alive():
                thread.join()

    def _set_signal_handlers(self) -> None:
        if not self.embedded:
            super()._set_signal_handlers()
