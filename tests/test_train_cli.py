"""The training CLI end to end on real digits: train → models list/show → predict (torch = onnx) → store →
evaluate (= the stored test metrics) → export-model → sweep → compare → remove, and one-line bad-input errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

import gigavision as gv
from gigavision.cli.main import main
from gigavision.models import predict as predict_module
from tests.realdata import digits_version
from tests.seeding import TRAIN_SEED

# A tiny timm ResNet at 16 px, one epoch: seconds on 2 cores. The checks are about plumbing, not accuracy.
TINY = [
    "--model",
    "test_resnet",
    "--image-size",
    "16",
    "--epochs",
    "1",
    "--batch-size",
    "64",
    "--set",
    f"seed={TRAIN_SEED}",
]


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def digits_ws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("train-cli")
    ws = gv.init_workspace(root / "ws")
    digits_version(ws, root / "digits", limit=200)
    ws.close()
    yield str(root / "ws"), root / "digits"


@pytest.fixture(scope="module")
def trained(digits_ws: tuple[str, Path]) -> dict[str, object]:
    """One model trained through the CLI (module scope: later tests reuse it)."""
    ws, _ = digits_ws
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["-w", ws, "train", "classify", "--dataset", "digits@1", *TINY, "--json"])
    assert code == 0
    info: dict[str, object] = json.loads(out.getvalue())
    return info


def test_train_list_show(
    digits_ws: tuple[str, Path], trained: dict[str, object], capsys: pytest.CaptureFixture[str]
) -> None:
    ws, _ = digits_ws
    assert trained["id"] == "digits-classify-1" and trained["dataset"] == "digits@1"
    assert trained["classes"] == [str(d) for d in range(10)]
    assert {"checkpoint.pt", "model.onnx", "model.json", "metrics.json", "report.html"} <= set(trained["files"])  # type: ignore[arg-type]
    assert Path(str(trained["path"])).is_dir() and not (Path(ws) / "runs" / "digits-classify-1").exists()
    code, out, _ = run(capsys, "-w", ws, "models", "list", "--json")
    assert code == 0 and [m["id"] for m in json.loads(out)["items"]] == ["digits-classify-1"]
    code, out, _ = run(capsys, "-w", ws, "models", "show", "digits-classify-1")
    assert code == 0 and "accuracy on test" in out and "classes (10)" in out


def test_predict_torch_and_onnx_agree_and_store(
    digits_ws: tuple[str, Path], trained: dict[str, object], capsys: pytest.CaptureFixture[str]
) -> None:
    ws, folder = digits_ws
    files = sorted(str(p) for p in folder.glob("*.png"))[:6]
    results = {}
    for runtime in ("torch", "onnx"):
        code, out, err = run(capsys, "-w", ws, "predict", "digits-classify-1", *files, "--runtime", runtime, "--json")
        assert code == 0, err
        results[runtime] = json.loads(out)["items"]
    for a, b in zip(results["torch"], results["onnx"], strict=True):
        assert a["input"] == b["input"] and a["image_id"] and (a["width"], a["height"]) == (16, 16)
        (ra,), (rb,) = a["annotations"], b["annotations"]
        assert ra["kind"] == "tag" and ra["label"] == rb["label"] and ra["source"] == "model:digits-classify-1"
        assert abs(ra["score"] - rb["score"]) <= 1e-4
        sa, sb = ra["attributes"]["scores"], rb["attributes"]["scores"]
        assert max(abs(sa[k] - sb[k]) for k in sa) <= 1e-4
        assert ra["score"] == pytest.approx(max(sa.values()), abs=1e-6)

    # by workspace image id, stored as proposals of the model (the per-class scores stay out of the schema)
    image_id = results["torch"][0]["image_id"]
    out_file = Path(ws) / "predictions-out" / "pred.json"  # its folder does not exist yet (issue 11)
    code, out, err = run(capsys, "-w", ws, "predict", "digits-classify-1", image_id, "--store", "--out", str(out_file))
    assert code == 0, err
    assert out.startswith(f"{image_id}: {results['torch'][0]['annotations'][0]['label']} ")
    assert json.loads(out_file.read_text())["stored"]["added"] == 1
    with gv.open_workspace(ws) as w:
        stored = w.annotations.query(image_id)
    model_rows = [i for i in range(len(stored)) if stored.source[i] == "model:digits-classify-1"]
    assert len(model_rows) == 1 and stored.status[model_rows[0]] == "proposed"
    # issue 11: whole-image predictions carry the engine's class uncertainty and the model id, kept when stored
    from gigavision.metrics.uncertainty import class_uncertainty

    (predicted,) = json.loads(out_file.read_text())["items"][0]["annotations"]
    probs = np.asarray([list(predicted["attributes"]["scores"].values())])
    assert predicted["attributes"]["uncertainty"] == pytest.approx(float(class_uncertainty(probs)[0]), abs=1e-6)
    assert predicted["attributes"]["model"] == "digits-classify-1"
    kept = stored.attributes[model_rows[0]]
    assert kept == {"model": "digits-classify-1", "uncertainty": predicted["attributes"]["uncertainty"]}

    # a file that is not in the workspace cannot be stored; a missing one is named
    outside = Path(ws).parent / "outside.png"
    from PIL import Image

    Image.fromarray(np.full((20, 30), 200, dtype=np.uint8)).save(outside)
    code, _, err = run(capsys, "-w", ws, "predict", "digits-classify-1", str(outside), "--store")
    assert code == 2 and "ingest them first" in err and str(outside) in err
    code, _, err = run(capsys, "-w", ws, "predict", "digits-classify-1", str(outside) + ".missing")
    assert code == 2 and "no such image file" in err


def test_predict_tiles_images_too_big_to_read_whole(
    digits_ws: tuple[str, Path],
    trained: dict[str, object],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An image with no level small enough to decode whole is never decoded whole: the one prediction entry
    point plans tiled inference for it (this test used to expect a refusal, which only happened because the
    engine's per-window preprocessing applied the whole-image cap to each 16 × 16 window)."""
    ws, folder = digits_ws
    monkeypatch.setattr(predict_module, "MAX_PREDICT_PIXELS", 100)  # a 16×16 digit stands in for a gigapixel scan
    code, out, err = run(capsys, "-w", ws, "predict", "digits-classify-1", str(next(folder.glob("*.png"))))
    assert code == 0 and "(1/1 windows run, 0 background" in out and "heatmap:" in out, err
    from gigavision.errors import LimitExceeded
    from gigavision.models.store import get_model

    with gv.open_workspace(ws) as opened, pytest.raises(LimitExceeded, match="run tiled inference"):
        # a whole array handed over in Python is still refused over the cap, naming the way out
        predict_module.Predictor(get_model(opened, "digits-classify-1"), "onnx").predict([np.zeros((16, 16), np.uint8)])


