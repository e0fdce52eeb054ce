"""The Huey queue behind jobs: a SQLite file in the workspace by default, Redis when ``queue_url`` says so."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
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


class JobConsumer(Consumer):  # type: ignore[misc]
    """Huey's consumer (thread workers) plus the jobs' reaper: ``reap(startup)`` runs once before the workers
    start (``startup=True``) and then every ``interval`` seconds in a thread of its own.

    ``embedded``: threads inside another program (the web server, a test), which keep its signal handling —
    Huey's own handlers can only be installed from the main thread and would replace the server's. Idle
    polling backs off to at most one second, so a job submitted to an idle server starts within a second.
    """

    def __init__(
        self,
        huey: Huey,
        reap: Callable[[bool], None],
        interval: float,
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
        self._reap = reap
        self._interval = interval
        self._reaper_stop = threading.Event()
        self._reaper = threading.Thread(target=self._reap_loop, name="gigavision-job-reaper", daemon=True)

    def start(self) -> None:
        self._reap(True)
        super().start()
        self._reaper.start()

    def _reap_loop(self) -> None:
        while not self._reaper_stop.wait(self._interval):
            self._reap(False)

    def stop(self, graceful: bool = False) -> None:
        self._reaper_stop.set()
        super().stop(graceful=graceful)
        if self._reaper.is_alive():
            self._reaper.join()

    def _set_signal_handlers(self) -> None:
        if not self.embedded:
            super()._set_signal_handlers()
