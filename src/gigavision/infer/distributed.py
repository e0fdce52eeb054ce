"""Scale-out tiled inference on a Dask cluster: images, and regions of very large images, run on workers.

``predict_distributed`` is ``infer.run.predict_tiled`` spread over Dask workers (``--dask``) with the same
results. The work is split so that nothing a worker does depends on which worker does it:

- **The client plans.** It opens every input, checks it (``--store`` needs ingested images), finds its
  foreground mask and lays its window grid (``engine.plan_windows``) before any task is submitted, so a bad
  input fails the run before the cluster does any work, and workers never recompute masks.
- **Workers predict.** A segment or classify image is one task: its windows are stitched into one raster,
  which the worker writes under ``out_root`` (a folder every worker and the client see at the same path).
  A detect image is cut into regions of ``region_windows`` kept windows (row-major bands), one task each,
  returning the regions' detections unmerged (``infer_image(merge=False)``). A region's plan is
  ``WindowPlan.part``: windows of other regions still count as run, so a detection cut at a side whose
  neighbour runs in another region is dropped just as in one process. The region size is rounded to a
  multiple of ``--batch`` so that each region's model batches are the single-process run's batches.
- **The client merges and stores.** Detect regions are concatenated in window order and merged once
  (``engine.merge_detections``), the tile accounting is recomputed from the whole plan, and only then are
  an image's annotations stored (``store_predictions``). A worker that dies mid-task is replaced and its
  task re-run by Dask (atomic raster writes make a re-run harmless), and since no worker writes to the
  database a retry never duplicates stored rows.

A worker builds its own ``Predictor`` from the model folder (torch modules and onnxruntime sessions are not
sent over the wire) and reopens the workspace from its settings, once per worker process; both are kept in
bounded caches (``infer.predictors``, ``cache.LRUCache``).
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gigavision.cache import LRUCache
from gigavision.errors import GigavisionError, InvalidInput
from gigavision.infer.engine import BATCH, InferOptions, InferResult, WindowPlan, infer_image, merge_detections
from gigavision.infer.predictors import loaded_predictor
from gigavision.infer.run import PREDICTIONS_DIR, output_dir, prepare_input
from gigavision.progress import Progress

if TYPE_CHECKING:
    from distributed import Client, LocalCluster

    from gigavision.config import Settings
    from gigavision.images.source import ImageSource
    from gigavision.models.predict import Predictor
    from gigavision.models.store import ModelInfo
    from gigavision.workspace import Workspace

DEFAULT_LOCAL_WORKERS = 2
REGION_WINDOWS = 256  # kept windows per detect task: ~10-60 s of model time, small next to a task's overhead
WORKER_WAIT_S = 60.0  # how long to wait for a scheduler to have a worker before giving up
_LOCAL = re.compile(r"^local(?::(\d+))?$")
_REMOTE = re.compile(r"^(?:[a-z][a-z0-9+.-]*://)?(?:\[[0-9a-fA-F:.]+\]|[^\s/:\[\]]+):\d+$")


# -- where to run --------------------------------------------------------------------------------------------
def local_workers(address: str) -> int | None:
    """N for ``local`` / ``local:N`` (a LocalCluster started here), None for a scheduler address.

    Raises ``InvalidInput`` for anything that is neither, so a typo fails before any work starts.
    """
    address = address.strip()
    local = _LOCAL.match(address)
    if local is not None:
        n = int(local.group(1)) if local.group(1) is not None else DEFAULT_LOCAL_WORKERS
        if not 1 <= n <= 256:
            raise InvalidInput(f"--dask {address}: local:N needs 1 to 256 worker processes, got {n}")
        return n
    if not _REMOTE.match(address):
        raise InvalidInput(
            f"--dask {address!r}: expected a scheduler address like tcp://scheduler:8786, or local[:N]"
            " for N worker processes on this machine"
        )
    return None


def local_threads(n_workers: int) -> int:
    """Intra-op threads (torch/OpenMP) of each of ``n_workers`` local worker processes: the cores this
    process may use, shared out. Dask's own default, one thread per worker process, would leave all but N
    cores idle while a model runs."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, n_workers))


