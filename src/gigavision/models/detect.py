"""``detect``: object detection with torchvision detectors (FCOS, RetinaNet, SSDlite, Faster R-CNN).

Architectures: torchvision's own (``fcos_resnet50_fpn``, ``retinanet_resnet50_fpn``,
``ssdlite320_mobilenet_v3_large``, ``fasterrcnn_mobilenet_v3_large_320_fpn``, ``fasterrcnn_mobilenet_v3_large_fpn``)
and ``fcos_<backbone>`` / ``retinanet_<backbone>`` on a small FPN backbone: ``tiny`` (a 4-stage CNN that trains
from scratch on a CPU in a minute, the default) or any timm model (``fcos_resnet18``).

The network's eval forward returns *dense* tensors, ``boxes (N, A, 4)`` in input pixels and per-class
``scores (N, A, C)`` for every anchor point: no data-dependent shapes, so the graph exports to ONNX with a
dynamic batch and torch and onnxruntime agree to float precision. Thresholding and non-maximum suppression
run in ``decode`` (NumPy), the same for both runtimes. Two-stage Faster R-CNN keeps its own in-graph
post-processing; its outputs are padded to ``detections_per_img`` rows with one-hot scores, so ``decode``
serves it unchanged (its ONNX graph has a fixed batch: torchvision loops over images).

torchvision detectors resize and normalise internally; here their transform is made the identity (size =
``image_size``, mean 0, std 1) and ``normalization`` reports the detector's own mean/std, which the shared
data pipeline applies like for every other task.

This module is the torch-free half (label map, decode, evaluate); the networks, targets and loss are the torch
half, ``models/nets/detect.py``.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from gigavision.annotations import Annotations
from gigavision.boxes import box_iou, nms
from gigavision.errors import InvalidInput
from gigavision.models.task import Evaluation, Task

if TYPE_CHECKING:
    from gigavision.models.recipe import Recipe

TORCHVISION_ARCHS = (
    "fcos_resnet50_fpn",
    "retinanet_resnet50_fpn",
    "ssdlite320_mobilenet_v3_large",
    "fasterrcnn_mobilenet_v3_large_320_fpn",
    "fasterrcnn_mobilenet_v3_large_fpn",
)
SIZE_DIVISIBLE = 32  # torchvision pads batches to this; the eval forward pads the same way
CANDIDATES = 1000  # best-scoring boxes per image kept before NMS
MAX_DETECTIONS = 100  # per image after NMS (COCO's maxDets)
NMS_IOU = {"fcos": 0.6, "retinanet": 0.5, "ssd": 0.55, "rcnn": 0.5}
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def _kind(arch: str) -> str:
    for prefix, kind in (("fcos", "fcos"), ("retinanet", "retinanet"), ("ssd", "ssd"), ("fasterrcnn", "rcnn")):
        if arch.startswith(prefix):
            return kind
    raise InvalidInput(
        f"unknown detection architecture {arch!r}; use one of {', '.join(TORCHVISION_ARCHS)},"
        " or fcos_<backbone> / retinanet_<backbone> with backbone 'tiny' or a timm model name"
    )


class DetectTask(Task):
    name = "detect"
    default_arch = "fcos_tiny"
    nets_class = "gigavision.models.nets.detect:DetectNets"

    def __init__(self, recipe: Recipe, classes: Sequence[str]) -> None:
        super().__init__(recipe, classes)
        self.index = {c: i for i, c in enumerate(self.classes)}
        self.kind = _kind(self.arch)
        self.input_size = recipe.input_size

    @classmethod
    def label_map(cls, schema: Sequence[dict[str, Any]], recipe: Recipe) -> list[str]:
        """Classes with an extent (box, polygon, mask); tags and points are not detected."""
        return [c["name"] for c in schema if c.get("kind") in ("box", "polygon", "mask")]

    def output_names(self) -> list[str]:
        return ["boxes", "scores"]

    # -- inference -------------------------------------------------------------------------------------------
    def decode(self, outputs: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]]) -> list[Annotations]:
        out = []
        for xyxy, cls, score in self.decode_boxes(outputs, sizes):
            labels = [self.classes[int(c)] for c in cls]
            out.append(Annotations.from_boxes(xyxy, labels, score=score, source=["model"] * len(cls)))
        return out

    def decode_boxes(
        self, outputs: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]]
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """``decode`` as arrays per image: ``(xyxy (n, 4), class index (n,), score (n,))`` — what the tiled
        engine filters and places for a whole batch at once, without an ``Annotations`` per window."""
        boxes_all = np.asarray(outputs[0], dtype=np.float64)
        scores_all = np.asarray(outputs[1], dtype=np.float64)
        iou = NMS_IOU[self.kind]
        threshold = float(self.recipe.score_threshold)
        out = []
        for boxes, scores, (h, w) in zip(boxes_all, scores_all, sizes, strict=True):
            anchor, cls = np.nonzero(scores > threshold)
            s = scores[anchor, cls]
            if len(s) > CANDIDATES:
                top = np.argsort(-s, kind="stable")[:CANDIDATES]
                anchor, cls, s = anchor[top], cls[top], s[top]
            b = boxes[anchor]
            ok = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
            b, cls, s = b[ok], cls[ok], s[ok]
            keep = nms(b, s, iou, MAX_DETECTIONS, codes=cls)  # per class, in one pass
            scale = max(h, w) / self.input_size
            xyxy = b[keep] * scale
            xyxy[:, 0::2] = np.clip(xyxy[:, 0::2], 0, w)
            xyxy[:, 1::2] = np.clip(xyxy[:, 1::2], 0, h)
            inside = (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])  # boxes on the letterbox padding
            keep, xyxy = keep[inside], xyxy[inside]
            out.append((xyxy, cls[keep], s[keep]))
        return out

    # -- evaluation ------------------------------------------------------------------------------------------
    def _shapes(self, ann: Annotations) -> Annotations:
        return ann[np.isin(ann.kind, ("box", "polygon", "mask")) & np.isin(ann.label, self.classes)]

    def evaluate(self, truths: Sequence[Annotations], predictions: Sequence[Annotations]) -> Evaluation:
        from gigavision.metrics.detection import evaluate_detection

        gt: dict[Hashable, Annotations] = {i: self._shapes(t) for i, t in enumerate(truths)}
        pred: dict[Hashable, Annotations] = dict(enumerate(predictions))
        result = evaluate_detection(gt, pred, max_dets=MAX_DETECTIONS)
        metrics: dict[str, Any] = {
            "map50": _num(result.map50),
            "map": _num(result.map),
            "map75": _num(result.map75),
            "ar": _num(result.ar),
            "recall_iou60": _num(result.recall_iou60),
            "n_images": result.n_images,
            "n_gt": result.n_gt,
            "n_pred": result.n_pred,
        }
        for label, c in result.per_class.items():
            metrics[f"ap50/{label}"] = c.ap50
        return Evaluation(metrics, "map50", result)

    def errors(self, truths: Sequence[Annotations], predictions: Sequence[Annotations]) -> np.ndarray:
        """Missed objects + confident false positives (score ≥ 0.5) at IoU 0.5, per image."""
        out = np.zeros(len(truths))
        for i, (t, p) in enumerate(zip(truths, predictions, strict=True)):
            missed, false = _miss_false(self._shapes(t), p)
            out[i] = missed + false
        return out

    def describe(self, truth: Annotations, prediction: Annotations) -> str:
        missed, false = _miss_false(self._shapes(truth), prediction)
        confident = int((prediction.score >= 0.5).sum())
        return f"truth {len(self._shapes(truth))} / predicted {confident} (≥0.5): {missed} missed, {false} false"


def _num(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


def _miss_false(truth: Annotations, pred: Annotations, iou: float = 0.5, score: float = 0.5) -> tuple[int, int]:
    """(truth objects without a same-class prediction ≥ ``score`` at ``iou``, such predictions with no truth)."""
    p = pred[pred.score >= score]
    if not len(truth) or not len(p):
        return len(truth), len(p)
    ious = box_iou(truth.xyxy, p.xyxy)
    same = truth.label[:, None] == p.label[None, :]
    hit = (ious >= iou) & same
    return int((~hit.any(axis=1)).sum()), int((~hit.any(axis=0)).sum())
