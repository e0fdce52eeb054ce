"""Training on a 20,000 × 20,000 pyramid through the patch sampler, in bounded memory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import gigavision as gv
from gigavision.datasets.versions import create_version
from tests.bigscene import planted_scene
from tests.conftest import building
from tests.seeding import TRAIN_SEED, measured

pytestmark = pytest.mark.slow

TRAIN = """
import json, resource, sys
import gigavision as gv
from gigavision.train.recipe import load_recipe
from gigavision.train.trainer import train

def high_water_kb():
    # VmHWM is this process's own peak; ru_maxrss would carry over a big parent's peak across exec
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))

before = high_water_kb()
ws = gv.open_workspace(sys.argv[1])
info = train(ws, load_recipe(base=json.loads(sys.argv[2])))
peak = high_water_kb()
workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the largest DataLoader worker (forked)
print(json.dumps({"metrics": info.metrics, "before_kb": before, "peak_kb": peak, "workers_kb": workers}))
"""


def test_patch_training_on_a_gigapixel_scene_in_bounded_memory(fixture_cache: Path, tmp_path: Path) -> None:
    with building(fixture_cache):
        big = planted_scene(fixture_cache / "planted_20000.tif", 20_000, 20_000, seed=0)
        small = planted_scene(fixture_cache / "planted_3000.tif", 3_000, 3_000, seed=1, cell=500)
    ws = gv.init_workspace(tmp_path / "ws")
    ws.labels.set("coin", "box")
    ws.labels.set("background", "box")
    ids = {}
    for scene in (big, small):
        (result,) = ws.ingest([scene.path])
        assert result.status == "added", result
        assert result.id is not None
        ids[scene.width] = result.id
        ann = gv.Annotations.from_boxes(scene.boxes, scene.labels, status=["accepted"] * len(scene.boxes))
        ws.annotations.add(result.id, ann, "test")
    version = create_version(ws, "planted", split="train=0.5,test=0.5", dup_distance=None)
    where = {e.id: e.split for e in version.images()}
    train_split, test_split = where[ids[20_000]], where[ids[3_000]]
    assert {train_split, test_split} == {"train", "test"}
    ws.close()

    recipe = {
        "task": "classify",
        "dataset": "planted@1",
        "arch": "resnet10t",
        "epochs": 6,
        "batch_size": 32,
        "lr": 3e-3,
        "seed": TRAIN_SEED,
        "train_split": train_split,
        "val_split": test_split,
        "test_split": test_split,
        "num_workers": 2,  # each DataLoader worker opens its own workspace and pyramid readers
        "augment": {"vflip": True, "rotate90": True},
        "patch": {
            "size": 64,
            "level": 1,
            "sampler": "balanced",
            "per_epoch": 512,
            "min_foreground": 0.0,
            "min_visible": 0.5,
        },
    }
    proc = subprocess.run(
        [sys.executable, "-c", TRAIN, str(tmp_path / "ws"), json.dumps(recipe)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    # 20,000² RGB decoded would be 1.2 GB: training reads only the patches' tiles
    grown_mb = (out["peak_kb"] - out["before_kb"]) / 1024
    assert grown_mb < 900, f"training grew RSS by {grown_mb:.0f} MB"
    worker_mb = (out["workers_kb"] - out["before_kb"]) / 1024  # forked workers start from the parent's pages
    assert worker_mb < 900, f"a DataLoader worker grew to {worker_mb:.0f} MB over the parent's start"
    metrics = out["metrics"]
    # coins vs bare gravel over the test image's grid; seeds 0-4: 0.806-0.996
    assert measured("gigapixel.balanced_accuracy", metrics["balanced_accuracy"]) >= 0.7, metrics
