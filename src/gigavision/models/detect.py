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
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gigavision.annotations import Annotations
from gigavision.boxes import box_iou, nms
from gigavision.errors import InvalidInput, MissingDependency
from gigavision.models.backbones import load_weights
from gigavision.models.task import Evaluation, Task

if TYPE_CHECKING:
    from pathlib import Path

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


# -- backbones ------------------------------------------------------------------------------------------------
class TinyBackbone(nn.Module):
    """Four conv stages (strides 4..32) for from-scratch training on small data: a minute on a CPU, not a day."""

    def __init__(self, widths: Sequence[int] = (16, 32, 64, 128)) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            )

        chans = [3, *widths]
        self.stem = block(chans[0], chans[1])  # stride 2
        self.stages = nn.ModuleList(block(chans[i], chans[i + 1]) for i in range(1, len(widths)))
        self.channels = list(widths[1:])  # strides 8, 16, 32 (after the first stage at 4)
        self.pre = nn.Sequential(nn.MaxPool2d(2))  # stem output to stride 4

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.pre(self.stem(x))
        out = []
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out


class TimmFeatures(nn.Module):
    """A timm model's last three feature maps (strides 8, 16, 32)."""

    def __init__(self, name: str, pretrained: bool) -> None:
        super().__init__()
        from gigavision.models.backbones import create_timm

        body: Any = create_timm(name, num_classes=0, pretrained=pretrained, features_only=True, out_indices=(2, 3, 4))
        self.body = body
        self.channels = [int(c) for c in body.feature_info.channels()]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.body(x))


class FPNBackbone(nn.Module):
    """Feature maps + torchvision's FPN with P6/P7: the ``OrderedDict`` that torchvision heads consume."""

    def __init__(self, body: TinyBackbone | TimmFeatures, out_channels: int) -> None:
        super().__init__()
        from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelP6P7

        self.body: Any = body
        self.fpn = FeaturePyramidNetwork(
            body.channels, out_channels, extra_blocks=LastLevelP6P7(out_channels, out_channels)
        )
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        feats = self.body(x)
        out: OrderedDict[str, torch.Tensor] = self.fpn(OrderedDict((str(i), f) for i, f in enumerate(feats)))
        return out


