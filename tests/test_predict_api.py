"""``POST /api/v1/predict``: small images answered in the request (the same annotations as ``predict_whole``,
or the image with them drawn), big ones as ``predict`` jobs run here to completion, and every bad input a
4xx with the error shape (nothing queued, the server still answering)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import gigavision as gv
from gigavision.infer.engine import InferOptions
from gigavision.infer.run import predict_tiled, predict_whole
from gigavision.models.predict import Predictor
from gigavision.server.main import create_app
from tests.conftest import DETECT_SIZE, SEGMENT_CLASSES, SEGMENT_SIZE, Trained
from tests.scenes import make_scenes

URL = "/api/v1/predict"


def _mosaic(path: Path, cols: int, rows: int, size: int, seed: int, **options: Any) -> Path:
    """Generated scenes side by side in one PNG: an image several model inputs wide."""
    pixels = np.zeros((rows * size, cols * size, 3), dtype=np.uint8)
    for k, scene in enumerate(make_scenes(cols * rows, size, seed=seed, **options)):
        r, c = divmod(k, cols)
        pixels[r * size : (r + 1) * size, c * size : (c + 1) * size] = scene.pixels
    Image.fromarray(pixels).save(path)
    return path


def _upload(path: Path) -> dict[str, Any]:
    return {"file": (path.name, path.read_bytes(), "image/png")}


def _same(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records as they come back through JSON (tuples become lists)."""
    out: list[dict[str, Any]] = json.loads(json.dumps(records))
    return out


def _predict_jobs(ws: gv.Workspace) -> int:
    return ws.jobs.list_jobs(kind="predict")[1]


@pytest.fixture
def detector_client(scenes_detector: Trained) -> Iterator[TestClient]:
    """The detector's workspace served without the embedded consumer: jobs stay queued until a test runs
    them with ``ws.jobs.execute`` (synchronously, in the test's thread)."""
    ws = scenes_detector.ws
    yield TestClient(create_app(ws))
    ws.jobs.huey.storage.flush_queue()  # no stale queue messages for a later consumer of this workspace


def test_small_images_are_answered_with_the_whole_image_predictions(
    scenes_detector: Trained, detector_client: TestClient, tmp_path: Path
) -> None:
    ws, info, client = scenes_detector.ws, scenes_detector.info, detector_client
    scene = make_scenes(1, DETECT_SIZE, seed=71)[0]
    path = tmp_path / "scene.png"
    Image.fromarray(scene.pixels).save(path)
    expected = predict_whole(Predictor(info, runtime="onnx"), [str(path)], ws=ws)[0][0]
    assert all(0 <= a["uncertainty"] <= 1 and a["model"] == info.id for a in expected.annotations.attributes)

    resp = client.post(URL, data={"model": info.id}, files=_upload(path))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["model"], body["runtime"], body["task"], body["input"]) == (info.id, "onnx", "detect", "scene.png")
    assert (body["image_id"], body["width"], body["height"]) == (None, DETECT_SIZE, DETECT_SIZE)
    assert body["n_annotations"] == len(expected.annotations) > 0
    assert body["annotations"] == _same(expected.as_dict()["annotations"])
    assert list((ws.root / "cache" / "uploads").iterdir()) == []  # the upload is not kept

    # a workspace image by id, as JSON: the same as predict_whole on that id
    rows, _ = ws.list_images(0, 1)
    image_id = rows[0].id
    by_id = client.post(URL, json={"model": info.id, "image_id": image_id, "runtime": "torch"})
    assert by_id.status_code == 200, by_id.text
    assert by_id.json()["image_id"] == image_id and by_id.json()["runtime"] == "torch"
    expected_id = predict_whole(Predictor(info, runtime="torch"), [image_id], ws=ws)[0][0]
    assert by_id.json()["annotations"] == _same(expected_id.as_dict()["annotations"])

    # ?format=png: the image with its predictions drawn, at its own size
    png = client.post(f"{URL}?format=png", data={"model": info.id}, files=_upload(path))
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.headers["x-gigavision-annotations"] == str(len(expected.annotations))
    drawn = Image.open(io.BytesIO(png.content))
    assert drawn.size == (DETECT_SIZE, DETECT_SIZE) and drawn.mode == "RGB"
    assert (np.asarray(drawn) != scene.pixels).any()  # boxes were drawn

    # a wide image: still small for the whole-image path; its overlay is downscaled to 2048 px across
    wide = tmp_path / "wide.png"
    Image.fromarray(np.tile(scene.pixels, (1, 17, 1))[:64]).save(wide)
    shrunk = client.post(f"{URL}?format=png", data={"model": info.id}, files=_upload(wide))
    assert shrunk.status_code == 200, shrunk.text
    assert Image.open(io.BytesIO(shrunk.content)).size == (2048, 60)

    # once ingested, an upload of the same bytes is recognised; store adds proposals from model:<id>
    (added,) = ws.ingest([path])
    again = client.post(URL, data={"model": info.id}, files=_upload(path)).json()
    assert again["image_id"] == added.id
    kept = client.post(URL, json={"model": info.id, "image_id": added.id, "store": True}).json()
    assert kept["stored"]["added"] + kept["stored"]["skipped_unknown_class"] == kept["n_annotations"]
    stored = ws.annotations.query(added.id)
    assert len(stored) == kept["stored"]["added"] > 0 and set(stored.source) == {f"model:{info.id}"}
    assert [a["uncertainty"] for a in stored.attributes] == [
        a["attributes"]["uncertainty"] for a in kept["annotations"]
    ]
    assert {a["model"] for a in stored.attributes} == {info.id}


