"""``POST /api/v1/predict``: the deployment endpoint — send an image, get back what the model sees in it.

Small images are answered in the request (200: ``Annotations`` records, or with ``?format=png`` the image
with the predictions drawn on it); everything else becomes a ``predict`` job (202 + the job record; follow
``/api/v1/jobs/{id}``). The request's fields become an ``infer.request.PredictRequest``, whose ``plan``
makes the split ``gigavision predict`` makes:

- *small*: no tiling option given, not a patch model, and the level the whole-image path reads has at most
  ``MAX_PREDICT_PIXELS`` pixels — predicted whole now;
- *big*: anything else — tiled inference in a ``predict`` job.

The image is a workspace ``image_id`` or an upload (multipart field ``file``), streamed to disk under
``limits.max_upload_bytes`` like ``POST /api/v1/images``. A small upload is predicted and deleted; a big one is
*kept as the job's input file* (not ingested: a deployment call should not grow the image store or wait
for a pyramid to be built; ingest first and send the ``image_id`` to store predictions or reuse the image).

Everything a job would only discover later (unknown model or image, a file that is not an image, bad tiling
options, a level the image lacks, ``runtime onnx`` on a model without ONNX, a task the tiled engine cannot
run) is a 4xx now, with the message the CLI and a job give. Models are loaded once and kept (a few) in the
process's predictor cache (``infer.predictors``), so repeated calls pay only for the prediction.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from gigavision.errors import GigavisionError, InvalidInput
from gigavision.infer.engine import BATCH
from gigavision.infer.jobs import OPTION_KEYS, PredictParams, class_colours, predict_params
from gigavision.infer.request import MIN_FOREGROUND, Prediction, PredictRequest
from gigavision.server.auth import Allow, LoginDep, acting_as
from gigavision.server.deps import WorkspaceDep
from gigavision.server.errors import validated
from gigavision.server.uploads import FILE_PROPERTY, ReceivedForm, multipart_body, read_json_object, receive_form

if TYPE_CHECKING:
    from gigavision.images.source import ImageSource
    from gigavision.workspace import Workspace

router = APIRouter(prefix="/api/v1", tags=["predict"])

MAX_JSON_BYTES = 1024 * 1024  # a JSON request names an image; it never carries one


class PredictFields(BaseModel):
    """The request's fields, as a JSON body or as multipart/form fields next to ``file``."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=128, description="model id")
    image_id: str | None = Field(
        None, description="a workspace image: id, unique id prefix or unique name (or upload the field file)"
    )
    runtime: Literal["auto", "torch", "onnx"] | None = Field(
        None, description="auto (default): onnx when the model has model.onnx and onnxruntime is installed"
    )
    variant: Literal["fp32", "int8"] | None = Field(
        None, description="fp32 (default): model.onnx; int8: model.int8.onnx (export-model ID --quantize int8)"
    )
    store: bool = Field(False, description="add the predictions to the workspace as proposals (image_id only)")
    tile: int | None = Field(None, description="tiled: window side in pixels at the level read")
    overlap: int | None = Field(None, ge=0, description="tiled: overlap in pixels (default 64, ≤ a quarter tile)")
    level: int | None = Field(None, ge=0, description="tiled: pyramid level to read")
    mpp: float | None = Field(None, gt=0, description="tiled: microns per pixel to read at")
    skip_background: bool = Field(False, description="tiled: do not run windows on empty background")
    min_foreground: float = Field(MIN_FOREGROUND, ge=0, le=1, description="tiled: a window's foreground fraction")
    merge: str = Field("nms", max_length=32, description="tiled detect: nms, soft_nms, wbf, ios or none")
    merge_threshold: float = Field(0.5, description="tiled detect: IoU (IoS for ios) of one object")
    min_score: float = Field(0.3, description="tiled detect: keep detections scoring at least this")
    batch: int = Field(BATCH, ge=1, le=256, description="tiled: windows per model batch")
    on_error: Literal["fail", "skip"] = Field("fail", description="tiled: a window that fails to decode")
    side: dict[str, float] | None = Field(None, description="side features KEY: number (default: image metadata)")
    zoom: str | None = Field(
        None, max_length=512, description="tiled: coarse pass first, e.g. threshold=0.5 or topk=4,model=ID (--zoom-in)"
    )
    actor: str = Field("anonymous", min_length=1, max_length=256, description="who asks (the job's created_by)")

    def request(self, image: str) -> PredictRequest:
        """The one prediction request these fields make, for ``image`` (a workspace id or a spooled file)."""
        return PredictRequest(
            model=self.model,
            images=(image,),
            runtime=self.runtime or "auto",
            tile=self.tile,
            overlap=self.overlap,
            level=self.level,
            mpp=self.mpp,
            batch=self.batch,
            skip_background=self.skip_background,
            min_foreground=self.min_foreground,
            merge=self.merge,
            merge_threshold=self.merge_threshold,
            min_score=self.min_score,
            on_error=self.on_error,
            side=dict(self.side or {}),
            zoom=self.zoom,
            store=self.store,
            via="POST /api/v1/predict",
            variant=self.variant or "fp32",
        )


