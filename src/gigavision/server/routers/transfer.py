"""``/api/v1/exports`` and ``/api/v1/imports``: import and export of annotations, run as background jobs.

Both answer 202 with the job record; watch it at ``/api/v1/jobs/{id}`` and download an export's archive at
``/api/v1/jobs/{id}/files/{result.out}``. Parameters are checked before the job is queued (400 at once for
an unknown format or option), and an import's upload is streamed to disk under the size limit.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from gigavision.errors import InvalidInput
from gigavision.formats.jobs import export_params, import_params
from gigavision.formats.registry import FORMATS
from gigavision.server.auth import Allow, LoginDep, acting_as
from gigavision.server.deps import WorkspaceDep
from gigavision.server.uploads import FILE_PROPERTY, multipart_body, receive_form

router = APIRouter(prefix="/api/v1", tags=["import / export"])
FORMAT_NAMES = " | ".join(FORMATS)


class ExportRequest(BaseModel):
    format: str = Field(description=FORMAT_NAMES)
    dataset: str | None = Field(None, description="a dataset version NAME@N; omitted: the live workspace")
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="images (copy|link|none), task (detect|segment|obb, YOLO), layout (ultralytics|darknet, "
        "YOLO), crs (image|map, GeoJSON/GeoParquet), status [...], label [...], "
        "archive (default true: one .zip)",
    )
    actor: str = Field("anonymous", max_length=256)


@router.post("/exports", dependencies=[Allow("transfer")], status_code=202)
def create_export(body: ExportRequest, ws: WorkspaceDep, login: LoginDep) -> dict[str, Any]:
    """Queue an export; the result names the file to download (``result.out``)."""
    params = {"format": body.format, "dataset": body.dataset, "options": body.options}
    checked = export_params(params)
    if checked.dataset:
        from gigavision.datasets import open_version

        open_version(ws, checked.dataset)  # 404 now rather than a failed job later
    return dict(ws.jobs.submit("export", params, acting_as(login, body.actor)))


IMPORT_BODY = multipart_body(
    ("POST", f"{router.prefix}/imports"),
    {
        "file": FILE_PROPERTY,
        "format": {"type": "string", "description": FORMAT_NAMES},
        "options": {
            "type": "string",
            "default": "{}",
            "description": "JSON object, any of: status, source, strict_labels, labels, ingest, max_vertices, "
            "default_label, image (docs/formats.md); other keys are a 400",
        },
        "actor": {"type": "string", "maxLength": 256, "default": "anonymous"},
    },
    ["file", "format"],
)


@router.post(
    "/imports",
    dependencies=[Allow("transfer")],
    status_code=202,
    openapi_extra=IMPORT_BODY,
    responses={400: {}, 413: {}},
)
async def create_import(request: Request, ws: WorkspaceDep, login: LoginDep) -> dict[str, Any]:
    """Queue an import of one uploaded file (.json, .xml, .txt, .csv, .geojson, or a .zip of a folder), streamed
    once into the workspace's upload spool under ``limits.max_upload_bytes`` and moved into the job's input.

    The job's result is the import report: what was imported, what was rejected and why. Something rejected or
    unmatched leaves the job ``done`` with ``"ok": false`` (record and result) and the counts in its message.
    """
    async with receive_form(request, ws.root, ws.settings.limits.max_upload_bytes) as form:
        if form.file is None or form.filename is None:
            raise InvalidInput("no file: send the annotations in the multipart field file")
        fmt = form.fields.get("format")
        if not fmt:
            raise InvalidInput(f"format: field required ({FORMAT_NAMES})")
        actor = form.fields.get("actor") or "anonymous"
        if len(actor) > 256:
            raise InvalidInput("actor: at most 256 characters")
        actor = acting_as(login, actor)
        try:
            opts = json.loads(form.fields.get("options") or "{}")
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"options must be a JSON object: {exc}") from exc
        if not isinstance(opts, dict):
            raise InvalidInput("options must be a JSON object")
        name = form.filename
        params = {"format": fmt, "file": name, "options": opts}
        import_params(params)
        if form.size == 0:
            raise InvalidInput(f"{name}: empty upload (0 bytes)")
        return dict(ws.jobs.submit("import", params, actor, inputs={name: form.file}))