def test_evaluate_matches_training_metrics_and_export(
    digits_ws: tuple[str, Path], trained: dict[str, object], capsys: pytest.CaptureFixture[str]
) -> None:
    ws, _ = digits_ws
    out_dir = Path(ws).parent / "eval-out"
    code, out, err = run(
        capsys, "-w", ws, "evaluate", "digits-classify-1", "--dataset", "digits@1", "--out", str(out_dir), "--json"
    )
    assert code == 0, err
    result = json.loads(out)
    stored = trained["metrics"]
    assert isinstance(stored, dict)
    assert result["headline"] == "balanced_accuracy" and result["metrics"]["accuracy"] == pytest.approx(
        stored["accuracy"]
    )
    assert result["metrics"]["roc_auc"] == pytest.approx(stored["roc_auc"])
    assert json.loads((out_dir / "metrics.json").read_text())["split"] == "test"
    assert "<svg" in (out_dir / "report.html").read_text()
    code, out, err = run(capsys, "-w", ws, "evaluate", "digits-classify-1", "--dataset", "digits@1", "--split", "val")
    assert code == 0, err
    assert (Path(ws) / "evaluations" / "digits-classify-1-digits@1-val" / "report.html").is_file()
    assert "accuracy" in out

    # export: a missing ONNX file is rebuilt from the checkpoint, then copied where asked
    model_dir = Path(str(trained["path"]))
    (model_dir / "model.onnx").unlink()
    target = Path(ws).parent / "deploy.onnx"
    code, out, err = run(capsys, "-w", ws, "export-model", "digits-classify-1", "--out", str(target), "--json")
    assert code == 0, err
    exported = json.loads(out)
    assert exported["re_exported"] is True and exported["max_abs_diff"] <= 1e-4
    assert target.is_file() and (model_dir / "model.onnx").read_bytes() == target.read_bytes()
    code, _, err = run(capsys, "-w", ws, "export-model", "digits-classify-1", "--format", "tflite")
    assert code == 2 and "onnx" in err
    # issue 11: --out into folders that do not exist yet; a folder gets model.onnx; a file in the way is one line
    nested = Path(ws).parent / "deploy" / "v1" / "model.onnx"
    code, out, err = run(capsys, "-w", ws, "export-model", "digits-classify-1", "--out", str(nested), "--json")
    assert code == 0, err
    assert json.loads(out)["path"] == str(nested) and nested.read_bytes() == target.read_bytes()
    code, out, err = run(capsys, "-w", ws, "export-model", "digits-classify-1", "--out", str(nested.parent), "--json")
    assert code == 0 and json.loads(out)["path"] == str(nested), err
    code, out, err = run(capsys, "-w", ws, "export-model", "digits-classify-1", "--out", str(target / "model.onnx"))
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and str(target) in err, err


