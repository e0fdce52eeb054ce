"""int8 models (``export-model --quantize int8``): the file beside model.onnx, its record in model.json, predictions
that agree with fp32, ``--variant int8`` through predict (CLI, Python, REST), evaluate and compare, and the errors:
no int8 file, the torch runtime, no calibration data (the version gone, no training split) → ``--dynamic``."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import gigavision as gv
from gigavision.cli.main import main
from gigavision.datasets.versions import create_version
from gigavision.errors import InvalidInput, NotFound
from gigavision.infer.predictors import loaded_predictor
from gigavision.models import store
from gigavision.models.predict import Predictor
from gigavision.models.quantize import VARIANT_FILES
from gigavision.models.store import ModelInfo
from tests.realdata import digits_version
from tests.seeding import TRAIN_SEED, measured, trained

# test_train_cli's tiny timm ResNet at 16 px, trained until it has learned the digits (8 epochs, lr 1e-2, 400
# images: ~3 s, test accuracy 0.95-0.98 over seeds 0-4): a network that has not learned (1 epoch, accuracy
# 0.1) has near-equal logits whose argmax flips under any rounding (agreement 0.88-0.99), which tests nothing.
RECIPE = {
    "task": "classify",
    "dataset": "digits",
    "arch": "test_resnet",
    "image_size": 16,
    "epochs": 8,
    "lr": 1e-2,
    "batch_size": 32,
}
DIGITS = 400
# top-1 agreement of int8 with fp32 on the 400 digits, measured over seeds 0-4: 0.9975 (one image), 1.0, 1.0,
# 1.0, 1.0; the threshold leaves room for 8 flips
MIN_AGREEMENT = 0.98
MAX_SIZE_RATIO = 0.3  # measured 0.287 (test_resnet's weights int8, the graph's structure stays)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@dataclass(frozen=True)
class Quantized:
    ws: gv.Workspace
    info: ModelInfo  # with its int8 variant
    export: dict[str, object]  # export-model --quantize int8 --json
    images: list[Path]


@pytest.fixture(scope="module")
def quantized(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Quantized]:
    from gigavision.train.recipe import load_recipe
    from gigavision.train.trainer import train

    root = tmp_path_factory.mktemp("quantize")
    ws = gv.init_workspace(root / "ws")
    digits_version(ws, root / "digits", limit=DIGITS, scale=2)
    info = trained("quantize_digits", train(ws, load_recipe(overrides={**RECIPE, "seed": TRAIN_SEED})))
    out = io.StringIO()  # a module fixture has no capsys
    with contextlib.redirect_stdout(out):
        code = main(["-w", str(ws.root), "export-model", info.id, "--quantize", "int8", "--json"])
    assert code == 0, out.getvalue()
    yield Quantized(
        ws, store.get_model(ws, info.id), json.loads(out.getvalue()), sorted((root / "digits").glob("*.png"))
    )
    ws.close()


def _copy_model(ws: gv.Workspace, info: ModelInfo, new_id: str, **card: object) -> ModelInfo:
    """A copy of ``info``'s folder under ``new_id`` without its int8 file, ``card`` fields replaced."""
    target = store.models_dir(ws) / new_id
    shutil.copytree(info.path, target)
    (target / VARIANT_FILES["int8"]).unlink()
    data = json.loads((target / store.MODEL_JSON).read_text())
    data.pop("variants", None)
    data.update(id=new_id, **card)
    (target / store.MODEL_JSON).write_text(json.dumps(data))
    return store.get_model(ws, new_id)


