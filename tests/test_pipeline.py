"""Pipelines (detect → crop → classify / embed / segment) on real scenes: published self-contained, predicted by the
CLI, the REST endpoint and the tiled engine with exactly the outputs of the detector then the stage models on the
crops by hand, evaluated per stage and end to end, and every bad declaration refused naming the file, field or
stage."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from fastapi.testclient import TestClient
from PIL import Image

import gigavision as gv
from gigavision.annotations import Annotations
from gigavision.cli.main import main
from gigavision.errors import InvalidInput, NotFound
from gigavision.images.registry import open_image
from gigavision.infer.engine import InferOptions, infer_image
from gigavision.models import aliases, store
from gigavision.models.pipeline import Pipeline, PipelinePredictor, Stage, parse_spec, publish_pipeline
from gigavision.models.predict import Predictor
from tests.conftest import DETECT_SIZE, Trained
from tests.realdata import ingest_tagged
from tests.scenes import make_scenes, scenes_version
from tests.seeding import TRAIN_SEED

PADDING = 0.1
HEAD = "end_to_end/map50"


@dataclass(frozen=True)
class Setup:
    ws: gv.Workspace
    detector: str
    classifier: str
    embedder: str
    root: Path


def _objects(n: int, seed: int) -> tuple[list[np.ndarray], list[list[str]]]:
    """Crops of the objects of ``n`` generated scenes (10 % padding), tagged with the object's class."""
    crops, tags = [], []
    for scene in make_scenes(n, DETECT_SIZE, seed=seed):
        for (x0, y0, x1, y1), label in zip(scene.boxes, scene.labels, strict=True):
            px, py = (x1 - x0) * PADDING, (y1 - y0) * PADDING
            box = [max(0, int(x0 - px)), max(0, int(y0 - py)), int(x1 + px) + 1, int(y1 + py) + 1]
            crops.append(scene.pixels[box[1] : box[3], box[0] : box[2]])
            tags.append([label])
    return crops, tags


def _copy_in(ws: gv.Workspace, info: store.ModelInfo) -> str:
    shutil.copytree(info.path, store.models_dir(ws) / info.id)
    return info.id


