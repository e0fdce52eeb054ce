"""Detection mAP: gigavision's NumPy COCO evaluation against pycocotools' COCOeval, same data, same run.

Claim (DESIGN.md §6): identical to pycocotools to 1e-6. The data is synthetic and seeded: COCO-like scenes
(``--images`` images, ``--classes`` classes, 0-15 objects each, some crowd regions, empty images), and
detections that jitter, duplicate, mislabel and miss them plus random false positives, with scores rounded to
two decimals so ties happen. Measured:

  ours_s       ``evaluate_detection(gt, pred, area_ranges=COCO_AREA_RANGES)`` (all four COCO area ranges)
  coco_s       ``COCO()`` index + ``loadRes`` + ``evaluate`` + ``accumulate`` + ``summarize`` on ``to_coco`` output
  to_coco_s    building the pycocotools inputs (not in either time)
  max_abs_diff largest difference over the whole precision (T×R×K×A) and recall arrays and the 12 COCO stats
  segm         the same comparison for masks/polygons on a smaller set (``--segm-images``)

Usage: .venv/bin/python benchmarks/bench_map.py [--quick] [--images N] [--classes K] [--seed S]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import _util as u


def scenes(n_images: int, n_classes: int, seed: int) -> tuple[dict[int, object], dict[int, object]]:
    from gigavision.annotations import Annotations

    rng = np.random.default_rng(seed)
    labels = [f"class{k:02d}" for k in range(n_classes)]
    gt: dict[int, object] = {}
    pred: dict[int, object] = {}
    for i in range(n_images):
        ng = int(rng.integers(0, 16)) if rng.random() > 0.05 else 0
        xy = rng.uniform(0, 600, (ng, 2))
        wh = np.exp(rng.uniform(np.log(4), np.log(300), (ng, 2)))
        boxes = np.c_[xy, xy + wh]
        glab = rng.choice(labels, ng)
        crowd = [{"iscrowd": bool(rng.random() < 0.02)} for _ in range(ng)]
        gt[i] = Annotations.from_boxes(boxes, glab.tolist(), attributes=crowd)
        hit = rng.random(ng) < 0.8
        found, found_lab = boxes[hit], glab[hit]
        size = found[:, 2:] - found[:, :2]
        jitter = found + rng.normal(0, 0.08, found.shape) * np.c_[size, size]
        again = rng.random(len(jitter)) < 0.2
        dup, dup_lab = jitter[again], found_lab[again]
        nf = int(rng.integers(0, 20))
        fxy = rng.uniform(0, 600, (nf, 2))
        false = np.c_[fxy, fxy + rng.uniform(4, 200, (nf, 2))]
        det = np.r_[jitter, dup, false]
        det[:, 2:] = np.maximum(det[:, 2:], det[:, :2] + 1)
        dlab = np.r_[found_lab, dup_lab, rng.choice(labels, nf)]
        swap = rng.random(len(dlab)) < 0.1
        dlab[swap] = rng.choice(labels, int(swap.sum()))
        score = np.round(np.clip(rng.normal(0.7, 0.2, len(det)) - 0.3 * (np.arange(len(det)) >= len(found)), 0, 1), 2)
        pred[i] = Annotations.from_boxes(det, dlab.tolist(), score=score)
    return gt, pred


def shapes(n_images: int, seed: int) -> tuple[dict[int, object], dict[int, object]]:
    import shapely

    from gigavision.annotations import Annotations

    rng = np.random.default_rng(seed)
    gt: dict[int, object] = {}
    pred: dict[int, object] = {}
    theta = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    yy, xx = np.mgrid[:256, :256]
    for i in range(n_images):
        n = int(rng.integers(1, 8))
        centres, radii = rng.uniform(30, 220, (n, 2)), rng.uniform(5, 30, n)
        rings = [np.c_[c[0] + r * np.cos(theta), c[1] + r * np.sin(theta)] for c, r in zip(centres, radii, strict=True)]
        gt[i] = Annotations.from_polygons([shapely.Polygon(r) for r in rings], rng.choice(["a", "b"], n).tolist())
        masks, labels, scores = [], [], []
        for c, r, lab in zip(centres, radii, gt[i].label, strict=True):  # type: ignore[attr-defined]
            c2 = c + rng.normal(0, r * 0.2, 2)
            masks.append((xx - c2[0]) ** 2 + (yy - c2[1]) ** 2 < (r * rng.uniform(0.8, 1.2)) ** 2)
            labels.append(str(lab))
            scores.append(float(np.round(rng.random(), 2)))
        keep = [k for k, m in enumerate(masks) if m.any()]
        pred[i] = Annotations.from_masks([masks[k] for k in keep], [(0, 0)] * len(keep), [labels[k] for k in keep],
                                         score=[scores[k] for k in keep])  # fmt: skip
    return gt, pred


def compare(gt: dict, pred: dict, iou_type: str) -> dict[str, object]:
    from gigavision.metrics.detection import COCO_AREA_RANGES, evaluate_detection, evaluate_with_pycocotools, to_coco

    t0 = time.perf_counter()
    ours = evaluate_detection(gt, pred, iou_type=iou_type, area_ranges=COCO_AREA_RANGES)  # type: ignore[arg-type]
    ours_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    inputs = to_coco(gt, pred, iou_type=iou_type)  # type: ignore[arg-type]
    to_coco_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = evaluate_with_pycocotools(inputs, iou_type=iou_type)  # type: ignore[arg-type]
    coco_s = time.perf_counter() - t0
    s = ref.stats
    by = ours.by_area
    mine = [ours.map, ours.map50, ours.map75, by["small"]["map"], by["medium"]["map"], by["large"]["map"]]
    mine += [ours.ar, by["small"]["ar"], by["medium"]["ar"], by["large"]["ar"]]
    reference = [s[0], s[1], s[2], s[3], s[4], s[5], s[8], s[9], s[10], s[11]]  # AR@1 and AR@10 not computed
    stat_diff = max(abs((-1.0 if m is None else m) - float(r)) for m, r in zip(mine, reference, strict=True))
    diff = max(
        float(np.abs(ours.precision - ref.eval["precision"][..., 2]).max()),
        float(np.abs(ours.recall - ref.eval["recall"][..., 2]).max()),
        stat_diff,
    )
    return {
        "images": ours.n_images,
        "classes": len(ours.labels),
        "gt": ours.n_gt,
        "pred": ours.n_pred,
        "ours_s": u.rnd(ours_s, 3),
        "coco_s": u.rnd(coco_s, 3),
        "to_coco_s": u.rnd(to_coco_s, 3),
        "speedup": u.rnd(coco_s / ours_s, 2),
        "max_abs_diff": diff,
        "map": ours.map,
        "map50": ours.map50,
        "ar": ours.ar,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="500 images, 20 classes; 50 segm images")
    ap.add_argument("--images", type=int, help="number of images (default 5,000)")
    ap.add_argument("--classes", type=int, help="number of classes (default 80)")
    ap.add_argument("--segm-images", type=int, help="images for the mask comparison (default 300)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    quick = args.quick or u.quick_requested([])
    n_images = args.images or (500 if quick else 5000)
    n_classes = args.classes or (20 if quick else 80)
    n_segm = args.segm_images or (50 if quick else 300)
    u.log(f"bbox: {n_images} images, {n_classes} classes ...")
    gt, pred = scenes(n_images, n_classes, args.seed)
    bbox = compare(gt, pred, "bbox")
    u.log(f"  ours {bbox['ours_s']} s, pycocotools {bbox['coco_s']} s, max |diff| {bbox['max_abs_diff']:.2e}")
    u.log(f"segm: {n_segm} images ...")
    sgt, spred = shapes(n_segm, args.seed + 1)
    segm = compare(sgt, spred, "segm")
    u.emit(
        {
            "benchmark": "map",
            "quick": quick,
            "anchor": "pycocotools COCOeval (evaluate + accumulate + summarize), same data",
            "bbox": bbox,
            "segm": segm,
            "speedup_vs_pycocotools": bbox["speedup"],
            "max_abs_diff": max(bbox["max_abs_diff"], segm["max_abs_diff"]),  # type: ignore[type-var]
            "targets": {"max_abs_diff": 1e-6},
            "met": {"identical_1e-6": max(bbox["max_abs_diff"], segm["max_abs_diff"]) <= 1e-6},  # type: ignore[operator]
            "machine": u.machine(),
        }
    )


if __name__ == "__main__":
    main()