@contextmanager
def local_cluster(n_workers: int) -> Iterator[LocalCluster]:
    """A LocalCluster of ``n_workers`` processes on 127.0.0.1 (no dashboard, no fixed port), closed on exit.

    One task at a time per process: the model's intra-op threads (``local_threads``) are the parallelism
    inside a task. Workers' logs are silenced: every task error comes back to the client and is raised
    there as one line; a worker's "Compute Failed" traceback on stderr would only repeat it. Dask's nanny
    writes its worker settings (``OMP_NUM_THREADS=1`` …) into this process's environment; they are undone.
    """
    from distributed import LocalCluster

    threads = str(local_threads(n_workers))
    env = {name: threads for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    saved = dict(os.environ)
    try:
        with LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            # the scheduler's HTTP routes (health, metrics) start even without a dashboard, by default on
            # port 8787, which another cluster may hold: a free loopback port instead
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
            silence_logs=logging.CRITICAL,
            env=env,
        ) as cluster:
            yield cluster
    finally:
        for name in set(os.environ) - set(saved):
            del os.environ[name]
        os.environ.update({k: v for k, v in saved.items() if os.environ.get(k) != v})


@contextmanager
def dask_client(address: str, *, timeout: float | None = None) -> Iterator[Client]:
    """A Dask client on ``address`` (``tcp://host:port``) or on a ``local_cluster`` of ``local:N`` worker
    processes started here.

    ``timeout``: seconds to reach the scheduler (default: Dask's ``distributed.comm.timeouts.connect``,
    env ``DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT``). A scheduler that cannot be reached, or that has no
    worker within ``WORKER_WAIT_S``, is an ``InvalidInput`` naming the address, never a hang.
    """
    n = local_workers(address)
    from distributed import Client

    if n is not None:
        with local_cluster(n) as cluster, Client(cluster) as client:
            yield client
        return
    try:
        client = Client(address.strip(), timeout=timeout) if timeout is not None else Client(address.strip())
    except OSError as exc:  # distributed raises OSError("Timed out trying to connect …") for any failure
        raise InvalidInput(
            f"--dask {address}: no Dask scheduler answered ({exc}); start one with 'dask scheduler' and"
            f" workers with 'dask worker {address}', or use --dask local:N"
        ) from exc
    try:
        wait = WORKER_WAIT_S if timeout is None else max(timeout, 1.0)
        try:
            client.wait_for_workers(1, timeout=wait)
        except TimeoutError as exc:
            raise InvalidInput(
                f"--dask {address}: the scheduler has no workers after {wait:.0f} s;"
                f" start some with 'dask worker {address}'"
            ) from exc
        yield client
    finally:
        client.close()


# -- what runs on a worker -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageJob:
    """Everything a worker needs for one image, picklable: no open files, models or database handles.

    ``item``: what the user named (the result's name); ``open_as``: how a worker opens it — a workspace image
    id, or the file's absolute path (workers need not share the client's working directory);
    ``settings``: the workspace's, for workers to reopen it (None: files only).
    """

    item: str
    open_as: str
    from_workspace: bool
    image_id: str | None
    info: ModelInfo
    runtime: str
    device: str
    options: InferOptions
    out_dir: Path
    side: dict[str, Any]
    settings: Settings | None
    variant: str = "fp32"  # the ONNX file the worker runs (models.quantize)


_KEEP_WORKSPACES = 4
_WORKSPACES: LRUCache[str, Workspace] = LRUCache(_KEEP_WORKSPACES)  # evicted ones are closed


def worker_predictor(
    info: ModelInfo, runtime: str, device: str, batch: int = BATCH, variant: str = "fp32"
) -> Predictor:
    """This process's ``Predictor`` for a model, from the process's predictor cache
    (``infer.predictors``, the one ``POST /api/v1/predict`` uses too): loading a network takes seconds and a
    worker runs many tasks of the same model. A model removed and retrained under the same id is reloaded."""
    return loaded_predictor(info, runtime, device=device, batch=batch, variant=variant)


def worker_workspace(settings: Settings) -> Workspace:
    """This process's handle on the workspace (engine, caches), opened once per settings."""
    from gigavision.workspace import Workspace

    return _WORKSPACES.get_or_create(settings.model_dump_json(), lambda: Workspace(settings))


