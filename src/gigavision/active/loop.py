"""Retraining loops: new labels -> the next dataset version -> train -> compare on the same test split -> promote.

A loop (``loops`` table) names a dataset, a training recipe, an alias (``production``), a metric and a margin.
A round (``run_round``; the ``loop`` job kind; ``gigavision loop run``):

1. freezes the next version of the dataset with the spec of its latest version (same filters, statuses,
   split ratios, grouping, seed), of people's labels only (``people_only``: no model predictions, also
   none a routing policy auto-accepted): images of earlier versions keep their split, so test images never
   move (``datasets/versions.py``); new images fill the splits towards their ratios;
2. trains the recipe on that version (``warm_start``: from the aliased model's weights) through the ``train``
   job kind, by name, as the job queue runs it;
3. predicts the new version's test split with the aliased model (the baseline) and the new one (the
   candidate), whole images, the same way ``gigavision predict`` does, and scores them per image;
4. bootstraps the difference ``candidate − baseline`` of the metric over the test images, paired
   (``metrics/bootstrap.py``, seeded);
5. promotes the candidate when **the mean difference exceeds the margin and the lower bound of the 95 %
   interval is above 0** (``decide``): better by at least what the loop asks, and not by chance. The comparison
   is the promotion's evidence in the alias history and the round's record in ``loop_runs``.

A round is *due* when at least ``every`` new labels exist since the dataset version of the model the alias
serves, or of the loop's last finished round if newer (``due``): annotations not made by a model (source not
``model:…``: people, reviews, imports, consensus) with a status the dataset freezes (accepted / adjudicated by
default), added or changed after that version was created (within the version's ``label`` filter, when it
has one). Without an aliased model yet, the round trains the first model and sets the alias.

Rounds start on their own (``trigger``): every job consumer (``gigavision serve`` with ``job_workers`` > 0,
``gigavision worker``) checks the enabled loops every ``[loops] check_seconds`` and queues a ``loop`` job,
as ``loop:auto``, for each due one that has no round queued or running and whose last round did not fail
or get cancelled within ``[loops] retry_seconds``. ``JobManager.submit_unique`` makes the look and the
insert atomic, so consumers sharing one database never queue two rounds of one loop.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from gigavision.errors import Conflict, GigavisionError, InvalidInput, NotFound
from gigavision.jobs.manager import IN_FLIGHT
from gigavision.models import aliases
from gigavision.store.schema import AnnotationRow, JobRow, LoopRow, LoopRunRow, utcnow

if TYPE_CHECKING:
    from gigavision.annotations import Annotations
    from gigavision.datasets.versions import DatasetVersion
    from gigavision.jobs.context import JobContext
    from gigavision.metrics.bootstrap import PairedBootstrap
    from gigavision.models.recipe import Recipe
    from gigavision.models.store import ModelInfo
    from gigavision.progress import Progress
    from gigavision.workspace import Workspace

# the metrics a loop can compare, per task (the first: the default)
METRICS = {
    "classify": ("accuracy", "balanced_accuracy", "macro_f1", "micro_f1"),
    "detect": ("map50", "map", "map75", "ar", "recall_iou60"),
}
CONFIDENCE = 0.95
RESAMPLES = 2000  # classification: all resamples at once in NumPy
SLOW_RESAMPLES = 300  # detection and multi-label: the task's evaluation once per resample
SEED = 0
LOOP_JOB_KEYS = ("loop", "force", "auto")
AUTO_ACTOR = "loop:auto"  # who queues the rounds a consumer starts on its own (``trigger``)
RECENT_JOBS = 500  # loop jobs looked at for a loop's last one (a loop job per round: rounds are rare)
NO_LABEL = "(none)"
LOOP_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9._-]{0,63}$")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Loop:
    name: str
    dataset: str
    recipe: dict[str, Any]
    every: int
    metric: str
    margin: float
    alias: str
    warm_start: bool
    enabled: bool
    created_by: str
    created_at: datetime

    @property
    def task(self) -> str:
        return str(self.recipe["task"])

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dataset": self.dataset,
            "task": self.task,
            "recipe": self.recipe,
            "every": self.every,
            "metric": self.metric,
            "margin": self.margin,
            "alias": self.alias,
            "warm_start": self.warm_start,
            "enabled": self.enabled,
            "created_by": self.created_by,
            "created_at": self.created_at.isoformat(),
        }


def _loop(row: LoopRow) -> Loop:
    return Loop(
        row.name,
        row.dataset,
        dict(row.recipe),
        row.every,
        row.metric,
        float(row.margin),
        row.alias,
        bool(row.warm_start),
        bool(row.enabled),
        row.created_by,
        row.created_at,
    )


def _run(row: LoopRunRow, started_by: str | None) -> dict[str, Any]:
    return {
        "id": row.id,
        "loop": row.loop,
        "status": row.status,
        "job_id": row.job_id,
        "started_by": started_by,
        "dataset": row.dataset_ref,
        "baseline": row.baseline_model_id,
        "candidate": row.candidate_model_id,
        "comparison": row.comparison,
        "message": row.message,
        "started_at": row.started_at.isoformat(),
        "finished_at": row.finished_at.isoformat() if row.finished_at else None,
    }


# -- defining loops -----------------------------------------------------------------------------------------
def _test_split_check(version: DatasetVersion, split: str) -> None:
    """A loop compares models on the test split: a version without one (or with no image in it) is refused."""
    if float(version.splits.get(split, 0.0)) <= 0.0:
        raise InvalidInput(
            f"dataset {version.ref} has no {split!r} split (its splits: {', '.join(version.splits)}): a loop compares"
            f" the new model with the served one on a fixed test split; create a version with one, e.g."
            f" gigavision dataset create {version.name} --split train=0.8,val=0.1,test=0.1"
        )
    if not any(True for _ in version.images(split)):
        raise InvalidInput(f"the {split!r} split of dataset {version.ref} holds no image to compare models on")


def create(
    ws: Workspace,
    name: str,
    *,
    recipe: Mapping[str, Any] | Recipe,
    dataset: str,
    every: int,
    metric: str | None = None,
    margin: float = 0.0,
    alias: str = "production",
    warm_start: bool = False,
    actor: str = "anonymous",
) -> Loop:
    """Define a loop over ``dataset`` (a name: each round freezes its next version) and the training ``recipe``
    (its fields; ``dataset`` in it is replaced). The dataset's latest version must have a test split."""
    from gigavision.datasets.spec import check_name, parse_ref
    from gigavision.datasets.versions import open_version
    from gigavision.models.recipe import Recipe, load_recipe

    if not isinstance(name, str) or not LOOP_NAME.match(name):
        raise InvalidInput(
            f"loop name {name!r} is not valid: a letter, then letters, digits, '.', '_' or '-' (at most 64 characters)"
        )
    aliases.check_alias_name(alias)
    dataset_name, number = parse_ref(dataset)
    if number is not None:
        raise InvalidInput(f"dataset {dataset!r}: name the dataset, not a version; each round freezes the next one")
    check_name(dataset_name)
    fields = recipe.resolved() if isinstance(recipe, Recipe) else dict(recipe)
    resolved = load_recipe(overrides={**fields, "dataset": dataset_name}).resolved()  # dotted keys too
    task = str(resolved["task"])
    if task not in METRICS:
        raise InvalidInput(f"loops retrain {' and '.join(METRICS)} models; the recipe trains {task}")
    if resolved.get("patch"):
        raise InvalidInput("loops compare whole-image models; this recipe trains on patches")
    if resolved.get("weights"):
        raise InvalidInput(
            "a loop's recipe starts from scratch or pretrained weights; use warm_start for the served model"
        )
    chosen = metric or METRICS[task][0]
    if chosen not in METRICS[task]:
        raise InvalidInput(f"metric {chosen!r}: a {task} loop compares {', '.join(METRICS[task])}")
    if isinstance(every, bool) or not isinstance(every, int) or not 1 <= every <= 10_000_000:
        raise InvalidInput(f"every must be a number of new labels from 1 to 10,000,000, got {every!r}")
    if not isinstance(margin, int | float) or not -1.0 < float(margin) < 1.0 or margin != margin:
        raise InvalidInput(f"margin must be a metric difference between -1 and 1, got {margin!r}")
    _test_split_check(open_version(ws, dataset_name), str(resolved.get("test_split") or "test"))
    row = LoopRow(
        name=name,
        dataset=dataset_name,
        recipe=resolved,
        every=every,
        metric=chosen,
        margin=float(margin),
        alias=alias,
        warm_start=bool(warm_start),
        enabled=True,
        created_by=actor,
        created_at=utcnow(),
    )
    try:
        with ws.session.begin() as s:
            if s.get(LoopRow, name) is not None:
                raise Conflict(f"a loop named {name!r} exists already; choose another name")
            s.add(row)
    except IntegrityError as exc:
        raise Conflict(f"a loop named {name!r} exists already; choose another name") from exc
    return get_loop(ws, name)


