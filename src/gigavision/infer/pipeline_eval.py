"""Evaluate a pipeline on a dataset version's split (``gigavision evaluate PIPELINE --dataset NAME@N``).

Every image of the split is predicted the way ``gigavision predict`` predicts it (``infer.request``: whole, or
tiled when its plan says so), then scored against the version's frozen truth three ways:

- ``detector/*``: the detector's own metrics (``DetectTask.evaluate``: mAP@0.5, mAP, AR, …) on the boxes;
- ``<stage>/accuracy`` for each classify or segment stage: over the true objects a detection matched
  (IoU ≥ 0.5, same detector label, greedily by score) whose answer the truth knows — the object's attribute
  named by the stage's ``attribute`` (default: the stage name), else its label when that is one of the stage
  model's classes. ``<stage>/n`` counts them; a matched box the stage skipped (size, score) counts as wrong;
- ``end_to_end/*``: detection metrics where a hit needs the right box AND every labelled stage's right answer
  (each object's label is the detector's label joined with the stages' answers). True objects whose answer
  the truth does not know are left out, with the detections on them (as COCO leaves out crowd regions).

The headline is ``end_to_end/map50``. Embed stages answer with vectors, not classes: they are not scored.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gigavision.annotations import Annotations
from gigavision.boxes import box_iou
from gigavision.errors import InvalidInput
from gigavision.progress import Progress

if TYPE_CHECKING:
    from gigavision.models.detect import DetectTask
    from gigavision.models.pipeline import Pipeline, Stage
    from gigavision.models.store import ModelInfo
    from gigavision.workspace import Workspace

HEADLINE = "end_to_end/map50"
MATCH_IOU = 0.5
UNKNOWN = "∅"  # a stage's answer on a box it skipped (never a truth's)
METRICS_FILE = "metrics.json"


def evaluate_pipeline(
    ws: Workspace,
    info: ModelInfo,
    dataset: str,
    split: str = "test",
    *,
    out: Path | None = None,
    runtime: str = "auto",
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Scores of the pipeline ``info`` on ``split`` of ``dataset`` (see the module docstring); with ``out``,
    also ``out/metrics.json``. Returns ``{"model", "dataset", "split", "runtime", "headline", "metrics", "out"}``."""
    from gigavision.datasets.versions import open_version
    from gigavision.infer.request import PredictRequest
    from gigavision.models.detect import DetectTask
    from gigavision.models.pipeline import DETECTOR, read_pipeline, stage_info

    pipeline = read_pipeline(info)
    version = open_version(ws, dataset)
    entries = list(version.images(split))
    if not entries:
        raise InvalidInput(f"split {split!r} of {version.ref} has no images")
    detector = stage_info(info, DETECTOR).task_instance()
    assert isinstance(detector, DetectTask)  # publish_pipeline checked the detector's task
    if not set(detector.classes) & {c["name"] for c in version.classes()}:
        raise InvalidInput(
            f"dataset {version.ref} has none of detector {pipeline.detector}'s classes"
            f" ({', '.join(detector.classes[:10])}); evaluate on a version of the data it was trained for"
        )
    request = PredictRequest(model=info.id, images=tuple(e.id for e in entries), runtime=runtime, via="evaluate")
    prediction = request.resolve(ws, info)
    outcome = prediction.predict(progress=progress)
    predictions = [item.annotations for item in outcome.items]
    truths = [version.annotations(e.id) for e in entries]
    classes = {s.name: stage_info(info, s.name).classes for s in pipeline.stages}
    metrics = score_pipeline(pipeline, detector, classes, truths, predictions)
    metrics.update(split=split, headline=HEADLINE)
    written = None
    if out is not None:
        from gigavision.models.store import write_json

        write_json(Path(out) / METRICS_FILE, metrics)
        written = str(out)
    return {
        "model": info.id,
        "dataset": version.ref,
        "split": split,
        "runtime": prediction.runtime,
        "headline": HEADLINE,
        "metrics": metrics,
        "out": written,
    }


def truth_answer(stage: Stage, classes: Sequence[str], label: str, attributes: Mapping[str, Any]) -> str | None:
    """What ``stage`` should answer for a true object (``label``, ``attributes``); None: the truth does not say."""
    value = attributes.get(stage.truth_key)
    if value is not None and value != "":
        return str(value)
    return label if label in classes else None


def _said(value: Any) -> str:
    """A stage's answer (attribute value) as one string: a multi-label answer is its labels joined."""
    if value is None:
        return UNKNOWN
    if isinstance(value, list):
        return "+".join(sorted(str(v) for v in value))
    return str(value)