def test_sweep_compare_remove(
    digits_ws: tuple[str, Path], trained: dict[str, object], capsys: pytest.CaptureFixture[str]
) -> None:
    ws, _ = digits_ws
    args = ["-w", ws, "sweep", "classify", "--dataset", "digits@1", *TINY, "--trials", "2", "--json"]
    code, out, err = run(capsys, *args, "--space", "lr=0.001:0.01:log", "--space", "augment.hflip=true,false")
    assert code == 0, err
    summary = json.loads(out)
    best = summary["best"]
    assert len(summary["trials"]) == 2 and best["value"] == max(t["value"] for t in summary["trials"])
    assert all(0.001 <= t["params"]["lr"] <= 0.01 and t["split"] == "val" for t in summary["trials"])
    # only the best trial's model is kept
    code, out, _ = run(capsys, "-w", ws, "models", "list", "--json")
    ids = {m["id"] for m in json.loads(out)["items"]}
    assert ids == {"digits-classify-1", best["model"]}
    assert (Path(ws) / "sweeps" / f"{summary['study']}.json").is_file()

    # both stored metrics are on digits@1 (test): compared as stored, nothing re-evaluated
    code, out, err = run(capsys, "-w", ws, "models", "compare", "digits-classify-1", best["model"], "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["same_data"] is True and doc["headline"] == "balanced_accuracy"
    # on another split both are scored now
    code, out, err = run(
        capsys, "-w", ws, "models", "compare", "digits-classify-1", best["model"], "-d", "digits@1", "--split", "val"
    )
    assert code == 0, err
    assert "both evaluated on digits@1 (val)" in out

    code, _, err = run(capsys, "-w", ws, "models", "remove", best["model"])
    assert code == 0 and not (Path(ws) / "models" / best["model"]).exists()
    code, _, err = run(capsys, "-w", ws, "sweep", "classify", "--dataset", "digits@1", "--space", "lrr=0.1:1")
    assert code == 2 and "lrr: unknown field" in err


def test_bad_input_is_one_line(digits_ws: tuple[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    ws, _ = digits_ws
    recipe = Path(ws).parent / "typo.toml"
    recipe.write_text('task = "classify"\ndataset = "digits@1"\nepochz = 3\n')
    cases = [
        (["models", "show", "no-such-model"], "no model 'no-such-model'"),
        (["predict", "no-such-model", "x.png"], "no model 'no-such-model'"),
        (["train", "--recipe", str(recipe)], "epochz: unknown field"),
        (["train", "clasify", "--dataset", "digits@1"], "unknown task 'clasify'"),
        (["train", "classify", "--dataset", "nope@1"], "nope"),
        (["train", "classify", "--dataset", "digits@1", "--set", "augment.flip=true"], "augment.flip: unknown field"),
        (["train", "--resume", "never-started"], "no interrupted run 'never-started'"),
        (["train", "classify", "--resume", "x", "--epochs", "3"], "drop epochs"),
        (["models", "remove", "../etc"], "not valid"),
    ]
    if not torch.cuda.is_available():
        cases.append((["train", "classify", "--dataset", "digits@1", "--devices", "4"], "has none"))
    for args, message in cases:
        code, _, err = run(capsys, "-w", ws, *args)
        assert code == 2, (args, err)
        assert message in err and len(err.strip().splitlines()) == 1, (args, err)
        assert "Traceback" not in err
    if not torch.cuda.is_available():
        assert "GPU" in run(capsys, "-w", ws, "train", "classify", "-d", "digits@1", "--devices", "4")[2]


def test_predictor_matches_the_evaluation_path(digits_ws: tuple[str, Path], trained: dict[str, object]) -> None:
    """``predict`` preprocesses exactly like training's evaluation: same scores on the test split."""
    from gigavision.datasets.versions import open_version
    from gigavision.models.predict import Predictor, predict_files
    from gigavision.models.store import get_model
    from gigavision.train.data import split_data
    from gigavision.train.evaluate import predict_split
    from gigavision.train.transforms import build_transform

    with gv.open_workspace(digits_ws[0]) as ws:
        info = get_model(ws, "digits-classify-1")
        task, net = info.load_network()
        transform = build_transform(None, info.input.mean, info.input.std, info.input.size)
        data = split_data(task, open_version(ws, "digits@1"), info.recipe(), "test", transform, training=False)
        _, expected = predict_split(task, net, data, 64)
        got = predict_files(Predictor(info, "onnx"), data.ids, ws)
    scores = np.array([[g.annotations.attributes[0]["scores"][c] for c in info.classes] for g in got])
    want = np.array([[e.attributes[0]["scores"][c] for c in info.classes] for e in expected])
    assert len(got) == len(data.ids) > 0 and np.abs(scores - want).max() <= 1e-4


def test_onnx_graph_with_a_static_batch_is_fed_in_chunks(
    digits_ws: tuple[str, Path], trained: dict[str, object], tmp_path: Path
) -> None:
    """Graphs exported without a dynamic batch axis (Faster R-CNN) still predict any number of images."""
    import shutil

    from gigavision.models import store

    ws = gv.open_workspace(digits_ws[0])
    info = store.get_model(ws, "digits-classify-1")
    copy = tmp_path / info.id
    shutil.copytree(info.path, copy)
    _, net = info.load_network()
    torch.onnx.export(
        net, (torch.zeros(2, 3, 16, 16),), str(copy / store.ONNX_FILE), input_names=["images"], dynamo=False
    )
    static = store.ModelInfo(**{**info.__dict__, "path": copy})
    from PIL import Image

    arrays = [np.asarray(Image.open(p)) for p in sorted(digits_ws[1].glob("*.png"))[:5]]
    onnx_pred = predict_module.Predictor(static, runtime="onnx").predict(arrays)
    torch_pred = predict_module.Predictor(info, runtime="torch").predict(arrays)
    assert len(onnx_pred) == len(torch_pred) == 5
    for a, b in zip(onnx_pred, torch_pred, strict=True):
        assert list(a.label) == list(b.label)
        assert np.allclose(a.score, b.score, atol=1e-4)
    ws.close()