def get_loop(ws: Workspace, name: str) -> Loop:
    with ws.session() as s:
        row = s.get(LoopRow, name)
        if row is None:
            known = s.scalars(select(LoopRow.name).order_by(LoopRow.name).limit(20)).all()
    if row is None:
        hint = f"; loops: {', '.join(known)}" if known else "; there are no loops yet (gigavision loop create)"
        raise NotFound(f"no loop {name!r}{hint}")
    return _loop(row)


def list_loops(ws: Workspace) -> list[Loop]:
    with ws.session() as s:
        return [_loop(r) for r in s.scalars(select(LoopRow).order_by(LoopRow.name)).all()]


def runs(ws: Workspace, name: str, limit: int = 50) -> list[dict[str, Any]]:
    """The loop's rounds, newest first."""
    get_loop(ws, name)
    return _runs(ws, LoopRunRow.loop == name, max(1, min(limit, 1000)))


def get_run(ws: Workspace, run_id: int) -> dict[str, Any]:
    found = _runs(ws, LoopRunRow.id == run_id, 1)
    if not found:
        raise NotFound(f"no loop run {run_id}")
    return found[0]


def _runs(ws: Workspace, where: Any, limit: int) -> list[dict[str, Any]]:
    """Rounds with who started them: the creator of the round's job (``loop:auto`` for automatic rounds;
    None for a round run without a job, by ``run_round`` from Python)."""
    r = LoopRunRow
    query = select(r, JobRow.created_by).outerjoin(JobRow, JobRow.id == r.job_id).where(where)
    with ws.session() as s:
        rows = s.execute(query.order_by(r.id.desc()).limit(limit)).all()
    return [_run(row, by) for row, by in rows]


