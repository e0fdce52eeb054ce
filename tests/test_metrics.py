"""Metrics: classification (by hand and against scikit-learn), COCO detection (by hand and against pycocotools'
COCOeval to 1e-6 on randomized data), segmentation IoU/Dice and recall@k by hand, and the HTML report."""

from __future__ import annotations

import io
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import shapely

from gigavision.annotations import Annotations
from gigavision.errors import InvalidInput
from gigavision.metrics import (
    COCO_AREA_RANGES,
    evaluate_classification,
    evaluate_detection,
    evaluate_multilabel,
    evaluate_segmentation,
    operating_point,
    recall_at_k,
    render_report,
    to_coco,
    tune_thresholds,
    verification_roc,
    write_report,
)
from gigavision.metrics.detection import evaluate_with_pycocotools

TOL = 1e-6


# -- classification ---------------------------------------------------------------------------------------
def test_binary_by_hand() -> None:
    y = ["a", "b", "a", "b", "b"]
    scores = [0.1, 0.8, 0.6, 0.4, 0.9]  # positive class "b"; at 0.5 → a b b a b
    r = evaluate_classification(y, scores=scores, threshold=0.5)
    assert r.labels == ["a", "b"]
    assert r.confusion_matrix == [[1, 1], [1, 2]]
    assert r.accuracy == pytest.approx(0.6)
    assert r.balanced_accuracy == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert r.per_class["b"].precision == pytest.approx(2 / 3)
    assert r.per_class["a"].f1 == pytest.approx(0.5)
    assert r.macro.f1 == pytest.approx((0.5 + 2 / 3) / 2)
    assert r.micro.f1 == pytest.approx(0.6)
    assert r.roc_auc == pytest.approx(5 / 6)  # 5 of the 6 (positive, negative) pairs ranked right
    op = r.operating_point
    assert op is not None and (op.tp, op.fp, op.tn, op.fn) == (2, 1, 1, 1)
    assert op.sensitivity == pytest.approx(2 / 3) and op.specificity == pytest.approx(0.5)
    strict = operating_point(y, scores, threshold=0.85, positive="b")
    assert (strict.sensitivity, strict.specificity) == (pytest.approx(1 / 3), 1.0)
    json.dumps(r.to_dict(), allow_nan=False)


def test_multiclass_matches_sklearn() -> None:
    from sklearn import metrics as skm

    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, 300)
    logits = rng.normal(size=(300, 4)) + 1.5 * np.eye(4)[y]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    r = evaluate_classification(list(y), scores=probs)
    pred = probs.argmax(1)
    assert r.labels == [0, 1, 2, 3]
    assert r.accuracy == pytest.approx(skm.accuracy_score(y, pred))
    assert r.balanced_accuracy == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert r.roc_auc == pytest.approx(skm.roc_auc_score(y, probs, multi_class="ovr", average="macro"))
    assert r.weighted.f1 == pytest.approx(skm.f1_score(y, pred, average="weighted"))
    assert r.macro.recall == pytest.approx(skm.recall_score(y, pred, average="macro"))
    assert np.array_equal(r.confusion_matrix, skm.confusion_matrix(y, pred))
    assert r.per_class["2"].f1 == pytest.approx(skm.f1_score(y, pred, average=None)[2])
    assert set(r.pr_curves or {}) == {"0", "1", "2", "3"}


def test_label_order_and_bad_input() -> None:
    r = evaluate_classification(["x", "y", "z"], ["x", "z", "z"], labels=["z", "y", "x"])
    assert r.confusion_matrix == [[1, 0, 0], [1, 0, 0], [0, 0, 1]]
    with pytest.raises(InvalidInput, match="not among the classes"):
        evaluate_classification(["x"], ["q"], labels=["x"])
    with pytest.raises(InvalidInput, match="columns"):
        evaluate_classification([0, 1, 2], scores=np.ones((3, 2)))


