"""Periodic checks every job consumer runs besides its jobs and the reaper, by name.

A check is ``fn(workspace) -> object`` named by a ``module:function`` path, imported on first use like a job
kind (``gigavision.jobs.registry``): this layer runs the retraining loops' trigger without importing the
stage above it. Each check comes with a function of the settings that says how often it runs (seconds;
0: never), so turning one off needs no code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from gigavision.config import Settings
from gigavision.registry import Registry

if TYPE_CHECKING:
    from gigavision.workspace import Workspace

Check = Callable[["Workspace"], object]
Every = Callable[[Settings], float]

CHECKS: Registry[str | Check] = Registry("consumer check")
EVERY: dict[str, Every] = {}


def register(name: str, target: str | Check, every: Every) -> None:
    """Add (or replace) a periodic check: ``target`` (a ``module:function`` path or the function) runs every
    ``every(settings)`` seconds in each consumer; 0 or less: never."""
    CHECKS.add(name, target)
    EVERY[name] = every


def discard(name: str) -> None:
    CHECKS.discard(name)
    EVERY.pop(name, None)


def _loop_seconds(settings: Settings) -> float:
    return settings.loops.check_seconds


def _follow_seconds(settings: Settings) -> float:
    return settings.search.follow_seconds


# a retraining round of every due loop (``[loops] check_seconds``)
register("loops", "gigavision.active.loop:trigger", _loop_seconds)
# an ``index add`` job for every following index with new images (``[search] follow_seconds``)
register("indexes", "gigavision.search.jobs:follow", _follow_seconds)