_SCHEMA = PredictFields.model_json_schema()
OPENAPI_BODY: dict[str, Any] = multipart_body(
    ("POST", f"{router.prefix}/predict"),
    {"file": FILE_PROPERTY, **{k: v for k, v in _SCHEMA["properties"].items() if k != "image_id"}},
    ["model", "file"],
)
OPENAPI_BODY["requestBody"]["content"]["application/json"] = {
    "schema": _SCHEMA,
    "example": {"model": "scenes-detect-1", "image_id": "<64 hex>"},
}


# -- reading the request ------------------------------------------------------------------------------------
def _validated(data: dict[str, Any]) -> PredictFields:
    return validated(PredictFields, data)


def _form_fields(fields: dict[str, str]) -> PredictFields:
    data: dict[str, Any] = {k: v for k, v in fields.items() if v != ""}  # an empty form field is an absent one
    if isinstance(data.get("side"), str):
        try:
            data["side"] = json.loads(data["side"])
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"side must be a JSON object of KEY: number: {exc}") from exc
    return _validated(data)


async def _read_json(request: Request) -> PredictFields:
    what = "a JSON request (upload images as multipart)"
    body = await read_json_object(request, MAX_JSON_BYTES, what, "model and image_id")
    if "file" in body:
        raise InvalidInput("a file cannot travel in JSON: send it as multipart/form-data (field file)")
    return _validated(body)


# -- answering ----------------------------------------------------------------------------------------------
def _predict_now(prediction: Prediction, item: str, shown: str, source: ImageSource, png: bool) -> Response:
    """The whole-image prediction of one image, as JSON records or as the overlay PNG."""
    from gigavision.infer.jobs import render_overlay

    ws, info = prediction.ws, prediction.info
    try:
        (result,), stored = prediction.predict_whole([item])
        if png:
            picture = render_overlay(source, result.annotations, class_colours(ws, info.classes))
    except GigavisionError as exc:  # name an upload as the client did, not by its path on the server
        raise type(exc)(str(exc).replace(item, shown)) from exc
    if png:
        return Response(
            picture,
            media_type="image/png",
            headers={"X-Gigavision-Annotations": str(len(result.annotations)), "Cache-Control": "no-store"},
        )
    body: dict[str, Any] = {
        "model": info.id,
        "runtime": prediction.runtime,
        "variant": prediction.request.variant,
        "task": info.task,
        "input": shown,
        "image_id": result.image_id,
        "width": result.width,
        "height": result.height,
        "n_annotations": len(result.annotations),
        "annotations": result.annotations.to_records(),
    }
    if stored is not None:
        body["stored"] = stored
    return JSONResponse(body)


def _queued(record: Mapping[str, Any]) -> JSONResponse:
    return JSONResponse(record, status_code=202, headers={"Location": f"/api/v1/jobs/{record['id']}"})


def _job_params(prediction: Prediction, image_id: str | None, file: str | None, png: bool) -> PredictParams:
    r = prediction.request
    return predict_params(
        {
            "model": prediction.info.id,
            "runtime": prediction.runtime,
            "image_id": image_id if file is None else None,
            "file": file,
            "options": {k: getattr(prediction.options, k) for k in OPTION_KEYS},
            "store": r.store,
            "overlay": png,
            "side": dict(r.side),
            "zoom": r.zoom,
            "variant": r.variant,
        }
    )


@router.post(
    "/predict",
    dependencies=[Allow("predict")],
    response_model=None,
    openapi_extra=OPENAPI_BODY,
    responses={
        200: {
            "description": "small image: the predictions (JSON), or with format=png the image with them drawn on it",
            "content": {"image/png": {}},
        },
        202: {"description": "big image, patch model or tiling options: the queued predict job"},
        400: {},
        404: {},
        413: {},
        422: {"description": "the file is not an image that can be read"},
    },
)
async def predict(
    request: Request,
    ws: WorkspaceDep,
    login: LoginDep,
    format: Annotated[
        Literal["json", "png"],
        Query(description="png: answer a small image with the image and its predictions drawn (≤ 2048 px)"),
    ] = "json",
) -> Response:
    """Predict one image with a published model: fields ``model`` and ``image_id`` (JSON or form), or
    ``model`` and a multipart ``file``; optional ``runtime``, ``variant`` (``int8``: the model's quantised
    ONNX file), ``store`` (image_id only), tiling options
    (``tile``, ``overlap``, ``level``, ``mpp``, ``skip_background``, ``min_foreground``, ``merge``,
    ``merge_threshold``, ``min_score``, ``on_error``), ``batch``, ``side``, ``actor``.

    200: ``{"model", "runtime", "variant", "task", "input", "image_id", "width", "height", "n_annotations",
    "annotations": [records]}`` (``format=png``: ``image/png``). 202: the ``predict`` job; its result is
    ``{"model", "runtime", "items": [tiled result]}`` and with ``format=png`` its files hold ``overlay.png``.
    """
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json":
        fields = await _read_json(request)
        fields.actor = acting_as(login, fields.actor)
        if fields.image_id is None:
            raise InvalidInput("give either an image file (multipart field file) or an image_id, not both")
        return await run_in_threadpool(_predict_image, ws, fields, fields.image_id, format == "png")
    if kind not in ("multipart/form-data", "application/x-www-form-urlencoded"):
        raise InvalidInput(
            f"send multipart/form-data (model + file) or application/json (model + image_id), not {kind or 'nothing'}"
        )
    async with receive_form(request, ws.root, ws.settings.limits.max_upload_bytes) as form:
        fields = _form_fields(form.fields)
        fields.actor = acting_as(login, fields.actor)
        if (form.file is None) == (fields.image_id is None):
            raise InvalidInput("give either an image file (multipart field file) or an image_id, not both")
        if fields.store and form.file is not None:
            raise InvalidInput("store needs a workspace image: upload it to POST /api/v1/images, then send image_id")
        # the rest reads files, the database and the model: off the event loop
        if form.file is None:
            assert fields.image_id is not None  # checked above: exactly one of file and image_id
            return await run_in_threadpool(_predict_image, ws, fields, fields.image_id, format == "png")
        return await run_in_threadpool(_predict_upload, ws, fields, form, format == "png")


def _predict_image(ws: Workspace, fields: PredictFields, image_id: str, png: bool) -> Response:
    prediction = fields.request(image_id).resolve(ws)  # the model and the options: 404 / 400 before the image
    image_id = ws.find_image(image_id)  # id, prefix or name: 404 unknown, 400 ambiguous
    source = ws.open_source(image_id)  # the workspace's cached source: not closed here
    if not prediction.plan(source).tiled:
        return _predict_now(prediction, image_id, image_id, source, png)
    # a queued job names the image by its full id
    params = _job_params(prediction, image_id, None, png)
    return _queued(ws.jobs.submit("predict", params.as_params(), fields.actor))


def _predict_upload(ws: Workspace, fields: PredictFields, form: ReceivedForm, png: bool) -> Response:
    """Open the spooled upload (400/413/422 for what is not a readable image), then predict it now or hand
    the file to a job (moved into its input folder, not copied)."""
    from gigavision.images.registry import open_image

    assert form.file is not None and form.filename is not None
    path, name = form.file, form.filename
    if form.size == 0:
        raise InvalidInput(f"{name}: empty upload (0 bytes)")
    if name.startswith("."):  # a job's input names are plain, visible file names
        name = f"upload{name}"
    prediction = fields.request(str(path)).resolve(ws)
    with open_image(path, limits=ws.settings.limits) as source:
        if not prediction.plan(source).tiled:
            return _predict_now(prediction, str(path), name, source, png)
    params = _job_params(prediction, None, name, png)
    return _queued(ws.jobs.submit("predict", params.as_params(), fields.actor, inputs={name: path}))
