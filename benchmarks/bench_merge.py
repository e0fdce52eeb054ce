"""Cross-tile merge: ``gigavision.tiling.merge`` strategies on the detections of a tiled 50k × 50k image.

Claim (issue 5): nms, ios and wbf merge 100k boxes in well under 1 s on 2 cores, without an N² matrix.
The data is synthetic and seeded, shaped like tiled inference: objects of 10-120 px (5 classes) spread over
a 50,000² image read in 512² windows overlapping by 64 px; every window reports the part of each object it
sees (when at least 10 % of it is visible), jittered, with its own score. Objects near window borders are so
seen twice or four times, whole or cut. Measured (median of ``--repeats``):

  <method>_s           ``merge_boxes(method=...)`` wall time for each strategy in ``MERGERS``
  pairs_s              the shared candidate-pair step alone (``overlapping_pairs``)
  torchvision_s        baseline: ``torchvision.ops.batched_nms`` on the same boxes (float64 tensors, CPU)
  nms_speedup          torchvision_s / nms_s; ``nms_same_as_torchvision``: identical rows in identical order
  ios_vs_naive         on a ``--naive-boxes`` crop: SAHI-style greedy NMM by IoS, one vectorised row of IoS per
                       kept box (O(N·kept)), against ``merge_boxes(method="ios")`` on the same crop

Usage: .venv/bin/python benchmarks/bench_merge.py [--quick] [--boxes N] [--repeats R] [--seed S]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import _util as u

IMAGE, WINDOW, OVERLAP = 50_000, 512, 64


def tiled_detections(n_boxes: int, seed: int, image: int = IMAGE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """About ``n_boxes`` window-by-window detections ``(xyxy, scores, labels)`` over an ``image``² image."""
    rng = np.random.default_rng(seed)
    stride = WINDOW - OVERLAP
    n_win = (image - WINDOW) // stride + 1
    n_obj = int(n_boxes / 1.35)
    xy = rng.uniform(0, image - 130, (n_obj, 2))
    wh = np.exp(rng.uniform(np.log(10), np.log(120), (n_obj, 2)))
    obj = np.c_[xy, xy + wh]
    label = rng.integers(0, 5, n_obj)
    # windows each object touches: [lo, hi] per axis
    lo = np.clip(np.floor((obj[:, :2] - WINDOW) / stride).astype(np.int64) + 1, 0, n_win - 1)
    hi = np.clip(np.floor(obj[:, 2:] / stride).astype(np.int64), 0, n_win - 1)
    nx, ny = hi[:, 0] - lo[:, 0] + 1, hi[:, 1] - lo[:, 1] + 1
    per = nx * ny
    o = np.repeat(np.arange(n_obj), per)
    k = np.arange(len(o)) - np.repeat(np.cumsum(per) - per, per)
    wx, wy = (lo[o, 0] + k % nx[o]) * stride, (lo[o, 1] + k // nx[o]) * stride
    piece = np.c_[
        np.maximum(obj[o, 0], wx),
        np.maximum(obj[o, 1], wy),
        np.minimum(obj[o, 2], wx + WINDOW),
        np.minimum(obj[o, 3], wy + WINDOW),
    ]
    seen = np.clip(piece[:, 2] - piece[:, 0], 0, None) * np.clip(piece[:, 3] - piece[:, 1], 0, None)
    full = wh[o, 0] * wh[o, 1]
    ok = seen >= 0.1 * full
    piece, o = piece[ok], o[ok]
    size = piece[:, 2:] - piece[:, :2]
    piece = piece + rng.normal(0, 0.03, piece.shape) * np.c_[size, size]
    piece[:, 2:] = np.maximum(piece[:, 2:], piece[:, :2] + 1)
    scores = rng.beta(5, 2, len(piece))  # continuous: no ties, so the kept order is defined
    return piece, scores, label[o]


def timed(fn: object, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


def naive_greedy_nmm(xyxy: np.ndarray, scores: np.ndarray, labels: np.ndarray, thr: float) -> int:
    """SAHI's greedy NMM by IoS, per class: each kept box absorbs the remaining boxes with IoS ≥ thr."""
    kept = 0
    for lab in np.unique(labels):
        idx = np.flatnonzero(labels == lab)
        b = xyxy[idx][np.argsort(-scores[idx], kind="stable")]
        area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        alive = np.ones(len(b), dtype=bool)
        for r in range(len(b)):
            if not alive[r]:
                continue
            kept += 1
            alive[r] = False
            iw = np.clip(np.minimum(b[r, 2], b[:, 2]) - np.maximum(b[r, 0], b[:, 0]), 0, None)
            ih = np.clip(np.minimum(b[r, 3], b[:, 3]) - np.maximum(b[r, 1], b[:, 1]), 0, None)
            alive &= iw * ih < thr * np.minimum(area[r], area)
    return kept


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="20k boxes, 1 repeat, 2k boxes for the naive reference")
    ap.add_argument("--boxes", type=int, help="number of detections (default 100,000)")
    ap.add_argument("--naive-boxes", type=int, help="boxes in the crop for the naive ios reference (default 5,000)")
    ap.add_argument("--repeats", type=int, help="timing repeats, median reported (default 3)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    quick = args.quick or u.quick_requested([])
    n_boxes = args.boxes or (20_000 if quick else 100_000)
    n_naive = args.naive_boxes or (2_000 if quick else 5_000)
    repeats = args.repeats or (1 if quick else 3)

    import torch
    import torchvision

    from gigavision.tiling.merge import MERGERS, merge_boxes, overlapping_pairs

    image = int(IMAGE * min(1.0, (n_boxes / 100_000) ** 0.5))
    xyxy, scores, labels = tiled_detections(n_boxes, args.seed, image)
    u.log(f"{len(xyxy)} detections over a {image}² image, {len(np.unique(labels))} classes")
    merge_boxes(xyxy[:1000], scores[:1000], labels[:1000], method="nms")  # warm-up (imports, caches)

    pairs_s, pairs = timed(lambda: overlapping_pairs(xyxy, labels), repeats)
    result: dict[str, object] = {"benchmark": "merge", "quick": quick, "boxes": len(xyxy), "image": image}
    result["pairs"] = len(pairs[0])  # type: ignore[index]
    result["pairs_s"] = u.rnd(pairs_s, 4)
    outputs: dict[str, object] = {}
    for name in MERGERS:
        secs, merged = timed(lambda name=name: merge_boxes(xyxy, scores, labels, method=name), repeats)  # type: ignore[misc]
        result[f"{name}_s"] = u.rnd(secs, 4)
        outputs[name] = merged
        result[f"{name}_out"] = len(merged)  # type: ignore[arg-type]
        u.log(f"  {name:9s} {secs * 1000:8.1f} ms  -> {len(merged)} rows")  # type: ignore[arg-type]

    tb, ts, tl = torch.from_numpy(xyxy), torch.from_numpy(scores), torch.from_numpy(labels)
    tv_s, tv_keep = timed(lambda: torchvision.ops.batched_nms(tb, ts, tl, 0.5), repeats)
    ours = outputs["nms"].keep  # type: ignore[attr-defined]
    same = bool(np.array_equal(ours, tv_keep.numpy()))  # type: ignore[attr-defined]
    u.log(f"  torchvision batched_nms {tv_s * 1000:8.1f} ms, same rows and order: {same}")
    result["torchvision_s"] = u.rnd(tv_s, 4)
    result["nms_speedup"] = u.rnd(tv_s / float(result["nms_s"]), 2)  # type: ignore[arg-type]
    result["nms_same_as_torchvision"] = same

    # naive ios reference on a crop holding about n_naive boxes
    side = image * (n_naive / len(xyxy)) ** 0.5
    crop = (xyxy[:, 2] < side) & (xyxy[:, 3] < side)
    cx, cs, cl = xyxy[crop], scores[crop], labels[crop]
    naive_s, naive_out = timed(lambda: naive_greedy_nmm(cx, cs, cl, 0.5), 1)
    ours_s, ours_out = timed(lambda: merge_boxes(cx, cs, cl, method="ios"), repeats)
    u.log(f"  ios on {len(cx)} boxes: ours {ours_s * 1000:.1f} ms, naive greedy NMM {naive_s * 1000:.1f} ms")
    result["ios_vs_naive"] = {
        "boxes": len(cx),
        "ours_s": u.rnd(ours_s, 4),
        "naive_s": u.rnd(naive_s, 4),
        "speedup": u.rnd(naive_s / ours_s, 1),
        "ours_out": len(ours_out),  # type: ignore[arg-type]
        "naive_out": naive_out,
    }
    worst = max(float(result[f"{m}_s"]) for m in ("nms", "ios", "wbf"))  # type: ignore[arg-type]
    result["anchor"] = "torchvision.ops.batched_nms (CPU, float64), same boxes, same run"
    result["targets"] = {"nms_ios_wbf_s_at_100k": 1.0}
    result["met"] = {"under_1s": worst < 1.0 if len(xyxy) >= 100_000 else None, "nms_same_as_torchvision": same}
    result["machine"] = u.machine()
    u.emit(result)


if __name__ == "__main__":
    main()