def test_the_int8_file_is_recorded_much_smaller_and_agrees_with_fp32(quantized: Quantized) -> None:
    info, doc = quantized.info, quantized.export
    path = info.path / "model.int8.onnx"
    assert doc["path"] == str(path) and path.is_file()
    record = info.card.variants["int8"]
    # static, calibrated on 128 (the default) of the ~280 images of the model's own training split
    assert record.method == doc["method"] == "static", record.reason
    assert record.calibration_samples == doc["calibration_samples"] == 128
    assert record.calibration_data == "digits@1/train"
    assert record.bytes == path.stat().st_size and record.fp32_bytes == (info.path / "model.onnx").stat().st_size
    assert record.bytes / record.fp32_bytes < MAX_SIZE_RATIO
    assert record.fidelity_db is not None and record.fidelity_db >= 30
    assert not [p.name for p in info.path.iterdir() if p.name.startswith(".")]  # nothing half-written left
    assert "model.int8.onnx" in info.as_dict()["files"] and info.as_dict()["variants"]["int8"]["method"] == "static"

    pixels = [np.asarray(Image.open(p)) for p in quantized.images]
    fp32 = [a.label[0] for a in Predictor(info, "onnx").predict(pixels)]
    int8 = [a.label[0] for a in Predictor(info, "onnx", variant="int8").predict(pixels)]
    agreement = measured("quantize/top1_agreement", float(np.mean([a == b for a, b in zip(fp32, int8, strict=True)])))
    assert agreement >= MIN_AGREEMENT


