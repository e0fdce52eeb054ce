"""Index builds and additions as background jobs (kind ``index``), and the chore that keeps following indexes
current after an ingest.

``run_index(ctx, params)``: ``{"action": "build", "name", "model", "images", "dataset", "regions", "follow"}``
or ``{"action": "add", "name", "images": [ids] | None}``; progress and cancel go through the job's reporter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gigavision.errors import InvalidInput
from gigavision.search.build import RegionSpec, add_images, build_index
from gigavision.search.store import list_cards

if TYPE_CHECKING:
    from gigavision.jobs.context import JobContext
    from gigavision.workspace import Workspace

BUILD_KEYS = ("action", "name", "model", "images", "dataset", "regions", "follow", "runtime", "dask")
ADD_KEYS = ("action", "name", "images", "runtime", "dask")


def run_index(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    action = params.get("action")
    keys = BUILD_KEYS if action == "build" else ADD_KEYS if action == "add" else None
    if keys is None:
        raise InvalidInput(f"an index job's action is build or add, got {action!r}")
    unknown = sorted(set(params) - set(keys))
    if unknown:
        raise InvalidInput(f"unknown index job parameters {unknown}; known: {', '.join(keys)}")
    if not params.get("name"):
        raise InvalidInput("an index job needs the index name")
    runtime = str(params.get("runtime") or "auto")
    dask = params.get("dask")  # None: the workspace's dask setting
    if action == "add":
        images = params.get("images")
        return add_images(ctx.workspace, str(params["name"]), images, runtime=runtime, dask=dask, progress=ctx.progress)
    regions = params.get("regions")
    return build_index(
        ctx.workspace,
        str(params["name"]),
        str(params.get("model") or ""),
        images=list(params.get("images") or []),
        dataset=params.get("dataset"),
        regions=RegionSpec.parse(regions) if isinstance(regions, str) else None,
        follow=bool(params.get("follow", False)),
        runtime=runtime,
        dask=dask,
        actor=ctx.actor,
        progress=ctx.progress,
    )


FOLLOWER = "index:follow"  # the actor of the add jobs the consumers queue


def follow(ws: Workspace) -> list[str]:
    """Queue an ``add`` job for every index built with ``follow`` whose selection holds images it lacks (one
    per index, however many consumers check at once); returns the new jobs' ids."""
    from gigavision.search.build import select_images
    from gigavision.search.store import load

    queued = []
    for card in list_cards(ws):
        if not card.follow:
            continue
        present = set(load(ws, card.name).entries.image_ids)
        if all(i in present for i in select_images(ws, card.images_filter, card.dataset)):
            continue
        job = ws.jobs.submit_unique("index", {"action": "add", "name": card.name}, FOLLOWER, key="name")
        if job is not None:
            queued.append(str(job["id"]))
    return queued
