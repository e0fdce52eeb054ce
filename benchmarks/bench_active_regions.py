"""Region-level active learning on a big image (issue 14): do the windows ranked most uncertain hold the model's
errors?

A held-out planted scene of 16,384² (``--quick``: 4,096²) is built the way ``bench_infer.py`` builds its zoom
scene (``tests/test_infer_zoom.py::_canvas``: one tinted real scikit-image texture, objects of
``tests/scenes.py`` — sklearn digits, skimage coins and the skimage horse — pasted into a share of the 128-px
cells: by default 10 of 256, the density of ``bench_infer.py``'s zoom scene; ``--busy 0.25`` for a dense one),
inside a disc like a fundus photograph or a round slide: outside it the pixels are exact zero (no data),
so the foreground mask ingest stores marks them background. The detector is ``bench_infer.py``'s
(``fcos_tiny`` trained like ``tests/conftest.py::scenes_detector`` on 200 *other* 128-px scenes), cached in
``.bench/infer/models``.

``gigavision.active.regions.select_regions`` runs the tiled engine once over the image (through
``gigavision.cli.regions.engine_predict``: candidates down to ``--candidates`` score) and ranks the foreground
windows (128 px, the model's input side; background windows skipped) by the uncertainty of the predictions
centred in each. The model's errors are counted at its operating point (detections scoring ≥ 0.3, the
``predict`` default; ≥ 0.5 reported too) against the planted truth: **missed or wrong objects** (true
objects no same-class detection covers at IoU ≥ 0.5) and, separately, **spurious detections** (no same-class
true object at IoU ≥ 0.5). An error is inside a window when its box centre is. Reported: the share of the
errors inside the first 10 % (and 5 %, 20 %) of the foreground windows by uncertainty, by random order (mean of
20 seeds) and by an oracle that knows the errors (the most any 10 % can hold). Target: ≥ 60 % by uncertainty.

Usage::

    .venv/bin/python benchmarks/bench_active_regions.py [--quick] [--cells 128] [--busy 0.25] [--seed 61]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _util as u

sys.path.insert(0, str(u.ROOT))  # tests/ (scene generator) and bench_infer (the cached detector)

HERE = u.BENCH / "active_regions"
CELL = 128  # the scene's cells and the detector's input side
TARGET = 0.6
SHARE = 0.10  # the first 10 % of the windows
OPERATING_SCORES = (0.3, 0.5)  # 0.3: what `gigavision predict` keeps (PredictRequest.min_score); 0.5: a coin toss
SHARES = (0.05, SHARE, 0.2)
SPARSE = 10 / 256  # bench_infer's zoom scene: 10 of 256 cells hold objects


def disc_scene(cells: int, busy_fraction: float, seed: int) -> tuple[Path, Any]:
    """A ``cells × cells`` ``_canvas`` scene whose pixels outside the inscribed disc are zero (no data); objects
    only in cells wholly inside the disc. Written once as a JPEG pyramid (cached) with its true boxes."""
    from tests.test_infer_zoom import _canvas

    from bench_infer import _load_truth, _save_truth, _write_array

    name = f"disc_{cells}_{busy_fraction:g}_{seed}"
    out, truth_path = HERE / f"{name}.tif", HERE / f"{name}.truth.npz"
    if out.exists() and truth_path.exists():
        return out, _load_truth(truth_path)
    HERE.mkdir(parents=True, exist_ok=True)
    u.log(f"generating the {name} scene ({cells}×{cells} cells of {CELL} px; once, cached in {HERE}) ...")
    t0 = time.perf_counter()
    side = cells * CELL
    centre, radius = side / 2, side / 2
    corners = np.array([(x, y) for y in range(cells + 1) for x in range(cells + 1)], dtype=np.float64) * CELL
    inside_corner = (((corners - centre) / radius) ** 2).sum(axis=1) <= 1.0
    inside_corner = inside_corner.reshape(cells + 1, cells + 1)
    inside = inside_corner[:-1, :-1] & inside_corner[1:, :-1] & inside_corner[:-1, 1:] & inside_corner[1:, 1:]
    candidates = np.flatnonzero(inside.ravel())
    rng = np.random.default_rng(seed)
    busy = set(rng.choice(candidates, max(1, round(len(candidates) * busy_fraction)), replace=False).tolist())
    canvas, truth = _canvas(rng, cells, busy)
    xs = (np.arange(side) + 0.5 - centre) / radius
    for y0 in range(0, side, CELL):  # a row band at a time: a whole-canvas boolean would be 268 MB more
        ys = (np.arange(y0, y0 + CELL) + 0.5 - centre) / radius
        outside = ys[:, None] ** 2 + xs[None, :] ** 2 > 1.0
        canvas[y0 : y0 + CELL][outside] = 0
    _write_array(canvas, out)
    del canvas
    _save_truth(truth_path, truth)
    u.log(f"  generated in {time.perf_counter() - t0:.0f} s ({out.stat().st_size / 1e6:.0f} MB, {len(truth)} objects)")
    return out, truth


def workspace_with(path: Path, model: Any) -> tuple[Any, str]:
    """A workspace (cached beside the scene) holding the scene, ingested (pyramid, foreground mask), and a copy
    of the detector."""
    import gigavision as gv

    root = HERE / f"ws-{path.stem}"
    ws = gv.init_workspace(root) if not root.exists() else gv.open_workspace(root)
    target = ws.root / "models" / model.id
    if not target.exists():
        shutil.copytree(model.path, target)
    (added,) = ws.ingest([path])
    assert added.id, added
    return ws, added.id


class Cached:
    """A ``Predict`` that runs the engine once and answers every later call with the same predictions, so
    the rankings compared (max, sum, random seeds) all see one model run."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.done: tuple[str, list[Any]] | None = None
        self.seconds = 0.0

    def __call__(self, model_ref: str, image_ids: Any, *, level: int | None, run: bool) -> tuple[str, list[Any]]:
        if self.done is not None:
            return self.done
        t0 = time.perf_counter()
        out = self.inner(model_ref, image_ids, level=level, run=run)
        if run:
            self.seconds = time.perf_counter() - t0
            self.done = out
        return out


