"""Job kinds by name, as ``module:function`` paths imported on first use.

Paths rather than imports keep this package below the stages it runs (imports flow downward) and keep
``gigavision --help`` and the tile server from importing every stage at start-up.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gigavision.errors import InvalidInput

if TYPE_CHECKING:
    from gigavision.jobs.context import JobContext

JobFunction = Callable[["JobContext", dict[str, Any]], dict[str, Any]]

KINDS: dict[str, str] = {
    "dataset": "gigavision.datasets.jobs:run_create",
    "export": "gigavision.formats.jobs:run_export",
    "import": "gigavision.formats.jobs:run_import",
    "train": "gigavision.train.jobs:run_train",
    "evaluate": "gigavision.train.jobs:run_evaluate",
    "predict": "gigavision.infer.jobs:run_predict",
}


def register(kind: str, target: str | JobFunction) -> None:
    """Add a job kind (a ``module:function`` path, or a function, e.g. from a plugin or a test)."""
    _functions.pop(kind, None)
    if callable(target):
        _functions[kind] = target
        KINDS[kind] = f"{target.__module__}:{target.__qualname__}"
    else:
        KINDS[kind] = target


def resolve(kind: str) -> JobFunction:
    """The function of ``kind``; unknown kinds are an ``InvalidInput`` listing the known ones."""
    if kind not in KINDS:
        raise InvalidInput(f"unknown job kind {kind!r}; known: {', '.join(sorted(KINDS))}")
    if kind not in _functions:
        module, _, name = KINDS[kind].partition(":")
        _functions[kind] = getattr(importlib.import_module(module), name)
    return _functions[kind]


_functions: dict[str, JobFunction] = {}
