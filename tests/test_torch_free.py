"""Deployment with onnxruntime never imports torch: ``gigavision predict --runtime onnx`` (whole and tiled: the
engine Dask workers run) and ``POST /api/v1/predict`` run in a fresh interpreter that ends without ``torch`` in
``sys.modules`` (the task's torch-free half decodes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from PIL import Image

from tests.conftest import Trained
from tests.scenes import make_scenes

SCRIPT = """
import contextlib, io, json, sys
from gigavision.cli.main import main

ws_path, model, image = sys.argv[1:4]
out = io.StringIO()
with contextlib.redirect_stdout(out):
    code = main(["-w", ws_path, "predict", model, image, "--runtime", "onnx", "--json"])
assert code == 0, code
cli = json.loads(out.getvalue())
tiled_out = io.StringIO()
with contextlib.redirect_stdout(tiled_out):  # the tiled engine, as Dask workers run it
    code = main(["-w", ws_path, "predict", model, image, "--runtime", "onnx", "--tile", "64", "--json"])
assert code == 0, code
tiled = json.loads(tiled_out.getvalue())
after_cli = "torch" in sys.modules

from fastapi.testclient import TestClient
import gigavision as gv
from gigavision.server.main import create_app

ws = gv.open_workspace(ws_path)
with open(image, "rb") as f, TestClient(create_app(ws)) as client:
    r = client.post("/api/v1/predict", data={"model": model, "runtime": "onnx"}, files={"file": ("s.png", f)})
assert r.status_code == 200, r.text
ws.close()
result = {"cli": cli, "tiled": tiled, "rest": r.json(), "torch_after_cli": after_cli, "torch": "torch" in sys.modules}
print(json.dumps(result))
"""


def _labels(records: list[dict[str, object]]) -> list[object]:
    return sorted(str(r["label"]) for r in records)


def test_onnx_prediction_through_the_cli_and_rest_never_imports_torch(scenes_detector: Trained, tmp_path: Path) -> None:
    ws, info = scenes_detector.ws, scenes_detector.info
    assert (info.path / "model.onnx").is_file()
    image = tmp_path / "scene.png"
    Image.fromarray(make_scenes(1, info.input.size, seed=99)[0].pixels).save(image)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(ws.root), info.id, str(image)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["torch_after_cli"] is False and result["torch"] is False
    cli = result["cli"]["items"][0]["annotations"]
    rest = result["rest"]["annotations"]
    assert result["rest"]["runtime"] == "onnx"
    assert len(rest) > 0 and _labels(cli) == _labels(rest)  # the same objects found both ways
    tiles = result["tiled"]["items"][0]["tiles"]
    assert tiles["run"] == tiles["total"] > 1 and tiles["failed"] == 0  # the tiled engine ran every window
