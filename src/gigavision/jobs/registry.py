"""Job kinds by name, as ``module:function`` paths imported on first use.

Paths rather than imports keep this package below the stages it runs (imports flow downward) and keep
``gigavision --help`` and the tile server from importing every stage at start-up.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gigavision.registry import Registry

if TYPE_CHECKING:
    from gigavision.jobs.context import JobContext

JobFunction = Callable[["JobContext", dict[str, Any]], dict[str, Any]]

# job kind -> "module:function" (or the function itself, from a plugin or a test)
KINDS: Registry[str | JobFunction] = Registry("job kind")
for _kind, _path in (
    ("dataset", "gigavision.datasets.jobs:run_create"),
    ("export", "gigavision.formats.jobs:run_export"),
    ("import", "gigavision.formats.jobs:run_import"),
    ("train", "gigavision.train.jobs:run_train"),
    ("evaluate", "gigavision.train.jobs:run_evaluate"),
    ("predict", "gigavision.infer.jobs:run_predict"),
):
    KINDS.add(_kind, _path)


def register(kind: str, target: str | JobFunction) -> None:
    """Add a job kind (a ``module:function`` path, or a function, e.g. from a plugin or a test)."""
    KINDS.add(kind, target)


def resolve(kind: str) -> JobFunction:
    """The function of ``kind``; unknown kinds are an ``InvalidInput`` listing the known ones."""
    function: JobFunction = KINDS.load(kind)
    return function