def set_enabled(ws: Workspace, name: str, enabled: bool) -> Loop:
    """Turn a loop's automatic rounds on or off (a disabled loop is never due; ``--force`` still runs it)."""
    get_loop(ws, name)
    with ws.session.begin() as s:
        s.execute(update(LoopRow).where(LoopRow.name == name).values(enabled=bool(enabled)))
    return get_loop(ws, name)


# -- when a round is due ------------------------------------------------------------------------------------
def _baseline(ws: Workspace, loop: Loop) -> ModelInfo | None:
    """The model the loop's alias serves (None: no alias yet, or its model folder is gone)."""
    from gigavision.models.store import get_model

    try:
        return get_model(ws, aliases.get_alias(ws, loop.alias).model_id)
    except NotFound:
        return None


def _since_version(ws: Workspace, loop: Loop, baseline: ModelInfo | None) -> DatasetVersion:
    """The version new labels are counted from: the baseline's (when it is a version of this dataset), or the
    one the loop's last finished round trained on if that is newer (a round that kept the served model has
    seen those labels: they do not make the next round due again), else the dataset's latest."""
    from gigavision.datasets.versions import open_version

    refs = []
    if baseline is not None and baseline.dataset.split("@")[0] == loop.dataset:
        refs.append(baseline.dataset)
    r = LoopRunRow
    with ws.session() as s:
        last = s.scalars(
            select(r.dataset_ref)
            .where(r.loop == loop.name, r.status.in_(("promoted", "kept")), r.dataset_ref.is_not(None))
            .order_by(r.id.desc())
            .limit(1)
        ).first()
    if last is not None and last.split("@")[0] == loop.dataset:
        refs.append(last)
    versions = []
    for ref in refs:
        with contextlib.suppress(NotFound):
            versions.append(open_version(ws, ref))
    if versions:
        return max(versions, key=lambda v: v.version)
    return open_version(ws, loop.dataset)