def match(truth: Annotations, pred: Annotations, iou: float = MATCH_IOU) -> list[tuple[int, int]]:
    """(truth row, prediction row) pairs: each prediction, best score first, takes the unmatched true object of
    its label it overlaps most, at IoU ≥ ``iou`` (COCO's greedy matching at one threshold)."""
    if not len(truth) or not len(pred):
        return []
    overlap = box_iou(pred.xyxy, truth.xyxy)
    overlap[pred.label[:, None] != truth.label[None, :]] = 0.0
    taken = np.zeros(len(truth), dtype=bool)
    pairs = []
    for p in np.argsort(-np.nan_to_num(pred.score, nan=1.0), kind="stable"):
        row = np.where(taken, -1.0, overlap[p])
        t = int(np.argmax(row))
        if row[t] >= iou:
            taken[t] = True
            pairs.append((t, int(p)))
    return pairs


def score_pipeline(
    pipeline: Pipeline,
    detector: DetectTask,
    classes: Mapping[str, Sequence[str]],
    truths: Sequence[Annotations],
    predictions: Sequence[Annotations],
) -> dict[str, Any]:
    """The metrics of the module docstring from per-image truths and pipeline predictions (level-0 pixels);
    ``classes``: each stage model's classes."""
    from gigavision.metrics._common import jsonable
    from gigavision.metrics.detection import evaluate_detection
    from gigavision.models.detect import MAX_DETECTIONS
    from gigavision.models.pipeline import LABELLED

    if len(truths) != len(predictions):
        raise InvalidInput(f"{len(truths)} truths for {len(predictions)} predictions")
    metrics: dict[str, Any] = {
        f"detector/{k}": v for k, v in dict(jsonable(detector.evaluate(truths, predictions).metrics)).items()
    }
    labelled = [s for s in pipeline.stages if s.kind in LABELLED]
    right = {s.name: 0 for s in labelled}
    seen = {s.name: 0 for s in labelled}
    whole_truth: dict[Hashable, Annotations] = {}
    whole_pred: dict[Hashable, Annotations] = {}
    for i, (t, p) in enumerate(zip(truths, predictions, strict=True)):
        t = t[np.isin(t.kind, ("box", "polygon", "mask")) & np.isin(t.label, detector.classes)]
        p = p[p.kind != "tag"]
        # what each stage should say of each true object (None: the truth does not say; "": not its label)
        wanted = [
            [(truth_answer(s, classes[s.name], str(lab), attrs) if s.applies_to(str(lab)) else "") for s in labelled]
            for lab, attrs in zip(t.label, t.attributes, strict=True)
        ]
        for ti, pi in match(t, p):
            for k, s in enumerate(labelled):
                want = wanted[ti][k]
                if want:
                    seen[s.name] += 1
                    got = p.attributes[pi].get(s.name)
                    right[s.name] += int(want == got or (isinstance(got, list) and got == [want]))
        known = np.asarray([all(w is not None for w in row) for row in wanted], dtype=bool)
        keep = np.ones(len(p), dtype=bool)
        if (~known).any() and len(p):  # detections on objects the truth leaves unanswered are left out too
            unknown = t[~known]
            near = box_iou(p.xyxy, unknown.xyxy) >= MATCH_IOU
            keep = ~(near & (p.label[:, None] == unknown.label[None, :])).any(axis=1)
        t_labels = [" | ".join([str(t.label[j]), *(w or "" for w in wanted[j])]) for j in np.flatnonzero(known)]
        p_rows = np.flatnonzero(keep)
        p_labels = [
            " | ".join(
                [
                    str(p.label[j]),
                    *(_said(p.attributes[j].get(s.name)) if s.applies_to(str(p.label[j])) else "" for s in labelled),
                ]
            )
            for j in p_rows
        ]
        whole_truth[i] = Annotations.from_boxes(t.xyxy[known], t_labels)
        whole_pred[i] = Annotations.from_boxes(p.xyxy[p_rows], p_labels, score=p.score[p_rows])
    for s in labelled:
        metrics[f"{s.name}/accuracy"] = right[s.name] / seen[s.name] if seen[s.name] else None
        metrics[f"{s.name}/n"] = seen[s.name]
    both = evaluate_detection(whole_truth, whole_pred, max_dets=MAX_DETECTIONS)
    for key in ("map50", "map", "map75", "ar", "n_gt", "n_pred"):
        metrics[f"end_to_end/{key}"] = jsonable(getattr(both, key))
    return metrics
