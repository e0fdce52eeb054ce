"""Dataset creation as a background job: ``run_create(ctx, params)`` for ``gigavision.jobs``.

Registered under a kind (e.g. ``"dataset"`` -> ``"gigavision.datasets.jobs:run_create"``) it runs
``create_version`` with the job's throttled progress reporter, which is also where a cancel takes effect.
The version is written in one final transaction, so a cancelled job leaves no version (only reusable
content-addressed blobs and cached perceptual hashes).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gigavision.datasets.versions import create_version
from gigavision.errors import InvalidInput

if TYPE_CHECKING:
    from gigavision.jobs.context import JobContext

PARAMS = (
    "filters",
    "split",
    "stratify",
    "group_by",
    "seed",
    "statuses",
    "dup_distance",
    "dedupe",
    "reshuffle",
    "split_hints",
    "allow_duplicate",
    "qc_submissions",
)


def run_create(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    """``params``: ``name`` plus any keyword of ``create_version``; returns the version's summary."""
    unknown = sorted(set(params) - {"name", *PARAMS})
    if unknown:
        raise InvalidInput(f"unknown dataset parameters {unknown}; known: name, {', '.join(PARAMS)}")
    if "name" not in params:
        raise InvalidInput("a dataset job needs a name")
    options = {k: v for k, v in params.items() if k != "name"}
    version = create_version(ctx.workspace, str(params["name"]), actor=ctx.actor, progress=ctx.progress, **options)
    return version.summary(schema=False)