def due(ws: Workspace, name: str) -> dict[str, Any]:
    """Whether the loop should run: ``new_labels`` since the baseline's dataset version (or the last round's)
    against ``every``."""
    loop = get_loop(ws, name)
    baseline = _baseline(ws, loop)
    version = _since_version(ws, loop, baseline)
    a = AnnotationRow
    statuses = list(version.spec.get("statuses") or ["accepted", "adjudicated"])
    where = [
        a.deleted.is_(False),
        a.status.in_(statuses),
        ~a.source.like("model:%"),
        a.updated_at > version.created_at,
    ]
    labels = (version.spec.get("filters") or {}).get("label")
    if labels:
        where.append(a.label.in_(list(labels)))
    with ws.session() as s:
        count = int(s.scalar(select(func.count()).select_from(a).where(*where)) or 0)
    return {
        "loop": loop.name,
        "alias": loop.alias,
        "baseline": baseline.id if baseline is not None else None,
        "since": version.ref,
        "new_labels": count,
        "every": loop.every,
        "due": loop.enabled and (baseline is None or count >= loop.every),
    }


# -- rounds that start on their own ------------------------------------------------------------------------
def _aware(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=UTC)  # SQLite hands back naive UTC datetimes


def _loop_jobs(ws: Workspace) -> dict[str, list[Any]]:
    """Recent ``loop`` jobs by loop name, newest first (id, status, created_by, created_at, finished_at)."""
    j = JobRow
    query = select(j.id, j.status, j.created_by, j.created_at, j.finished_at, j.params).where(j.kind == "loop")
    with ws.session() as s:
        rows = s.execute(query.order_by(j.created_at.desc()).limit(RECENT_JOBS)).all()
    jobs: dict[str, list[Any]] = {}
    for row in rows:
        if isinstance(row.params, dict) and isinstance(row.params.get("loop"), str):
            jobs.setdefault(row.params["loop"], []).append(row)
    return jobs


def _paused_until(ws: Workspace, jobs: list[Any]) -> datetime | None:
    """When automatic rounds may start again after the loop's last job failed or was cancelled (a broken
    recipe must not retrain every minute, a cancelled round not restart at once); None: not paused."""
    if not jobs or jobs[0].status not in ("failed", "cancelled") or jobs[0].finished_at is None:
        return None
    until = _aware(jobs[0].finished_at) + timedelta(seconds=ws.settings.loops.retry_seconds)
    return until if until > _aware(utcnow()) else None


def schedule(ws: Workspace, name: str) -> dict[str, Any]:
    """How the loop's rounds start on their own: ``automatic`` (enabled, and consumers check every
    ``check_seconds`` > 0), the round ``in_flight`` (its job), the last job ``trigger`` queued, and
    ``paused_until`` after a failed or cancelled round."""
    loop = get_loop(ws, name)
    jobs = _loop_jobs(ws).get(name, [])
    every = ws.settings.loops.check_seconds
    flying = next((j for j in jobs if j.status in IN_FLIGHT), None)
    last_auto = next((j for j in jobs if j.created_by == AUTO_ACTOR), None)
    paused = _paused_until(ws, jobs)
    return {
        "automatic": loop.enabled and every > 0,
        "check_seconds": every,
        "in_flight": None if flying is None else {"job": flying.id, "status": flying.status, "by": flying.created_by},
        "last_automatic": None if last_auto is None else _aware(last_auto.created_at).isoformat(),
        "paused_until": None if paused is None else paused.isoformat(),
    }


