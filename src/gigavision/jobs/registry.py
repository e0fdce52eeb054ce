"""Job kinds by name, as ``module:function`` paths imported on first use.

Paths rather than imports keep this package below the stages it runs (imports flow downward) and keep
``gigavision --help`` and the tile server from importing every stage at start-up.

Heavy kinds run *isolated*: in a child process of the worker, so that their crash, OOM kill or a native
library's segfault fails the job and never the API or worker that runs it (see ``gigavision.jobs.child``).
Training, evaluation and prediction load models and batches of pixels; an import reads untrusted archives
and decodes masks; an ingest decodes an uploaded image and builds its pyramid. Exports and dataset versions
only read the database and write files: they stay in a thread of the worker, as a child process (its own
imports of the stage, up to a second or two) would double the time of a small export.
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
ISOLATED: set[str] = set()  # kinds run in a child process
for _kind, _path, _isolated in (
    ("dataset", "gigavision.datasets.jobs:run_create", False),
    ("export", "gigavision.formats.jobs:run_export", False),
    ("import", "gigavision.formats.jobs:run_import", True),
    ("train", "gigavision.train.jobs:run_train", True),
    ("evaluate", "gigavision.train.jobs:run_evaluate", True),
    ("predict", "gigavision.infer.jobs:run_predict", True),
    ("ingest", "gigavision.ingest:run_ingest", True),
    ("loop", "gigavision.active.loop:run_job", True),  # a retraining round: freeze, train, compare, promote
    ("active-select", "gigavision.active.pool_selection:run_select", True),  # active learning over a pool
    ("label-errors", "gigavision.active.label_errors:run_job", True),  # k-fold training: a child process
    ("index", "gigavision.search.jobs:run_index", True),  # embedding index build / add: loads a model
):
    KINDS.add(_kind, _path)
    if _isolated:
        ISOLATED.add(_kind)


def register(kind: str, target: str | JobFunction, *, isolated: bool = False) -> None:
    """Add a job kind (a ``module:function`` path, or a function, e.g. from a plugin or a test).

    ``isolated``: run it in a child process (a function must then be importable by its module and name).
    """
    KINDS.add(kind, target)
    if isolated:
        ISOLATED.add(kind)
    else:
        ISOLATED.discard(kind)


def resolve(kind: str) -> JobFunction:
    """The function of ``kind``; unknown kinds are an ``InvalidInput`` listing the known ones."""
    function: JobFunction = KINDS.load(kind)
    return function


# Kinds whose child loads the training stack (torch, Lightning, timm: 5-10 s of CPU per child otherwise):
# when one of them is the first isolated job of a process, its fork server preloads that stack for every
# later child (``child.context``). Not ``predict``: an ONNX prediction never imports torch.
TRAINING_STACK = frozenset({"train", "evaluate", "loop", "label-errors", "active-select"})


def isolated(kind: str) -> bool:
    """Whether jobs of ``kind`` run in a child process."""
    return kind in ISOLATED


def target(kind: str) -> str | JobFunction:
    """What a child process imports to run ``kind``: its ``module:function`` path, or the function (pickled by
    reference: its module is imported there, so kinds registered at run time in this process still work)."""
    return KINDS.resolve(kind)
