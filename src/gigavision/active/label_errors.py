"""Finding label errors: out-of-fold predictions rank the labels of a dataset version most likely wrong.

A model is only fair judge of an image it never trained on, so every training image is predicted by the
fold model that held it out (``gigavision.train.folds``, k-fold with the recipe). What disagrees with the
labels becomes a *suspect*, ranked by how confident the disagreement is, and can be sent to experts as a
review task (reason ``suspect``):

- classify / probe: confident learning. Per class ``j``, the threshold ``t_j`` is the mean probability of
  ``j`` over the images labelled ``j`` (the model's self-confidence for that class). An image counts towards
  the class ``j*`` it scores highest among the classes at or above their threshold; the counts per
  (given, j*) form the *confident joint*. Calibrated so each row sums to its class's label count, its
  off-diagonal sum estimates how many labels are wrong. The suggested cut prunes by noise rate: for each
  (given i, other j), the round(calibrated[i, j]) images labelled i whose probability of j most exceeds that of
  i. Suspects are ranked cut first, then by the normalised margin (best other class minus the given class's
  probability), then by low self-confidence.
- detect: boxes matched by IoU. *missing*: a confident prediction no label overlaps; *spurious*: a label
  no prediction of its fold model overlaps; *wrong_class*: a label overlapped (IoU ≥ ``match_iou``) only by
  another class, confidently; *localisation*: a label whose class is predicted there with an IoU between
  ``overlap_iou`` and ``match_iou``.
- segment: the label's class map against the prediction's, over the image; each connected region of
  disagreement of at least ``min_area`` of the image is a suspect (missing, spurious or wrong_class region).

Written here from the published descriptions (Northcutt et al., "Confident Learning", JAIR 2021), not from
any (AGPL) implementation. The ranking below is NumPy only; training the folds is the train stage's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from gigavision.errors import InvalidInput
from gigavision.progress import Progress

if TYPE_CHECKING:
    from gigavision.annotations import Annotations
    from gigavision.jobs.context import JobContext
    from gigavision.models.recipe import Recipe
    from gigavision.store.reviews import NewTask
    from gigavision.workspace import Workspace

# the train stage's k-fold predictor, named by path: active and train are sibling stages (docs/architecture.md)
OUT_OF_FOLD = "gigavision.train.folds:out_of_fold"
KINDS = ("label", "missing", "spurious", "wrong_class", "localisation")
MATCH_IOU = 0.5  # detect: a label and a prediction of one object
OVERLAP_IOU = 0.1  # detect: below this a prediction does not touch a label at all
CONFIDENT = 0.5  # detect: a prediction this sure counts as a finding (missing box, wrong class)
FOUND = 0.25  # detect: a prediction under this score is a guess (does not find a label)
MIN_AREA = 0.01  # segment: least share of the image a region of disagreement must cover
JOB_KIND = "label-errors"
JOB_SUSPECTS = 1000  # suspects kept in a job's result (the ranking's head; the cut is rarely longer)


@dataclass(frozen=True)
class Suspect:
    """One suspected label error. ``score`` in 0..1, higher = more likely wrong; ``region`` in level-0
    pixels (None: the whole image); ``given`` the dataset's label, ``predicted`` the fold model's."""

    image_id: str
    kind: str
    score: float
    fold: int = -1
    given: str | None = None
    predicted: str | None = None
    region: tuple[float, float, float, float] | None = None
    annotation_id: int | None = None
    scores: dict[str, float] = field(default_factory=dict)


@dataclass
class LabelErrors:
    """The ranked suspects of one dataset version and the cut to review (``suggested`` first suspects)."""

    dataset: str
    task: str
    folds: int
    images: int
    suspects: list[Suspect]
    suggested: int
    estimate: dict[str, Any] = field(default_factory=dict)

    def as_dict(self, limit: int | None = None) -> dict[str, Any]:
        shown = self.suspects if limit is None else self.suspects[:limit]
        return {
            "dataset": self.dataset,
            "task": self.task,
            "folds": self.folds,
            "images": self.images,
            "suspects_total": len(self.suspects),
            "suggested": self.suggested,
            "estimate": self.estimate,
            "suspects": [_suspect_json(s) for s in shown],
        }


def _suspect_json(s: Suspect) -> dict[str, Any]:
    out = asdict(s)
    out["region"] = list(s.region) if s.region is not None else None
    return out


# -- classification: confident learning -----------------------------------------------------------------------
@dataclass
class ConfidentLearning:
    """``order``: indices of suspected samples, most suspect first (the pruned cut, then the rest of the
    confident joint's off-diagonal); ``joint``: the confident joint (given × confident class counts);
    ``thresholds`` per class; ``suggested``: the length of the cut (the first ``suggested`` of ``order``)."""

    order: np.ndarray
    joint: np.ndarray
    thresholds: np.ndarray
    suggested: int
    estimate: float  # the calibrated joint's off-diagonal sum: how many labels it estimates wrong
    confident: np.ndarray  # per sample: the confident class j*, -1 where no class reaches its threshold
    margin: np.ndarray  # per sample: best other class's probability minus the given class's
    self_confidence: np.ndarray


def confident_learning(labels: Sequence[int] | np.ndarray, probs: np.ndarray) -> ConfidentLearning:
    """Rank the samples whose out-of-fold ``probs`` (n × k) most confidently contradict their ``labels``."""
    y = np.asarray(labels, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != len(y):
        raise InvalidInput(f"probabilities of shape {p.shape} do not match {len(y)} labels")
    n, k = p.shape
    if n and (y.min() < 0 or y.max() >= k):
        raise InvalidInput(f"labels must be class indices 0..{k - 1}")
    thresholds = np.full(k, np.inf)  # a class no sample is labelled with never counts as confident
    for j in range(k):
        given = y == j
        if given.any():
            thresholds[j] = p[given, j].mean()
    above = p >= thresholds[None, :] - 1e-12
    masked = np.where(above, p, -np.inf)
    confident = np.where(above.any(axis=1), masked.argmax(axis=1), -1)
    joint = np.zeros((k, k), dtype=np.int64)
    has = confident >= 0
    np.add.at(joint, (y[has], confident[has]), 1)
    self_conf = p[np.arange(n), y] if n else np.zeros(0)
    other = p.copy()
    if n:
        other[np.arange(n), y] = -np.inf
    margin = other.max(axis=1) - self_conf if n and k > 1 else np.zeros(n)
    counts = np.bincount(y, minlength=k).astype(np.float64)
    rows = joint.sum(axis=1).astype(np.float64)
    calibrated = np.divide(joint * counts[:, None], rows[:, None], out=np.zeros((k, k)), where=rows[:, None] > 0)
    estimate = float(calibrated.sum() - np.trace(calibrated))
    # prune by noise rate: for each (given i, other j), the round(calibrated[i, j]) images labelled i whose
    # probability of j most exceeds that of i
    chosen = np.zeros(n, dtype=bool)
    for i in range(k):
        members = np.nonzero(y == i)[0]
        for j in range(k):
            take = round(calibrated[i, j]) if i != j else 0
            if take <= 0 or not len(members):
                continue
            toward = p[members, j] - p[members, i]
            best = members[np.argsort(-toward, kind="stable")[:take]]
            chosen[best[p[best, j] > p[best, i]]] = True
    off = np.nonzero(chosen | (has & (confident != y)))[0]
    order = off[np.lexsort((self_conf[off], -margin[off], ~chosen[off]))]
    suggested = int(chosen.sum())
    return ConfidentLearning(order, joint, thresholds, suggested, estimate, confident, margin, self_conf)


# -- detection -----------------------------------------------------------------------------------------------
def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` (n × 4, xyxy) with every box of ``b`` (m × 4)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    out: np.ndarray = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return out


@dataclass(frozen=True)
class BoxFinding:
    """A detection suspect in the boxes' own pixels: ``truth``/``pred`` are row indices (-1: none)."""

    kind: str
    score: float
    truth: int
    pred: int
    iou: float


def detection_suspects(
    truth: Annotations,
    pred: Annotations,
    *,
    match_iou: float = MATCH_IOU,
    overlap_iou: float = OVERLAP_IOU,
    confident: float = CONFIDENT,
    found: float = FOUND,
) -> list[BoxFinding]:
    """Disagreements between an image's labelled boxes and its out-of-fold predicted boxes. Predictions
    scoring under ``found`` are guesses: they neither match a label nor count as a finding."""
    t = np.nonzero(truth.kind != "tag")[0] if len(truth) else np.zeros(0, dtype=np.int64)
    q = np.nonzero(pred.kind != "tag")[0] if len(pred) else np.zeros(0, dtype=np.int64)
    iou = box_iou(truth.xyxy[t], pred.xyxy[q]) if len(t) and len(q) else np.zeros((len(t), len(q)))
    scores = np.nan_to_num(pred.score[q], nan=1.0) if len(q) else np.zeros(0)
    same = (truth.label[t][:, None] == pred.label[q][None, :]) if len(t) and len(q) else np.zeros(iou.shape, bool)
    strong = scores >= found
    out: list[BoxFinding] = []
    for a, ti in enumerate(t):
        row = np.where(strong, iou[a], 0.0)
        same_row = np.where(same[a], row, 0.0)
        if (same_row >= match_iou).any():
            continue  # found where it is labelled, as labelled
        other = np.where(~same[a] & (row >= match_iou) & (scores >= confident), row, 0.0)
        if other.any() and other.max() > same_row.max():
            b = int(np.argmax(other))
            out.append(BoxFinding("wrong_class", float(scores[b]), int(ti), int(q[b]), float(row[b])))
        elif (same_row >= overlap_iou).any():
            b = int(np.argmax(same_row))
            out.append(BoxFinding("localisation", float(1.0 - row[b]), int(ti), int(q[b]), float(row[b])))
        elif not (row >= overlap_iou).any():
            near = iou[a] > 0
            doubt = float(scores[near].max()) if near.any() else 0.0  # the best weak guess nearby
            out.append(BoxFinding("spurious", 1.0 - doubt, int(ti), -1, 0.0))
    for b, qi in enumerate(q):
        if scores[b] >= confident and not (iou[:, b] >= overlap_iou).any():
            out.append(BoxFinding("missing", float(scores[b]), -1, int(qi), 0.0))
    return out


# -- segmentation --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RegionFinding:
    """A region where label and prediction disagree, in the maps' pixels: ``box`` (x0, y0, x1, y1)."""

    kind: str
    score: float
    box: tuple[int, int, int, int]
    area: int
    given: int
    predicted: int


def segmentation_suspects(
    label_map: np.ndarray,
    pred_map: np.ndarray,
    *,
    min_area: float = MIN_AREA,
    valid: tuple[int, int] | None = None,
) -> list[RegionFinding]:
    """Connected regions where the class maps differ, covering at least ``min_area`` of the image (a share
    when < 1, else pixels). ``valid``: (height, width) of the image inside a letterboxed canvas."""
    from scipy import ndimage

    given = np.asarray(label_map)
    predicted = np.asarray(pred_map)
    if given.shape != predicted.shape:
        raise InvalidInput(f"label map {given.shape} and prediction {predicted.shape} differ in size")
    h, w = valid if valid is not None else given.shape
    given, predicted = given[:h, :w], predicted[:h, :w]
    least = max(1, math.ceil(min_area * h * w)) if min_area < 1 else int(min_area)
    regions, _ = ndimage.label(given != predicted)
    out = []
    for idx, sl in enumerate(ndimage.find_objects(regions), start=1):
        if sl is None:
            continue
        inside = regions[sl] == idx
        area = int(inside.sum())
        if area < least:
            continue
        g = int(np.bincount(given[sl][inside]).argmax())
        p = int(np.bincount(predicted[sl][inside]).argmax())
        kind = "missing" if g == 0 else "spurious" if p == 0 else "wrong_class"
        box = (int(sl[1].start), int(sl[0].start), int(sl[1].stop), int(sl[0].stop))
        out.append(RegionFinding(kind, round(math.sqrt(area / float(h * w)), 6), box, area, g, p))
    return sorted(out, key=lambda r: -r.area)


# -- from out-of-fold predictions to ranked suspects ----------------------------------------------------------
def rank(oof: Any, *, min_area: float = MIN_AREA) -> LabelErrors:
    """Suspects of ``oof`` (``gigavision.train.folds.FoldPredictions``), most likely wrong first."""
    if oof.task in ("classify", "probe"):
        return _rank_classify(oof)
    if oof.task == "detect":
        return _rank_detect(oof)
    if oof.task == "segment":
        return _rank_segment(oof, min_area)
    raise InvalidInput(f"label errors: task {oof.task!r} has no labels to check")


def _rank_classify(oof: Any) -> LabelErrors:
    classes = list(oof.classes)
    index = {c: i for i, c in enumerate(classes)}
    labels, rows = [], []
    for truth, pred in zip(oof.truths, oof.predictions, strict=True):
        given = [str(v) for v in truth.label if str(v) in index]
        scores = pred.attributes[0].get("scores", {}) if len(pred) else {}
        labels.append(index[given[0]] if given else 0)
        rows.append([float(scores.get(c, 0.0)) for c in classes])
    probs = np.asarray(rows, dtype=np.float64).reshape(len(rows), len(classes))
    cl = confident_learning(labels, probs)
    suspects = []
    for i in cl.order.tolist():
        j = int(cl.confident[i])
        suspects.append(
            Suspect(
                image_id=oof.image_ids[i],
                kind="label",
                score=round(float(np.clip(cl.margin[i], 0.0, 1.0)), 6),
                fold=int(oof.fold[i]),
                given=classes[labels[i]],
                predicted=classes[j],
                annotation_id=_annotation_id(oof.truths[i]),
                scores={
                    "self_confidence": round(float(cl.self_confidence[i]), 6),
                    "margin": round(float(cl.margin[i]), 6),
                    "predicted_probability": round(float(probs[i, j]), 6),
                },
            )
        )
    estimate = {
        "thresholds": {
            c: (None if math.isinf(t) else round(float(t), 6)) for c, t in zip(classes, cl.thresholds, strict=True)
        },
        "confident_joint": cl.joint.tolist(),
        "classes": classes,
    }
    return LabelErrors(oof.dataset, oof.task, oof.folds, len(oof.image_ids), suspects, cl.suggested, estimate)


def _annotation_id(ann: Annotations, row: int = 0) -> int | None:
    if len(ann) > row and int(ann.id[row]) >= 0:
        return int(ann.id[row])
    return None


def _level0(box: Sequence[float], scale: float) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = (float(v) * scale for v in box)
    return (x0, y0, max(x1, x0 + 1e-3), max(y1, y0 + 1e-3))


def _rank_detect(oof: Any) -> LabelErrors:
    suspects = []
    for image_id, k, truth, pred, scale in zip(
        oof.image_ids, oof.fold, oof.truths, oof.predictions, oof.scale, strict=True
    ):
        for f in detection_suspects(truth, pred):
            boxes = [truth.xyxy[f.truth]] if f.truth >= 0 else []
            boxes += [pred.xyxy[f.pred]] if f.pred >= 0 else []
            union = np.asarray(boxes, dtype=np.float64)
            region = (union[:, 0].min(), union[:, 1].min(), union[:, 2].max(), union[:, 3].max())
            suspects.append(
                Suspect(
                    image_id=image_id,
                    kind=f.kind,
                    score=round(f.score, 6),
                    fold=int(k),
                    given=str(truth.label[f.truth]) if f.truth >= 0 else None,
                    predicted=str(pred.label[f.pred]) if f.pred >= 0 else None,
                    region=_level0(region, scale),
                    annotation_id=_annotation_id(truth, f.truth) if f.truth >= 0 else None,
                    scores={
                        "iou": round(f.iou, 6),
                        "prediction_score": round(float(np.nan_to_num(pred.score[f.pred], nan=1.0)), 6)
                        if f.pred >= 0
                        else 0.0,
                    },
                )
            )
    suspects.sort(key=lambda s: -s.score)
    suggested = sum(1 for s in suspects if s.score >= CONFIDENT)
    return LabelErrors(oof.dataset, oof.task, oof.folds, len(oof.image_ids), suspects, suggested)


def _rank_segment(oof: Any, min_area: float) -> LabelErrors:
    from gigavision.models.segment import rasterize

    classes = list(oof.classes)
    index = {c: i for i, c in enumerate(classes) if i > 0}
    suspects = []
    side = int(oof.size)
    for image_id, k, truth, pred, scale, (width, height) in zip(
        oof.image_ids, oof.fold, oof.truths, oof.predictions, oof.scale, oof.sizes, strict=True
    ):
        valid = (min(side, max(1, round(height / scale))), min(side, max(1, round(width / scale))))
        given = rasterize(truth, side, side, index)
        predicted = rasterize(pred, side, side, index)
        for f in segmentation_suspects(given, predicted, min_area=min_area, valid=valid):
            suspects.append(
                Suspect(
                    image_id=image_id,
                    kind=f.kind,
                    score=round(f.score, 6),
                    fold=int(k),
                    given=classes[f.given],
                    predicted=classes[f.predicted],
                    region=_level0(f.box, scale),
                    scores={"area_px": float(f.area), "area_share": round(f.area / float(side * side), 6)},
                )
            )
    suspects.sort(key=lambda s: -s.score)
    return LabelErrors(oof.dataset, oof.task, oof.folds, len(oof.image_ids), suspects, len(suspects))


# -- the whole run ----------------------------------------------------------------------------------------------
OutOfFold = Callable[..., Any]
TASKS = ("classify", "probe", "detect", "segment")  # tasks whose labels can be checked (embed has none)


def check_request(ws: Workspace, recipe: Recipe, folds: int) -> str:
    """What can be refused before any training: the task, a patch or multi-label recipe, the dataset version
    (``NotFound``), its training split, and ``folds`` against its training images. Returns ``NAME@N``."""
    from gigavision.datasets.versions import open_version

    if recipe.task not in TASKS:
        raise InvalidInput(f"label errors: task {recipe.task!r} has no labels to check; use one of {', '.join(TASKS)}")
    if recipe.patch is not None:
        raise InvalidInput("label errors: patch recipes are not supported; use a whole-image recipe (no [patch])")
    if recipe.multi_label:
        raise InvalidInput("label errors: multi-label classification is not supported (one tag per image)")
    version = open_version(ws, recipe.dataset)
    split = recipe.train_split
    if split not in version.splits:
        raise InvalidInput(f"dataset {version.ref} has no split {split!r}; it has {', '.join(version.splits)}")
    n = sum(1 for _ in version.images(split))
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise InvalidInput(f"folds {folds!r}: needs at least 2 (one fold held out, the others to train on)")
    if folds > n:
        raise InvalidInput(f"folds {folds}: dataset {version.ref} has only {n} image(s) in split {split!r}")
    return version.ref


def find_label_errors(
    ws: Workspace,
    recipe: Recipe,
    *,
    folds: int = 5,
    progress: Progress | None = None,
    out_of_fold: OutOfFold | None = None,
    min_area: float = MIN_AREA,
) -> LabelErrors:
    """k-fold predictions of ``recipe`` on its dataset version's training split, ranked into suspects.
    ``out_of_fold``: the fold predictor (default: the train stage's ``out_of_fold``)."""
    check_request(ws, recipe, folds)
    if out_of_fold is None:
        from gigavision.registry import import_path

        out_of_fold = import_path(OUT_OF_FOLD)
    oof = out_of_fold(ws, recipe, folds=folds, progress=progress)
    return rank(oof, min_area=min_area)


def review_tasks(result: LabelErrors, limit: int | None = None) -> list[NewTask]:
    """Review tasks (reason ``suspect``) for the first ``limit`` suspects (default: the suggested cut)."""
    from gigavision.store.reviews import NewTask

    count = result.suggested if limit is None else limit
    tasks = []
    for s in result.suspects[: max(0, count)]:
        details = {
            "kind": s.kind,
            "fold": s.fold,
            "folds": result.folds,
            "dataset": result.dataset,
            "given": s.given,
            "predicted": s.predicted,
            "scores": s.scores,
        }
        tasks.append(
            NewTask(
                image_id=s.image_id,
                reason="suspect",
                region=s.region,
                annotation_id=s.annotation_id,
                label=s.given if s.given is not None else s.predicted,
                score=s.score,
                priority=s.score,
                details=details,
            )
        )
    return tasks


def create_review_tasks(ws: Workspace, result: LabelErrors, *, actor: str, limit: int | None = None) -> int:
    """Store the review tasks of ``result`` (one batch named after the dataset and the time)."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    return ws.reviews.add(review_tasks(result, limit), actor=actor, batch=f"label-errors:{result.dataset}:{stamp}")


# -- job -----------------------------------------------------------------------------------------------------
def run_job(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    """Job ``label-errors``: ``{"recipe": {...}, "folds": 5, "tasks": bool, "limit": int | None}``; returns
    the ranked suspects (the first ``JOB_SUSPECTS``) and how many review tasks it created (as the job's actor)."""
    from gigavision.models.recipe import load_recipe

    recipe = load_recipe(base=params["recipe"])
    result = find_label_errors(ctx.workspace, recipe, folds=int(params.get("folds", 5)), progress=ctx.progress)
    created = 0
    if params.get("tasks"):
        created = create_review_tasks(ctx.workspace, result, actor=ctx.actor, limit=params.get("limit"))
    ctx.conclude(f"{len(result.suspects)} suspect(s), suggested cut {result.suggested}, {created} task(s)")
    return {**result.as_dict(limit=JOB_SUSPECTS), "tasks_created": created}