def trigger(ws: Workspace) -> list[dict[str, Any]]:
    """Queue a round (a ``loop`` job as ``loop:auto``) of every enabled loop that is due, has no round queued
    or running, and is not paused after a failed or cancelled one; returns the jobs queued. Every job consumer
    runs this each ``[loops] check_seconds`` (``gigavision.jobs.chores``); a loop that cannot be checked
    (its dataset was removed) is logged and skipped."""
    queued: list[dict[str, Any]] = []
    loops = list_loops(ws)
    recent = _loop_jobs(ws) if loops else {}
    for item in loops:
        jobs = recent.get(item.name, [])
        if not item.enabled or _paused_until(ws, jobs) is not None or any(j.status in IN_FLIGHT for j in jobs):
            continue  # the in-flight look here only saves computing ``due``; ``submit_unique`` looks again
        try:
            state = due(ws, item.name)
        except GigavisionError as exc:
            log.warning("loop %s: not checked: %s", item.name, exc)
            continue
        if not state["due"]:
            continue
        job = ws.jobs.submit_unique("loop", {"loop": item.name, "auto": True}, AUTO_ACTOR, key="loop")
        if job is not None:
            log.info(
                "loop %s: %d new labels since %s; round queued (job %s)",
                item.name,
                state["new_labels"],
                state["since"],
                job["id"],
            )
            queued.append(dict(job))
    return queued


def queue_round(ws: Workspace, name: str, *, force: bool = False, actor: str = "anonymous") -> dict[str, Any]:
    """Queue one round as a ``loop`` job (REST); a loop that is not due is an ``InvalidInput`` unless ``force``,
    one with a round queued or running already a ``Conflict`` naming its job."""
    state = due(ws, name)
    if not state["due"] and not force:
        raise InvalidInput(
            f"loop {name} is not due ({state['new_labels']} new label(s) of {state['every']} since {state['since']});"
            " send force: true to run it anyway"
        )
    job = ws.jobs.submit_unique("loop", {"loop": name, "force": force}, actor, key="loop")
    if job is None:
        _busy(ws, name)
        raise Conflict(f"a round of loop {name} was queued or running a moment ago; try again")
    return dict(job)


def run_here(
    ws: Workspace, name: str, *, force: bool = False, actor: str = "anonymous", progress: Progress | None = None
) -> dict[str, Any]:
    """One round in this thread as a ``loop`` job (the CLI's way: recorded with who ran it, and seen by
    ``trigger`` as a round in flight); refused like ``queue_round``. Returns the round's record."""
    state = due(ws, name)
    if not state["due"] and not force:
        why = (
            "it is disabled"
            if not get_loop(ws, name).enabled
            else f"{state['new_labels']} new label(s) of {state['every']}"
        )
        raise InvalidInput(f"loop {name} is not due ({why} since {state['since']}); run it anyway with --force")
    _busy(ws, name)

    def report(fraction: float, message: str) -> None:
        if progress is not None:
            progress(fraction, 1.0, message)

    return ws.jobs.run("loop", {"loop": name, "force": force}, actor, report, unique="loop")


def _busy(ws: Workspace, name: str) -> None:
    """A ``Conflict`` naming the round of ``name`` that is queued or running, if there is one."""
    flying = schedule(ws, name)["in_flight"]
    if flying is not None:
        raise Conflict(
            f"a round of loop {name} is {flying['status']} already (job {flying['job']}, by {flying['by']});"
            f" wait for it, or cancel it: gigavision jobs cancel {flying['job']}"
        )


# -- a round ------------------------------------------------------------------------------------------------
def decide(comparison: PairedBootstrap, margin: float) -> tuple[bool, str]:
    """The promotion rule: the mean difference exceeds ``margin`` and the interval's lower bound is above 0."""
    c = comparison
    summary = (
        f"{c.metric} {c.candidate:.4f} vs {c.baseline:.4f}: difference {c.difference:+.4f},"
        f" {c.confidence:.0%} interval [{c.low:+.4f}, {c.high:+.4f}] over {c.n} test images"
    )
    if c.difference <= margin:
        return False, f"{summary}; not better by more than the margin {margin:+.4f}"
    if c.low <= 0.0:
        return False, f"{summary}; the interval reaches 0: the gain may be chance"
    return True, f"{summary}; better by more than the margin {margin:+.4f}"