def test_predict_variant_int8_from_the_cli_python_and_rest(
    quantized: Quantized, capsys: pytest.CaptureFixture[str]
) -> None:
    ws, info = quantized.ws, quantized.info
    images = [str(p) for p in quantized.images[:3]]
    code, out, err = run(capsys, "-w", str(ws.root), "predict", info.id, *images, "--variant", "int8", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert (doc["runtime"], doc["variant"]) == ("onnx", "int8")
    direct = Predictor(info, "onnx", variant="int8").predict([np.asarray(Image.open(p)) for p in images])
    assert [i["annotations"][0]["label"] for i in doc["items"]] == [a.label[0] for a in direct]
    code, out, _ = run(capsys, "-w", str(ws.root), "predict", info.id, images[0], "--json")
    assert code == 0 and "variant" not in json.loads(out)  # fp32 stays the default

    # one cache entry per variant: int8 never answers for fp32
    assert loaded_predictor(info, "onnx", variant="int8") is not loaded_predictor(info, "onnx")
    assert loaded_predictor(info, "onnx", variant="int8").variant == "int8"

    from gigavision.server.main import create_app

    client = TestClient(create_app(ws))
    with Path(images[0]).open("rb") as f:
        resp = client.post("/api/v1/predict", data={"model": info.id, "variant": "int8"}, files={"file": ("d.png", f)})
    assert resp.status_code == 200, resp.text
    assert (resp.json()["variant"], resp.json()["annotations"][0]["label"]) == ("int8", direct[0].label[0])
    bad = client.post("/api/v1/predict", json={"model": info.id, "image_id": "x", "variant": "int4"})
    assert bad.status_code == 400 and "variant" in bad.text
    # a big image goes to a predict job: the variant travels in its parameters
    from gigavision.infer.jobs import predict_params

    params = predict_params({"model": info.id, "runtime": "onnx", "image_id": "a" * 64, "variant": "int8"})
    assert params.variant == "int8" and params.as_params()["variant"] == "int8"
    assert params.request("a" * 64).variant == "int8"


def test_evaluate_and_compare_show_size_speed_and_the_metric_delta(
    quantized: Quantized, capsys: pytest.CaptureFixture[str]
) -> None:
    ws, info = quantized.ws, quantized.info
    code, out, err = run(
        capsys, "-w", str(ws.root), "evaluate", info.id, "-d", "digits@1", "--variant", "int8", "--json"
    )
    assert code == 0, err
    doc = json.loads(out)
    assert (doc["variant"], doc["headline"], doc["split"]) == ("int8", "balanced_accuracy", "test")
    assert doc["file"]["bytes"] == info.card.variants["int8"].bytes and doc["size_ratio"] < MAX_SIZE_RATIO
    assert doc["file"]["method"] == "static" and doc["timing_samples"] > 0
    assert doc["images_per_s"] > 0 and doc["fp32_images_per_s"] > 0 and doc["speedup"] > 0
    # 60 test digits, one flip moves balanced accuracy by ~1.7 points: at most two flips (0 or 1 of 400 measured)
    assert abs(doc["headline_delta_points"]) <= 3.5
    assert doc["delta"]["accuracy"] == pytest.approx(doc["metrics"]["accuracy"] - doc["fp32_metrics"]["accuracy"])
    assert Path(doc["out"], "metrics.json").is_file()  # the int8 evaluation's report

    code, out, err = run(capsys, "-w", str(ws.root), "models", "compare", info.id, "--variant", "int8", "--json")
    assert code == 0, err
    compared = json.loads(out)
    assert (compared["dataset"], compared["metrics"]) == ("digits@1", doc["metrics"])
    code, out, err = run(capsys, "-w", str(ws.root), "models", "compare", info.id, "--variant", "int8")
    assert code == 0 and "int8 vs fp32" in out and "images/s on CPU" in out and "balanced_accuracy (headline)" in out
    code, _, err = run(capsys, "-w", str(ws.root), "models", "compare", info.id, "other", "--variant", "int8")
    assert code == 2 and "name one model" in err


def test_a_missing_int8_file_and_the_torch_runtime_are_refused(
    quantized: Quantized, capsys: pytest.CaptureFixture[str]
) -> None:
    ws, info = quantized.ws, quantized.info
    plain = _copy_model(ws, info, "digits-plain")
    fix = f"gigavision export-model {plain.id} --quantize int8"
    with pytest.raises(NotFound, match=fix):
        Predictor(plain, "onnx", variant="int8")
    image = str(quantized.images[0])
    code, _, err = run(capsys, "-w", str(ws.root), "predict", plain.id, image, "--variant", "int8")
    assert code == 2 and fix in err
    code, _, err = run(capsys, "-w", str(ws.root), "evaluate", plain.id, "-d", "digits@1", "--variant", "int8")
    assert code == 2 and fix in err
    from gigavision.server.main import create_app

    image_id = ws.list_images(0, 1)[0][0].id
    resp = TestClient(create_app(ws)).post(
        "/api/v1/predict", json={"model": plain.id, "image_id": image_id, "variant": "int8"}
    )
    assert resp.status_code == 404 and fix in resp.json()["error"]["message"]
    with pytest.raises(InvalidInput, match="runs on onnxruntime"):
        Predictor(info, "torch", variant="int8")
    code, _, err = run(capsys, "-w", str(ws.root), "predict", info.id, image, "--variant", "int8", "--runtime", "torch")
    assert code == 2 and "runs on onnxruntime" in err
    code, _, err = run(capsys, "-w", str(ws.root), "export-model", info.id, "--quantize", "int4")
    assert code == 2 and "supported: int8" in err
    code, _, err = run(capsys, "-w", str(ws.root), "export-model", info.id, "--dynamic")
    assert code == 2 and "--quantize int8" in err


def test_without_calibration_data_the_error_names_dynamic_which_then_works(
    quantized: Quantized, capsys: pytest.CaptureFixture[str]
) -> None:
    ws, info = quantized.ws, quantized.info
    gone = _copy_model(ws, info, "digits-gone", dataset="gone@1")
    code, _, err = run(capsys, "-w", str(ws.root), "export-model", gone.id, "--quantize", "int8")
    assert code == 2 and "gone@1 is gone" in err and f"export-model {gone.id} --quantize int8 --dynamic" in err
    assert not (gone.path / "model.int8.onnx").exists() and "variants" not in store.get_model(ws, gone.id).as_dict()

    version = create_version(ws, "digits-test-only", split="test=1", dup_distance=None)
    no_train = _copy_model(ws, info, "digits-no-train", dataset=version.ref)
    code, _, err = run(capsys, "-w", str(ws.root), "export-model", no_train.id, "--quantize", "int8")
    assert code == 2 and "no 'train' split" in err and "--dynamic" in err

    code, out, err = run(
        capsys, "-w", str(ws.root), "export-model", gone.id, "--quantize", "int8", "--dynamic", "--json"
    )
    assert code == 0, err
    doc = json.loads(out)
    record = store.get_model(ws, gone.id).card.variants["int8"]
    assert doc["method"] == record.method == "dynamic" and record.reason == "dynamic asked (--dynamic)"
    assert record.calibration_samples == 0 and record.calibration_data is None
    assert record.bytes < 0.35 * record.fp32_bytes  # int8 weights all the same
    predictions = Predictor(store.get_model(ws, gone.id), "onnx", variant="int8").predict(
        [np.asarray(Image.open(quantized.images[0]))]
    )
    assert len(predictions) == 1 and len(predictions[0]) == 1
