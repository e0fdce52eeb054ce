"""Image-level active learning over a workspace: pick the next images to label from a pool, as review tasks.

``select_images(ws, SelectRequest(...), actor=...)`` is what ``gigavision active select``, ``POST
/api/v1/active/select`` and the ``active-select`` job run:

1. **The pool**: the images passing the dataset filters' image keys (``image=`` name globs, ``image_id=``,
   ``meta:KEY=``; ``datasets.spec.parse_filters``, the syntax of ``datasets create --filter``), optionally
   only those of a dataset version (``dataset=NAME@N``), minus the images a human already labelled (any live
   annotation whose source is not ``model:…`` and whose status is not ``rejected``) and those with an open
   ``selected`` task (already waiting for an expert). An empty pool is an ``InvalidInput`` saying why.
2. **What the model says**, by the model's task:
   - ``classify`` / ``probe`` (single-label): the model runs over the pool (``models.predict``: the evaluation
     preprocessing; torch when installed, so the head's input — the penultimate features — is captured with a
     forward hook; on an ONNX-only install the probabilities stand in for the features);
   - multi-label classifiers: per image the mean binary entropy of the class scores (no ``badge``);
   - ``detect`` / ``segment``: an image's uncertainty is the highest ``attributes.uncertainty`` of the
     model's predictions of it. Images with **stored** predictions of the model (``predict --store``) use
     them as they are (not recomputed); the others are predicted here, whole, the way ``gigavision predict``
     predicts a small image (``models.predict.read_for`` and ``Predictor.predict``: the same level, letterbox
     and decode), each prediction scored by the definition stored ones got (``metrics.uncertainty``'s
     ``prediction_uncertainty``), the classes outside the label
     schema left out as ``--store`` leaves them out, so stored and fresh scores compare. An image where the
     model finds nothing scores 0, as an empty window does in region selection (``metrics.uncertainty.aggregate``):
     whole-image decoding keeps detections down to the recipe's ``score_threshold`` (0.05 by default, binary
     entropy 0.29), so the weak detections a missed object tends to leave already count, and "nothing at all"
     is the model being surer than at any kept detection; ``coreset`` (and ``hybrid``, within its shortlist)
     still reaches such images. Whether an image is small enough to predict whole is ``read_for``'s decision,
     the one ``gigavision predict``'s plan makes (its whole-image level within ``MAX_PREDICT_PIXELS``; a model
     trained on patches always tiles): images that would need tiled inference are left out, counted in
     ``pool.unscored``, with a note pointing to ``gigavision active regions`` (windows of big images) and
     ``predict --store``; a pool of only those is an error saying the same. Predictions made here are not
     stored. Embeddings for the diversity strategies are the thumbnail embedding below: stored-prediction
     images are not run through the network, so its features would exist for part of the pool only;
   - ``embed``: its embeddings; only ``coreset`` and ``random`` (an embedding says nothing about uncertainty);
   - **no model** (cold start): ``coreset`` or ``random`` over a model-free embedding of the stored thumbnail
     (RGB at 12×12). This machine's tests and installs have no pretrained
     weights offline (timm downloads them), so a pixel embedding is what can always run; a workspace with an
     ``embed`` model should pass it as ``--model`` instead.
3. ``active.selection.select`` picks the batch. The diversity strategies measure distances to the
   human-labelled images too (up to ``MAX_REFERENCE`` of them, a seeded sample, embedded the same way).
   Near-duplicates of each other and of those labelled images are skipped by the rule dataset versions use
   for duplicates: perceptual hashes (``datasets.phash``, cached per image) at most ``dup_distance`` bits
   apart (default 4). It is a property of the pixels, not of the model: a poorly trained network maps many
   different images to nearly the same features, and must not make them all "duplicates".
4. One review task per pick (reason ``selected``, whole image, priority = picks − rank + 1, the predicted
   label/score/uncertainty when there is a classifier, ``details``: strategy, rank, score, run).

A budget larger than the pool is clamped to the pool, with a note in the result (not an error: "label all of
these" is a sensible ask on a small pool).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import select

from gigavision.active.selection import STRATEGIES, Selection, phash_duplicates
from gigavision.active.selection import select as select_batch
from gigavision.datasets.spec import DEFAULT_DUP_DISTANCE, MAX_DUP_DISTANCE
from gigavision.errors import InvalidInput, LimitExceeded
from gigavision.progress import Progress
from gigavision.store.schema import AnnotationImageRow, AnnotationRow, ReviewTaskRow

if TYPE_CHECKING:
    from gigavision.jobs.context import JobContext
    from gigavision.models.predict import Predictor
    from gigavision.models.store import ModelInfo
    from gigavision.workspace import Workspace

POOL_KEYS = ("image", "image_id", "meta:KEY", "dataset")
CLASSIFIERS = ("classify", "probe")
OBJECT_TASKS = ("detect", "segment")
MAX_REFERENCE = 2_000  # labelled images embedded / hashed as references (a seeded sample beyond)
THUMB_SIDE = 12
QUERY_CHUNK = 500


@dataclass(frozen=True)
class SelectRequest:
    """What to select. ``model``: a model id, prefix or alias (None: cold start); ``pool``: filter texts
    ``key=value[,value...]`` (keys ``image``, ``image_id``, ``meta:KEY``, ``dataset``); ``dup_distance``:
    perceptual-hash bits within which two images are near-duplicates (None: off); ``create_tasks``: False
    only reports the picks."""

    budget: int
    strategy: str = "hybrid"
    model: str | None = None
    pool: tuple[str, ...] = ()
    seed: int = 0
    dup_distance: int | None = DEFAULT_DUP_DISTANCE
    create_tasks: bool = True

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise InvalidInput(f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if isinstance(self.budget, bool) or not isinstance(self.budget, int) or self.budget < 1:
            raise InvalidInput(f"budget must be a whole number ≥ 1, got {self.budget!r}")
        d = self.dup_distance
        if d is not None and (isinstance(d, bool) or not isinstance(d, int) or not 0 <= d <= MAX_DUP_DISTANCE):
            raise InvalidInput(f"dup-distance must be 0..{MAX_DUP_DISTANCE} bits (or -1 / null: off), got {d!r}")
        if self.model is None and self.strategy not in ("coreset", "random"):
            raise InvalidInput(
                f"strategy {self.strategy} needs a model (--model); without one (a cold start) use coreset"
                " (diversity over image thumbnails) or random"
            )


@dataclass
class Scored:
    """The pool as the model sees it: per image the class probabilities or an uncertainty, and embeddings."""

    ids: list[str]
    probs: np.ndarray | None = None
    uncertainty: np.ndarray | None = None
    embeddings: np.ndarray | None = None
    embedding: str = "thumbnail"
    classes: list[str] = field(default_factory=list)
    unscored: int = 0
    notes: list[str] = field(default_factory=list)


# -- the pool ----------------------------------------------------------------------------------------------
def pool_images(ws: Workspace, pool: Sequence[str]) -> tuple[list[str], dict[str, int]]:
    """The ids of the pool's images (by name, id) and counts: ``matched`` the filters, ``labelled`` by a
    human, ``pending`` an open selection task; the ids exclude the last two."""
    from gigavision.datasets.freeze import select_images as filtered_images
    from gigavision.datasets.spec import parse_filters

    texts, dataset = [], None
    for text in pool:
        key, _, value = str(text).partition("=")
        if key.strip() == "dataset":
            dataset = value.strip()
        else:
            texts.append(text)
    filters = parse_filters(texts)
    annotation_keys = [k for k in ("label", "source", "kind") if getattr(filters, k)]
    if filters.has_annotations or filters.status:
        annotation_keys.append("has" if filters.has_annotations else "status")
    if annotation_keys:
        raise InvalidInput(
            f"pool filter {annotation_keys[0]}= picks annotations, not images; a pool takes {', '.join(POOL_KEYS)}"
        )
    if filters.image_id:
        import dataclasses

        found = ws.find_images(filters.image_id)
        filters = dataclasses.replace(filters, image_id=tuple(sorted(set(found.values()))))
    ids = [c.id for c in filtered_images(ws, filters)]
    if dataset:
        from gigavision.datasets.versions import open_version

        members = {e.id for e in open_version(ws, dataset).images()}
        ids = [i for i in ids if i in members]
    labelled = human_labelled(ws)
    pending = pending_selection(ws)
    counts = {
        "matched": len(ids),
        "labelled": sum(i in labelled for i in ids),
        "pending": sum(i in pending and i not in labelled for i in ids),
    }
    return [i for i in ids if i not in labelled and i not in pending], counts


def human_labelled(ws: Workspace) -> set[str]:
    """Images with a live, not rejected annotation from anyone but a model."""
    a, k = AnnotationRow, AnnotationImageRow
    stmt = (
        select(k.image_id)
        .join(a, a.image_key == k.image_key)
        .where(~a.deleted, ~a.source.like("model:%"), a.status != "rejected")
        .distinct()
    )
    with ws.session() as s:
        return set(s.scalars(stmt))


def pending_selection(ws: Workspace) -> set[str]:
    """Images with an open whole-image ``selected`` task."""
    t = ReviewTaskRow
    stmt = select(t.image_id).where(t.status == "open", t.reason == "selected", t.x0.is_(None)).distinct()
    with ws.session() as s:
        return set(s.scalars(stmt))


# -- embeddings and model outputs ----------------------------------------------------------------------------
def thumbnail_embeddings(ws: Workspace, ids: Sequence[str], progress: Progress | None = None) -> np.ndarray:
    """``(n, 3·12·12)`` the stored thumbnail (else an overview) as RGB at 12×12 in [0, 1]: a model-free
    embedding for cold starts and for tasks without image-level features."""
    from PIL import Image

    from gigavision.images.thumbnail import overview

    out = np.zeros((len(ids), 3 * THUMB_SIDE * THUMB_SIDE), dtype=np.float64)
    for n, image_id in enumerate(ids):
        path = ws.thumbnail_path(image_id)
        if path.is_file():
            with Image.open(path) as im:
                small = im.convert("RGB").resize((THUMB_SIDE, THUMB_SIDE), Image.Resampling.BOX)
        else:
            arr = overview(ws.open_source(image_id), 64)
            small = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr[:, :, :3]).convert("RGB")
            small = small.resize((THUMB_SIDE, THUMB_SIDE), Image.Resampling.BOX)
        out[n] = np.asarray(small, dtype=np.float64).reshape(-1) / 255.0
        if progress is not None:
            progress(n + 1, len(ids), "thumbnail embeddings")
    return out


def _predictor(info: ModelInfo) -> Predictor:
    import importlib.util

    from gigavision.models.predict import Predictor

    runtime = "torch" if importlib.util.find_spec("torch") is not None else "onnx"
    return Predictor(info, runtime=runtime)


def run_model(
    ws: Workspace, predictor: Predictor, ids: Sequence[str], progress: Progress | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """The network's first output (probabilities, or an embed model's embeddings) for each image, and the
    penultimate features (the input of the head, torch only; None on ONNX)."""
    from gigavision.models.predict import read_for

    net = getattr(predictor, "_net", None)  # the torch network (the Predictor keeps it private)
    head = getattr(net, "head", None)
    captured: list[np.ndarray] = []
    hook = None
    if head is not None and predictor.info.task in CLASSIFIERS:
        # copied: torch reuses the buffer of a freed activation for the next batch
        hook = head.register_forward_hook(
            lambda _m, inputs, _o: captured.append(inputs[0].detach().cpu().numpy().copy())
        )
    outs: list[np.ndarray] = []
    try:
        for start in range(0, len(ids), predictor.batch):
            chunk = list(ids[start : start + predictor.batch])
            batch = []
            for image_id in chunk:
                x, _ = predictor.prepare(read_for(predictor, ws.open_source(image_id), image_id), image_id)
                batch.append(x)
            metas = [ws.get_image(i).meta or {} for i in chunk]
            side = predictor.side_batch(metas, chunk)
            outs.append(np.asarray(predictor.run(np.ascontiguousarray(np.stack(batch)), side)[0], dtype=np.float64))
            if progress is not None:
                progress(min(start + len(chunk), len(ids)), len(ids), f"model {predictor.info.id}")
    finally:
        if hook is not None:
            hook.remove()
    features = np.concatenate(captured).astype(np.float64) if captured else None
    return np.concatenate(outs), features


def stored_uncertainty(ws: Workspace, model_id: str, ids: Sequence[str]) -> dict[str, float]:
    """Per image, the highest ``attributes.uncertainty`` of the model's stored predictions (images without
    any are absent)."""
    a, k = AnnotationRow, AnnotationImageRow
    out: dict[str, float] = {}
    with ws.session() as s:
        for start in range(0, len(ids), QUERY_CHUNK):
            chunk = list(ids[start : start + QUERY_CHUNK])
            stmt = (
                select(k.image_id, a.attributes, a.score)
                .join(a, a.image_key == k.image_key)
                .where(k.image_id.in_(chunk), ~a.deleted, a.source == f"model:{model_id}")
            )
            for image_id, attrs, score in s.execute(stmt):
                value = (attrs or {}).get("uncertainty")
                if value is None and score is not None:  # stored before uncertainty was recorded
                    s_ = min(max(float(score), 1e-12), 1 - 1e-12)
                    value = -(s_ * np.log2(s_) + (1 - s_) * np.log2(1 - s_))
                u = float(value) if value is not None else 0.5
                out[image_id] = max(out.get(image_id, 0.0), u)
    return out


def predict_uncertainty(
    ws: Workspace, predictor: Predictor, ids: Sequence[str], progress: Progress | None = None
) -> tuple[dict[str, float], list[str]]:
    """For a whole-image model: per image small enough to predict whole, the highest uncertainty of the
    model's predictions of it (0 when it finds nothing); and the images that would need tiled inference."""
    from gigavision.metrics.uncertainty import prediction_uncertainty as uncertainty
    from gigavision.models.predict import read_for

    schema = {c.name for c in ws.labels.classes()}
    scores: dict[str, float] = {}
    tiled: list[str] = []
    for start in range(0, len(ids), predictor.batch):
        chunk = list(ids[start : start + predictor.batch])
        whole, pixels, sizes, metas = [], [], [], []
        for image_id in chunk:
            source = ws.open_source(image_id)
            try:  # whole or tiled: read_for's limit, the rule gigavision predict's plan applies
                pixels.append(read_for(predictor, source, image_id))
            except LimitExceeded:
                tiled.append(image_id)
                continue
            whole.append(image_id)
            sizes.append((source.height, source.width))
            metas.append(ws.get_image(image_id).meta or {})
        if whole:
            for image_id, ann in zip(whole, predictor.predict(pixels, sizes, names=whole, side=metas), strict=True):
                if schema:  # as --store keeps them (models.predict.store_predictions)
                    ann = ann[np.isin(ann.label.astype(str), list(schema))]
                scores[image_id] = float(np.max(uncertainty(ann), initial=0.0))
        if progress is not None:
            progress(min(start + len(chunk), len(ids)), len(ids), f"model {predictor.info.id}")
    return scores, tiled


