"""Training ``detect`` on real objects (digits, coins, a horse) pasted on real textures (grass, gravel, brick).

One training run (CPU, about a minute) must reach mAP@0.5 ≥ 0.8 on the held-out test split, export to ONNX
with the same outputs as torch (on the parity batch and on the real test images), and score its predictions
exactly as pycocotools does.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gigavision.annotations import Annotations
from gigavision.boxes import nms
from gigavision.datasets.versions import open_version
from gigavision.metrics.coco import evaluate_with_pycocotools, to_coco
from gigavision.metrics.detection import evaluate_detection
from gigavision.models.detect import DetectTask
from gigavision.models.nets.detect import DetectorNet
from gigavision.train.data import split_data
from gigavision.train.evaluate import predict_split
from gigavision.train.module import to_numpy
from gigavision.train.recipe import load_recipe
from gigavision.train.transforms import build_transform
from tests.conftest import DETECT_SIZE, SCENE_GROUP, Trained
from tests.seeding import measured

SIZE = DETECT_SIZE


def test_detect_on_pasted_objects_meets_the_bar_exports_and_matches_pycocotools(
    scenes_detector: Trained, request: pytest.FixtureRequest
) -> None:
    ws, version, info = scenes_detector.ws, scenes_detector.version, scenes_detector.info
    if request.config.getoption("loadgroup", False):  # an xdist worker of make test: scene models trained once
        assert request.node.nodeid.endswith(f"@{SCENE_GROUP}"), "the xdist group of the trained scene models is lost"

    assert info.task == "detect" and info.arch == "fcos_tiny"
    assert info.classes == ["coin", "digit", "horse"]
    assert info.headline == "map50"
    # Over seeds 0-4 (tests/seeding.py): mAP@0.5 0.750-0.948 (seed 0: 0.948), recall@0.6 0.95-1.0, AP@0.5 per
    # class: coin 0.81-0.95, digit 0.51-0.96 (0.51 at seed 4, 0.78+ otherwise), horse 0.93-1.0.
    assert measured("detect.map50", info.metrics["map50"]) >= 0.7, info.metrics
    assert measured("detect.recall_iou60", info.metrics["recall_iou60"]) >= 0.9, info.metrics
    assert min(measured(f"detect.ap50/{c}", info.metrics[f"ap50/{c}"]) for c in info.classes) >= 0.4, info.metrics
    assert info.card.onnx_max_abs_diff <= 1e-4

    # the published model predicts the test split again; our mAP equals the one saved and pycocotools'
    task, net = info.load_network()
    assert isinstance(task, DetectTask) and isinstance(net, DetectorNet)
    mean, std = task.normalization(net)
    test = split_data(
        task, open_version(ws, version.ref), task.recipe, "test", build_transform(None, mean, std, SIZE), training=False
    )
    truths, preds = predict_split(task, net, test, batch_size=16)
    gt = {i: t for i, t in enumerate(truths)}
    pred = {i: p for i, p in enumerate(preds)}
    ours = evaluate_detection(gt, pred)
    assert ours.map50 == pytest.approx(info.metrics["map50"], abs=1e-12)
    coco = evaluate_with_pycocotools(to_coco(gt, pred))
    assert ours.map == pytest.approx(coco.stats[0], abs=1e-6)
    assert ours.map50 == pytest.approx(coco.stats[1], abs=1e-6)
    assert ours.map75 == pytest.approx(coco.stats[2], abs=1e-6)
    assert ours.ar == pytest.approx(coco.stats[8], abs=1e-6)

    # ONNX on the real test images (any batch size): the same tensors, hence the same detections
    import onnxruntime as ort

    session = ort.InferenceSession(str(info.path / "model.onnx"), providers=["CPUExecutionProvider"])
    images = torch.stack([test.dataset[i][0] for i in range(5)])
    with torch.inference_mode():
        ref = to_numpy(net(images))
    got = session.run(None, {"images": images.numpy()})
    assert [g.shape for g in got] == [r.shape for r in ref]
    assert max(float(np.abs(g - r).max()) for g, r in zip(got, ref, strict=True)) <= 1e-4
    sizes = [(SIZE, SIZE)] * len(images)
    for a, b in zip(task.decode(ref, sizes), task.decode(got, sizes), strict=True):
        confident_a, confident_b = a[a.score >= 0.3], b[b.score >= 0.3]
        assert list(confident_a.label) == list(confident_b.label)
        np.testing.assert_allclose(confident_a.xyxy, confident_b.xyxy, atol=1e-3)


def _task(**fields: object) -> DetectTask:
    return DetectTask(load_recipe(overrides={"task": "detect", "dataset": "x", "image_size": 64, **fields}), ["a", "b"])


def test_label_map_targets_and_empty_images() -> None:
    schema = [{"name": "t", "kind": "tag"}, {"name": "b", "kind": "box"}, {"name": "p", "kind": "polygon"}]
    assert DetectTask.label_map(schema, load_recipe(overrides={"task": "detect", "dataset": "x"})) == ["b", "p"]
    task = _task()
    ann = Annotations.merge(
        [
            Annotations.from_boxes([[2, 3, 20, 30]], "b"),
            Annotations.from_polygons([[(10, 10), (40, 10), (40, 50)]], "a"),
            Annotations.from_tags(["b"]),
            Annotations.from_boxes([[5, 5, 9, 9]], "unknown"),
        ]
    )
    target = task.target(ann, 64, 64)
    assert target["boxes"].tolist() == [[2, 3, 20, 30], [10, 10, 40, 50]]
    assert target["labels"].tolist() == [2, 1]  # 0 is torchvision's background
    empty = task.target(Annotations.empty(), 64, 64)
    assert tuple(empty["boxes"].shape) == (0, 4) and tuple(empty["labels"].shape) == (0,)

    # a batch with an object-free image trains (finite loss, gradients reach the backbone)
    torch.manual_seed(0)
    net = task.build()
    images, targets = task.collate([torch.rand(3, 64, 64), torch.rand(3, 64, 64)], [target, empty])
    loss = task.loss(net.train(), images, targets)
    loss.backward()
    assert torch.isfinite(loss)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_decode_thresholds_suppresses_and_scales_to_the_original_image() -> None:
    task = _task(score_threshold=0.1)
    boxes = np.array([[[4, 4, 20, 20], [5, 5, 20, 20], [30, 30, 60, 40], [0, 0, 8, 8]]], dtype=np.float32)
    scores = np.array([[[0.9, 0.0], [0.8, 0.7], [0.0, 0.6], [0.05, 0.01]]], dtype=np.float32)
    (out,) = task.decode([boxes, scores], [(100, 200)])  # a 200×100 original letterboxed to 64: ×3.125
    assert list(out.label) == ["a", "b", "b"]  # the 0.8 "a" duplicate is suppressed, not the other class
    np.testing.assert_allclose(out.score, [0.9, 0.7, 0.6], atol=1e-6)
    np.testing.assert_allclose(out.xyxy[0], np.array([4, 4, 20, 20]) * 3.125)
    np.testing.assert_allclose(out.xyxy[2], [93.75, 93.75, 187.5, 100])  # clipped to the image
    assert set(out.source) == {"model"}
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []
