"""The one prediction entry point (``infer.request``): a request mixing options that cannot run together is
refused with the same message by the CLI (non-zero exit), ``POST /api/v1/predict`` (400) and a ``predict``
job (failed, the message as its error); plans say whole or tiled and why; one bounded predictor cache that
closes what it evicts is shared by the endpoint and the Dask worker path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import gigavision as gv
from gigavision.cache import LRUCache
from gigavision.cli.main import main
from gigavision.errors import InvalidInput
from gigavision.images.registry import open_image
from gigavision.infer.request import PredictRequest
from gigavision.server.main import create_app
from tests.conftest import DETECT_SIZE, Trained

MODEL = "boxes-detect-1"


def _model_record(ws: gv.Workspace, model_id: str = MODEL, **input_: Any) -> None:
    """A detect model's record with neither checkpoint nor ONNX file: every refusal here comes before a model
    would be loaded."""
    folder = ws.root / "models" / model_id
    folder.mkdir(parents=True)
    record = {
        "id": model_id,
        "task": "detect",
        "arch": "fcos_tiny",
        "classes": ["coin"],
        "dataset": "boxes@1",
        "input": {"size": 64, "mean": [0.5] * 3, "std": [0.25] * 3, **input_},
        "created_at": "2024-01-01T00:00:00+00:00",
    }
    (folder / "model.json").write_text(json.dumps(record), encoding="utf-8")


def _image(path: Path, width: int = 192, height: int = 128) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(path)
    return path


MISSING_ONNX = f"model {MODEL} has no model.onnx: run 'gigavision export-model {MODEL}'"
NO_LEVEL = "has levels 0..0; level 5 does not exist"


def test_incompatible_requests_get_one_message_from_cli_rest_and_jobs(
    sqlite_workspace: gv.Workspace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ws = sqlite_workspace
    _model_record(ws)
    (added,) = ws.ingest([_image(tmp_path / "img.png")])
    assert added.id is not None
    root = str(ws.root)

    def cli(*args: str) -> str:
        assert main(["-w", root, "predict", MODEL, added.id or "", *args]) != 0
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: "), err  # one line, no traceback
        return err.removeprefix("error: ").rstrip("\n")

    client = TestClient(create_app(ws))

    def rest(**fields: Any) -> str:
        resp = client.post("/api/v1/predict", json={"model": MODEL, "image_id": added.id, **fields})
        assert resp.status_code == 400, resp.text
        message: str = resp.json()["error"]["message"]
        return message

    def job(**options: Any) -> str:
        params = {"model": MODEL, "runtime": "torch", "image_id": added.id, "options": options}
        params.update(options.pop("params", {}))
        with pytest.raises(InvalidInput) as raised:
            ws.jobs.run("predict", params, "ana")
        failed = {j["error"] for j in ws.jobs.list_jobs(kind="predict", status="failed")[0]}
        assert str(raised.value) in failed  # recorded as the job's error
        return str(raised.value)

    # runtime onnx on a model without model.onnx
    messages = {cli("--runtime", "onnx"), rest(runtime="onnx"), job(params={"runtime": "onnx"})}
    assert len(messages) == 1 and MISSING_ONNX in messages.pop()
    # a level the image lacks (a 192×128 PNG has one)
    messages = {cli("--level", "5"), rest(level=5), job(level=5, overlap=16)}
    assert len(messages) == 1 and NO_LEVEL in messages.pop()
    # zoom-in with Dask (only the CLI can ask both): refused before anything is read
    assert "--zoom-in and --dask cannot be combined" in cli("--zoom-in", "topk=2", "--dask", "local")
    assert ws.jobs.list_jobs(kind="predict", status="queued")[1] == 0  # the endpoint queued nothing


def test_the_request_checks_itself_and_plans_whole_or_tiled(sqlite_workspace: gv.Workspace, tmp_path: Path) -> None:
    ws = sqlite_workspace
    _model_record(ws)
    _model_record(ws, "patches-detect-1", patch={"size": 64, "level": 0})
    for bad, message in [
        ({"zoom": "topk=2", "dask": "local"}, "--zoom-in and --dask cannot be combined"),
        ({"runtime": "tf"}, "runtime must be one of auto, torch, onnx"),
        ({"tile": 64, "overlap": 64}, "--overlap 64 must be smaller than --tile 64"),
        ({"zoom": "topk=0"}, "topk must be ≥ 1"),
        ({"dask": "nowhere"}, "expected a scheduler address"),
        ({"side": {"md": float("nan")}}, "side feature 'md' must be a finite number"),
    ]:
        with pytest.raises(InvalidInput, match=message):
            PredictRequest(model=MODEL, images=("x.png",), **bad)
    with pytest.raises(InvalidInput, match=f"model {MODEL} is a detect model, not segment"):
        PredictRequest(model=MODEL, task="segment").resolve(ws)
    with pytest.raises(InvalidInput, match="--tile 128 is larger than the 64×64 patches"):
        PredictRequest(model="patches-detect-1", tile=128).resolve(ws)

    prediction = PredictRequest(model=MODEL).resolve(ws)
    assert prediction.runtime == "torch"  # auto: no model.onnx
    assert prediction.options.overlap == 16  # 64 px at most, and at most a quarter of the 64-px window
    with open_image(_image(tmp_path / "small.png")) as source:
        assert not prediction.plan(source).tiled
        assert PredictRequest(model=MODEL, tile=64).resolve(ws).plan(source).tiled
        plan = PredictRequest(model="patches-detect-1").resolve(ws).plan(source)
        assert plan.tiled and "patches" in plan.reason
    (ws.root / "models" / MODEL / "model.onnx").write_bytes(b"")
    assert PredictRequest(model=MODEL).resolve(ws).runtime == "onnx"  # auto: the model has its ONNX file


def test_a_big_image_without_tiling_options_is_planned_tiled(
    sqlite_workspace: gv.Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _model_record(sqlite_workspace)
    monkeypatch.setattr("gigavision.models.predict.MAX_PREDICT_PIXELS", 20_000)  # under 192×128
    with open_image(_image(tmp_path / "big.png")) as source:
        plan = PredictRequest(model=MODEL).resolve(sqlite_workspace).plan(source)
    assert plan.tiled and "no level small enough" in plan.reason


class _Closable:
    def __init__(self, name: str) -> None:
        self.name, self.closed = name, False

    def close(self) -> None:
        self.closed = True


def test_lru_cache_keeps_the_recent_ones_and_closes_what_it_evicts() -> None:
    cache: LRUCache[str, _Closable] = LRUCache(2)
    made: list[str] = []

    def make(name: str) -> _Closable:
        made.append(name)
        return _Closable(name)

    a = cache.get_or_create("a", lambda: make("a"))
    b = cache.get_or_create("b", lambda: make("b"))
    assert cache.get_or_create("a", lambda: make("a")) is a  # kept, made once; now the most recent
    c = cache.get_or_create("c", lambda: make("c"))
    assert made == ["a", "b", "c"] and b.closed and not a.closed and not c.closed
    assert "b" not in cache and len(cache) == 2
    replacement = _Closable("a2")
    cache.put("a", replacement)
    assert a.closed and cache.get("a") is replacement
    cache.clear()
    assert replacement.closed and c.closed and len(cache) == 0
    with pytest.raises(ValueError):
        LRUCache(0)


def test_the_endpoint_and_the_dask_workers_share_one_predictor_cache(scenes_detector: Trained, tmp_path: Path) -> None:
    from gigavision.infer.distributed import worker_predictor
    from gigavision.infer.predictors import PREDICTORS, loaded_predictor, predictor_key

    ws, info = scenes_detector.ws, scenes_detector.info
    path = _image(tmp_path / "one.png", DETECT_SIZE, DETECT_SIZE)
    with path.open("rb") as f:
        resp = TestClient(create_app(ws)).post(
            "/api/v1/predict", data={"model": info.id}, files={"file": ("one.png", f, "image/png")}
        )
    assert resp.status_code == 200 and resp.json()["runtime"] == "onnx", resp.text
    key = predictor_key(info, "onnx")
    assert key in PREDICTORS
    loaded = PREDICTORS.get(key)
    assert worker_predictor(info, "onnx", "cpu") is loaded is loaded_predictor(info, "onnx")


def test_the_cli_runs_the_onnx_file_by_default(
    scenes_detector: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ws, info = scenes_detector.ws, scenes_detector.info
    from tests.scenes import make_scenes

    path = str(tmp_path / "scene.png")
    Image.fromarray(make_scenes(1, DETECT_SIZE, seed=83)[0].pixels).save(path)
    docs = {}
    for runtime in ("auto", "torch"):
        assert main(["-w", str(ws.root), "predict", info.id, path, "--runtime", runtime, "--json"]) == 0
        docs[runtime] = json.loads(capsys.readouterr().out)
    assert main(["-w", str(ws.root), "predict", info.id, path, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == docs["auto"]  # auto is the default
    assert (docs["auto"]["runtime"], docs["torch"]["runtime"]) == ("onnx", "torch")
    onnx, torch = (docs[k]["items"][0]["annotations"] for k in ("auto", "torch"))
    assert [a["label"] for a in onnx] == [a["label"] for a in torch] and onnx
    assert [a["score"] for a in onnx] == pytest.approx([a["score"] for a in torch], abs=1e-3)