def score_objects(ws: Workspace, info: ModelInfo, ids: list[str], progress: Progress | None = None) -> Scored:
    """A detector's or segmenter's uncertainty per image: its stored predictions where there are some, else
    a whole-image prediction now; images too big to predict whole are left out (see the module docstring)."""
    stored = stored_uncertainty(ws, info.id, ids)
    missing = [i for i in ids if i not in stored]
    fresh: dict[str, float] = {}
    tiled: list[str] = missing if info.input.patch is not None else []  # gigavision predict tiles them all
    if missing and not tiled:
        fresh, tiled = predict_uncertainty(ws, _predictor(info), missing, progress)
    found = {**stored, **fresh}
    kept = [i for i in ids if i in found]
    notes = []
    if tiled:
        why = (
            f"model {info.id} was trained on patches, so they are predicted tiled"
            if info.input.patch is not None
            else "they are too big to predict whole (gigavision predict tiles them)"
        )
        advice = (
            f"{len(tiled)} pool images have no stored predictions of model {info.id} and {why}: choose windows"
            f" of big images with 'gigavision active regions --model {info.id} IMAGE...', or run 'gigavision"
            f" predict --model {info.id} --store' over them first"
        )
        if not kept:
            raise InvalidInput(f"no pool image could be scored: {advice}")
        notes.append(f"{advice} (left out, counted in pool.unscored)")
    return Scored(
        kept,
        uncertainty=np.asarray([found[i] for i in kept], dtype=np.float64),
        embeddings=thumbnail_embeddings(ws, kept, progress),  # diversity and near-duplicates
        unscored=len(tiled),
        notes=notes,
    )


