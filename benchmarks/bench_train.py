"""Training and inference stack: trainer overhead, patch loading from a gigapixel pyramid, ONNX vs torch.

Three measurements, each against a baseline timed in the same run, on the same input, with the same number of
torch threads (``--threads``) in both arms, interleaved and repeated; medians are reported.

1. ``trainer``: ``gigavision.train.trainer.train`` (Lightning) vs a bare PyTorch loop (forward, cross-entropy,
   backward, AdamW step) over the **same** ``SampleDataset`` + ``DataLoader`` (``EpochShuffle``, the task's
   collate) of a digits dataset version, same network (built by the task, same seed), same optimizer
   settings, same number of steps. The timed part of ours is ``lightning.Trainer.fit`` alone (wrapped in this
   process), which includes Lightning's loop, logging and the per-epoch ``last.ckpt`` write; the whole
   ``train()`` call (dataset open, ONNX export and publishing too) is reported beside it.
2. ``patches``: patches/s of the gigavision patch pipeline (``RandomSampler`` with its foreground test →
   ``train.data.Patches`` → ``SampleDataset`` with the training transforms → ``DataLoader``, 0 and 2 workers)
   on a 1-gigapixel ``make_slide`` pyramid ingested into a fresh workspace, vs the samples/s a CPU training
   step of a small model consumes at the same batch and patch size.
3. ``onnx``: onnxruntime vs torch eager latency on the CPU for each task's default network (built through the
   task classes, random init, exported with ``models.onnx_export.export_onnx``), and the largest absolute
   output difference. Tasks whose module does not import are skipped with a note.

Usage::

    .venv/bin/python benchmarks/bench_train.py [--quick] [--only trainer,patches,onnx] [--threads N]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _util as u

sys.path.insert(0, str(u.ROOT))  # tests/realdata.py builds the digits dataset version

PARTS = ("trainer", "patches", "onnx")
TARGETS = {"trainer_ratio_max": 1.10, "loader_over_model_min": 3.0, "onnx_speedup_min": 1.5}


def med(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


# -- 1. trainer overhead -------------------------------------------------------------------------------------
class FitTimer:
    """Wraps ``lightning.Trainer.fit`` in this process: wall time and optimizer steps of each call."""

    def __init__(self) -> None:
        import lightning as L

        self.cls = L.Trainer
        self.original = L.Trainer.fit
        self.calls: list[tuple[float, int]] = []

    def __enter__(self) -> FitTimer:
        original, calls = self.original, self.calls

        def fit(trainer: Any, *args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return original(trainer, *args, **kwargs)
            finally:
                calls.append((time.perf_counter() - t0, int(trainer.global_step)))

        self.cls.fit = fit  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        self.cls.fit = self.original  # type: ignore[method-assign]


def ours_train(ws: Any, recipe: Any, timer: FitTimer) -> dict[str, float]:
    from gigavision.train.trainer import train

    n = len(timer.calls)
    t0 = time.perf_counter()
    train(ws, recipe)
    total = time.perf_counter() - t0
    assert len(timer.calls) == n + 1, "train() did not go through lightning.Trainer.fit"
    fit_s, steps = timer.calls[-1]
    return {"fit_s": fit_s, "train_total_s": total, "steps": steps}


def bare_train(ws: Any, recipe: Any) -> dict[str, float]:
    """The same data path and network as train(), driven by a hand-written loop."""
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader

    from gigavision.datasets.versions import open_version
    from gigavision.models.task import task_class
    from gigavision.train import data as tdata
    from gigavision.train.transforms import build_transform

    version = open_version(ws, recipe.dataset)
    cls = task_class(recipe.task)
    task = cls(recipe, cls.label_map(version.classes(), recipe))
    torch.manual_seed(recipe.seed)
    net = task.build()
    mean, std = task.normalization(net)
    tf = build_transform(recipe.augment, mean, std, recipe.image_size)
    data = tdata.split_data(task, version, recipe, recipe.train_split, tf, training=True)
    if data.targets is not None:
        task.configure(data.targets)
    n = len(data.dataset)
    sampler = tdata.EpochShuffle(n, recipe.seed)
    loader = DataLoader(
        data.dataset,
        batch_size=recipe.batch_size,
        sampler=sampler,
        collate_fn=tdata.collate_for(task),
        drop_last=n > recipe.batch_size,
        num_workers=recipe.num_workers,
    )
    opt = torch.optim.AdamW(net.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    torch.use_deterministic_algorithms(True)  # what the trainer's deterministic=True sets (no-op cost on CPU)
    net.train()
    steps = 0
    t0 = time.perf_counter()
    for epoch in range(recipe.epochs):
        sampler.set_epoch(epoch)
        for batch in loader:
            if batch is None:
                continue
            images, targets = batch
            logits, _ = net.logits(images)
            loss = F.cross_entropy(logits, targets)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
    return {"fit_s": time.perf_counter() - t0, "steps": steps}


def bench_trainer(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from tests.realdata import digits_version

    import gigavision as gv
    from gigavision.train.recipe import load_recipe

    limit = args.digits or (400 if args.quick else None)
    u.log(f"trainer: building the digits dataset version ({limit or 'all'} images) ...")
    ws = gv.init_workspace(work / "digits-ws")
    version = digits_version(ws, work / "digits-png", limit=limit, scale=2)
    fields = {
        "task": "classify",
        "dataset": version.ref,
        "arch": args.train_arch,
        "image_size": args.image_size,
        "epochs": args.epochs,
        "batch_size": args.batch,
        "val_split": "none",  # no validation in either arm: fit is training epochs only
        "test_split": "none",
    }
    recipe = load_recipe(overrides=fields)
    warm = recipe.model_copy(update={"epochs": 1})
    ours: list[dict[str, float]] = []
    bare: list[dict[str, float]] = []
    with FitTimer() as timer:
        u.log("trainer: warm-up (one epoch each, untimed) ...")
        ours_train(ws, warm, timer)
        bare_train(ws, warm)
        for rep in range(args.repeats):
            arms = [("ours", ours), ("bare", bare)]
            for name, sink in arms if rep % 2 == 0 else arms[::-1]:
                r = ours_train(ws, recipe, timer) if name == "ours" else bare_train(ws, recipe)
                sink.append(r)
                u.log(f"  rep {rep} {name:4}: fit {r['fit_s']:6.2f} s, {r['steps']:.0f} steps")
    train_images = sum(1 for _ in version.images("train"))
    ours_fit, bare_fit = med([r["fit_s"] for r in ours]), med([r["fit_s"] for r in bare])
    # each repeat runs the two arms back to back: their ratio sees the same machine load, so the median of
    # the per-repeat ratios is robust to load spikes that hit a whole repeat
    paired = [o["fit_s"] / b["fit_s"] for o, b in zip(ours, bare, strict=True)]
    ratio = med(paired)
    steps = {int(r["steps"]) for r in ours + bare}
    ws.close()
    return {
        "what": "same network/data/steps: gigavision trainer (Lightning) vs a bare PyTorch loop",
        "dataset": {"ref": version.ref, "train_images": train_images, "image_size": args.image_size},
        "arch": args.train_arch,
        "epochs": args.epochs,
        "batch_size": args.batch,
        "steps": sorted(steps),
        "same_steps": len(steps) == 1,
        "ours": {
            "what": "lightning.Trainer.fit inside gigavision.train.trainer.train: DataLoader iteration, Lightning"
            " loop and logging (CSVLogger), task.loss, AdamW + per-epoch LambdaLR, last.ckpt written each epoch",
            "fit_s": u.rnd(ours_fit),
            "fit_s_all": [u.rnd(r["fit_s"]) for r in ours],
            "train_total_s": u.rnd(med([r["train_total_s"] for r in ours])),
            "train_total_includes": "opening the version, building net and datasets, fit, saving weights,"
            " ONNX export + parity check, publishing the model folder (no val/test evaluation here)",
        },
        "baseline": {
            "what": "hand-written loop over the same SampleDataset/DataLoader/EpochShuffle/collate: forward,"
            " F.cross_entropy, zero_grad, backward, AdamW.step; no checkpoint, no logging",
            "fit_s": u.rnd(bare_fit),
            "fit_s_all": [u.rnd(r["fit_s"]) for r in bare],
        },
        "ratio": u.rnd(ratio),
        "ratio_is": "median over repeats of (ours fit_s ÷ bare fit_s), the two arms run back to back",
        "ratio_all": [u.rnd(r) for r in paired],
        "ratio_of_medians": u.rnd(ours_fit / bare_fit),
        "ratio_of_minima": u.rnd(min(r["fit_s"] for r in ours) / min(r["fit_s"] for r in bare)),
        "overhead_s_per_step": u.rnd((ours_fit - bare_fit) / max(1, max(steps)), 4),
        "target_max": TARGETS["trainer_ratio_max"],
    }


# -- 2. patch loading vs model consumption -------------------------------------------------------------------
def bench_patches(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import numpy as np
    import timm
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader

    import gigavision as gv
    from gigavision.datasets.patches import PatchImages
    from gigavision.models.classify import ClassifyTask
    from gigavision.train import data as tdata
    from gigavision.train.recipe import load_recipe
    from gigavision.train.transforms import build_transform

    width, height = (20_000, 12_500) if args.quick else (40_000, 25_000)
    if args.slide:
        width, height = (int(v) for v in args.slide.lower().split("x"))
    slide = u.slide_path(width, height)
    ws_path = work / "slide-ws"
    t0 = time.perf_counter()
    ws = gv.init_workspace(ws_path)
    (res,) = ws.ingest([slide])
    if res.status != "added" or res.id is None:
        raise SystemExit(f"slide ingest failed: {res}")
    ingest_s = time.perf_counter() - t0
    # cell-sized boxes uniformly over the slide: patches crop and shift real annotations, as in training
    rng = np.random.default_rng(0)
    n_boxes = width * height // 50_000
    xy = rng.uniform([0, 0], [width - 40, height - 40], size=(n_boxes, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(12, 40, size=(n_boxes, 2))], axis=1)
    ws.labels.set("cell", "box")
    ws.annotations.add(res.id, gv.Annotations.from_boxes(boxes, "cell", status=["accepted"] * n_boxes), "bench")
    u.log(f"patches: {width}x{height} slide ingested in {ingest_s:.1f} s, {n_boxes} boxes added")

    size, batch = args.patch_size, args.batch
    per_pass = batch * args.patch_batches
    recipe = load_recipe(
        overrides={
            "task": "classify",
            "dataset": "slide",
            "arch": args.patch_arch,
            "batch_size": batch,
            "augment": {"hflip": True, "vflip": True, "rotate90": True},
            "patch": {"size": size, "level": 0, "sampler": "random", "per_epoch": per_pass, "min_foreground": 0.5},
        }
    )
    task = ClassifyTask(recipe, ["background", "cell"])
    torch.manual_seed(0)
    # the consumer: a bare timm classifier (ClassifierNet is not used: it mis-sizes its head for timm models
    # whose pooled width differs from num_features, e.g. mobilenetv3's head_hidden_size)
    net = timm.create_model(args.patch_arch, num_classes=len(task.classes))
    cfg = net.pretrained_cfg
    mean, std = tuple(cfg.get("mean", (0.485, 0.456, 0.406))), tuple(cfg.get("std", (0.229, 0.224, 0.225)))
    tf = build_transform(recipe.augment, mean, std, size)
    images = PatchImages.from_workspace(ws, [res.id])
    sampler = tdata.patch_sampler(images, recipe, training=True, classes=task.classes)
    dataset = tdata.SampleDataset(task, tdata.Patches(sampler), tf)

    def load_pass(workers: int, epoch: int) -> dict[str, float]:
        keys = tdata.EpochShuffle(len(dataset), recipe.seed)
        keys.set_epoch(epoch)  # a fresh set of windows each pass (no tile reuse between passes)
        loader = DataLoader(
            dataset, batch_size=batch, sampler=keys, collate_fn=tdata.collate_for(task), num_workers=workers
        )
        t0 = time.perf_counter()
        first, n = None, 0
        for b in loader:
            n += 0 if b is None else len(b[0])
            if first is None:
                first = time.perf_counter()
        end = time.perf_counter()
        assert first is not None
        steady = (n - batch) / (end - first) if end > first else float("nan")
        return {"wall_per_s": n / (end - t0), "steady_per_s": steady, "first_batch_s": first - t0, "n": n}

    first = next(iter(DataLoader(dataset, batch_size=batch, collate_fn=tdata.collate_for(task))))
    assert first is not None
    x, y = first
    opt = torch.optim.AdamW(net.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    net.train()

    def step() -> float:
        t0 = time.perf_counter()
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - t0

    for _ in range(2):
        step()  # warm-up
    loads: dict[int, list[dict[str, float]]] = {w: [] for w in args.workers}
    model_steps: list[float] = []
    epoch = 1
    for rep in range(args.repeats):
        for w in args.workers if rep % 2 == 0 else args.workers[::-1]:
            r = load_pass(w, epoch)
            epoch += 1
            loads[w].append(r)
            u.log(f"  rep {rep} loader workers={w}: {r['steady_per_s']:6.1f} patches/s steady ({r['n']} patches)")
        times = [step() for _ in range(args.model_steps)]
        model_steps += times
        u.log(f"  rep {rep} model step: {batch / med(times):6.1f} samples/s")
    model_sps = batch / med(model_steps)
    loader_out: dict[str, Any] = {}
    for w, rs in loads.items():
        steady = med([r["steady_per_s"] for r in rs])
        loader_out[f"workers_{w}"] = {
            "patches_per_s": u.rnd(steady, 1),
            "patches_per_s_with_startup": u.rnd(med([r["wall_per_s"] for r in rs]), 1),
            "first_batch_s": u.rnd(med([r["first_batch_s"] for r in rs])),
            "patches_per_pass": int(rs[0]["n"]),
            "ratio_vs_model": u.rnd(steady / model_sps, 2),
        }
    ws.close()
    best = max(v["ratio_vs_model"] for v in loader_out.values())
    return {
        "what": "gigavision patch pipeline patches/s vs a CPU training step's samples/s, same batch and patch size",
        "slide": {"width": width, "height": height, "ingest_s": u.rnd(ingest_s, 1), "boxes": n_boxes},
        "patch_size": size,
        "batch_size": batch,
        "ours": {
            "what": "RandomSampler(level 0, min_foreground 0.5, 32 tries) -> Patches -> SampleDataset (classify"
            " target, hflip/vflip/rotate90 + normalise) -> DataLoader(EpochShuffle, collate); steady rate"
            " excludes the first batch (worker start-up), '_with_startup' includes it",
            **loader_out,
        },
        "baseline": {
            "what": f"timm {args.patch_arch} (2 classes) training step (forward, cross-entropy, backward, AdamW) on one"
            " real batch from the pipeline, median over steps",
            "arch": args.patch_arch,
            "samples_per_s": u.rnd(model_sps, 1),
            "step_s": u.rnd(med(model_steps), 4),
        },
        "ratio": best,
        "ratio_is": "best loader setting's patches/s ÷ model samples/s",
        "note": "loader and model were timed separately; in a real run they share the CPU cores",
        "target_min": TARGETS["loader_over_model_min"],
    }


# -- 3. onnxruntime vs torch eager ---------------------------------------------------------------------------
TASK_CLASSES = {"classify": ["a", "b"], "embed": ["a", "b"], "detect": ["a", "b"], "segment": ["background", "a"]}


def onnx_vs_torch(name: str, cls: Any, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Export one task's default network and time it in torch eager and onnxruntime, interleaved."""
    import numpy as np
    import onnxruntime as ort
    import torch

    from gigavision.models.onnx_export import example_input, export_onnx
    from gigavision.train.module import to_numpy
    from gigavision.train.recipe import load_recipe

    recipe = load_recipe(overrides={"task": name, "dataset": "bench", "image_size": args.infer_size})
    task = cls(recipe, TASK_CLASSES[name])
    torch.manual_seed(0)
    net = task.build().eval()
    path = work / f"{name}.onnx"
    t0 = time.perf_counter()
    parity = export_onnx(task, net, path, args.infer_size)
    export_s = time.perf_counter() - t0
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    x = example_input(args.infer_size, batch=args.infer_batch, seed=1)
    feed = {session.get_inputs()[0].name: x.numpy()}

    def run_torch() -> list[np.ndarray]:
        with torch.inference_mode():
            return to_numpy(net(x))

    def run_ort() -> list[np.ndarray]:
        return [np.asarray(o) for o in session.run(None, feed)]

    ref, got = run_torch(), run_ort()
    diff: float | None = None
    if len(ref) == len(got) and all(a.shape == b.shape for a, b in zip(ref, got, strict=True)):
        diff = max((float(np.max(np.abs(a - b))) if a.size else 0.0) for a, b in zip(ref, got, strict=True))
    run_torch(), run_ort()  # second warm-up
    times: dict[str, list[float]] = {"torch": [], "onnx": []}
    order = (("torch", run_torch), ("onnx", run_ort))
    for rep in range(args.infer_repeats):
        for arm, fn in order if rep % 2 == 0 else order[::-1]:
            t0 = time.perf_counter()
            fn()
            times[arm].append(time.perf_counter() - t0)
    t_torch, t_ort = med(times["torch"]), med(times["onnx"])
    u.log(f"onnx: {name:8} torch {t_torch * 1000:7.1f} ms, onnx {t_ort * 1000:7.1f} ms, diff {diff}")
    return {
        "arch": task.arch,
        "input": [args.infer_batch, 3, args.infer_size, args.infer_size],
        "torch_ms": u.rnd(t_torch * 1000, 1),
        "onnx_ms": u.rnd(t_ort * 1000, 1),
        "speed_ratio": u.rnd(t_torch / t_ort, 2),
        "max_abs_diff": diff,
        "outputs": [list(a.shape) for a in ref],
        "export_parity_batch2": parity,
        "export_s": u.rnd(export_s, 1),
    }


