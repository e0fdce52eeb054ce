"""Index builds on a Dask cluster (``index build|add --dask``): workers compute the vectors, the client writes.

Split as the tiled engine's scale-out is (``infer.distributed``): the **client plans** — it opens each image
and lays its region grid (foreground mask included) before any task is submitted, so a bad image or option
fails before the cluster works; **workers embed** — a task is a batch of whole images, or ``CHUNK`` regions of
one big image (row-major, so a worker reads its part a row band at a time), each worker loading the model once
(``infer.distributed.worker_predictor``) and reopening the workspace from its settings; the **client
assembles** the vectors in image and region order and writes the index once (``search.store.save``). Nothing a
worker does depends on which worker does it, so a task re-run after a worker died gives the same vectors.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from gigavision.errors import GigavisionError, InvalidInput
from gigavision.progress import Progress, no_progress
from gigavision.search import build

if TYPE_CHECKING:
    from gigavision.config import Settings
    from gigavision.models.store import ModelInfo
    from gigavision.search.store import IndexCard
    from gigavision.workspace import Workspace

CHUNK = 512  # regions per task: a few seconds of model time, large next to a task's overhead
IMAGES_PER_TASK = 64  # whole images per task


@dataclass(frozen=True)
class EmbedTask:
    """One task, picklable: the model record, the workspace settings, and what to embed."""

    settings: Settings
    info: ModelInfo
    runtime: str
    card_regions: dict[str, Any] | None
    image_ids: tuple[str, ...]  # whole images; or the one image of the regions below
    boxes: np.ndarray | None  # (n, 4) level-0 regions of image_ids[0]; None: whole images


def _extractor(task: EmbedTask) -> Any:
    from gigavision.infer.distributed import worker_predictor
    from gigavision.models.features import FeatureExtractor

    return FeatureExtractor(worker_predictor(task.info, task.runtime, "cpu"))


def embed_task(task: EmbedTask) -> np.ndarray:
    """The vectors of a task's images (one per image) or regions (one per box, in order): runs on a worker."""
    from gigavision.infer.distributed import worker_workspace

    ws = worker_workspace(task.settings)
    extractor = _extractor(task)
    if task.boxes is None:
        return np.concatenate([build.image_vector(extractor, ws.open_source(i), i) for i in task.image_ids])
    source = ws.open_source(task.image_ids[0])
    res, tile = build.resolution(extractor, source, build.RegionSpec.from_dict(task.card_regions or {}))
    out = np.zeros((len(task.boxes), 0), np.float32)
    for rows, vecs in build.region_vectors(extractor, source, res, tile, task.boxes):
        if out.shape[1] == 0:
            out = np.zeros((len(task.boxes), vecs.shape[1]), np.float32)
        out[rows] = vecs
    return out


def embed_on_cluster(
    ws: Workspace,
    extractor: Any,
    card: IndexCard,
    image_ids: Sequence[str],
    address: str,
    progress: Progress = no_progress,
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(image id, level-0 boxes, vectors)`` of each image, computed by the cluster at ``address``
    (``tcp://host:port`` or ``local[:N]``), in ``image_ids`` order."""
    from distributed import KilledWorker, as_completed

    from gigavision.infer.distributed import dask_client

    info, runtime = extractor.predictor.info, extractor.predictor.runtime
    plans: list[tuple[str, np.ndarray]] = []
    tasks: list[tuple[EmbedTask, list[tuple[int, slice]]]] = []  # each task, and the (image, rows) it fills
    if card.mode == "image":
        for image_id in image_ids:
            source = ws.open_source(image_id)
            plans.append((image_id, np.array([[0, 0, source.width, source.height]], np.int64)))
        for start in range(0, len(image_ids), IMAGES_PER_TASK):
            chunk = tuple(image_ids[start : start + IMAGES_PER_TASK])
            task = EmbedTask(ws.settings, info, runtime, None, chunk, None)
            tasks.append((task, [(start + k, slice(0, 1)) for k in range(len(chunk))]))
    else:
        spec = build.RegionSpec.from_dict(card.regions or {})
        for k, image_id in enumerate(image_ids):
            source = ws.open_source(image_id)
            res, tile = build.resolution(extractor, source, spec)
            boxes = build.image_regions(ws, image_id, source, res, tile, spec.min_foreground)
            plans.append((image_id, boxes))
            for start in range(0, len(boxes), CHUNK):
                part = boxes[start : start + CHUNK]
                task = EmbedTask(ws.settings, info, runtime, card.regions, (image_id,), part)
                tasks.append((task, [(k, slice(start, start + len(part)))]))
    vectors: list[np.ndarray | None] = [None] * len(plans)
    run = uuid.uuid4().hex[:8]
    with dask_client(address) as client:
        futures = {
            client.submit(embed_task, task, key=f"gigavision-index-{run}-{n}", pure=False): n
            for n, (task, _) in enumerate(tasks)
        }
        for done, fut in enumerate(as_completed(list(futures)), 1):
            task, targets = tasks[futures[fut]]
            try:
                result = fut.result()
            except KilledWorker as exc:
                raise GigavisionError(
                    f"{task.image_ids[0][:12]}: Dask workers died embedding it again and again ({exc}); a worker"
                    " out of memory is the usual cause"
                ) from exc
            except GigavisionError as exc:
                raise InvalidInput(f"{task.image_ids[0][:12]}: {exc}") from exc
            row = 0
            for image, rows in targets:
                n = rows.stop - rows.start
                if vectors[image] is None:
                    vectors[image] = np.zeros((len(plans[image][1]), result.shape[1]), np.float32)
                target = vectors[image]
                assert target is not None
                target[rows] = result[row : row + n]
                row += n
            progress(done, len(tasks), "embedding on the cluster")
    dim = next((v.shape[1] for v in vectors if v is not None), card.dim)
    return [
        (image_id, boxes, v if v is not None else np.zeros((0, dim), np.float32))
        for (image_id, boxes), v in zip(plans, vectors, strict=True)
    ]