def errors(truth: Any, ann: Any) -> tuple[np.ndarray, np.ndarray]:
    """Level-0 centres of (the true objects the model missed or got wrong, its spurious detections): no
    same-class match at IoU ≥ 0.5 either way."""
    from bench_infer import box_iou, found

    hits = found(truth, ann)
    missed = np.array([i for i in range(len(truth)) if i not in hits], dtype=np.int64)
    spurious = np.ones(len(ann), dtype=bool)
    for label in set(ann.label.tolist()):
        pi = np.flatnonzero(ann.label == label)
        ti = np.flatnonzero(truth.label == label)
        if len(ti):
            spurious[pi[(box_iou(ann.xyxy[pi], truth.xyxy[ti]) >= 0.5).any(axis=1)]] = False

    def centres(xyxy: np.ndarray) -> np.ndarray:
        xyxy = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
        return np.stack([(xyxy[:, 0] + xyxy[:, 2]) / 2, (xyxy[:, 1] + xyxy[:, 3]) / 2], axis=1)

    return centres(truth.xyxy[missed]), centres(ann.xyxy[spurious])


def share_in_first(regions: list[Any], points: np.ndarray, side: int, k: int) -> float:
    """The share of ``points`` (level-0 centres) inside the first ``k`` of ``regions`` (a grid of ``side``)."""
    if not len(points):
        return float("nan")
    first = {(r.xyxy[0], r.xyxy[1]) for r in regions[:k]}
    cells = np.floor(points / side).astype(np.int64) * side
    return float(np.mean([(int(x), int(y)) in first for x, y in cells]))


