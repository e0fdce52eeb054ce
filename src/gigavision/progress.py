"""How long work reports how far it got: one signature for every stage, the CLI bars and the jobs.

``progress(done, total, message)``: ``done`` of ``total`` units (windows, images, epochs, percent), with a
short note on what is happening. The CLI draws it as a Rich bar (``cli.common.progress_bar``), a job stores
``done / total`` and is cancelled there (``jobs.context.JobContext.progress``), and the Python API may pass
any function of that shape.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    """Called with ``done`` of ``total`` units and a short message; may raise to cancel the work."""

    def __call__(self, done: float, total: float, message: str, /) -> None: ...


def no_progress(done: float, total: float, message: str = "", /) -> None:
    """The ``Progress`` of work nobody watches."""