def score_pool(
    ws: Workspace, info: ModelInfo | None, strategy: str, ids: list[str], progress: Progress | None = None
) -> Scored:
    """What ``select`` needs for ``ids`` (see the module docstring); wrong task/strategy pairs are refused."""
    if info is None:
        return Scored(ids, embeddings=thumbnail_embeddings(ws, ids, progress))
    task = info.task
    if task == "embed":
        if strategy not in ("coreset", "random"):
            raise InvalidInput(
                f"model {info.id} is an embed model: it gives embeddings, not uncertainty; use --strategy coreset"
                " or random with it (or a classify, probe, detect or segment model)"
            )
        predictor = _predictor(info)
        emb, _ = run_model(ws, predictor, ids, progress)
        return Scored(ids, embeddings=emb, embedding=f"model {info.id} embeddings")
    if task in OBJECT_TASKS:
        if strategy == "badge":
            raise InvalidInput(f"strategy badge needs a classifier (classify or probe); model {info.id} is {task}")
        return score_objects(ws, info, ids, progress)
    if task not in CLASSIFIERS:
        raise InvalidInput(
            f"model {info.id} has task {task!r}; selection takes classify, probe, detect, segment or embed"
        )
    if info.input.patch is not None:
        raise InvalidInput(
            f"model {info.id} was trained on patches: it scores windows of big images, not whole images; select"
            " regions of big images with it instead"
        )
    classes = list(info.classes)
    multi = bool(getattr(info.task_instance(), "multi_label", False))
    if multi and strategy == "badge":
        raise InvalidInput(f"strategy badge needs a single-label classifier; model {info.id} is multi-label")
    predictor = _predictor(info)
    out, feats = run_model(ws, predictor, ids, progress)
    embedding = "penultimate features" if feats is not None else "class probabilities (ONNX runtime)"
    emb = feats if feats is not None else out
    if multi:
        s = np.clip(out, 1e-12, 1 - 1e-12)
        u = (-(s * np.log2(s) + (1 - s) * np.log2(1 - s))).mean(axis=1)
        return Scored(ids, uncertainty=u, embeddings=emb, embedding=embedding, classes=classes)
    return Scored(ids, probs=out, embeddings=emb, embedding=embedding, classes=classes)