def _scaled(progress: Progress | None, start: float, end: float, what: str) -> Progress | None:
    if progress is None:
        return None

    def report(done: float, total: float, message: str = "") -> None:
        fraction = done / total if total > 0 else 0.0
        progress(start + (end - start) * min(max(fraction, 0.0), 1.0), 1.0, message or what)

    return report


def people_only(filters: Mapping[str, Any]) -> dict[str, Any]:
    """A version's filters with model predictions left out (``source=!model:*``) and images left without a
    label dropped: a routing policy auto-accepts a model's confident predictions as the product's output, and
    neither training nor the test split may take them as truth (a model compared on its own labels wins).
    A spec that names model sources itself is kept as it is."""
    out = {key: list(values) for key, values in filters.items()}
    sources = out.get("source", [])
    if not any(s.lstrip("!").startswith("model") for s in sources):
        out["source"] = [*sources, "!model:*"]
        out["has"] = ["annotations"]
    return out


def _next_version(ws: Workspace, loop: Loop, actor: str, progress: Progress | None) -> DatasetVersion:
    """The dataset's next version with its latest version's spec; the latest itself when nothing changed."""
    from gigavision.datasets.versions import create_version, open_version

    latest = open_version(ws, loop.dataset)
    spec = latest.spec
    try:
        return create_version(
            ws,
            loop.dataset,
            filters=people_only(spec.get("filters") or {}),
            split=spec["split"],
            stratify=bool(spec.get("stratify")),
            group_by=str(spec.get("group_by") or "image"),
            seed=int(spec.get("seed") or 0),
            statuses=spec.get("statuses"),
            dup_distance=spec.get("dup_distance"),
            qc_submissions=bool(spec.get("qc_submissions")),
            actor=actor,
            progress=progress,
        )
    except Conflict:  # identical content: nothing new since the latest version, which a forced round reuses
        return latest


def _test_items(version: DatasetVersion, split: str) -> tuple[list[str], list[Annotations]]:
    ids, truths = [], []
    for entry in version.images(split):
        ids.append(entry.id)
        truths.append(version.annotations(entry.id))
    return ids, truths


def _predict(ws: Workspace, info: ModelInfo, image_ids: list[str]) -> list[Annotations]:
    """Whole-image predictions of ``info`` (torch: the checkpoint training evaluated) on workspace images."""
    from gigavision.models.predict import Predictor, predict_files

    predictor = Predictor(info, runtime="torch")
    return [item.annotations for item in predict_files(predictor, image_ids, ws)]


def _top_label(ann: Annotations, classes: set[str]) -> str:
    if not len(ann):
        return NO_LABEL
    order = np.argsort(-np.nan_to_num(np.asarray(ann.score, dtype=np.float64), nan=-1.0), kind="stable")
    for i in order:
        if str(ann.label[i]) in classes:
            return str(ann.label[i])
    return NO_LABEL


def compare(
    ws: Workspace,
    baseline: ModelInfo,
    candidate: ModelInfo,
    version: DatasetVersion,
    *,
    metric: str,
    split: str = "test",
    seed: int = SEED,
    progress: Progress | None = None,
) -> PairedBootstrap:
    """Both models on the same ``split`` of ``version``, image by image, and the paired bootstrap of ``metric``."""
    from gigavision.metrics.bootstrap import classification_bootstrap, paired_bootstrap

    _test_split_check(version, split)
    ids, truths = _test_items(version, split)
    if progress is not None:
        progress(0, 2, f"predicting {len(ids)} test images with {baseline.id}")
    base = _predict(ws, baseline, ids)
    if progress is not None:
        progress(1, 2, f"predicting {len(ids)} test images with {candidate.id}")
    cand = _predict(ws, candidate, ids)
    task = candidate.task_instance()
    multi = bool(getattr(task, "multi_label", False))
    if candidate.task == "classify" and not multi and metric != "micro_f1":
        classes = set(candidate.classes)
        keep = [i for i, t in enumerate(truths) if any(str(v) in classes for v in t.label)]
        if not keep:
            raise InvalidInput(f"no image of the {split!r} split of {version.ref} has a label the models know")
        y = [_top_label(truths[i], classes) for i in keep]
        a = [_top_label(base[i], set(baseline.classes)) for i in keep]
        b = [_top_label(cand[i], classes) for i in keep]
        return classification_bootstrap(y, a, b, metric=metric, resamples=RESAMPLES, seed=seed)
    old_task = baseline.task_instance()

    def value(t: Any, preds: list[Annotations], idx: np.ndarray) -> float:
        got = t.evaluate([truths[i] for i in idx], [preds[i] for i in idx]).metrics.get(metric)
        return float("nan") if got is None else float(got)

    def score(idx: np.ndarray) -> tuple[float, float]:
        return value(old_task, base, idx), value(task, cand, idx)

    return paired_bootstrap(len(ids), score, metric=metric, resamples=SLOW_RESAMPLES, seed=seed)


