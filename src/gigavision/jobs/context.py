"""What a running job sees: its workspace, folders, and a throttled progress reporter that also cancels."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gigavision.workspace import Workspace

PROGRESS_INTERVAL_S = 0.5  # at most two progress writes a second: a progress bar, not a database load


class JobCancelled(Exception):
    """Raised inside a job by ``JobContext.progress`` once the user asked to cancel it."""


class JobContext:
    """Handed to a job function. ``progress`` reports and is also where a cancel request takes effect."""

    def __init__(
        self,
        workspace: Workspace,
        job_id: str,
        actor: str,
        folder: Path,
        report: Callable[[float, str], None],
        cancel_requested: Callable[[], bool],
    ) -> None:
        self.workspace = workspace
        self.job_id = job_id
        self.actor = actor
        self.input_dir = folder / "input"
        self.output_dir = folder / "output"
        self.input_dir.mkdir(parents=True, exist_ok=True)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self._report = report
        self._cancel_requested = cancel_requested
        self._last = 0.0
        self.outcome: str | None = None

    def conclude(self, message: str) -> None:
        """The job's final message when it ends ``done`` (default "done"), e.g. an import's counts."""
        self.outcome = message

    def progress(self, done: float, total: float, message: str = "") -> None:
        """Record ``done / total`` (throttled); raises ``JobCancelled`` when a cancel was requested."""
        fraction = min(max(done / total, 0.0), 1.0) if total > 0 else 0.0
        now = time.monotonic()
        if now - self._last < PROGRESS_INTERVAL_S and fraction < 1.0:
            return
        self._last = now
        if self._cancel_requested():
            raise JobCancelled(self.job_id)
        self._report(fraction, message)
