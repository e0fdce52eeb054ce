"""Balanced and centred patch samplers on a dataset without outlined background (docs/training.md's recipe).

Classify and segment on patches add the class ``background`` for what no shape covers. The object samplers
used to require shapes labelled ``background`` too, so ``sampler = "balanced"`` failed on any dataset that
outlines only its objects ("no boxes, polygons, masks or points labelled ['background']").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import gigavision as gv
from gigavision.datasets.patches import PatchImages
from gigavision.datasets.versions import create_version
from gigavision.train.data import patch_sampler
from gigavision.train.recipe import load_recipe
from tests.scenes import scenes_version


@pytest.mark.parametrize("sampler", ["balanced", "centred"])
def test_object_samplers_need_no_background_shapes(
    sqlite_workspace: gv.Workspace, tmp_path: Path, sampler: str
) -> None:
    version = scenes_version(sqlite_workspace, tmp_path / "scenes", n=8, size=96, seed=0, split="train=1")
    images = PatchImages.from_version(version, "train")
    classes = ["background", "coin", "digit", "horse"]  # what classify on patches learns
    recipe = load_recipe(
        overrides={
            "task": "classify",
            "dataset": version.ref,
            "patch": {"size": 32, "sampler": sampler, "per_epoch": 24},
        }
    )
    patches = patch_sampler(images, recipe, training=True, classes=classes)
    assert len(patches) > 0
    first = patches[0]
    assert np.asarray(first.pixels).shape[:2] == (32, 32)
    assert set(first.annotations.label.tolist()) <= set(classes) - {"background"}


def test_outlined_background_is_sampled_like_any_class(sqlite_workspace: gv.Workspace, tmp_path: Path) -> None:
    ws = sqlite_workspace
    version = scenes_version(ws, tmp_path / "scenes", n=4, size=96, seed=0, split="train=1")
    ws.labels.set("background", "box")
    for entry in version.images():
        ws.annotations.add(
            entry.id, gv.Annotations.from_boxes([[0, 0, 8, 8]], ["background"], status=["accepted"]), "t"
        )
    version = create_version(ws, "scenes", split="train=1", dup_distance=None)
    images = PatchImages.from_version(version, "train")
    recipe = load_recipe(
        overrides={
            "task": "classify",
            "dataset": version.ref,
            "patch": {"size": 32, "sampler": "balanced", "per_epoch": 40},
        }
    )
    patches = patch_sampler(images, recipe, training=True, classes=["background", "coin", "digit", "horse"])
    assert "background" in patches.classes  # type: ignore[attr-defined]