# -- the network ----------------------------------------------------------------------------------------------
class DetectorNet(nn.Module):
    """A torchvision detector whose eval forward returns dense ``(boxes, scores)`` tensors.

    ``kind`` is ``fcos``, ``retinanet``, ``ssd`` or ``rcnn``; ``losses(images, targets)`` is the torchvision
    training forward (a dict of losses).
    """

    def __init__(
        self, model: nn.Module, kind: str, num_classes: int, mean: Sequence[float], std: Sequence[float]
    ) -> None:
        super().__init__()
        self.model: Any = model
        self.kind = kind
        self.num_classes = num_classes  # without background
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)

    def losses(self, images: torch.Tensor, targets: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = self.model(list(images), targets)
        return out

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.kind == "rcnn":
            return self._two_stage(images)
        from torchvision.models.detection.image_list import ImageList

        height, width = int(images.shape[-2]), int(images.shape[-1])
        ph = -height % SIZE_DIVISIBLE if self.kind != "ssd" else 0
        pw = -width % SIZE_DIVISIBLE if self.kind != "ssd" else 0
        x = F.pad(images, (0, pw, 0, ph)) if ph or pw else images
        features = self.model.backbone(x)
        if isinstance(features, torch.Tensor):
            features = OrderedDict([("0", features)])
        feats = list(features.values())
        head = self.model.head(feats)
        anchors = self.model.anchor_generator(ImageList(x[:1], [(height + ph, width + pw)]), feats)[0]
        codes = head["bbox_regression"]
        logits = head["cls_logits"]
        if self.kind == "fcos":
            boxes = _linear_decode(codes, anchors)
            scores = torch.sqrt(torch.sigmoid(logits) * torch.sigmoid(head["bbox_ctrness"]))[..., 1:]
        else:
            coder = self.model.box_coder
            boxes = _delta_decode(codes, anchors, coder.weights, coder.bbox_xform_clip)
            probs = torch.sigmoid(logits) if self.kind == "retinanet" else torch.softmax(logits, dim=-1)
            scores = probs[..., 1:]
        x0 = boxes[..., 0].clamp(0, width)
        y0 = boxes[..., 1].clamp(0, height)
        x1 = boxes[..., 2].clamp(0, width)
        y1 = boxes[..., 3].clamp(0, height)
        return torch.stack([x0, y0, x1, y1], dim=-1), scores

    def _two_stage(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Faster R-CNN's own post-processing, padded to ``detections_per_img`` rows with one-hot scores."""
        k = int(self.model.roi_heads.detections_per_img)
        dets = self.model(list(images))
        all_boxes, all_scores = [], []
        for d in dets:
            n = d["boxes"].shape[0]
            boxes = F.pad(d["boxes"], (0, 0, 0, k - n))
            onehot = F.one_hot(d["labels"] - 1, self.num_classes).to(images.dtype) * d["scores"][:, None]
            all_boxes.append(boxes)
            all_scores.append(F.pad(onehot, (0, 0, 0, k - n)))
        return torch.stack(all_boxes), torch.stack(all_scores)


def _linear_decode(codes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """FCOS's ``BoxLinearCoder(normalize_by_size=True)`` over a batch: (N, A, 4) distances → xyxy."""
    cx = 0.5 * (anchors[:, 0] + anchors[:, 2])
    cy = 0.5 * (anchors[:, 1] + anchors[:, 3])
    w = anchors[:, 2] - anchors[:, 0]
    h = anchors[:, 3] - anchors[:, 1]
    return torch.stack(
        [cx - codes[..., 0] * w, cy - codes[..., 1] * h, cx + codes[..., 2] * w, cy + codes[..., 3] * h], dim=-1
    )


def _delta_decode(codes: torch.Tensor, anchors: torch.Tensor, weights: Sequence[float], clip: float) -> torch.Tensor:
    """torchvision's ``BoxCoder.decode_single`` over a batch: (N, A, 4) deltas against (A, 4) anchors → xyxy."""
    wx, wy, ww, wh = (float(v) for v in weights)
    widths = anchors[:, 2] - anchors[:, 0]
    heights = anchors[:, 3] - anchors[:, 1]
    cx = anchors[:, 0] + 0.5 * widths
    cy = anchors[:, 1] + 0.5 * heights
    dx, dy = codes[..., 0] / wx, codes[..., 1] / wy
    dw = torch.clamp(codes[..., 2] / ww, max=clip)
    dh = torch.clamp(codes[..., 3] / wh, max=clip)
    pcx, pcy = dx * widths + cx, dy * heights + cy
    pw, ph = torch.exp(dw) * widths, torch.exp(dh) * heights
    # torchvision's decode_single offsets by c_to_c_h = 0.5 * h; same arithmetic here
    return torch.stack([pcx - 0.5 * pw, pcy - 0.5 * ph, pcx + 0.5 * pw, pcy + 0.5 * ph], dim=-1)


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

    def __init__(self, recipe: Recipe, classes: Sequence[str]) -> None:
        super().__init__(recipe, classes)
        self.index = {c: i for i, c in enumerate(self.classes)}
        self.kind = _kind(self.arch)
        self.input_size = recipe.input_size

    @classmethod
    def label_map(cls, schema: Sequence[dict[str, Any]], recipe: Recipe) -> list[str]:
        """Classes with an extent (box, polygon, mask); tags and points are not detected."""
        return [c["name"] for c in schema if c.get("kind") in ("box", "polygon", "mask")]

    # -- network -------------------------------------------------------------------------------------------
    def build(self, init_weights: bool = True) -> nn.Module:
        r = self.recipe
        pretrained = r.pretrained and init_weights
        n = len(self.classes) + 1  # torchvision: label 0 is the background
        size = self.input_size
        common: dict[str, Any] = {"min_size": size, "max_size": size, "image_mean": [0.0] * 3, "image_std": [1.0] * 3}
        mean, std = IMAGENET
        if self.arch in TORCHVISION_ARCHS:
            model = self._torchvision(n, common, pretrained)
            if self.kind == "ssd":
                mean, std = (0.5,) * 3, (0.5,) * 3
        else:
            model = self._custom(n, common, pretrained)
        net = DetectorNet(model, self.kind, len(self.classes), mean, std)
        if init_weights and r.weights:
            load_weights(net, r.weights)
        return net

    def _torchvision(self, n: int, common: dict[str, Any], pretrained: bool) -> nn.Module:
        from torchvision.models import detection

        builder = getattr(detection, self.arch)
        # the detectors' COCO heads have 91 classes; the ImageNet backbone is what transfers
        backbone_weights = _backbone_weights(self.arch) if pretrained else None
        kwargs = {k: v for k, v in common.items() if k.startswith("image_")} if self.kind == "ssd" else common
        try:
            model: Any = builder(weights=None, weights_backbone=backbone_weights, num_classes=n, **kwargs)
        except Exception as exc:
            if not pretrained:
                raise
            raise MissingDependency(
                f"pretrained backbone weights for {self.arch} are not in torchvision's cache (~/.cache/torch/hub)"
                f" and could not be fetched ({type(exc).__name__}); download them once where there is network,"
                " or pass --weights PATH, or train from scratch without --pretrained"
            ) from exc
        if self.kind == "ssd":
            size = self.input_size
            model.transform.min_size, model.transform.max_size = (size,), size
            model.transform.fixed_size = (size, size)
        if self.kind == "rcnn":
            model.roi_heads.score_thresh = 0.0
            model.roi_heads.detections_per_img = MAX_DETECTIONS
        built: nn.Module = model
        return built

    def _custom(self, n: int, common: dict[str, Any], pretrained: bool) -> nn.Module:
        from torchvision.models.detection import FCOS, RetinaNet
        from torchvision.models.detection.anchor_utils import AnchorGenerator
        from torchvision.models.detection.fcos import FCOSHead

        name = self.arch.split("_", 1)[1] if "_" in self.arch else ""
        body: TinyBackbone | TimmFeatures
        if name == "tiny":
            body = TinyBackbone()
            channels = 64
        elif name:
            body = TimmFeatures(name, pretrained)
            channels = 128
        else:
            raise InvalidInput(f"detection architecture {self.arch!r} names no backbone (e.g. fcos_tiny)")
        backbone = FPNBackbone(body, channels)
        strides = (8, 16, 32, 64, 128)
        if self.kind == "fcos":
            anchors = AnchorGenerator(tuple((s,) for s in strides), ((1.0,),) * len(strides))
            head = FCOSHead(channels, 1, n, num_convs=2)
            fcos: nn.Module = FCOS(backbone, n, anchor_generator=anchors, head=head, **common)
            return fcos
        if self.kind == "retinanet":
            sizes = tuple((s * 4, int(s * 4 * 2 ** (1 / 3)), int(s * 4 * 2 ** (2 / 3))) for s in strides)
            anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(strides))
            retina: nn.Module = RetinaNet(backbone, n, anchor_generator=anchors, **common)
            return retina
        raise InvalidInput(f"detection architecture {self.arch!r}: custom backbones go with fcos_ or retinanet_")

    def normalization(self, net: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
        if isinstance(net, DetectorNet):
            return net.mean, net.std
        return IMAGENET

    def output_names(self) -> list[str]:
        return ["boxes", "scores"]

    # -- data ------------------------------------------------------------------------------------------------
    def target(self, annotations: Annotations, height: int, width: int) -> dict[str, Any]:
        from torchvision import tv_tensors

        shaped = np.isin(annotations.kind, ("box", "polygon", "mask")) & np.isin(annotations.label, self.classes)
        boxes = annotations.xyxy[shaped].astype(np.float32)
        boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, width)
        boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, height)
        ok = (boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)
        labels = [self.index[str(v)] + 1 for v in annotations.label[shaped][ok]]
        return {
            "boxes": tv_tensors.BoundingBoxes(
                torch.from_numpy(boxes[ok]).reshape(-1, 4), format="XYXY", canvas_size=(height, width)
            ),
            "labels": torch.tensor(labels, dtype=torch.int64),
        }

    def collate(self, images: list[torch.Tensor], targets: list[Any]) -> tuple[torch.Tensor, Any]:
        return torch.stack(images), list(targets)

    # -- training --------------------------------------------------------------------------------------------
    def loss(self, net: nn.Module, images: torch.Tensor, targets: Any) -> torch.Tensor:
        assert isinstance(net, DetectorNet)
        plain = [{"boxes": t["boxes"].reshape(-1, 4).float(), "labels": t["labels"].long()} for t in targets]
        losses = net.losses(images, plain)
        return torch.stack(list(losses.values())).sum()

    # -- inference -------------------------------------------------------------------------------------------
    def decode(self, outputs: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]]) -> list[Annotations]:
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
            labels = [self.classes[int(c)] for c in cls[keep]]
            out.append(Annotations.from_boxes(xyxy, labels, score=s[keep], source=["model"] * len(keep)))
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

    # -- export ----------------------------------------------------------------------------------------------
    def export_onnx(self, net: nn.Module, example: torch.Tensor, path: Path) -> None:
        """Dense detectors export with a dynamic batch; Faster R-CNN only for the example's batch size."""
        from gigavision.models.onnx_export import OPSET

        names = self.output_names()
        dynamic = self.kind != "rcnn"
        torch.onnx.export(
            net,
            (example,),
            str(path),
            input_names=["images"],
            output_names=names,
            dynamic_axes={"images": {0: "batch"}, **{n: {0: "batch"} for n in names}} if dynamic else None,
            opset_version=OPSET,
            dynamo=False,
        )


def _num(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


def _backbone_weights(arch: str) -> Any:
    """The ImageNet weights enum value torchvision pairs with ``arch``'s backbone (its DEFAULT)."""
    from torchvision.models import MobileNet_V3_Large_Weights, ResNet50_Weights

    return MobileNet_V3_Large_Weights.DEFAULT if "mobilenet" in arch else ResNet50_Weights.DEFAULT


def _miss_false(truth: Annotations, pred: Annotations, iou: float = 0.5, score: float = 0.5) -> tuple[int, int]:
    """(truth objects without a same-class prediction ≥ ``score`` at ``iou``, such predictions with no truth)."""
    p = pred[pred.score >= score]
    if not len(truth) or not len(p):
        return len(truth), len(p)
    ious = box_iou(truth.xyxy, p.xyxy)
    same = truth.label[:, None] == p.label[None, :]
    hit = (ious >= iou) & same
    return int((~hit.any(axis=1)).sum()), int((~hit.any(axis=0)).sum())