def oracle_share(points: np.ndarray, side: int, k: int) -> float:
    """The most any ``k`` windows can hold: the ``k`` windows with the most points."""
    if not len(points):
        return float("nan")
    _, counts = np.unique(np.floor(points / side).astype(np.int64), axis=0, return_counts=True)
    return float(np.sort(counts)[::-1][:k].sum() / len(points))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a 4,096² scene (32 × 32 cells) instead of 16,384²")
    ap.add_argument("--cells", type=int, help="scene side in 128-px cells (default 128: 16,384²)")
    ap.add_argument(
        "--busy", type=float, default=SPARSE, help="share of the cells inside the disc holding objects (default 10/256)"
    )
    ap.add_argument("--seed", type=int, default=61, help="scene seed (the detector never saw it)")
    ap.add_argument("--candidates", type=float, default=0.05, help="detections down to this score are weighed")
    ap.add_argument("--random-seeds", type=int, default=20, help="random orders averaged")
    ap.add_argument("--runtime", default="auto", choices=("auto", "onnx", "torch"))
    args = ap.parse_args()
    args.quick = args.quick or u.quick_requested([])
    cells = args.cells or (32 if args.quick else 128)

    from gigavision.active.regions import select_regions
    from gigavision.cli.regions import engine_predict

    load_before = [round(v, 2) for v in os.getloadavg()]
    started = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries the one JSON line
        from bench_infer import detector_info

        model = detector_info()
        path, truth = disc_scene(cells, args.busy, args.seed)
        ws, image_id = workspace_with(path, model)
        try:
            cached = Cached(engine_predict(ws, min_score=args.candidates, runtime=args.runtime))
            u.log(f"ranking every foreground window of {path.name} by uncertainty (one tiled run) ...")
            first = select_regions(ws, model.id, [image_id], 1, predict=cached)
            candidates = first.windows - first.background
            rankings = {
                agg: select_regions(ws, model.id, [image_id], candidates, predict=cached, aggregate=agg).regions
                for agg in ("max", "sum")
            }
            randoms = [
                select_regions(ws, model.id, [image_id], candidates, strategy="random", predict=cached, seed=s).regions
                for s in range(args.random_seeds)
            ]
            predictions = first.predictions[image_id]
        finally:
            ws.close()
    ann = predictions.annotations
    side = first.images[image_id]["window_level0"]
    k10 = max(1, round(candidates * SHARE))
    by_point: dict[str, Any] = {}
    for point in OPERATING_SCORES:
        operating = ann[ann.score >= point]
        missed, spurious = errors(truth, operating)
        out: dict[str, Any] = {
            "detections": len(operating),
            "recall": u.rnd(1 - len(missed) / max(1, len(truth)), 4),
        }
        both = np.concatenate([missed, spurious])
        for name, points in (("missed_or_wrong", missed), ("spurious", spurious), ("all_errors", both)):
            row: dict[str, Any] = {"n": len(points)}
            for share in SHARES:
                k = max(1, round(candidates * share))
                row[f"first_{round(share * 100)}pct"] = {
                    "uncertainty_max": u.rnd(share_in_first(rankings["max"], points, side, k), 4),
                    "uncertainty_sum": u.rnd(share_in_first(rankings["sum"], points, side, k), 4),
                    "random_mean": u.rnd(float(np.mean([share_in_first(r, points, side, k) for r in randoms])), 4),
                    "oracle": u.rnd(oracle_share(points, side, k), 4),
                }
            out[name] = row
        by_point[f"min_score_{point:g}"] = out
    head = by_point[f"min_score_{OPERATING_SCORES[0]:g}"]
    headline = head["missed_or_wrong"]["first_10pct"]["uncertainty_max"]
    result = {
        "benchmark": "active_regions",
        "claim": "the first 10 % of windows by uncertainty hold ≥ 60 % of the objects the model missed or got wrong",
        "quick": args.quick,
        "scene": {
            "path": path.name,
            "size": [cells * CELL, cells * CELL],
            "objects": len(truth),
            "busy_cells_share_inside_disc": u.rnd(args.busy, 4),
            "seed": args.seed,
            "background": "outside the inscribed disc: exact zero (no data)",
        },
        "model": model.id,
        "window": first.window,
        "windows": first.windows,
        "background_windows_skipped": first.background,
        "candidate_windows": candidates,
        "first_10pct_windows": k10,
        "tiled_run_s": u.rnd(cached.seconds, 1),
        "detections_weighed": len(ann),
        "candidate_min_score": args.candidates,
        "errors_by_operating_point": by_point,
        "headline": {
            "what": "share of the missed-or-wrong objects (detections >= 0.3, the predict default) inside the first"
            " 10 % of the foreground windows, ranked by max uncertainty",
            "uncertainty": headline,
            "random": head["missed_or_wrong"]["first_10pct"]["random_mean"],
            "oracle": head["missed_or_wrong"]["first_10pct"]["oracle"],
            "all_errors_uncertainty": head["all_errors"]["first_10pct"]["uncertainty_max"],
            "all_errors_random": head["all_errors"]["first_10pct"]["random_mean"],
        },
        "target_min": TARGET,
        "met": {"missed_or_wrong_in_first_10pct": headline >= TARGET},
        "seconds": u.rnd(time.perf_counter() - started, 1),
        "load_average_before": load_before,
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "machine": u.machine(),
    }
    u.emit(result)


if __name__ == "__main__":
    main()