@pytest.fixture(scope="module")
def setup(scenes_detector: Trained, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    """A workspace with the session's scene detector (copied in), a scenes version to evaluate on, and a tiny
    classifier and embedder of the objects' crops (digit / coin / horse; seconds of training, in a workspace of
    their own: their classes are tags there, polygons here)."""
    from gigavision.train.recipe import load_recipe
    from gigavision.train.trainer import train

    root = tmp_path_factory.mktemp("pipeline")
    ws = gv.init_workspace(root / "ws")
    detector = _copy_in(ws, scenes_detector.info)
    scenes_version(ws, root / "scenes", n=16, size=DETECT_SIZE, seed=7)
    side = gv.init_workspace(root / "objects-ws")
    crops, tags = _objects(60, seed=3)
    ingest_tagged(side, root / "objects", crops, tags, "objects")
    tiny = {"dataset": "objects", "arch": "test_resnet", "image_size": 32, "epochs": 3, "seed": TRAIN_SEED}
    classifier = train(side, load_recipe(overrides={**tiny, "task": "classify", "lr": 3e-3}), model_id="kind")
    embedder = train(side, load_recipe(overrides={**tiny, "task": "embed", "embedding_dim": 8}), model_id="look")
    yield Setup(ws, detector, _copy_in(ws, classifier), _copy_in(ws, embedder), root)
    side.close()
    ws.close()


def _declare(path: Path, data: Any) -> Path:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _crop(pixels: np.ndarray, xyxy: np.ndarray, padding: float) -> np.ndarray:
    """By hand: the box grown by ``padding`` of its sides, out to whole pixels, inside the image."""
    x0, y0, x1, y1 = (float(v) for v in xyxy)
    px, py = (x1 - x0) * padding, (y1 - y0) * padding
    h, w = pixels.shape[:2]
    c0, r0 = max(0, math.floor(x0 - px + 1e-6)), max(0, math.floor(y0 - py + 1e-6))
    c1, r1 = min(w, math.ceil(x1 + px - 1e-6)), min(h, math.ceil(y1 + py - 1e-6))
    return pixels[r0:r1, c0:c1]


def _by_hand(
    boxes: Annotations, pixels: np.ndarray, classifier: Predictor, embedder: Predictor
) -> list[dict[str, Any]]:
    """What the pipeline should say of each box: the classifier (on every box scoring ≥ 0.3) and the embedder
    (on coins only), each run once on all its crops."""
    out: list[dict[str, Any]] = [{} for _ in range(len(boxes))]
    rows = [i for i in range(len(boxes)) if boxes.score[i] >= 0.3]
    for i, ann in zip(rows, classifier.predict([_crop(pixels, boxes.xyxy[i], PADDING) for i in rows]), strict=True):
        out[i].update(kind=str(ann.label[0]), kind_score=float(ann.score[0]))
    coins = [i for i in rows if boxes.label[i] == "coin"]
    for i, ann in zip(coins, embedder.predict([_crop(pixels, boxes.xyxy[i], 0.0) for i in coins]), strict=True):
        out[i]["look"] = list(ann.attributes[0]["embedding"])
    return out


def _spec(s: Setup, **kind: Any) -> dict[str, Any]:
    return {
        "detect": s.detector,
        "stages": [
            {"name": "kind", "classify": s.classifier, "padding": PADDING, **kind},
            {"name": "look", "embed": s.embedder, "labels": ["coin"]},
        ],
    }


def _same(records: Any) -> Any:
    return json.loads(json.dumps(records))


@pytest.fixture(scope="module")
def published(setup: Setup) -> str:
    """The pipeline ``objects``, published through the CLI, the classifier named by an alias."""
    aliases.set_alias(setup.ws, "sorter", setup.classifier, actor="test")
    spec = _spec(setup)
    spec["stages"][0]["classify"] = "sorter"
    path = _declare(setup.root / "pipeline.yaml", spec)
    assert (
        main(["-w", str(setup.ws.root), "models", "pipeline", "create", "objects", "--file", str(path), "--json"]) == 0
    )
    return "objects"


def test_publish_makes_a_self_contained_model_folder(
    setup: Setup, published: str, capsys: pytest.CaptureFixture[str]
) -> None:
    info = store.get_model(setup.ws, published)
    assert (info.task, info.arch) == ("pipeline", "detect → classify → embed")
    assert info.classes == store.get_model(setup.ws, setup.detector).classes  # the detector's label map
    pipeline = Pipeline.model_validate(info.card.model_extra["pipeline"])  # type: ignore[index]
    assert (pipeline.detector, [s.model for s in pipeline.stages]) == (
        setup.detector,
        [setup.classifier, setup.embedder],
    )
    assert pipeline.stages[0].ref == "sorter" and pipeline.stages[1].labels == ["coin"]  # the alias as declared
    for stage in ("detect", "kind", "look"):
        assert {"model.json", "recipe.json", "checkpoint.pt", "model.onnx"} <= {
            p.name for p in (info.path / "stages" / stage).iterdir()
        }
    assert info.has_onnx
    from gigavision.models.check import check_model

    assert check_model(info.path) == []
    broken = setup.root / "broken"
    shutil.copytree(info.path, broken)
    (broken / "stages" / "kind" / "recipe.json").unlink()
    (finding,) = check_model(broken)
    assert (finding.path, finding.problem) == ("models/broken/stages/kind/recipe.json", "missing")
    # the stage models can go: the pipeline keeps its copies
    moved = setup.root / "kind-away"
    shutil.move(str(store.models_dir(setup.ws) / setup.classifier), moved)
    try:
        assert PipelinePredictor(info, runtime="onnx").stages[0][1].info.id == setup.classifier
    finally:
        shutil.move(str(moved), store.models_dir(setup.ws) / setup.classifier)
    assert main(["-w", str(setup.ws.root), "models", "show", published, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["pipeline"]["stages"][0]["model"] == setup.classifier
    assert main(["-w", str(setup.ws.root), "export-model", published]) == 2
    assert "is a pipeline" in capsys.readouterr().err


def test_predict_equals_the_detector_then_the_stages_by_hand(
    setup: Setup, published: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ws = setup.ws
    scene = make_scenes(1, DETECT_SIZE, seed=121)[0]  # a horse, a digit and a coin
    path = tmp_path / "scene.png"
    Image.fromarray(scene.pixels).save(path)
    detector = Predictor(store.get_model(ws, setup.detector), runtime="onnx")
    (boxes,) = detector.predict([scene.pixels])
    expected = _by_hand(
        boxes,
        scene.pixels,
        Predictor(store.get_model(ws, setup.classifier), runtime="onnx"),
        Predictor(store.get_model(ws, setup.embedder), runtime="onnx"),
    )
    assert any("kind" in e for e in expected) and any("look" in e for e in expected)  # both stages ran somewhere

    assert main(["-w", str(ws.root), "predict", published, str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["model"], doc["runtime"]) == (published, "onnx")
    records = doc["items"][0]["annotations"]
    assert [r["bbox"] for r in records] == _same(boxes.xyxy.tolist())
    assert [r["score"] for r in records] == _same(boxes.score.tolist())
    assert [r["label"] for r in records] == list(boxes.label)
    for record, want in zip(records, expected, strict=True):
        got = {k: v for k, v in record["attributes"].items() if k in ("kind", "kind_score", "look")}
        assert got == _same(want)
        assert record["source"] == f"model:{published}" and record["attributes"]["model"] == published

    # the REST endpoint answers the same
    from gigavision.server.main import create_app

    client = TestClient(create_app(ws))
    resp = client.post("/api/v1/predict", data={"model": published}, files={"file": ("s.png", path.read_bytes())})
    assert resp.status_code == 200, resp.text
    assert resp.json()["task"] == "pipeline" and resp.json()["annotations"] == records


def test_tiled_pipeline_runs_the_detector_as_the_detector_alone(
    setup: Setup, published: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ws = setup.ws
    pixels = np.zeros((2 * DETECT_SIZE, 2 * DETECT_SIZE, 3), dtype=np.uint8)
    for k, scene in enumerate(make_scenes(4, DETECT_SIZE, seed=95)):
        r, c = divmod(k, 2)
        pixels[r * DETECT_SIZE : (r + 1) * DETECT_SIZE, c * DETECT_SIZE : (c + 1) * DETECT_SIZE] = scene.pixels
    path = tmp_path / "mosaic.png"
    Image.fromarray(pixels).save(path)
    alone = infer_image(
        Predictor(store.get_model(ws, setup.detector), runtime="onnx"),
        open_image(path),
        name="mosaic",
        options=InferOptions(overlap=32),
        out_dir=tmp_path / "alone",
    ).annotations
    expected = _by_hand(
        alone,
        pixels,
        Predictor(store.get_model(ws, setup.classifier), runtime="onnx"),
        Predictor(store.get_model(ws, setup.embedder), runtime="onnx"),
    )
    assert main(["-w", str(ws.root), "predict", published, str(path), "--overlap", "32", "--json"]) == 0
    item = json.loads(capsys.readouterr().out)["items"][0]
    assert item["tiles"]["total"] == 9 and len(item["annotations"]) == len(alone) > 0
    assert any("kind" in want for want in expected)
    for record, box, score, want in zip(item["annotations"], alone.xyxy, alone.score, expected, strict=True):
        assert (record["bbox"], record["score"]) == (_same(box.tolist()), float(score))
        got = {k: v for k, v in record["attributes"].items() if k in ("kind", "kind_score", "look")}
        assert got == _same(want)

    # on Dask workers each pipeline image is one task (its stages need the merged boxes): the same answers
    args = ["-w", str(ws.root), "predict", published, str(path), "--overlap", "32", "--dask", "local:1", "--json"]
    assert main(args) == 0
    spread = json.loads(capsys.readouterr().out)["items"][0]["annotations"]
    assert [r["label"] for r in spread] == [r["label"] for r in item["annotations"]]
    assert [r["attributes"].get("kind") for r in spread] == [r["attributes"].get("kind") for r in item["annotations"]]
    np.testing.assert_allclose([r["bbox"] for r in spread], [r["bbox"] for r in item["annotations"]], atol=1e-3)


def test_evaluate_scores_each_stage_and_the_whole(
    setup: Setup, published: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ws = setup.ws
    out = tmp_path / "eval"
    assert main(["-w", str(ws.root), "evaluate", published, "--dataset", "scenes@1", "--out", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    m = doc["metrics"]
    assert doc["headline"] == "end_to_end/map50" and json.loads((out / "metrics.json").read_text()) == m
    detector = store.get_model(ws, setup.detector)
    from gigavision.train.assess import evaluate_model

    alone = evaluate_model(ws, detector, "scenes@1", "test")["metrics"]
    assert m["detector/map50"] == pytest.approx(alone["map50"], abs=1e-9)  # the detector's own number
    assert m["kind/n"] > 0 and 0.0 <= m["kind/accuracy"] <= 1.0  # truth labels are the classifier's classes
    assert "look/accuracy" not in m  # an embedding is not a class
    assert 0.0 <= m["end_to_end/map50"] <= m["detector/map50"] + 1e-9  # a hit needs the box AND the class

    args = ["-w", str(ws.root), "models", "compare", published, published, "--dataset", "scenes@1", "--json"]
    assert main(args) == 0
    compared = json.loads(capsys.readouterr().out)
    assert compared["same_data"] and {"metric": "end_to_end/map50", "values": [m[HEAD], m[HEAD]]} in compared["metrics"]

    # POST /api/v1/models/{id}/evaluate's job: the same numbers, metrics.json its file
    job = ws.jobs.submit("evaluate", {"model": published, "dataset": "scenes@1", "split": "test"}, "test")
    ws.jobs.execute(job["id"])
    done = ws.jobs.get(job["id"])
    assert done["status"] == "done", done.get("error")
    assert done["result"]["metrics"] == m and [f["path"] for f in done["files"]] == ["metrics.json"]
    ws.jobs.huey.storage.flush_queue()


def test_end_to_end_needs_the_right_box_and_the_right_answer() -> None:
    from gigavision.infer.pipeline_eval import score_pipeline
    from gigavision.models.task import task_class
    from gigavision.train.recipe import load_recipe

    recipe = load_recipe(overrides={"task": "detect", "dataset": "x", "image_size": 64})
    detector = task_class("detect")(recipe, ["roof", "tree"])
    stage = Stage(name="overhang", kind="classify", ref="o", model="o", labels=["roof"])
    pipeline = Pipeline(detect_ref="d", detector="d", stages=[stage])
    box = [[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50], [60, 60, 70, 70]]
    truth = Annotations.from_boxes(
        box,
        ["roof", "roof", "tree", "roof"],
        attributes=[{"overhang": "high"}, {"overhang": "low"}, {}, {}],  # the last roof's overhang is unknown
    )
    said = [{"overhang": "high"}, {"overhang": "high"}, {}, {"overhang": "low"}]
    pred = Annotations.from_boxes(box, ["roof", "roof", "tree", "roof"], score=[0.9] * 4, attributes=said)
    m = score_pipeline(pipeline, detector, {"overhang": ["none", "low", "high"]}, [truth], [pred])
    assert m["detector/map50"] == pytest.approx(1.0)
    assert (m["overhang/n"], m["overhang/accuracy"]) == (2, 0.5)
    # 3 objects count (the unknown roof and the box on it are left out): the high roof and the tree are hits
    assert (m["end_to_end/n_gt"], m["end_to_end/n_pred"]) == (3, 3)
    assert m["end_to_end/map50"] < 1.0


def test_bad_declarations_are_refused_naming_what(
    setup: Setup, published: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ws, root = setup.ws, str(setup.ws.root)

    def create(name: str, data: Any, text: str | None = None) -> str:
        path = tmp_path / f"{name}.yaml"
        if text is not None:
            path.write_text(text, encoding="utf-8")
        else:
            _declare(path, data)
        assert main(["-w", root, "models", "pipeline", "create", name, "--file", str(path)]) == 2
        err = capsys.readouterr().err
        assert name == published or not (store.models_dir(ws) / name).exists()
        assert not [p for p in store.models_dir(ws).iterdir() if p.name.startswith(f".{name}")]  # nothing left
        return err

    missing = _spec(setup)
    missing["stages"][0]["classify"] = "no-such-model"
    assert "pipeline p1: stage kind: no model 'no-such-model'" in create("p1", missing)
    wrong = _spec(setup)
    wrong["stages"][0]["classify"] = setup.detector
    assert f"stage kind: model {setup.detector} is a detect model, not classify" in create("p2", wrong)
    itself = _spec(setup)
    itself["stages"][1]["embed"] = "p3"
    assert "stage look: refers to the pipeline p3 itself" in create("p3", itself)
    nested = _spec(setup)
    nested["detect"] = published
    assert f"stage detect: model {published} is a pipeline" in create("p4", nested)
    assert "pipelines do not nest" in create(
        "p5", {**nested, "detect": setup.detector, "stages": [{"name": "x", "classify": published}]}
    )
    labels = _spec(setup, labels=["cat"])
    assert "stage kind: labels cat are not classes of detector" in create("p6", labels)
    err = create("p7", None, text="detect: [unclosed\n")
    assert "p7.yaml: not valid YAML" in err
    err = create("p8", {"detect": setup.detector, "stages": [{"name": "kind", "clasify": setup.classifier}]})
    assert "p8.yaml: stages.0.clasify: unknown field (check the spelling)" in err
    err = create("p9", {"detect": setup.detector, "stages": [{"name": "kind", "classify": "a"}] * 2})
    assert "p9.yaml: top level: stage names must differ (they name the attributes): kind twice" in err
    assert "stages.0.padding" in create("pa", _spec(setup, padding=-1))
    assert "stages.0.name: 'model' is reserved" in create(
        "pb", {**_spec(setup), "stages": [{"name": "model", "classify": setup.classifier}]}
    )
    assert "the top level must be a mapping" in create("pc", ["detect"])
    assert main(["-w", root, "models", "pipeline", "create", "pd", "--file", str(tmp_path / "none.yaml")]) == 2
    assert "none.yaml: no such file" in capsys.readouterr().err
    assert f"model {published} already exists" in create(published, _spec(setup))
    with pytest.raises(NotFound, match="stage look"):
        publish_pipeline(ws, "pe", parse_spec({**_spec(setup), "stages": [{"name": "look", "embed": "nope"}]}))
    with pytest.raises(InvalidInput, match="exactly one of classify, embed, segment"):
        parse_spec({"detect": "d", "stages": [{"name": "a", "classify": "c", "embed": "e"}]})


def test_a_segment_stage_outlines_the_object_inside_its_box(
    setup: Setup, scenes_segmenter: Trained, tmp_path: Path
) -> None:
    ws = setup.ws
    segmenter = _copy_in(ws, scenes_segmenter.info)
    spec = {"detect": setup.detector, "stages": [{"name": "shape", "segment": segmenter, "labels": ["coin", "horse"]}]}
    info = publish_pipeline(ws, "outlines", parse_spec(spec))
    scene = make_scenes(1, DETECT_SIZE, seed=5, classes=("coin", "horse"))[0]
    (found,) = PipelinePredictor(info, runtime="onnx").predict([scene.pixels])
    (boxes,) = Predictor(store.get_model(ws, setup.detector), runtime="onnx").predict([scene.pixels])
    rows = [i for i in range(len(boxes)) if boxes.score[i] >= 0.3 and boxes.label[i] in ("coin", "horse")]
    crops = [_crop(scene.pixels, boxes.xyxy[i], 0.0) for i in rows]
    by_hand = Predictor(store.get_model(ws, segmenter), runtime="onnx").predict(crops)
    assert rows and np.array_equal(found.xyxy, boxes.xyxy)
    import shapely

    assert any(len(ann) for ann in by_hand)  # some crop is more than background
    for i, ann in zip(rows, by_hand, strict=True):
        attrs = found.attributes[i]
        if not len(ann):
            assert attrs["shape"] == "background"
            continue
        k = int(np.argmax(ann.area))
        assert (attrs["shape"], attrs["shape_score"]) == (ann.label[k], float(ann.score[k]))
        outline = shapely.geometry.shape(attrs["shape_geometry"])
        x0, y0, x1, y1 = (float(v) for v in boxes.xyxy[i])
        c0, r0 = math.floor(x0 + 1e-6), math.floor(y0 + 1e-6)
        assert outline.area == pytest.approx(float(ann.area[k]))  # level 0 = crop pixels here: same area
        assert shapely.box(c0, r0, math.ceil(x1 - 1e-6), math.ceil(y1 - 1e-6)).buffer(1e-9).contains(outline)


def test_int8_on_a_pipeline_names_the_stages_that_lack_it(setup: Setup, published: str) -> None:
    """A pipeline runs its stages' own copies: asking for int8 before they have one says which, and how."""
    from gigavision.infer.request import PredictRequest

    request = PredictRequest(model=published, images=("x",), variant="int8")
    lacking = r"stage\(s\) detect, kind, look have no int8 variant.*create the pipeline again"
    with pytest.raises(NotFound, match=lacking):
        request.resolve(setup.ws)
