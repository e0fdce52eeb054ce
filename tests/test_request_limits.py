"""Issue 13, every request bounded before it is parsed: the ASGI body cap (declared and chunked), uploads
written once into the workspace's spool, big uploads ingested by a job, names cut at 255 bytes, archive
caps and member-by-member rejection, and the REST training limits.

The acceptance figures are measured on the real app through raw ASGI calls, whose ``receive`` counts every
body byte the server pulled: a declared 20 GB upload → 413 in < 100 ms with nothing read; a chunked 40 MB body
against a 1 MB limit → 413 after ≤ 2 MB read.
"""

from __future__ import annotations

import hashlib
import json
import time
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import gigavision as gv
from gigavision.errors import LimitExceeded
from gigavision.formats.api import import_annotations
from gigavision.formats.archive import ArchiveLimits, safe_extract
from gigavision.ingest import runs_long
from gigavision.server.main import create_app
from gigavision.server.uploads import safe_filename
from tests import aio

MB = 1024 * 1024
BOUNDARY = "gv-limits-test"


# -- a raw ASGI client that counts what the server reads ----------------------------------------------------
class Answer:
    def __init__(self) -> None:
        self.status = 0
        self.body = b""
        self.read = 0  # body bytes the app pulled through receive()
        self.seconds = 0.0

    def json(self) -> Any:
        return json.loads(self.body)