def test_multilabel_thresholds_by_hand() -> None:
    y = np.array([[1, 1], [0, 0], [1, 1], [0, 1]])
    s = np.array([[0.9, 0.2], [0.8, 0.1], [0.3, 0.7], [0.2, 0.6]])
    # class 0: score ≥ 0.9 → F1 2/3; ≥ 0.8 → 1/2; ≥ 0.3 → 4/5 (best); ≥ 0.2 → 2/3. Class 1: ≥ 0.2 → 1.0
    t = tune_thresholds(y, s)
    assert t.tolist() == [0.3, 0.2]
    r = evaluate_multilabel(y, s, labels=["cat", "dog"], thresholds=t)
    assert r.per_class["cat"].f1 == pytest.approx(0.8) and r.per_class["dog"].f1 == pytest.approx(1.0)
    # micro: TP 2 + 3, FP 1 + 0, FN 0 + 0 → 10 / 11
    assert r.micro.f1 == pytest.approx(10 / 11)
    default = evaluate_multilabel([{"cat", "dog"}, set(), {"cat", "dog"}, {"dog"}], s)
    assert default.labels == ["cat", "dog"] and default.thresholds == {"cat": 0.5, "dog": 0.5}
    assert default.per_class["cat"].precision == pytest.approx(0.5)


# -- detection --------------------------------------------------------------------------------------------
def _boxes(xyxy: list[list[float]], labels: list[str], scores: list[float] | None = None, **kw: object) -> Annotations:
    if scores is not None:
        kw["score"] = scores
    return Annotations.from_boxes(np.asarray(xyxy, dtype=float).reshape(-1, 4), labels, **kw)


def test_detection_by_hand() -> None:
    gt = {
        "a": _boxes([[0, 0, 10, 10], [20, 20, 30, 30]], ["cat", "cat"]),
        "b": _boxes([[0, 0, 10, 10]], ["dog"]),
    }
    pred = {"a": _boxes([[0, 0, 10, 10], [20, 20, 30, 32], [50, 50, 60, 60]], ["cat"] * 3, [0.9, 0.8, 0.7])}
    r = evaluate_detection(gt, pred)
    # cat: the second box has IoU 100/120 = 0.833, a match at IoU 0.50..0.80 (7 thresholds): AP 1 there;
    # at 0.85..0.95 precision is 1 up to recall 0.5 (51 of the 101 points) and 0 after. dog: no detection.
    cat_ap = (7 + 3 * 51 / 101) / 10
    assert r.per_class["cat"].ap == pytest.approx(cat_ap)
    assert r.per_class["cat"].ap50 == pytest.approx(1.0) and r.per_class["cat"].recall_iou60 == 1.0
    assert r.per_class["cat"].ar == pytest.approx((7 + 3 * 0.5) / 10)
    assert r.per_class["dog"].ap == 0.0 and r.per_class["dog"].n_pred == 0
    assert r.map == pytest.approx(cat_ap / 2) and r.map50 == pytest.approx(0.5)
    assert r.ar == pytest.approx(0.425) and r.recall_iou60 == pytest.approx(0.5)
    json.dumps(r.to_dict(), allow_nan=False)


def test_detection_crowd_and_unknown_class() -> None:
    gt = {"a": _boxes([[0, 0, 10, 10], [40, 40, 100, 100]], ["cat", "cat"], attributes=[{}, {"iscrowd": True}])}
    # two detections inside the crowd region (intersection / detection area = 1): ignored, not false positives
    pred = {
        "a": _boxes(
            [[0, 0, 10, 10], [50, 50, 60, 60], [60, 60, 70, 70], [0, 0, 5, 5]],
            ["cat", "cat", "cat", "bird"],
            [0.5, 0.9, 0.8, 0.9],
        )
    }
    r = evaluate_detection(gt, pred)
    _compare_with_pycocotools(gt, pred)
    assert r.per_class["cat"].ap == pytest.approx(1.0) and r.per_class["cat"].n_gt == 2
    assert r.per_class["bird"].ap is None and r.map == pytest.approx(1.0)  # no ground truth: left out of the mean