def labelled_sample(ws: Workspace, seed: int) -> list[str]:
    """The human-labelled images, a seeded sample of ``MAX_REFERENCE`` beyond that many."""
    labelled = sorted(human_labelled(ws))
    if len(labelled) > MAX_REFERENCE:
        rng = np.random.default_rng(seed)
        labelled = sorted(rng.choice(labelled, MAX_REFERENCE, replace=False).tolist())
    return labelled


def reference_embeddings(
    ws: Workspace, info: ModelInfo | None, scored: Scored, labelled: list[str], progress: Progress | None = None
) -> np.ndarray | None:
    """Embeddings of the ``labelled`` images, made the way the pool's were."""
    if scored.embeddings is None or not labelled:
        return None
    if scored.embedding == "thumbnail":
        return thumbnail_embeddings(ws, labelled, progress)
    assert info is not None
    out, feats = run_model(ws, _predictor(info), labelled, progress)
    return feats if feats is not None and scored.embedding == "penultimate features" else out


# -- the whole step ----------------------------------------------------------------------------------------
def select_images(
    ws: Workspace, request: SelectRequest, *, actor: str, progress: Progress | None = None
) -> dict[str, Any]:
    """Pick ``request.budget`` images of the pool and (unless ``create_tasks`` is False) create their review
    tasks; returns the picks with their scores, the pool counts and notes."""
    from gigavision.models.store import get_model

    info = None
    if request.model is not None:
        from gigavision.models.aliases import resolve

        info = get_model(ws, resolve(ws, request.model))
    ids, counts = pool_images(ws, request.pool)
    if not ids:
        where = f" {' '.join(request.pool)}" if request.pool else ""
        raise InvalidInput(
            f"the pool{where} has no images to select from: {counts['matched']} matched,"
            f" {counts['labelled']} already labelled by a human, {counts['pending']} already waiting in a"
            " selection task"
        )
    scored = score_pool(ws, info, request.strategy, ids, progress)
    labelled = labelled_sample(ws, request.seed)
    reference = reference_embeddings(ws, info, scored, labelled, progress)
    near = None
    if request.dup_distance is not None:
        from gigavision.datasets.phash import perceptual_hashes

        hashes = perceptual_hashes(ws, [*scored.ids, *labelled], progress)
        near = phash_duplicates(hashes[: len(scored.ids)], hashes[len(scored.ids) :], request.dup_distance)
    notes = list(scored.notes)
    pool_n = len(scored.ids)
    budget = request.budget
    if budget > pool_n:
        notes.append(f"budget {budget} is larger than the pool ({pool_n} images): all {pool_n} are selected")
        budget = pool_n
    sel = select_batch(
        request.strategy,
        scored.probs,
        scored.embeddings,
        reference,
        budget,
        request.seed,
        uncertainty=scored.uncertainty,
        dedup=None,
        near_duplicates=near,
    )
    if len(sel) < budget:
        notes.append(
            f"{budget - len(sel)} fewer than asked: the rest of the pool are near-duplicates (perceptual hashes"
            f" within {request.dup_distance} bits) of labelled or chosen images; --dup-distance 0 keeps all but"
            " identical-looking ones, -1 turns the check off"
        )
    run = f"select-{uuid.uuid4().hex[:12]}"
    picks = _picks(ws, scored, sel)
    created = 0
    if request.create_tasks and picks:
        from gigavision.store.reviews import NewTask

        tasks = [
            NewTask(
                image_id=p["image_id"],
                reason="selected",
                model_id=info.id if info is not None else None,
                label=p.get("label"),
                score=p.get("predicted_score"),
                uncertainty=p.get("uncertainty"),
                priority=float(len(picks) - p["rank"] + 1),
                details={"strategy": request.strategy, "rank": p["rank"], "score": p["score"], "run": run},
            )
            for p in picks
        ]
        created = ws.reviews.add(tasks, actor=actor, batch=run)
    return {
        "run": run,
        "model": info.id if info is not None else None,
        "strategy": request.strategy,
        "budget": request.budget,
        "embedding": scored.embedding if scored.embeddings is not None else None,
        "pool": {**counts, "candidates": len(ids), "unscored": scored.unscored, "near_duplicates": sel.skipped},
        "selected": picks,
        "tasks_created": created,
        "notes": notes,
    }