def _train(ws: Workspace, recipe: dict[str, Any], ctx: JobContext | None, progress: Progress | None) -> ModelInfo:
    """Train through the ``train`` job kind (by name: this stage does not import the training stage)."""
    from gigavision.jobs.registry import resolve as job_function
    from gigavision.models.store import get_model

    class _Stage:  # what run_train reads of its context
        def __init__(self) -> None:
            self.workspace = ws
            self.job_id = ctx.job_id if ctx is not None else "loop"
            self.actor = ctx.actor if ctx is not None else "loop"

        def progress(self, done: float, total: float, message: str = "") -> None:
            if progress is not None:
                progress(done, total, message or "training")

    result = job_function("train")(cast("JobContext", _Stage()), {"recipe": recipe})
    return get_model(ws, str(result["model"]))


def _warm_weights(ws: Workspace, baseline: ModelInfo, run_id: int) -> Path:
    """The served model's weights as a recipe ``weights`` file: its checkpoint's tensors under their own names
    (networks loaded whole: detect) and without the ``backbone.`` prefix (classify loads a timm backbone)."""
    import torch

    from gigavision.models.store import CHECKPOINT, runs_dir

    state = torch.load(baseline.path / CHECKPOINT, map_location="cpu", weights_only=True)
    tensors = dict(state.get("state_dict", state))
    prefix = "backbone."
    tensors.update({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
    path = runs_dir(ws) / f".loop-warm-{run_id}.pt"
    torch.save({"state_dict": tensors}, path)
    return path


def _record(ws: Workspace, run_id: int, **values: Any) -> None:
    with ws.session.begin() as s:
        row = s.get(LoopRunRow, run_id)
        assert row is not None
        for key, value in values.items():
            setattr(row, key, value)


def run_round(
    ws: Workspace,
    name: str,
    *,
    force: bool = False,
    actor: str = "anonymous",
    progress: Progress | None = None,
    ctx: JobContext | None = None,
) -> dict[str, Any]:
    """One round of loop ``name`` (see the module's docstring); returns its ``loop_runs`` record.

    Not due (fewer new labels than ``every``) is an ``InvalidInput`` unless ``force``. A failure is recorded
    as a ``failed`` run with its message, then raised.
    """
    loop = get_loop(ws, name)
    state = due(ws, name)
    if not state["due"] and not force:
        why = "it is disabled" if not loop.enabled else f"{state['new_labels']} new label(s) of {loop.every}"
        raise InvalidInput(f"loop {name} is not due ({why} since {state['since']}); run it anyway with --force")
    seen = None
    with contextlib.suppress(NotFound):
        seen = aliases.get_alias(ws, loop.alias)
    baseline = _baseline(ws, loop)
    if seen is not None and baseline is None:
        raise NotFound(f"alias {loop.alias} points at model {seen.model_id}, whose folder is gone; set the alias")
    with ws.session.begin() as s:
        row = LoopRunRow(
            loop=name,
            status="running",
            job_id=ctx.job_id if ctx is not None else None,
            baseline_model_id=baseline.id if baseline is not None else None,
            started_at=utcnow(),
        )
        s.add(row)
        s.flush()
        run_id = int(row.id)
    try:
        return _round(ws, loop, run_id, seen, baseline, actor, progress, ctx)
    except BaseException as exc:
        message = str(exc) if isinstance(exc, GigavisionError) else f"{type(exc).__name__}: {exc}"
        _record(ws, run_id, status="failed", message=message[:10_000], finished_at=utcnow())
        raise


def _round(
    ws: Workspace,
    loop: Loop,
    run_id: int,
    seen: aliases.Alias | None,
    baseline: ModelInfo | None,
    actor: str,
    progress: Progress | None,
    ctx: JobContext | None,
) -> dict[str, Any]:
    split = str(loop.recipe.get("test_split") or "test")
    version = _next_version(ws, loop, actor, _scaled(progress, 0.0, 0.1, "freezing the next dataset version"))
    _test_split_check(version, split)
    _record(ws, run_id, dataset_ref=version.ref)
    recipe = {**loop.recipe, "dataset": version.ref}
    warm = _warm_weights(ws, baseline, run_id) if loop.warm_start and baseline is not None else None
    if warm is not None:
        recipe["weights"] = str(warm)
    try:
        candidate = _train(ws, recipe, ctx, _scaled(progress, 0.1, 0.8, "training"))
    finally:
        if warm is not None:
            warm.unlink(missing_ok=True)
    _record(ws, run_id, candidate_model_id=candidate.id)
    reason = f"loop {loop.name} run {run_id} on {version.ref}"
    evidence: dict[str, Any] = {"loop": loop.name, "run": run_id, "dataset": version.ref, "split": split}
    if baseline is None:
        promoted, message = True, f"no model behind alias {loop.alias} yet: {candidate.id} is the first"
        comparison: dict[str, Any] | None = None
    else:
        result = compare(
            ws,
            baseline,
            candidate,
            version,
            metric=loop.metric,
            split=split,
            progress=_scaled(progress, 0.8, 0.98, "comparing on the test split"),
        )
        promoted, message = decide(result, loop.margin)
        comparison = {
            **result.to_dict(),
            "margin": loop.margin,
            "rule": "difference > margin and interval low > 0",
            "baseline_model": baseline.id,
            "candidate_model": candidate.id,
        }
    status = "kept"
    if promoted:
        try:
            aliases.promote(
                ws,
                loop.alias,
                candidate.id,
                actor=actor,
                reason=reason,
                evidence={**evidence, "comparison": comparison, "decision": message},
                expected_version=seen.version if seen is not None else None,
            )
            status = "promoted"
        except (Conflict, InvalidInput) as exc:  # the alias moved meanwhile, or now serves another label set
            message = f"{message}; not promoted: {exc}"
    _record(ws, run_id, status=status, comparison=comparison, message=message, finished_at=utcnow())
    if progress is not None:
        progress(1, 1, status)
    return get_run(ws, run_id)


def run_job(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    """The ``loop`` job kind: ``{"loop": NAME, "force": false, "auto": false}``; returns the round's record.

    ``auto`` (a round ``trigger`` queued): a loop no longer due when the job starts (a round ran meanwhile,
    the loop was disabled) ends the job ``done`` with a ``skipped`` result instead of failing it."""
    unknown = sorted(set(params) - set(LOOP_JOB_KEYS))
    if unknown:
        raise InvalidInput(f"unknown loop job parameters {unknown}; known: {', '.join(LOOP_JOB_KEYS)}")
    force, auto = params.get("force", False), params.get("auto", False)
    if not isinstance(force, bool) or not isinstance(auto, bool):
        raise InvalidInput(f"force and auto must be true or false, got {force!r}, {auto!r}")
    name = str(params.get("loop") or "")
    if auto and not force:
        state = due(ctx.workspace, name)
        if not state["due"]:
            why = "disabled" if not get_loop(ctx.workspace, name).enabled else "not due"
            message = f"skipped: loop {name} is {why} ({state['new_labels']} new label(s) of {state['every']})"
            ctx.conclude(message)
            return {"loop": name, "status": "skipped", "message": message}
    record = run_round(ctx.workspace, name, force=force, actor=ctx.actor, progress=ctx.progress, ctx=ctx)
    ctx.conclude(f"{record['status']}: {record['message']}"[:500])
    return record