def _random_boxes(seed: int, n_images: int = 40, n_classes: int = 5, integer: bool = False) -> tuple[dict, dict]:
    """Many images and classes, empty images, images without ground truth or predictions, crowd regions,
    duplicated detections, tied scores (rounded to 0.1), and one image with 150 detections of one class."""
    rng = np.random.default_rng(seed)
    labels = [f"class <{i}>" for i in range(n_classes)]
    gt: dict[object, Annotations] = {}
    pred: dict[object, Annotations] = {}
    for i in range(n_images):
        ng = int(rng.integers(0, 9)) if i % 7 != 3 else 0
        xy = rng.uniform(0, 300, (ng, 2))
        wh = rng.uniform(2, 140, (ng, 2))
        boxes = np.c_[xy, xy + wh]
        if integer:
            boxes = np.round(boxes / 4) * 4  # exact IoU values such as 0.5 and 0.75 occur
            boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 4)
        glab = rng.choice(labels, ng).tolist()
        crowd = [{"iscrowd": bool(rng.random() < 0.1)} for _ in range(ng)]
        if i % 5 != 4:
            gt[i] = _boxes(boxes.tolist(), glab, attributes=crowd) if ng else Annotations.empty()
        nd = int(rng.integers(0, 14))
        src = boxes[rng.integers(0, ng, nd)] if ng else rng.uniform(0, 300, (nd, 4))
        det = src + rng.normal(0, 6, src.shape) * (0 if integer and rng.random() < 0.5 else 1)
        det[:, 2:] = np.maximum(det[:, 2:], det[:, :2] + 1)
        dlab = (np.asarray(glab)[rng.integers(0, ng, nd)] if ng else rng.choice(labels, nd)).tolist()
        if rng.random() < 0.3:
            dlab = rng.choice(labels, nd).tolist()
        score = np.round(rng.random(nd), 1)
        if nd and i % 3 == 0:  # duplicates: same box, label and score
            det, dlab, score = np.r_[det, det[:2]], dlab + dlab[:2], np.r_[score, score[:2]]
        if i == 1:  # more than max_dets (100) detections of one class in one image
            many = rng.uniform(0, 250, (150, 2))
            det = np.r_[det, np.c_[many, many + rng.uniform(5, 60, (150, 2))]]
            dlab, score = dlab + [labels[0]] * 150, np.r_[score, np.round(rng.random(150), 2)]
        if i % 6 != 5:
            pred[f"img{i}" if i % 11 == 10 else i] = (
                _boxes(det.tolist(), dlab, score.tolist()) if len(det) else Annotations.empty()
            )
    return gt, pred


def _compare_with_pycocotools(gt: dict, pred: dict, iou_type: str = "bbox", **kw: object) -> None:
    ours = evaluate_detection(gt, pred, iou_type=iou_type, area_ranges=COCO_AREA_RANGES, **kw)  # type: ignore[arg-type]
    ref = evaluate_with_pycocotools(to_coco(gt, pred, iou_type=iou_type, **kw), iou_type=iou_type)  # type: ignore[arg-type]
    assert ref.eval["precision"][..., 2].shape == ours.precision.shape
    np.testing.assert_allclose(ours.precision, ref.eval["precision"][..., 2], rtol=0, atol=TOL)
    np.testing.assert_allclose(ours.recall, ref.eval["recall"][..., 2], rtol=0, atol=TOL)

    def ours_or_minus1(v: float | None) -> float:
        return -1.0 if v is None else v

    s = ref.stats
    summary = [ours.map, ours.map50, ours.map75, ours.by_area["small"]["map"], ours.by_area["medium"]["map"]]
    summary += [ours.by_area["large"]["map"], ours.ar, ours.by_area["small"]["ar"], ours.by_area["large"]["ar"]]
    expected = [s[0], s[1], s[2], s[3], s[4], s[5], s[8], s[9], s[11]]
    np.testing.assert_allclose([ours_or_minus1(v) for v in summary], expected, rtol=0, atol=TOL)
    for k, label in enumerate(ours.labels):
        p = ref.eval["precision"][:, :, k, 0, 2]
        ap = float(p[p > -1].mean()) if (p > -1).any() else None
        assert (ours.per_class[label].ap is None) == (ap is None)
        if ap is not None:
            assert abs(ours.per_class[label].ap - ap) <= TOL  # type: ignore[operator]


@pytest.mark.parametrize("seed", range(12))
def test_detection_equals_pycocotools_random_boxes(seed: int) -> None:
    gt, pred = _random_boxes(seed, integer=seed % 3 == 2)
    _compare_with_pycocotools(gt, pred)


def _blob(rng: np.random.Generator, cx: float, cy: float, r: float) -> np.ndarray:
    theta = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    rr = r * rng.uniform(0.7, 1.2, 12)
    return np.c_[cx + rr * np.cos(theta), cy + rr * np.sin(theta)]


