"""Torch-free deployment: what loading and running a model with onnxruntime costs a fresh process.

Claim (issue 12, item 4): ``gigavision predict --runtime onnx``, ``POST /api/v1/predict`` and Dask workers
running ONNX never import torch, so their start-up costs ≤ 1 s and ≤ 150 MB instead of torch's 6.8 s / 900 MB.
A published detection model (``fcos_tiny``, random weights: no training, no download; built once into
``.bench/``) is loaded and run on one 512² image in child processes (median of ``--repeats``):

  ours_import_s      imports of the ONNX predict path (model store and card, the predictor, the tasks'
                     torch-free halves, onnxruntime, NumPy), timed inside the child
  ours_load_s        ``Predictor(info, "onnx")`` (card, task, ONNX session) and one prediction
  ours_peak_rss_mb   the child's exact peak RSS (kernel ``wait4``), the whole run included
  ours_torch_loaded  whether ``torch`` ended up in ``sys.modules`` (must be false)
  torch_*            baseline: the same child importing ``torch`` first (what the path paid before the split)
  app_*              the same child also importing the CLI and the REST app (``app_app_import_s``: those
                     imports alone; FastAPI, SQLAlchemy, Typer: paid by every command, torch or not)

Usage: .venv/bin/python benchmarks/bench_deploy_import.py [--quick] [--repeats R]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import _util as u

SIZE = 512
CHILD = """
import json, sys, time
t0 = time.perf_counter()
if {torch!r}:
    import torch  # the baseline: what the predict path imported before the torch-free split
import numpy as np
from pathlib import Path
from gigavision.models.card import ModelCard
from gigavision.models.predict import Predictor
from gigavision.models.store import ModelInfo
import gigavision.models.detect, gigavision.models.classify, gigavision.models.segment
import onnxruntime
t1 = time.perf_counter()
if {app!r}:
    import gigavision.cli.main, gigavision.server.main  # the CLI and the REST app around the path
t2 = time.perf_counter()
folder = Path({folder!r})
predictor = Predictor(ModelInfo(path=folder, card=ModelCard.read(folder)), "onnx")
image = np.random.default_rng(0).integers(0, 255, ({size}, {size}, 3), dtype=np.uint8)
n = len(predictor.predict([image])[0])
t3 = time.perf_counter()
out = {{"import_s": t1 - t0, "app_import_s": t2 - t1, "load_s": t3 - t2, "torch": "torch" in sys.modules, "n": n}}
print(json.dumps(out))
"""


FOLDER = u.BENCH / "deploy-model" / "bench-detect-1"


def model_folder() -> Path:
    """A published-model folder (card, recipe, checkpoint, ONNX) for fcos_tiny at 512², built once in a child
    process: a driver that imported torch would hand its peak RSS on to every child it starts."""
    if not (FOLDER / "model.json").is_file():
        child = u.run_child([u.PY, __file__, "--build"], cwd=u.ROOT)
        if child.returncode != 0:
            raise SystemExit(f"building the model failed: {child.stderr[-2000:]}")
    return FOLDER


def build_model_folder(folder: Path) -> None:
    import torch

    from gigavision.models.card import ModelCard, ModelInput
    from gigavision.models.onnx_export import export_onnx
    from gigavision.models.recipe import load_recipe
    from gigavision.models.store import CHECKPOINT, ONNX_FILE, RECIPE_JSON, write_json
    from gigavision.models.task import task_class

    u.log("building the model folder (random fcos_tiny, ONNX export)")
    recipe = load_recipe(overrides={"task": "detect", "dataset": "bench@1", "image_size": SIZE})
    task = task_class("detect")(recipe, ["cell", "nucleus"])
    torch.manual_seed(0)
    net = task.build().eval()
    mean, std = task.normalization(net)
    tmp = folder.with_name(".building")
    tmp.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": net.state_dict()}, tmp / CHECKPOINT)
    write_json(tmp / RECIPE_JSON, recipe.resolved())
    diff = export_onnx(task, net, tmp / ONNX_FILE, SIZE)
    ModelCard(
        id=folder.name,
        task="detect",
        arch=task.arch,
        classes=task.classes,
        dataset="bench@1",
        input=ModelInput(size=SIZE, mean=mean, std=std),
        created_at="2026-01-01T00:00:00+00:00",
        onnx_max_abs_diff=diff,
    ).write(tmp)
    tmp.rename(folder)


def run(folder: Path, torch_first: bool, app: bool = False) -> dict[str, float | bool]:
    code = CHILD.format(torch=torch_first, app=app, folder=str(folder), size=SIZE)
    child = u.run_child([u.PY, "-c", code], cwd=u.ROOT)
    if child.returncode != 0:
        raise SystemExit(f"child failed ({child.returncode}): {child.stderr[-2000:]}")
    out = json.loads(child.stdout.strip().splitlines()[-1])
    return {**out, "wall_s": child.wall_s, "peak_rss_mb": child.peak_rss_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--build", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build:
        build_model_folder(FOLDER)
        return
    repeats = 1 if u.quick_requested() else args.repeats
    folder = model_folder()
    runs: dict[str, list[dict[str, float | bool]]] = {"ours": [], "torch": [], "app": []}
    for k in range(repeats):
        for name in ("ours", "torch", "app") if k % 2 == 0 else ("app", "torch", "ours"):  # alternate the order
            runs[name].append(run(folder, torch_first=name == "torch", app=name == "app"))
            u.log(name, runs[name][-1])

    def med(name: str, key: str) -> float:
        return u.rnd(statistics.median(float(r[key]) for r in runs[name]))

    result: dict[str, object] = {"bench": "deploy_import", "repeats": repeats, "image": f"{SIZE}x{SIZE}"}
    for name in ("ours", "torch", "app"):
        for key in ("import_s", "load_s", "wall_s", "peak_rss_mb"):
            result[f"{name}_{key}"] = med(name, key)
        result[f"{name}_torch_loaded"] = any(bool(r["torch"]) for r in runs[name])
    result["app_app_import_s"] = med("app", "app_import_s")
    result["import_speedup"] = u.rnd(float(result["torch_import_s"]) / max(float(result["ours_import_s"]), 1e-9))  # type: ignore[arg-type]
    result["targets"] = {"ours_import_s": 1.0, "ours_peak_rss_mb": 150}
    result["met"] = {
        "ours_import_s": float(result["ours_import_s"]) <= 1.0,  # type: ignore[arg-type]
        "ours_peak_rss_mb": float(result["ours_peak_rss_mb"]) <= 150,  # type: ignore[arg-type]
        "no_torch": not result["ours_torch_loaded"],
    }
    result["machine"] = u.machine()
    u.emit(result)


if __name__ == "__main__":
    main()
