"""``segment``: semantic segmentation with segmentation-models-pytorch (U-Net, FPN, DeepLabV3+, ...).

Classes are the schema's polygon and mask classes, after ``background`` at index 0. A sample's target is its
polygons and masks rasterised into one class map (pixel centres inside a polygon, holes cut out; a later
annotation paints over an earlier one). The network returns per-class softmax probabilities ``(N, C, H, W)``;
``decode`` turns the argmax map into one ``mask`` annotation per class present, scored by the mean probability
of its pixels. The loss is cross-entropy plus multi-class Dice (Dice keeps small classes from drowning in
background pixels).

``arch`` is ``ARCH`` or ``ARCH:ENCODER`` (``unet``, ``unet:resnet34``, ``fpn:mobilenet_v2``,
``deeplabv3plus:tu-efficientnet_b0``); the encoders downsample 32×, so the input side must be a multiple of 32.
This module is the torch-free half (label map, decode, evaluate); the network and loss are the torch half,
``models/nets/segment.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from gigavision.annotations import Annotations
from gigavision.errors import InvalidInput
from gigavision.models.task import BACKGROUND, Evaluation, Task

if TYPE_CHECKING:
    from gigavision.models.recipe import Recipe

DEFAULT_ENCODER = "resnet18"
STRIDE = 32  # the encoders' total downsampling: input sides must be multiples of it
SHAPE_KINDS = ("polygon", "mask")


def split_arch(arch: str) -> tuple[str, str]:
    """``"unet"`` or ``"unet:resnet34"`` as (architecture, encoder); the torch half checks them against smp."""
    name, _, encoder = arch.partition(":")
    return name.strip().lower(), encoder.strip() or DEFAULT_ENCODER


def rasterize(annotations: Annotations, height: int, width: int, index: dict[str, int]) -> np.ndarray:
    """The ``(height, width)`` class map of the polygon/mask rows whose label is in ``index`` (0 elsewhere).

    A pixel belongs to a polygon when its centre is inside (holes excluded); masks are placed at their box's
    whole-pixel origin. Rows are painted in order. Labels beyond 255 classes need a wider dtype.
    """
    dtype = np.uint8 if len(index) <= 256 else np.int32
    out = np.zeros((height, width), dtype=dtype)
    for i in range(len(annotations)):
        cls = index.get(str(annotations.label[i]))
        kind = annotations.kind[i]
        if cls is None or kind not in SHAPE_KINDS:
            continue
        if kind == "polygon":
            _paint_polygon(out, annotations.geometry[i], cls)
        else:
            m = annotations.decode_mask(i)
            ox, oy = math.floor(annotations.xyxy[i, 0]), math.floor(annotations.xyxy[i, 1])
            y0, x0 = max(0, oy), max(0, ox)
            y1, x1 = min(height, oy + m.shape[0]), min(width, ox + m.shape[1])
            if y1 > y0 and x1 > x0:
                out[y0:y1, x0:x1][m[y0 - oy : y1 - oy, x0 - ox : x1 - ox]] = cls
    return out


def _paint_polygon(out: np.ndarray, geometry: Any, cls: int) -> None:
    """Set the pixels whose centres fall inside ``geometry`` (Polygon or MultiPolygon) to ``cls``."""
    from skimage.draw import polygon as fill

    parts = getattr(geometry, "geoms", [geometry])
    h, w = out.shape
    for part in parts:
        if part.is_empty:
            continue
        x0, y0, x1, y1 = part.bounds
        bx0, by0 = max(0, math.floor(x0)), max(0, math.floor(y0))
        bx1, by1 = min(w, math.ceil(x1) + 1), min(h, math.ceil(y1) + 1)
        if bx1 <= bx0 or by1 <= by0:
            continue
        inside = np.zeros((by1 - by0, bx1 - bx0), dtype=bool)
        for ring, value in [(part.exterior, True), *((r, False) for r in part.interiors)]:
            xy = np.asarray(ring.coords, dtype=np.float64)
            # pixel (r, c) has its centre at (c + 0.5, r + 0.5): shift so centres sit on integers
            rr, cc = fill(xy[:, 1] - 0.5 - by0, xy[:, 0] - 0.5 - bx0, inside.shape)
            inside[rr, cc] = value
        out[by0:by1, bx0:bx1][inside] = cls


class SegmentTask(Task):
    name = "segment"
    default_arch = f"unet:{DEFAULT_ENCODER}"
    nets_class = "gigavision.models.nets.segment:SegmentNets"

    def __init__(self, recipe: Recipe, classes: Sequence[str]) -> None:
        super().__init__(recipe, classes)
        if len(self.classes) < 2:
            raise InvalidInput(
                f"segment needs at least one polygon or mask class besides {BACKGROUND!r}, the dataset has"
                f" {self.classes}; label some regions as polygons or masks"
            )
        self.arch_name, self.encoder = split_arch(self.arch)
        side = recipe.input_size
        what = "patch.size" if recipe.patch is not None else "image_size"
        if side % STRIDE:
            lo, hi = max(STRIDE, side // STRIDE * STRIDE), (side // STRIDE + 1) * STRIDE
            raise InvalidInput(
                f"segment: {what} {side} must be a multiple of {STRIDE} (the encoder downsamples {STRIDE}×);"
                f" use {lo} or {hi}"
            )
        self.size = side
        self.index = {c: i for i, c in enumerate(self.classes)}

    @classmethod
    def label_map(cls, schema: Sequence[dict[str, Any]], recipe: Recipe) -> list[str]:
        shapes = [c["name"] for c in schema if c.get("kind") in SHAPE_KINDS and c["name"] != BACKGROUND]
        return [BACKGROUND, *shapes]

    def output_names(self) -> list[str]:
        return ["probabilities"]

    # -- inference -------------------------------------------------------------------------------------------
    def decode(self, outputs: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]]) -> list[Annotations]:
        probs = np.asarray(outputs[0])
        out = []
        for p, (h, w) in zip(probs, sizes, strict=True):
            side = max(p.shape[1], p.shape[2])
            scale = side / max(h, w)  # network pixels per image pixel (letterbox: top-left, isotropic)
            vh, vw = min(p.shape[1], max(1, round(h * scale))), min(p.shape[2], max(1, round(w * scale)))
            p = p[:, :vh, :vw]
            labels = p.argmax(axis=0)
            masks, names, scores = [], [], []
            for c in range(1, len(self.classes)):
                m = labels == c
                if m.any():
                    masks.append(m)
                    names.append(self.classes[c])
                    scores.append(round(float(p[c][m].mean()), 6))
            if not masks:
                out.append(Annotations.empty())
                continue
            ann = Annotations.from_masks(
                masks, [(0, 0)] * len(masks), names, score=np.asarray(scores), source=["model"] * len(masks)
            )
            if (vh, vw) != (h, w):
                ann = ann.scale(max(h, w) / side).crop(0, 0, w, h)
            out.append(ann)
        return out

    # -- evaluation ------------------------------------------------------------------------------------------
    def _maps(self, truth: Annotations, prediction: Annotations) -> tuple[np.ndarray, np.ndarray]:
        """Truth and predicted class maps on the network input canvas (grown to cover any annotation)."""
        boxes = np.concatenate([truth.xyxy[truth.kind != "tag"], prediction.xyxy[prediction.kind != "tag"]])
        h = w = self.size
        if len(boxes):
            w = max(w, math.ceil(float(boxes[:, 2].max())))
            h = max(h, math.ceil(float(boxes[:, 3].max())))
        return rasterize(truth, h, w, self.index), rasterize(prediction, h, w, self.index)

    def evaluate(self, truths: Sequence[Annotations], predictions: Sequence[Annotations]) -> Evaluation:
        """Per-class IoU and Dice over all pixels of the split; the headline ``mean_dice`` averages the
        foreground classes present (background would flatter any model on sparse scenes)."""
        from gigavision.metrics.segmentation import SegmentationMeter

        meter = SegmentationMeter(len(self.classes), ignore_index=None, labels=self.classes)
        for t, p in zip(truths, predictions, strict=True):
            meter.update(*self._maps(t, p))
        result = meter.compute()
        fg = self.classes[1:]
        dice = [v for c in fg if (v := result.dice[c]) is not None]
        iou = [v for c in fg if (v := result.iou[c]) is not None]
        metrics: dict[str, Any] = {
            "mean_dice": float(np.mean(dice)) if dice else None,
            "mean_iou": float(np.mean(iou)) if iou else None,
            "mean_dice_with_background": result.mean_dice,
            "pixel_accuracy": result.pixel_accuracy,
            "n_samples": len(truths),
        }
        for c in self.classes:
            metrics[f"dice_{c}"] = result.dice[c]
            metrics[f"iou_{c}"] = result.iou[c]
        return Evaluation(metrics, "mean_dice", result)

    def _sample_dice(self, truth: Annotations, prediction: Annotations) -> float | None:
        """Mean foreground Dice of one sample over the classes in its truth or prediction; None if neither."""
        t, p = self._maps(truth, prediction)
        values = []
        for c in range(1, len(self.classes)):
            tc, pc = t == c, p == c
            total = int(tc.sum()) + int(pc.sum())
            if total:
                values.append(2.0 * int((tc & pc).sum()) / total)
        return float(np.mean(values)) if values else None

    def errors(self, truths: Sequence[Annotations], predictions: Sequence[Annotations]) -> np.ndarray:
        """1 − the sample's foreground Dice (0 for a sample with no foreground in truth and prediction)."""
        out = [self._sample_dice(t, p) for t, p in zip(truths, predictions, strict=True)]
        return np.asarray([0.0 if d is None else 1.0 - d for d in out], dtype=np.float64)

    def describe(self, truth: Annotations, prediction: Annotations) -> str:
        dice = self._sample_dice(truth, prediction)
        t = ", ".join(sorted({str(v) for v in truth.label if v in self.index})) or BACKGROUND
        p = ", ".join(f"{lab} {s:.2f}" for lab, s in zip(prediction.label, prediction.score, strict=True)) or "none"
        head = "no foreground" if dice is None else f"dice {dice:.2f}"
        return f"{head}: truth {t} / predicted {p}"
