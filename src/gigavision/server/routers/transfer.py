"""``/api/v1/exports`` and ``/api/v1/imports``: import and export of annotations, run as background jobs.

Both answer 202 with the job record; watch it at ``/api/v1/jobs/{id}`` and download an export's archive at
``/api/v1/jobs/{id}/files/{result.out}``. Parameters are checked before the job is queued (400 at once for
an unknown format or option), and an import's upload is streamed to disk under the size limit.
"""

from __future__ import annotations

import json
import shutil
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from gigavision.errors import InvalidInput, LimitExceeded
from gigavision.formats.jobs import export_params, import_params
from gigavision.server.deps import WorkspaceDep
from gigavision.server.uploads import safe_filename, save_upload

router = APIRouter(prefix="/api/v1", tags=["import / export"])


class ExportRequest(BaseModel):
    format: str = Field(description="coco | voc | yolo | geojson | imagefolder | csv")
    dataset: str | None = Field(None, description="a dataset version NAME@N; omitted: the live workspace")
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="images (copy|link|none), task (detect|segment, YOLO), status [...], label [...], "
        "archive (default true: one .zip)",
    )
    actor: str = Field("anonymous", max_length=256)


@router.post("/exports", status_code=202)
def create_export(body: ExportRequest, ws: WorkspaceDep) -> dict[str, Any]:
    """Queue an export; the result names the file to download (``result.out``)."""
    params = {"format": body.format, "dataset": body.dataset, "options": body.options}
    checked = export_params(params)
    if checked.dataset:
        from gigavision.datasets import open_version

        open_version(ws, checked.dataset)  # 404 now rather than a failed job later
    return dict(ws.jobs.submit("export", params, body.actor))


@router.post("/imports", status_code=202)
async def create_import(
    request: Request,
    ws: WorkspaceDep,
    file: UploadFile,
    format: Annotated[str, Form(description="coco | voc | yolo | geojson | imagefolder | csv")],
    options: Annotated[
        str,
        Form(
            description="JSON object, any of: status, source, strict_labels, labels, ingest, max_vertices, "
            "default_label, image (docs/formats.md); other keys are a 400"
        ),
    ] = "{}",
    actor: Annotated[str, Form(max_length=256)] = "anonymous",
) -> dict[str, Any]:
    """Queue an import of one uploaded file (.json, .xml, .txt, .csv, .geojson, or a .zip of a folder).

    The job's result is the import report: what was imported, what was rejected and why. Something rejected or
    unmatched leaves the job ``done`` with ``"ok": false`` (record and result) and the counts in its message.
    """
    limit = ws.settings.limits.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + 64 * 1024:
        raise LimitExceeded(f"upload is larger than limits.max_upload_bytes ({limit:,} bytes)")
    try:
        opts = json.loads(options)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"options must be a JSON object: {exc}") from exc
    if not isinstance(opts, dict):
        raise InvalidInput("options must be a JSON object")
    name = safe_filename(file.filename)
    params = {"format": format, "file": name, "options": opts}
    import_params(params)
    spool = ws.root / "cache" / "uploads" / uuid.uuid4().hex
    spool.mkdir(parents=True)
    try:
        size = await run_in_threadpool(save_upload, file, spool / name, limit)
        if size == 0:
            raise InvalidInput(f"{name}: empty upload (0 bytes)")
        return dict(ws.jobs.submit("import", params, actor, inputs={name: spool / name}))
    finally:
        await file.close()
        shutil.rmtree(spool, ignore_errors=True)