def _open_on_worker(job: ImageJob) -> tuple[ImageSource, bool]:
    """(source, owned). Files are opened directly: ``open_input`` would hash the whole file again, per task,
    to find its image id, which the client already knows."""
    if job.from_workspace:
        if job.settings is None:
            raise InvalidInput(f"{job.item}: a workspace image needs the workspace settings")
        return worker_workspace(job.settings).open_source(job.open_as), False
    from gigavision.images.registry import open_image

    return open_image(Path(job.open_as), limits=job.settings.limits if job.settings is not None else None), True


def run_job(job: ImageJob, plan: WindowPlan, merge: bool) -> InferResult:
    """One task: ``infer_image`` over ``plan``'s kept windows of ``job``'s image, on a worker."""
    predictor = worker_predictor(job.info, job.runtime, job.device, job.options.batch, job.variant)
    source, owned = _open_on_worker(job)
    try:
        return infer_image(
            predictor,
            source,
            name=job.item,
            options=job.options,
            out_dir=job.out_dir,
            image_id=job.image_id,
            side=job.side,
            plan=plan,
            merge=merge,
        )
    finally:
        if owned:
            source.close()


# -- the client ----------------------------------------------------------------------------------------------
@dataclass
class _Planned:
    job: ImageJob
    plan: WindowPlan
    regions: list[np.ndarray]  # per task, the plan's window indices to run (detect); [] for one whole task


def region_size(region_windows: int, batch: int) -> int:
    """``region_windows`` rounded up to a multiple of ``batch``: a region's batches then hold the same
    windows as the single-process run's, so the model sees the same inputs and gives the same outputs."""
    if region_windows < 1:
        raise InvalidInput(f"region_windows must be ≥ 1, got {region_windows}")
    return math.ceil(region_windows / batch) * batch


def _plan_inputs(
    predictor: Predictor,
    items: Sequence[str],
    options: InferOptions,
    *,
    ws: Workspace | None,
    out_root: Path,
    store: bool,
    side: Mapping[str, Any] | None,
    device: str,
    step: int,
) -> list[_Planned]:
    from gigavision.models.predict import open_input
    from gigavision.models.store import PIPELINE

    # detect images run as regions merged here; a pipeline's stages need an image's merged boxes: one task each
    detect = predictor.task.name == "detect" and predictor.info.task != PIPELINE
    planned = []
    for item in items:
        source, image_id, owned = open_input(ws, item)
        try:
            _, meta, plan = prepare_input(predictor, options, ws, item, source, image_id, store=store)
        finally:
            if owned:
                source.close()
        job = ImageJob(
            item=item,
            open_as=str(Path(item).resolve()) if owned else str(image_id),  # item may be a prefix or a name
            from_workspace=not owned,
            image_id=image_id,
            info=predictor.info,
            runtime=predictor.runtime,
            device=device,
            options=options,
            out_dir=output_dir(out_root, predictor.info.id, item, image_id),
            side={**meta, **(side or {})},
            settings=ws.settings if ws is not None else None,
            variant=predictor.variant,
        )
        kept = np.flatnonzero(plan.keep)
        regions = [kept[i : i + step] for i in range(0, len(kept), step)] if detect else []
        planned.append(_Planned(job, plan, regions))
    return planned


def _combine_regions(parts: list[InferResult], plan: WindowPlan, options: InferOptions) -> InferResult:
    """One image's result from its regions' unmerged detections: merged once, as ``infer_image`` would,
    with the uncertainty attributes recomputed from the merged scores (soft-NMS and WBF change scores)."""
    from gigavision.annotations import Annotations
    from gigavision.metrics.uncertainty import aggregate, binary_uncertainty, with_uncertainty

    started = time.monotonic()
    found = merge_detections(Annotations.merge([p.annotations for p in parts]), options)
    unsure = binary_uncertainty(found.score)
    failed = [f for p in parts for f in p.failed_regions]
    return replace(
        parts[0],
        annotations=with_uncertainty(found, unsure),
        tiles_total=len(plan.windows),
        tiles_run=int(plan.keep.sum()) - len(failed),
        tiles_skipped=int((~plan.keep).sum()),
        failed_regions=failed,
        uncertainty=aggregate(unsure),
        seconds=sum(p.seconds for p in parts) + time.monotonic() - started,
    )


