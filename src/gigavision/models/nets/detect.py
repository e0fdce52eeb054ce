"""The torch half of ``detect``: torchvision detectors with dense eval outputs, training targets and loss."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gigavision.annotations import Annotations
from gigavision.errors import InvalidInput, MissingDependency
from gigavision.models.backbones import load_weights
from gigavision.models.detect import IMAGENET, MAX_DETECTIONS, SIZE_DIVISIBLE, TORCHVISION_ARCHS, DetectTask
from gigavision.models.nets.task import TaskNets


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


class DetectNets(TaskNets[DetectTask]):
    # -- network -------------------------------------------------------------------------------------------
    def build(self, init_weights: bool = True) -> nn.Module:
        r = self.task.recipe
        pretrained = r.pretrained and init_weights
        n = len(self.task.classes) + 1  # torchvision: label 0 is the background
        size = self.task.input_size
        common: dict[str, Any] = {"min_size": size, "max_size": size, "image_mean": [0.0] * 3, "image_std": [1.0] * 3}
        mean, std = IMAGENET
        if self.task.arch in TORCHVISION_ARCHS:
            model = self._torchvision(n, common, pretrained)
            if self.task.kind == "ssd":
                mean, std = (0.5,) * 3, (0.5,) * 3
        else:
            model = self._custom(n, common, pretrained)
        net = DetectorNet(model, self.task.kind, len(self.task.classes), mean, std)
        if init_weights and r.weights:
            load_weights(net, r.weights)
        return net

    def _torchvision(self, n: int, common: dict[str, Any], pretrained: bool) -> nn.Module:
        from torchvision.models import detection

        builder = getattr(detection, self.task.arch)
        # the detectors' COCO heads have 91 classes; the ImageNet backbone is what transfers
        backbone_weights = _backbone_weights(self.task.arch) if pretrained else None
        kwargs = {k: v for k, v in common.items() if k.startswith("image_")} if self.task.kind == "ssd" else common
        try:
            model: Any = builder(weights=None, weights_backbone=backbone_weights, num_classes=n, **kwargs)
        except Exception as exc:
            if not pretrained:
                raise
            raise MissingDependency(
                f"pretrained backbone weights for {self.task.arch} are not in torchvision's cache (~/.cache/torch/hub)"
                f" and could not be fetched ({type(exc).__name__}); download them once where there is network,"
                " or pass --weights PATH, or train from scratch without --pretrained"
            ) from exc
        if self.task.kind == "ssd":
            size = self.task.input_size
            model.transform.min_size, model.transform.max_size = (size,), size
            model.transform.fixed_size = (size, size)
        if self.task.kind == "rcnn":
            model.roi_heads.score_thresh = 0.0
            model.roi_heads.detections_per_img = MAX_DETECTIONS
        built: nn.Module = model
        return built

    def _custom(self, n: int, common: dict[str, Any], pretrained: bool) -> nn.Module:
        from torchvision.models.detection import FCOS, RetinaNet
        from torchvision.models.detection.anchor_utils import AnchorGenerator
        from torchvision.models.detection.fcos import FCOSHead

        name = self.task.arch.split("_", 1)[1] if "_" in self.task.arch else ""
        body: TinyBackbone | TimmFeatures
        if name == "tiny":
            body = TinyBackbone()
            channels = 64
        elif name:
            body = TimmFeatures(name, pretrained)
            channels = 128
        else:
            raise InvalidInput(f"detection architecture {self.task.arch!r} names no backbone (e.g. fcos_tiny)")
        backbone = FPNBackbone(body, channels)
        strides = (8, 16, 32, 64, 128)
        if self.task.kind == "fcos":
            anchors = AnchorGenerator(tuple((s,) for s in strides), ((1.0,),) * len(strides))
            head = FCOSHead(channels, 1, n, num_convs=2)
            fcos: nn.Module = FCOS(backbone, n, anchor_generator=anchors, head=head, **common)
            return fcos
        if self.task.kind == "retinanet":
            sizes = tuple((s * 4, int(s * 4 * 2 ** (1 / 3)), int(s * 4 * 2 ** (2 / 3))) for s in strides)
            anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(strides))
            retina: nn.Module = RetinaNet(backbone, n, anchor_generator=anchors, **common)
            return retina
        raise InvalidInput(f"detection architecture {self.task.arch!r}: custom backbones go with fcos_ or retinanet_")

    def normalization(self, net: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
        if isinstance(net, DetectorNet):
            return net.mean, net.std
        return IMAGENET

    # -- data ------------------------------------------------------------------------------------------------
    def target(self, annotations: Annotations, height: int, width: int) -> dict[str, Any]:
        from torchvision import tv_tensors

        shaped = np.isin(annotations.kind, ("box", "polygon", "mask")) & np.isin(annotations.label, self.task.classes)
        boxes = annotations.xyxy[shaped].astype(np.float32)
        boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, width)
        boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, height)
        ok = (boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)
        labels = [self.task.index[str(v)] + 1 for v in annotations.label[shaped][ok]]
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

    # -- export ----------------------------------------------------------------------------------------------
    def export_onnx(self, net: nn.Module, example: torch.Tensor, path: Path) -> bool:
        """Dense detectors export with a dynamic batch; Faster R-CNN only for the example's batch size."""
        from gigavision.models.onnx_export import OPSET

        names = self.task.output_names()
        dynamic = self.task.kind != "rcnn"
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
        return True


def _backbone_weights(arch: str) -> Any:
    """The ImageNet weights enum value torchvision pairs with ``arch``'s backbone (its DEFAULT)."""
    from torchvision.models import MobileNet_V3_Large_Weights, ResNet50_Weights

    return MobileNet_V3_Large_Weights.DEFAULT if "mobilenet" in arch else ResNet50_Weights.DEFAULT