def test_big_images_become_predict_jobs_with_progress_and_result(
    scenes_detector: Trained, detector_client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws, info, client = scenes_detector.ws, scenes_detector.info, detector_client
    path = _mosaic(tmp_path / "mosaic.png", 3, 2, DETECT_SIZE, seed=72)
    fields = {"model": info.id, "tile": "128", "overlap": "64", "actor": "ana"}
    resp = client.post(f"{URL}?format=png", data=fields, files=_upload(path))
    assert resp.status_code == 202, resp.text
    job = resp.json()
    assert resp.headers["location"] == f"/api/v1/jobs/{job['id']}"
    assert (job["kind"], job["status"], job["created_by"]) == ("predict", "queued", "ana")
    assert job["params"]["file"] == "mosaic.png" and job["params"]["image_id"] is None
    assert job["params"]["options"]["tile"] == 128 and job["params"]["overlay"] is True
    assert (ws.root / "jobs" / job["id"] / "input" / "mosaic.png").read_bytes() == path.read_bytes()

    ws.jobs.execute(job["id"])
    done = client.get(f"/api/v1/jobs/{job['id']}").json()
    assert done["status"] == "done" and done["progress"] == 1.0, done["error"]
    (item,) = done["result"]["items"]
    assert done["result"]["model"] == info.id and done["result"]["runtime"] == "onnx"
    assert item["input"] == "mosaic.png" and (item["width"], item["height"]) == (384, 256)
    assert item["tiles"] == {"total": 5 * 3, "run": 15, "skipped_background": 0, "failed": 0}
    expected = predict_tiled(
        Predictor(info, runtime="onnx"), [str(path)], InferOptions(tile=128, overlap=64), ws=ws, out_root=tmp_path
    )[0]
    assert item["n_annotations"] == len(item["annotations"]) == len(expected.annotations) > 0
    assert [a["label"] for a in item["annotations"]] == list(expected.annotations.label)
    assert item["overlay"] == "overlay.png" and item["annotations_file"] is None
    overlay = client.get(f"/api/v1/jobs/{job['id']}/files/overlay.png")
    assert Image.open(io.BytesIO(overlay.content)).size == (384, 256)

    # an image the whole-image path refuses is a job without any tiling option (default tiling), and a
    # result too long to keep inline goes to annotations.json among the job's files
    monkeypatch.setattr("gigavision.models.predict.MAX_PREDICT_PIXELS", 20_000)  # under 192×128
    monkeypatch.setattr("gigavision.infer.jobs.MAX_INLINE_ANNOTATIONS", 0)
    auto = client.post(URL, data={"model": info.id}, files=_upload(path))
    assert auto.status_code == 202, auto.text
    options = auto.json()["params"]["options"]
    assert (options["tile"], options["overlap"]) == (None, DETECT_SIZE // 4)
    ws.jobs.execute(auto.json()["id"])
    auto_done = ws.jobs.get(auto.json()["id"])
    assert auto_done["status"] == "done", auto_done["error"]
    (auto_item,) = auto_done["result"]["items"]
    assert "annotations" not in auto_item and auto_item["annotations_file"] == "annotations.json"
    listed = client.get(f"/api/v1/jobs/{auto_done['id']}/files/annotations.json").json()
    assert len(listed) == auto_item["n_annotations"] > 0


def test_segment_job_on_a_workspace_image_stores_polygons_and_serves_the_mask(
    scenes_segmenter: Trained, tmp_path: Path
) -> None:
    ws, info = scenes_segmenter.ws, scenes_segmenter.info
    path = _mosaic(tmp_path / "seg.png", 3, 2, SEGMENT_SIZE, seed=73, classes=SEGMENT_CLASSES)
    (added,) = ws.ingest([path])
    assert added.id is not None
    client = TestClient(create_app(ws))
    try:
        body = {"model": info.id, "image_id": added.id, "tile": 64, "overlap": 32, "store": True}
        resp = client.post(URL, json=body)
        assert resp.status_code == 202, resp.text
        ws.jobs.execute(resp.json()["id"])
        done = client.get(f"/api/v1/jobs/{resp.json()['id']}").json()
        assert done["status"] == "done", done["error"]
        (item,) = done["result"]["items"]
        assert item["image_id"] == added.id and item["input"] == added.id
        assert item["outputs"]["mask"] == f"{info.id}/{added.id}/mask.tif"
        assert item["outputs"]["mask"] in {f["path"] for f in done["files"]}
        mask = client.get(f"/api/v1/jobs/{done['id']}/files/{item['outputs']['mask']}")
        assert mask.status_code == 200 and len(mask.content) > 0
        stored = ws.annotations.query(added.id)
        assert len(stored) == item["n_annotations"] == int(item["outputs"]["stored"]) > 0
        assert set(stored.source) == {f"model:{info.id}"} and set(stored.status) == {"proposed"}

        # zoom-in over REST: the model's own coarse pass (level 0 here) picks the 2 best of the 15 windows
        zoomed = client.post(URL, json={**body, "store": False, "zoom": "topk=2,level=0"})
        assert zoomed.status_code == 202, zoomed.text
        ws.jobs.execute(zoomed.json()["id"])
        (z,) = client.get(f"/api/v1/jobs/{zoomed.json()['id']}").json()["result"]["items"]
        assert z["tiles"]["run"] == z["zoom"]["selected"] == 2 and z["zoom"]["exhaustive"] == 15
        bad = client.post(URL, json={**body, "zoom": "speed=3"})
        assert bad.status_code == 400 and "expected KEY=VALUE" in bad.json()["error"]["message"]
    finally:
        ws.jobs.huey.storage.flush_queue()


def test_bad_requests_are_4xx_with_the_error_shape(
    scenes_detector: Trained, detector_client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws, info, client = scenes_detector.ws, scenes_detector.info, detector_client
    path = _mosaic(tmp_path / "two.png", 2, 1, DETECT_SIZE, seed=74)
    image_id = ws.list_images(0, 1)[0][0].id
    jobs_before = _predict_jobs(ws)

    def expect(status: int, code: str, message: str, **request: Any) -> None:
        resp = client.post(URL, **request)
        assert resp.status_code == status, resp.text
        error = resp.json()["error"]
        assert error["code"] == code and message in error["message"], error

    expect(404, "not_found", "no model 'nope'", json={"model": "nope", "image_id": image_id})
    expect(400, "invalid_input", "either an image file", json={"model": info.id})
    expect(
        400, "invalid_input", "either an image file", data={"model": info.id, "image_id": image_id}, files=_upload(path)
    )
    expect(404, "not_found", "no image with id", json={"model": info.id, "image_id": "0" * 64})
    expect(404, "not_found", "no image with id", json={"model": info.id, "image_id": "../etc/passwd"})
    expect(400, "invalid_input", "model: Field required", json={"image_id": image_id})
    expect(400, "invalid_input", "tiles: Extra inputs", json={"model": info.id, "image_id": image_id, "tiles": 64})
    expect(400, "invalid_input", "runtime", json={"model": info.id, "image_id": image_id, "runtime": "tf"})
    expect(400, "invalid_input", "multipart/form-data", json={"model": info.id, "file": "x.png"})
    expect(400, "invalid_input", "not text/plain", content=b"hi", headers={"content-type": "text/plain"})
    expect(
        400,
        "invalid_input",
        "store needs a workspace image",
        data={"model": info.id, "store": "true"},
        files=_upload(path),
    )

    # files that are not images: refused by name, nothing kept
    expect(422, "invalid_image", "", data={"model": info.id}, files={"file": ("notes.png", b"plain text", "image/png")})
    truncated = path.read_bytes()[:400]
    expect(422, "invalid_image", "", data={"model": info.id}, files={"file": ("cut.png", truncated, "image/png")})
    expect(400, "invalid_input", "empty upload", data={"model": info.id}, files={"file": ("e.png", b"", "image/png")})
    assert list((ws.root / "cache" / "uploads").iterdir()) == []

    # tiling options checked in the request, not by a failed job
    ask = {"model": info.id, "image_id": image_id}
    expect(400, "invalid_input", "must be smaller than --tile 64", json={**ask, "tile": 64, "overlap": 64})
    expect(400, "invalid_input", "overlap 200 must be smaller than the tile (128)", json={**ask, "overlap": 200})
    expect(400, "invalid_input", "level 5 does not exist", json={**ask, "level": 5})
    expect(400, "invalid_input", "--merge must be one of", json={**ask, "tile": 64, "merge": "vote"})
    expect(400, "invalid_input", "has no microns-per-pixel", json={**ask, "mpp": 0.5})

    monkeypatch.setattr(ws.settings.limits, "max_upload_bytes", 100)
    expect(413, "limit_exceeded", "limits.max_upload_bytes", data={"model": info.id}, files=_upload(path))
    monkeypatch.undo()

    assert _predict_jobs(ws) == jobs_before  # nothing was queued
    assert client.post(URL, json={"model": info.id, "image_id": image_id}).status_code == 200  # still serving


def test_models_the_tiled_engine_cannot_run_are_named(sqlite_workspace: gv.Workspace, tmp_path: Path) -> None:
    ws = sqlite_workspace
    folder = ws.root / "models" / "faces-embed-1"
    folder.mkdir(parents=True)
    record = {
        "id": "faces-embed-1",
        "task": "embed",
        "arch": "resnet18",
        "classes": ["a", "b"],
        "dataset": "faces@1",
        "input": {"size": 64, "mean": [0.5] * 3, "std": [0.25] * 3},
        "created_at": "2024-01-01T00:00:00+00:00",
    }
    (folder / "model.json").write_text(json.dumps(record), encoding="utf-8")
    path = _mosaic(tmp_path / "m.png", 2, 1, 64, seed=75)
    client = TestClient(create_app(ws))
    resp = client.post(URL, data={"model": "faces-embed-1", "tile": "64", "overlap": "0"}, files=_upload(path))
    assert resp.status_code == 400
    message = resp.json()["error"]["message"]
    assert "faces-embed-1 has task 'embed'; tiled inference runs detect, segment, classify" in message
    assert ws.jobs.list_jobs()[1] == 0