def predict_distributed(
    predictor: Predictor,
    items: Sequence[str],
    options: InferOptions,
    *,
    address: str,
    ws: Workspace | None,
    out_root: Path | None = None,
    store: bool = False,
    side: Mapping[str, Any] | None = None,
    progress: Progress | None = None,
    region_windows: int = REGION_WINDOWS,
    device: str = "cpu",
    timeout: float | None = None,
) -> list[InferResult]:
    """``predict_tiled`` on Dask workers (see the module docstring): the same results, in ``items`` order.

    ``address``: ``tcp://scheduler:8786`` or ``local[:N]``. ``predictor`` plans on the client (its network
    is not sent: each worker loads ``predictor.info``'s model with the same runtime on ``device``).
    ``region_windows``: kept windows per detect task. ``out_root`` (rasters) and file inputs must be on a
    file system the workers share with the client, at the same paths. ``seconds`` of a result is the
    workers' compute time for that image (its tasks run concurrently with other images').
    """
    from gigavision.models.predict import PredictItem, store_predictions

    if not items:
        raise InvalidInput("name at least one image file or workspace image id")
    options.check()
    local_workers(address)  # a malformed address fails before the inputs are read
    step = region_size(region_windows, options.batch)
    if out_root is None:
        if ws is None:
            raise InvalidInput("give an output folder (--out-dir) for the masks and heatmaps")
        out_root = ws.root / PREDICTIONS_DIR
    out_root = out_root.resolve()
    planned = _plan_inputs(
        predictor, items, options, ws=ws, out_root=out_root, store=store, side=side, device=device, step=step
    )
    parts = _run_on_cluster(planned, address=address, timeout=timeout, progress=progress)
    results = []
    for k, p in enumerate(planned):
        if p.regions:
            result = _combine_regions([parts[(k, r)] for r in range(len(p.regions))], p.plan, options)
        else:
            result = parts[(k, 0)]
        if store and ws is not None:
            item = PredictItem(p.job.item, p.job.image_id, result.width, result.height, result.annotations)
            result.outputs["stored"] = str(store_predictions(ws, [item], predictor)["added"])
        results.append(result)
    return results


def _run_on_cluster(
    planned: list[_Planned], *, address: str, timeout: float | None, progress: Progress | None
) -> dict[tuple[int, int], InferResult]:
    """Submit every task, gather the results as they finish, keyed by (image, region)."""
    from distributed import KilledWorker, as_completed

    run = uuid.uuid4().hex[:8]
    with dask_client(address, timeout=timeout) as client:
        futures: dict[Any, tuple[int, int, str]] = {}
        for k, p in enumerate(planned):
            # readable keys on the dashboard; unique per run so that nothing is shared with another run
            if p.regions:
                for r, idx in enumerate(p.regions):
                    key = f"gigavision-infer-{run}-{k}-{r}"
                    fut = client.submit(run_job, p.job, p.plan.part(idx), False, key=key, pure=False)
                    futures[fut] = (k, r, f"{p.job.item}: region {r + 1}/{len(p.regions)}")
            else:
                fut = client.submit(run_job, p.job, p.plan, True, key=f"gigavision-infer-{run}-{k}", pure=False)
                futures[fut] = (k, 0, p.job.item)
        done: dict[tuple[int, int], InferResult] = {}
        try:
            for fut in as_completed(list(futures)):
                k, r, what = futures[fut]
                try:
                    done[(k, r)] = fut.result()
                except KilledWorker as exc:
                    raise GigavisionError(
                        f"{what}: Dask workers died running it again and again ({exc}); a worker out of"
                        " memory is the usual cause (give workers more memory, or use a smaller --batch)"
                    ) from exc
                except ImportError as exc:
                    raise GigavisionError(
                        f"{what}: a Dask worker cannot import what the task needs ({exc}); install the same"
                        " gigavision version on every worker"
                    ) from exc
                if progress is not None:
                    progress(len(done), len(futures), what)
        finally:
            if len(done) < len(futures):
                client.cancel(list(futures))
    return done
