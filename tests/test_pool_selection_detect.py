"""``active select`` with a detector (issue 14, item 2): the session's trained detector runs over a pool that
has no stored predictions, images with stored predictions keep them (the network is not run on them again,
and the score is the one a fresh prediction gives), and an image too big to predict whole is left out with a
note pointing to region selection."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

import gigavision as gv
from gigavision.active.pool_selection import SelectRequest, select_images
from gigavision.cli.main import main
from gigavision.errors import InvalidInput
from gigavision.models import predict as model_predict
from tests.conftest import DETECT_SIZE, Trained
from tests.scenes import make_scenes


def test_a_detector_scores_a_fresh_pool_and_reuses_stored_predictions(
    scenes_detector: Trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "src"
    folder.mkdir()
    paths = []
    for i, scene in enumerate(make_scenes(6, DETECT_SIZE, seed=11)):  # not the training scenes (seed 0)
        paths.append(folder / f"small-{i}.png")
        Image.fromarray(scene.pixels).save(paths[-1])
    (big_scene,) = make_scenes(1, 4 * DETECT_SIZE, seed=12)
    paths.append(folder / "big.png")
    Image.fromarray(big_scene.pixels).save(paths[-1])
    # under a lowered limit the 512² scene is too big to predict whole (the coarsest level at least 128 across
    # that a PNG offers is 256², 65,536 pixels); the 128² scenes are not
    monkeypatch.setattr(model_predict, "MAX_PREDICT_PIXELS", 50_000)
    ran: list[str] = []  # the images the network is run on
    predict = model_predict.Predictor.predict

    def counting(self: model_predict.Predictor, images: Any, *args: Any, **kwargs: Any) -> Any:
        ran.extend(kwargs.get("names") or [])
        return predict(self, images, *args, **kwargs)

    monkeypatch.setattr(model_predict.Predictor, "predict", counting)
    ws = gv.init_workspace(tmp_path / "ws")
    try:
        info = scenes_detector.info
        shutil.copytree(info.path, ws.root / "models" / info.id)
        ids = [r.id for r in ws.ingest(paths)]
        small, big = ids[:6], ids[6]
        # a fresh pool: the detector runs over the small images, with progress; the big one is left out
        seen: list[tuple[int, int, str]] = []
        everything = SelectRequest(budget=7, strategy="margin", model=info.id, create_tasks=False)
        first = select_images(ws, everything, actor="t", progress=lambda d, t, m="": seen.append((d, t, m)))
        fresh = {p["image_id"]: p["uncertainty"] for p in first["selected"]}
        assert sorted(ran) == sorted(small) and set(fresh) == set(small)
        assert (7, 7, f"model {info.id}") in seen
        assert first["pool"]["unscored"] == 1 and f"active regions --model {info.id}" in first["notes"][0]
        assert max(fresh.values()) > 0.1  # the trained detector is unsure of something in unseen scenes
        # stored predictions (gigavision predict --store) are read, not recomputed, and score the same
        assert main(["-w", str(ws.root), "predict", info.id, small[0], small[1], "--store", "--json"]) == 0
        capsys.readouterr()
        ran.clear()
        second = select_images(ws, everything, actor="t")
        assert sorted(ran) == sorted(small[2:])
        again = {p["image_id"]: p["uncertainty"] for p in second["selected"]}
        assert again == pytest.approx(fresh, abs=1e-4)  # ONNX (predict's auto runtime) vs torch: float noise
        # tasks for the most unsure; the command line says the same
        args = ["-w", str(ws.root), "active", "select", "-m", info.id, "-n", "2", "-s", "margin", "--json"]
        assert main(args) == 0
        done = json.loads(capsys.readouterr().out)
        assert done["tasks_created"] == 2 and big not in {p["image_id"] for p in done["selected"]}
        top = sorted(fresh, key=lambda i: -fresh[i])[:2]
        assert {p["image_id"] for p in done["selected"]} == set(top)
        # a pool of only images too big to predict whole: an error naming what to run instead
        with pytest.raises(InvalidInput, match="active regions"):
            select_images(
                ws, SelectRequest(budget=1, strategy="margin", model=info.id, pool=("image=big*",)), actor="t"
            )
    finally:
        ws.close()