def bench_onnx(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from gigavision.models.task import task_class

    out: dict[str, Any] = {}
    for name in args.tasks:
        try:
            cls = task_class(name)
        except Exception as exc:  # a task module still being written elsewhere
            out[name] = {"skipped": f"task module does not import: {type(exc).__name__}: {exc}"}
            u.log(f"onnx: {name} skipped ({exc})")
            continue
        try:
            out[name] = onnx_vs_torch(name, cls, args, work)
        except Exception as exc:  # build or export not working (yet) for this task: note it, go on
            traceback.print_exc(file=sys.stderr)
            out[name] = {"skipped": f"build/export/run failed: {type(exc).__name__}: {exc}"}
    ratios = [v["speed_ratio"] for v in out.values() if "speed_ratio" in v]
    return {
        "what": "median latency of one batch: onnxruntime CPUExecutionProvider vs torch eager (inference_mode),"
        " same threads, networks at their random init, exported by models.onnx_export.export_onnx (opset 17)",
        "baseline": "torch eager",
        "threads": args.threads,
        "repeats": args.infer_repeats,
        "tasks": out,
        "min_speed_ratio": min(ratios) if ratios else None,
        "target_min": TARGETS["onnx_speedup_min"],
    }


# -- driver --------------------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller data, fewer steps and repeats (~2 min)")
    ap.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts to run ({', '.join(PARTS)})")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch/onnxruntime threads, every arm")
    ap.add_argument("--repeats", type=int, help="interleaved repeats per arm (trainer, patches)")
    # trainer
    ap.add_argument("--digits", type=int, help="digits images to ingest (default: all; --quick 400)")
    ap.add_argument("--train-arch", default="resnet18", help="timm backbone of the classifier trained in both arms")
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--batch", type=int, help="batch size for trainer and patches (default 64; --quick 32)")
    # patches
    ap.add_argument("--slide", help="WIDTHxHEIGHT of the make_slide pyramid (default 40000x25000; --quick 20000x12500)")
    ap.add_argument("--patch-size", type=int, help="default 224 (--quick 128)")
    ap.add_argument("--patch-arch", default="mobilenetv3_small_100")
    ap.add_argument("--patch-batches", type=int, help="batches per loader pass (default 8; --quick 4)")
    ap.add_argument("--model-steps", type=int, help="timed training steps per repeat (default 5; --quick 3)")
    ap.add_argument("--workers", default="0,2", help="DataLoader num_workers settings to measure")
    # onnx
    ap.add_argument("--tasks", default="classify,embed,detect,segment")
    ap.add_argument("--infer-size", type=int, default=224)
    ap.add_argument("--infer-batch", type=int, help="default 8 (--quick 4)")
    ap.add_argument("--infer-repeats", type=int, help="default 10 (--quick 5)")
    args = ap.parse_args()
    args.quick = args.quick or u.quick_requested([])
    q = args.quick
    args.repeats = args.repeats or (3 if q else 5)
    args.train_arch = args.train_arch or "resnet18"
    args.epochs = args.epochs or (3 if q else 5)
    args.batch = args.batch or (32 if q else 64)
    args.patch_size = args.patch_size or (128 if q else 224)
    args.patch_batches = args.patch_batches or (4 if q else 8)
    args.model_steps = args.model_steps or (3 if q else 5)
    args.workers = [int(w) for w in args.workers.split(",")]
    args.tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    args.infer_batch = args.infer_batch or (4 if q else 8)
    args.infer_repeats = args.infer_repeats or (5 if q else 10)
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        ap.error(f"unknown part(s) {sorted(unknown)}; choose from {', '.join(PARTS)}")

    import torch

    torch.set_num_threads(args.threads)
    u.BENCH.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="train-", dir=u.BENCH))
    result: dict[str, Any] = {
        "benchmark": "train",
        "claim": "trainer overhead ≤ 1.10× a bare loop; patch loading ≥ 3× model consumption; ONNX ≥ 1.5× torch",
        "quick": q,
        "threads": args.threads,
    }
    started = time.perf_counter()
    try:
        # everything the libraries print goes to stderr: stdout carries the one JSON line
        with contextlib.redirect_stdout(sys.stderr):
            benches = {"trainer": bench_trainer, "patches": bench_patches, "onnx": bench_onnx}
            for part in parts:
                t0 = time.perf_counter()
                load = [round(v, 2) for v in os.getloadavg()]
                result[part] = benches[part](args, work)
                result[part]["load_average_before"] = load
                result[part]["seconds"] = u.rnd(time.perf_counter() - t0, 1)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    met: dict[str, bool | None] = {}
    if "trainer" in result:
        met["trainer_ratio"] = result["trainer"]["ratio"] <= TARGETS["trainer_ratio_max"]
    if "patches" in result:
        met["loader_over_model"] = result["patches"]["ratio"] >= TARGETS["loader_over_model_min"]
    if "onnx" in result:
        for name, v in result["onnx"]["tasks"].items():
            met[f"onnx_{name}"] = v["speed_ratio"] >= TARGETS["onnx_speedup_min"] if "speed_ratio" in v else None
    result["targets"] = TARGETS
    result["met"] = met
    result["seconds"] = u.rnd(time.perf_counter() - started, 1)
    result["load_average"] = [round(v, 2) for v in os.getloadavg()]
    result["versions"] = _versions()
    result["machine"] = u.machine()
    u.emit(result)


def _versions() -> dict[str, str]:
    import lightning
    import onnxruntime
    import timm
    import torch

    return {
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "onnxruntime": onnxruntime.__version__,
        "timm": timm.__version__,
    }


if __name__ == "__main__":
    main()