def _picks(ws: Workspace, scored: Scored, sel: Selection) -> list[dict[str, Any]]:
    out = []
    for rank, (i, score) in enumerate(zip(sel.indices, sel.scores, strict=True), 1):
        image_id = scored.ids[int(i)]
        item: dict[str, Any] = {
            "rank": rank,
            "image_id": image_id,
            "name": ws.get_image(image_id).name,
            "score": round(float(score), 6),
        }
        if sel.uncertainty is not None:
            item["uncertainty"] = round(float(sel.uncertainty[rank - 1]), 6)
        if scored.probs is not None and scored.classes and scored.probs.shape[1] == len(scored.classes):
            row = scored.probs[int(i)]
            item["label"] = scored.classes[int(np.argmax(row))]
            item["predicted_score"] = round(float(row.max()), 6)
        out.append(item)
    return out


# -- as a job ----------------------------------------------------------------------------------------------
PARAMS = ("budget", "strategy", "model", "pool", "seed", "dup_distance", "create_tasks")


def run_select(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    """The ``select`` job: ``params`` are ``SelectRequest``'s fields; returns ``select_images``' result."""
    unknown = sorted(set(params) - set(PARAMS))
    if unknown:
        raise InvalidInput(f"unknown selection parameters {unknown}; known: {', '.join(PARAMS)}")
    options = {**params, "pool": tuple(params.get("pool") or ())}
    return select_images(ctx.workspace, SelectRequest(**options), actor=ctx.actor, progress=ctx.progress)