async def _call(app: FastAPI, path: str, headers: dict[str, str], chunks: Iterable[bytes]) -> Answer:
    answer = Answer()
    pieces: Iterator[bytes] = iter(chunks)
    finished = False

    async def receive() -> dict[str, Any]:
        nonlocal finished
        if finished:
            return {"type": "http.disconnect"}
        piece = next(pieces, None)
        if piece is None:
            finished = True
            return {"type": "http.request", "body": b"", "more_body": False}
        answer.read += len(piece)
        return {"type": "http.request", "body": piece, "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            answer.status = message["status"]
        elif message["type"] == "http.response.body":
            answer.body += message.get("body", b"")

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8000"), *((k.encode(), v.encode()) for k, v in headers.items())],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    start = time.perf_counter()
    await app(scope, receive, send)  # type: ignore[arg-type]
    answer.seconds = time.perf_counter() - start
    return answer


def call(app: FastAPI, path: str, headers: dict[str, str], chunks: Iterable[bytes], warm: bool = True) -> Answer:
    async def both() -> Answer:
        if warm:  # the first request builds the middleware stack: not part of what is timed
            await _call(app, "/api/v1/exports", {"content-type": "application/json"}, [b"{}"])
        return await _call(app, path, headers, chunks)

    return aio.run(both())


def multipart_chunks(name: str, size: int, piece: int = 64 * 1024) -> Iterator[bytes]:
    """A multipart body with one file of ``size`` zero bytes, produced lazily in ``piece``-byte chunks."""
    yield (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    zeros = bytes(piece)
    for start in range(0, size, piece):
        yield zeros[: min(piece, size - start)]
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


MULTIPART = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}


def spooled(ws: gv.Workspace) -> list[Path]:
    spool = ws.root / "cache" / "uploads"
    return [p for p in spool.rglob("*")] if spool.exists() else []


# -- the body cap -------------------------------------------------------------------------------------------
def test_declared_20_gb_upload_is_refused_at_once_without_reading(sqlite_workspace: gv.Workspace) -> None:
    ws = sqlite_workspace
    app = create_app(ws)
    declared = {**MULTIPART, "content-length": str(20 * 1000**3)}
    upload = call(app, "/api/v1/images", declared, multipart_chunks("huge.tif", 4 * MB))
    assert upload.status == 413 and upload.json()["error"]["code"] == "limit_exceeded"
    assert "limits.max_upload_bytes" in upload.json()["error"]["message"]
    assert upload.read == 0 < MB and upload.seconds < 0.1, (upload.read, upload.seconds)
    # a route without uploads is held to max_request_bytes (16 MiB by default): a declared 20 MB JSON body
    labels = call(app, "/api/v1/exports", {"content-type": "application/json", "content-length": str(20 * MB)}, [b"{"])
    assert labels.status == 413 and "limits.max_request_bytes" in labels.json()["error"]["message"]
    assert labels.read == 0
    assert spooled(ws) == []


def test_chunked_40_mb_body_is_cut_after_2_mb(sqlite_workspace: gv.Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = sqlite_workspace
    app = create_app(ws)
    monkeypatch.setattr(ws.settings.limits, "max_upload_bytes", 1_000_000)
    monkeypatch.setattr(ws.settings.limits, "max_request_bytes", 1_000_000)
    upload = call(app, "/api/v1/images", MULTIPART, multipart_chunks("big.png", 40 * MB))
    assert upload.status == 413 and "limits.max_upload_bytes" in upload.json()["error"]["message"]
    assert upload.read <= 2 * MB, upload.read
    # the same through every upload route, and a plain JSON route (no Content-Length anywhere)
    for path in ("/api/v1/predict", "/api/v1/imports"):
        cut = call(app, path, MULTIPART, multipart_chunks("big.zip", 40 * MB), warm=False)
        assert cut.status == 413 and cut.read <= 2 * MB, (path, cut.status, cut.read)
    zeros = (b" " * (64 * 1024) for _ in range(40 * 16))
    body = call(app, "/api/v1/exports", {"content-type": "application/json"}, zeros, warm=False)
    assert body.status == 413 and "limits.max_request_bytes" in body.json()["error"]["message"]
    assert body.read <= 2 * MB, body.read
    assert spooled(ws) == [] and ws.list_images()[1] == 0


# -- uploads ------------------------------------------------------------------------------------------------
def test_upload_end_to_end_and_names_cut_at_255_bytes(sqlite_workspace: gv.Workspace, samples: dict[str, Path]) -> None:
    ws = sqlite_workspace
    client = TestClient(create_app(ws))
    data = samples["astronaut.jpg"].read_bytes()  # skimage.data.astronaut, 512 x 512
    name = "é" * 200 + ".jpg"  # 404 bytes of UTF-8 in 204 characters
    sent = client.post("/api/v1/images", files={"file": (name, data, "image/jpeg")}, data={"note": "kept aside"})
    assert sent.status_code == 201, sent.text
    body = sent.json()
    stored = body["name"]
    assert len(stored.encode()) <= 255 and stored.endswith(".jpg") and set(stored[:-4]) == {"é"}
    assert body["id"] == hashlib.sha256(data).hexdigest() and (body["width"], body["height"]) == (512, 512)
    assert client.get(f"/api/v1/images/{body['id']}/thumbnail").status_code == 200
    assert spooled(ws) == []  # the spool is gone: moved into the store, nothing left behind
    for raw in ("😀" * 100 + ".png", "a" * 300, "x." + "é" * 200):
        cut = safe_filename(raw)
        assert 0 < len(cut.encode()) <= 255 and cut.encode().decode() == cut, raw
    assert safe_filename("😀" * 100 + ".png").endswith(".png")


def test_big_upload_is_ingested_by_a_job(
    sqlite_workspace: gv.Workspace, samples: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = sqlite_workspace
    client = TestClient(create_app(ws))
    # what makes an ingest long: a side over ingest.pyramid_threshold (read from the header), or the byte size
    assert not runs_long(samples["astronaut.jpg"], ws.settings)
    wide = ws.settings.model_copy(update={"ingest": ws.settings.ingest.model_copy(update={"pyramid_threshold": 256})})
    assert runs_long(samples["astronaut.jpg"], wide)  # 512 px: a pyramid would be built
    monkeypatch.setattr("gigavision.ingest.LONG_INGEST_BYTES", 10_000)  # astronaut.jpg (~45 kB) is big now
    data = samples["astronaut.jpg"].read_bytes()
    try:
        sent = client.post("/api/v1/images", files={"file": ("astro.jpg", data, "image/jpeg")})
        assert sent.status_code == 202, sent.text
        job = sent.json()
        assert job["kind"] == "ingest" and sent.headers["location"] == f"/api/v1/jobs/{job['id']}"
        assert spooled(ws) == [] and ws.list_images()[1] == 0  # the file moved into the job's input
        ws.jobs.execute(job["id"])
        done = ws.jobs.get(job["id"])
        assert done["status"] == "done", done["error"]
        assert done["result"]["status"] == "added" and done["result"]["id"] == hashlib.sha256(data).hexdigest()
        assert ws.list_images()[1] == 1
    finally:
        ws.jobs.huey.storage.flush_queue()


# -- archives -----------------------------------------------------------------------------------------------
def test_archive_member_clashes_are_rejected_one_by_one_under_the_workspace(
    sqlite_workspace: gv.Workspace, samples: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = sqlite_workspace
    (coins,) = ws.ingest([samples["coins.png"]])
    doc = {
        "images": [{"id": 1, "file_name": "coins.png", "width": 384, "height": 303}],
        "categories": [{"id": 1, "name": "coin"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4]}],
    }
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w") as zf, pytest.warns(UserWarning, match="Duplicate name"):
        zf.writestr("export/annotations.json", json.dumps(doc))
        zf.writestr("export/a", "a file")
        zf.writestr("export/a/b.json", "{}")  # a file and a folder called a: this member alone is rejected
        zf.writestr("export/annotations.json", "{}")  # the same name again
    used: list[Path] = []
    real = safe_extract

    def spy(path: Path, dest: Path, limits: ArchiveLimits | None = None) -> list[tuple[str, str]]:
        used.append(dest)
        assert limits == ArchiveLimits.of(ws.settings.limits)
        return real(path, dest, limits)

    monkeypatch.setattr("gigavision.formats.archive.safe_extract", spy)
    report = import_annotations(ws, "coco", archive)
    reasons = {r.item: r.reason for r in report.rejected}
    assert reasons == {
        "export/a/b.json": "a file and a folder of the same name in the archive (the first is kept)",
        "export/annotations.json": "a second member of the same name (the first one is kept)",
    }
    assert report.annotations == 1 and len(ws.annotations.query(str(coins.id))) == 1
    (dest,) = used
    assert dest.is_relative_to(ws.root / "cache" / "uploads") and not dest.exists()


def test_archive_caps_follow_the_upload_limit(sqlite_workspace: gv.Workspace, tmp_path: Path) -> None:
    limits = sqlite_workspace.settings.limits.model_copy(update={"max_upload_bytes": 2_000, "max_archive_members": 3})
    caps = ArchiveLimits.of(limits)
    assert (caps.max_total_bytes, caps.max_members) == (20_000, 3)
    many = tmp_path / "many.zip"
    with zipfile.ZipFile(many, "w") as zf:
        for i in range(4):
            zf.writestr(f"{i}.json", "{}")
    with pytest.raises(LimitExceeded, match="4 members, more than the limit 3"):
        safe_extract(many, tmp_path / "out1", caps)
    big = tmp_path / "big.zip"
    with zipfile.ZipFile(big, "w") as zf:
        zf.writestr("big.json", bytes(range(256)) * 100)  # 25,600 bytes, stored: over 10 x 2,000
    with pytest.raises(LimitExceeded, match="more than the limit 20000"):
        safe_extract(big, tmp_path / "out2", caps)
    default = ArchiveLimits.of(sqlite_workspace.settings.limits)
    assert default.max_total_bytes == 10 * sqlite_workspace.settings.limits.max_upload_bytes


# -- REST training ------------------------------------------------------------------------------------------
def test_rest_training_takes_no_server_path_and_bounds_the_batch(sqlite_workspace: gv.Workspace) -> None:
    pytest.importorskip("torch")
    ws = sqlite_workspace
    client = TestClient(create_app(ws))
    base = {"task": "classify", "dataset": "digits@1", "arch": "resnet18", "epochs": 1, "image_size": 64}
    try:
        for weights in ("/etc/passwd", "../../models/x/checkpoint.pt", "models/x", 7):
            refused = client.post("/api/v1/models/train", json={**base, "weights": weights})
            assert refused.status_code == 400, refused.text
            assert "weights must be the id of a model of this workspace" in refused.json()["error"]["message"]
        unknown = client.post("/api/v1/models/train", json={**base, "weights": "no-such-model"})
        assert unknown.status_code == 404
        big = client.post("/api/v1/models/train", json={**base, "batch_size": 4096, "image_size": 1024})
        assert big.status_code == 400
        message = big.json()["error"]["message"]
        assert "batch_size 4096" in message and "image_size 1024" in message and "max_train_batch_pixels" in message
        unset = client.post("/api/v1/models/train", json={**base, "image_size": None, "batch_size": 4096})
        assert unset.status_code == 400 and "image_size 224" in unset.json()["error"]["message"]
        assert client.get("/api/v1/jobs").json()["total"] == 0  # nothing was queued

        folder = ws.root / "models" / "digits-classify-1"  # a published model to start from
        folder.mkdir(parents=True)
        record = {
            "id": "digits-classify-1",
            "task": "classify",
            "arch": "resnet18",
            "classes": ["a", "b"],
            "dataset": "digits@1",
            "input": {"size": 64, "mean": [0.5] * 3, "std": [0.25] * 3},
            "created_at": "2024-01-01T00:00:00+00:00",
        }
        (folder / "model.json").write_text(json.dumps(record), encoding="utf-8")
        (folder / "checkpoint.pt").write_bytes(b"weights")
        queued = client.post("/api/v1/models/train", json={**base, "weights": "digits-classify-1", "batch_size": 8})
        assert queued.status_code == 202, queued.text
        assert queued.json()["params"]["recipe"]["weights"] == str(folder / "checkpoint.pt")

        # or a weights file uploaded with the recipe (multipart), kept in the run's own folder
        recipe = json.dumps({**base, "id": "from-upload", "batch_size": 8})
        sent = client.post(
            "/api/v1/models/train", data={"recipe": recipe}, files={"weights": ("init.safetensors", b"tensors")}
        )
        assert sent.status_code == 202, sent.text
        start = Path(sent.json()["params"]["recipe"]["weights"])
        assert start == ws.root / "runs" / "from-upload" / "weights.safetensors" and start.read_bytes() == b"tensors"
        for fields, file, reason in (
            ({"recipe": recipe}, ("w.txt", b"x"), "upload one of .safetensors"),
            ({"recipe": json.dumps({**base, "weights": "digits-classify-1"})}, ("w.pt", b"x"), "not both"),
            ({"recipe": "[1]"}, ("w.pt", b"x"), "recipe must be a JSON object"),
        ):
            bad = client.post("/api/v1/models/train", data=fields, files={"weights": file})
            assert bad.status_code == 400 and reason in bad.json()["error"]["message"], bad.text
        assert spooled(ws) == []
    finally:
        ws.jobs.huey.storage.flush_queue()
