"""``/api/v1/models``: training and evaluation as jobs run by the server's embedded worker, the model records,
the HTML report under a strict CSP, and failures that end as failed jobs with their reason."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

import gigavision as gv
from gigavision.server.main import create_app
from tests.realdata import digits_version

TINY = {"arch": "test_resnet", "image_size": 16, "epochs": 1, "batch_size": 64}


def test_train_evaluate_report_and_failures(sqlite_workspace: gv.Workspace, tmp_path: Path) -> None:
    ws = sqlite_workspace
    digits_version(ws, tmp_path / "digits", limit=200)
    with TestClient(create_app(ws)) as client:
        # validated in the request: a typo is a 400 naming the field, and nothing is queued or reserved
        bad = client.post("/api/v1/models/train", json={"task": "classify", "dataset": "digits@1", "epocs": 2})
        assert bad.status_code == 400 and "epocs: unknown field" in bad.json()["error"]["message"]
        assert ws.jobs.list_jobs()[1] == 0

        resp = client.post("/api/v1/models/train", json={"task": "classify", "dataset": "digits@1", **TINY})
        assert resp.status_code == 202
        job = resp.json()
        assert job["kind"] == "train" and job["status"] == "queued"
        assert job["params"]["model_id"] == "digits-classify-1"  # reserved at submission
        assert job["params"]["recipe"]["epochs"] == 1 and job["params"]["recipe"]["lr"] == 0.001  # resolved

        done = ws.jobs.wait(job["id"], timeout=240)
        assert done["status"] == "done", done["error"]
        assert done["progress"] == 1.0 and done["result"]["model"] == "digits-classify-1"
        record = client.get(f"/api/v1/jobs/{job['id']}").json()
        assert record["result"]["classes"] == [str(d) for d in range(10)]

        listed = client.get("/api/v1/models").json()
        assert listed["count"] == 1 and listed["items"][0]["id"] == "digits-classify-1"
        model = client.get("/api/v1/models/digits-classify-1").json()
        assert (
            model["task"] == "classify" and model["dataset"] == "digits@1" and model["headline"] == "balanced_accuracy"
        )
        assert model["input"]["size"] == 16 and "model.onnx" in model["files"]
        assert model["urls"]["report"] == "/api/v1/models/digits-classify-1/report"

        report = client.get(model["urls"]["report"])
        assert report.status_code == 200 and report.headers["content-type"].startswith("text/html")
        csp = report.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'none'" in csp and "sandbox" in csp
        assert report.headers["x-content-type-options"] == "nosniff"
        assert "digits-classify-1" in report.text and "<script" not in report.text

        # evaluation job: its files are the report and metrics, downloadable through the jobs API
        ev = client.post("/api/v1/models/digits-classify-1/evaluate", json={"dataset": "digits@1", "split": "val"})
        assert ev.status_code == 202
        ev_done = ws.jobs.wait(ev.json()["id"], timeout=120)
        assert ev_done["status"] == "done", ev_done["error"]
        assert ev_done["result"]["split"] == "val" and "accuracy" in ev_done["result"]["metrics"]
        assert {f["path"] for f in ev_done["files"]} == {"metrics.json", "report.html"}
        metrics = client.get(f"/api/v1/jobs/{ev_done['id']}/files/metrics.json").json()
        assert metrics["accuracy"] == ev_done["result"]["metrics"]["accuracy"]

        # a training that cannot start fails as a job with its reason; nothing left in models/ or runs/
        failing = client.post("/api/v1/models/train", json={"task": "classify", "dataset": "nope@1", **TINY}).json()
        failed = ws.jobs.wait(failing["id"], timeout=60)
        assert failed["status"] == "failed" and "no dataset named 'nope'" in failed["error"]
        assert [p.name for p in (ws.root / "models").iterdir()] == ["digits-classify-1"]
        assert list((ws.root / "runs").iterdir()) == []

        # unknown ids
        assert client.get("/api/v1/models/nope").status_code == 404
        assert client.get("/api/v1/models/nope/report").status_code == 404
        assert client.post("/api/v1/models/nope/evaluate", json={"dataset": "digits@1"}).status_code == 404
        assert client.get("/api/v1/models/..%2Fetc").status_code in (400, 404)
        resumed = client.post("/api/v1/models/train", json={"resume": "never-started"})
        assert resumed.status_code == 404 and "no interrupted run" in resumed.json()["error"]["message"]