def _random_shapes(seed: int) -> tuple[dict, dict]:
    """Polygon ground truth (one with a hole, some crowd), predictions as masks, polygons and boxes."""
    rng = np.random.default_rng(seed)
    labels = ["a", "b", "c"]
    gt: dict[object, Annotations] = {}
    pred: dict[object, Annotations] = {}
    yy, xx = np.mgrid[:200, :200]
    for i in range(10):
        ng = int(rng.integers(0, 6))
        centres, radii = rng.uniform(20, 170, (ng, 2)), rng.uniform(4, 40, ng)
        geoms = [shapely.Polygon(_blob(rng, *c, r)) for c, r in zip(centres, radii, strict=True)]
        if ng >= 2:
            geoms[0] = shapely.Polygon(_blob(rng, *centres[0], radii[0]), [_blob(rng, *centres[0], radii[0] * 0.3)])
        crowd = [{"iscrowd": bool(rng.random() < 0.15)} for _ in range(ng)]
        gt[i] = (
            Annotations.from_polygons(geoms, rng.choice(labels, ng).tolist(), attributes=crowd)
            if ng
            else (Annotations.empty())
        )
        parts = []
        for _ in range(int(rng.integers(0, 8))):
            j = int(rng.integers(ng)) if ng else -1
            c = centres[j] + rng.normal(0, 4, 2) if ng else rng.uniform(20, 170, 2)
            r = float(radii[j]) if ng else 10.0
            lab, score, kind = str(rng.choice(labels)), float(np.round(rng.random(), 1)), rng.random()
            if kind < 0.5:
                disc = (xx - c[0]) ** 2 + (yy - c[1]) ** 2 < r**2
                if disc.any():
                    parts.append(Annotations.from_masks([disc], [(0, 0)], [lab], score=[score]))
            elif kind < 0.8:
                parts.append(Annotations.from_polygons([_blob(rng, *c, r)], [lab], score=[score]))
            else:
                parts.append(_boxes([[c[0] - r, c[1] - r, c[0] + r, c[1] + r]], [lab], [score]))
        pred[i] = Annotations.merge(parts)
    return gt, pred


@pytest.mark.parametrize("seed", range(4))
def test_detection_equals_pycocotools_segm(seed: int) -> None:
    gt, pred = _random_shapes(seed)
    sizes = {k: (230, 210) for k in gt} if seed % 2 else None
    _compare_with_pycocotools(gt, pred, iou_type="segm", image_sizes=sizes)


def test_detection_edge_cases() -> None:
    _compare_with_pycocotools({"a": _boxes([[0, 0, 5, 5]], ["x"])}, {})  # no predictions at all
    r = evaluate_detection({}, {"a": _boxes([[0, 0, 5, 5]], ["x"], [0.3])})  # no ground truth at all
    assert r.map is None and r.per_class["x"].ap is None
    with pytest.raises(InvalidInput, match="finite score"):
        evaluate_detection({}, {"a": _boxes([[0, 0, 5, 5]], ["x"])})
    with pytest.raises(InvalidInput, match="no extent"):
        evaluate_detection({"a": Annotations.from_tags(["x"])}, {})


# -- segmentation and embeddings ----------------------------------------------------------------------------
def test_segmentation_by_hand() -> None:
    truth = np.array([[0, 0, 1], [1, 1, 255]])
    pred = np.array([[0, 1, 1], [1, 0, 2]])  # the 2 sits on an ignored pixel
    r = evaluate_segmentation((truth, pred), num_classes=3, labels=["bg", "tumour", "stroma"])
    assert r.iou == {"bg": pytest.approx(1 / 3), "tumour": pytest.approx(0.5), "stroma": None}
    assert r.dice["bg"] == pytest.approx(0.5) and r.dice["tumour"] == pytest.approx(2 / 3)
    assert r.mean_iou == pytest.approx((1 / 3 + 0.5) / 2) and r.mean_dice == pytest.approx((0.5 + 2 / 3) / 2)
    assert r.pixel_accuracy == pytest.approx(0.6) and r.n_pixels == 5
    # tile by tile gives the same table as one map
    tiles = evaluate_segmentation([(truth[:, :2], pred[:, :2]), (truth[:, 2:], pred[:, 2:])], num_classes=3)
    assert tiles.confusion_matrix == r.confusion_matrix
    with pytest.raises(InvalidInput, match="outside"):
        evaluate_segmentation((truth, pred + 5), num_classes=3)


def test_recall_at_k_by_hand() -> None:
    x = np.array([[0.0], [1.0], [10.0], [11.0], [21.0]])
    labels = ["a", "a", "b", "c", "b"]
    # 0 → 1 (a) hit@1; 1 → 0 hit@1; 2 → 3 (c), 1, 0, 4 (b) hit@4; 4 → 3, 2 (b) hit@2; 3 (c) has no partner
    r = recall_at_k(x, labels, ks=(1, 2, 4), metric="euclidean")
    assert r.n_queries == 4
    assert r.recall_at_k == {1: 0.5, 2: 0.75, 4: 1.0}


def test_verification_roc() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(6), 5)
    emb = rng.normal(size=(6, 16))[labels] + rng.normal(scale=0.6, size=(30, 16))
    r = verification_roc(emb, labels.tolist(), far_targets=(0.01, 0.1))
    i, j = np.triu_indices(30, 1)
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    same = labels[i] == labels[j]
    assert r.n_same == int(same.sum()) == 60
    assert r.auc == pytest.approx(roc_auc_score(same, (unit[i] * unit[j]).sum(1)))
    separated = verification_roc(np.eye(3)[[0, 0, 1, 1, 2]], [0, 0, 1, 1, 2])
    assert separated.auc == 1.0 and separated.tar_at_far[0.001] == 1.0


# -- report -----------------------------------------------------------------------------------------------
class _TagBalance(HTMLParser):
    VOID = frozenset({"meta", "img", "br", "hr", "input", "link", "rect", "line", "polyline"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.urls: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.scripts += tag == "script"
        self.urls += [v for k, v in attrs if k in ("src", "href") and v and not v.startswith("data:")]
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [v for k, v in attrs if k in ("src", "href") and v and not v.startswith("data:")]

    def handle_endtag(self, tag: str) -> None:
        if tag in self.VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> with {self.stack[-3:]}")
        else:
            self.stack.pop()


def _check_html(html: str) -> None:
    parser = _TagBalance()
    parser.feed(html)
    parser.close()
    assert html.startswith("<!DOCTYPE html>")
    assert not parser.errors and not parser.stack, (parser.errors, parser.stack)
    assert parser.scripts == 0 and parser.urls == []


def test_report_escapes_labels_and_embeds_examples(tmp_path: Path) -> None:
    from PIL import Image

    evil = "<script>alert(1)</script>"
    result = evaluate_classification(
        [evil, "ok", evil, "ok", "ok"], scores=[0.1, 0.8, 0.6, 0.4, 0.9], labels=[evil, "ok"], threshold=0.5
    )
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buf, format="PNG")
    thumb = tmp_path / "worst.png"
    thumb.write_bytes(buf.getvalue())
    out = write_report(result, tmp_path / "report.html", title=f"run {evil}",
                       worst_examples=[(thumb, f"missed {evil}"), (buf.getvalue(), "second")])  # fmt: skip
    html = out.read_text()
    _check_html(html)
    assert "<script" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert html.count("data:image/png;base64,") == 2
    for value in (result.accuracy, result.balanced_accuracy, result.roc_auc, result.macro.f1):
        assert f"{value:.4f}" in html
    assert "<svg" in html and "<polyline" in html  # heatmap, PR and ROC curves
    with pytest.raises(InvalidInput, match="not a PNG"):
        render_report(result, worst_examples=[(b"not an image", "x")])


def test_report_for_detection_and_segmentation() -> None:
    gt, pred = _random_boxes(0)
    det = evaluate_detection(gt, pred)
    html = render_report(det, title="detector")
    _check_html(html)
    assert f"{det.map:.4f}" in html and "Precision-recall (IoU 0.5)" in html
    assert "class &lt;0&gt;" in html and "class <0>" not in html
    seg = evaluate_segmentation((np.array([[0, 1], [1, 1]]), np.array([[0, 1], [0, 1]])), num_classes=2)
    html = render_report(seg)
    _check_html(html)
    assert f"{seg.mean_iou:.4f}" in html
