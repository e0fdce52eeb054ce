"""``POST /api/v1/predict``: the deployment endpoint — send an image, get back what the model sees in it.

Small images are answered in the request (200: ``Annotations`` records, or with ``?format=png`` the image
with the predictions drawn on it); everything else becomes a ``predict`` job (202 + the job record; follow
``/api/v1/jobs/{id}``), the same split as ``gigavision predict``:

- *small*: no tiling option given, not a patch model, and the level the whole-image path reads has at most
  ``MAX_PREDICT_PIXELS`` pixels (``models.predict.read_for``) — ``infer.run.predict_whole``;
- *big*: anything else — tiled inference (``infer.run.predict_tiled``) in a job.

The image is a workspace ``image_id`` or an upload (multipart field ``file``), streamed to disk under
``limits.max_upload_bytes`` like ``POST /api/v1/images``. A small upload is predicted and deleted; a big one is
*kept as the job's input file* (not ingested: a deployment call should not grow the image store or wait
for a pyramid to be built; ingest first and send the ``image_id`` to store predictions or reuse the image).

Everything a job would only discover later (unknown model or image, a file that is not an image, bad tiling
options, a task the tiled engine cannot run) is a 4xx now. Models are loaded once and kept (a few) on the
app, so repeated calls pay only for the prediction.
"""

from __future__ import annotations

import json
import shutil
import threading
import uuid
from collections import OrderedDict
from typing import TYPE_CHECKING, Annotated, Any, Literal, cast

from fastapi import APIRouter, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile as StarletteUpload

from gigavision.errors import GigavisionError, InvalidInput, LimitExceeded, NotFound
from gigavision.infer.jobs import OPTION_KEYS, TILED_TASKS, PredictParams, class_colours, predict_params, task_message
from gigavision.models import store
from gigavision.models.predict import require_runtime
from gigavision.server.deps import WorkspaceDep
from gigavision.server.uploads import safe_filename, save_upload

if TYPE_CHECKING:
    from gigavision.images.source import ImageSource
    from gigavision.infer.engine import InferOptions
    from gigavision.models.predict import Predictor
    from gigavision.workspace import Workspace

router = APIRouter(prefix="/api/v1", tags=["predict"])

MAX_JSON_BYTES = 1024 * 1024  # a JSON request names an image; it never carries one
CACHED_PREDICTORS = 4
MIN_FOREGROUND = 0.05  # the CLI's --min-foreground default


class PredictFields(BaseModel):
    """The request's fields, as a JSON body or as multipart/form fields next to ``file``."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=128, description="model id")
    image_id: str | None = Field(
        None, description="a workspace image: id, unique id prefix or unique name (or upload the field file)"
    )
    runtime: Literal["torch", "onnx"] | None = Field(None, description="default: onnx when the model has model.onnx")
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
    batch: int = Field(16, ge=1, le=256, description="tiled: windows per model batch")
    on_error: Literal["fail", "skip"] = Field("fail", description="tiled: a window that fails to decode")
    side: dict[str, float] | None = Field(None, description="side features KEY: number (default: image metadata)")
    zoom: str | None = Field(
        None, max_length=512, description="tiled: coarse pass first, e.g. threshold=0.5 or topk=4,model=ID (--zoom-in)"
    )
    actor: str = Field("anonymous", min_length=1, max_length=256, description="who asks (the job's created_by)")

    @property
    def tiling_asked(self) -> bool:
        asked = (self.tile, self.overlap, self.level, self.mpp, self.zoom)
        return any(v is not None for v in asked) or self.skip_background


_SCHEMA = PredictFields.model_json_schema()
OPENAPI_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["model", "file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        **{k: v for k, v in _SCHEMA["properties"].items() if k != "image_id"},
                    },
                }
            },
            "application/json": {"schema": _SCHEMA, "example": {"model": "scenes-detect-1", "image_id": "<64 hex>"}},
        },
    }
}


# -- loaded models ------------------------------------------------------------------------------------------
class PredictorCache:
    """The last few loaded predictors, by model, runtime and model folder identity: an ONNX session or a
    checkpoint takes far longer to load than one small image takes to predict. A model removed and trained
    again under the same id has a new ``model.json``, hence a new key."""

    def __init__(self, size: int = CACHED_PREDICTORS) -> None:
        self.size = size
        self._items: OrderedDict[tuple[str, str, int, int], Predictor] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, info: store.ModelInfo, runtime: str) -> Predictor:
        """The loaded predictor of ``info`` in ``runtime`` (loaded now when it is not kept)."""
        from gigavision.models.predict import Predictor

        stat = (info.path / store.MODEL_JSON).stat()
        key = (info.id, runtime, stat.st_ino, stat.st_mtime_ns)
        with self._lock:  # loading under the lock: two first calls load a model once, not twice
            predictor = self._items.get(key)
            if predictor is None:
                predictor = Predictor(info, runtime=runtime)
                self._items[key] = predictor
                while len(self._items) > self.size:
                    self._items.popitem(last=False)
            self._items.move_to_end(key)
            return predictor


def _predictors(request: Request) -> PredictorCache:
    cache: PredictorCache | None = getattr(request.app.state, "predictors", None)
    if cache is None:  # handlers run on the event loop thread: no race creating it
        cache = PredictorCache()
        request.app.state.predictors = cache
    return cache


# -- reading the request ------------------------------------------------------------------------------------
def _validated(data: dict[str, Any]) -> PredictFields:
    try:
        return PredictFields.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "body"
        raise InvalidInput(f"{where}: {first.get('msg')}") from exc


async def _read_request(request: Request, ws: Workspace) -> tuple[PredictFields, StarletteUpload | None]:
    """The fields and the upload (or None), from a JSON body or a multipart / urlencoded form."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    declared = request.headers.get("content-length")
    size = int(declared) if declared and declared.isdigit() else None
    if kind == "application/json":
        if size is not None and size > MAX_JSON_BYTES:
            raise LimitExceeded(f"a JSON request is at most {MAX_JSON_BYTES:,} bytes; upload images as multipart")
        try:
            body = await request.json()
        except ValueError as exc:
            raise InvalidInput(f"the body is not valid JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise InvalidInput("the JSON body must be an object with model and image_id")
        if "file" in body:
            raise InvalidInput("a file cannot travel in JSON: send it as multipart/form-data (field file)")
        return _validated(body), None
    if kind not in ("multipart/form-data", "application/x-www-form-urlencoded"):
        raise InvalidInput(
            f"send multipart/form-data (model + file) or application/json (model + image_id), not {kind or 'nothing'}"
        )
    limit = ws.settings.limits.max_upload_bytes
    if size is not None and size > limit + 64 * 1024:
        raise LimitExceeded(f"upload is larger than limits.max_upload_bytes ({limit:,} bytes)")
    form = await request.form(max_files=1, max_fields=64)
    try:
        upload: StarletteUpload | None = None
        data: dict[str, Any] = {}
        for key, value in form.multi_items():
            if isinstance(value, StarletteUpload):
                if key != "file":
                    raise InvalidInput(f"{key}: the image goes in the multipart field file")
                upload = value
            elif value != "":  # an empty form field is an absent one
                data[key] = value
        if isinstance(data.get("side"), str):
            try:
                data["side"] = json.loads(data["side"])
            except json.JSONDecodeError as exc:
                raise InvalidInput(f"side must be a JSON object of KEY: number: {exc}") from exc
        return _validated(data), upload
    except BaseException:
        await form.close()  # the spooled upload; on success the caller closes it when done
        raise


# -- small or big -------------------------------------------------------------------------------------------
def fits_whole(info: store.ModelInfo, source: ImageSource) -> bool:
    """Whether the whole-image path takes this image: mirrors ``models.predict.read_for`` (the coarsest
    level still ``input.size`` across must have at most ``MAX_PREDICT_PIXELS``), so a request never starts
    a prediction that path would refuse."""
    from gigavision.models import predict

    if info.input.patch is not None:
        return False
    want = max(source.width, source.height) / info.input.size
    level = max(
        (k for k, lvl in enumerate(source.levels) if lvl.downsample <= max(want, 1.0) * 1.001),
        default=0,
    )
    lvl = source.levels[level]
    return lvl.width * lvl.height <= predict.MAX_PREDICT_PIXELS


def tiled_options(info: store.ModelInfo, fields: PredictFields, source: ImageSource) -> InferOptions | None:
    """None for the whole-image path; else the tiling options, checked against the model and the image
    (400 now rather than a failed job)."""
    from gigavision.infer.engine import DEFAULT_OVERLAP, InferOptions
    from gigavision.infer.reading import resolve_resolution

    patch = info.input.patch is not None
    if not fields.tiling_asked and not patch and fits_whole(info, source):
        return None
    if info.task not in TILED_TASKS:
        raise InvalidInput(task_message(info.id, info.task))
    size = info.input.size
    tile = fields.tile or size
    options = InferOptions(
        tile=fields.tile,
        overlap=fields.overlap if fields.overlap is not None else min(DEFAULT_OVERLAP, tile // 4),
        batch=fields.batch,
        level=fields.level,
        mpp=fields.mpp,
        skip_background=fields.min_foreground if fields.skip_background else None,
        merge=fields.merge,
        merge_threshold=fields.merge_threshold,
        min_score=fields.min_score,
        on_error=fields.on_error,
    )
    options.check()
    if patch and tile > size:
        raise InvalidInput(
            f"tile {tile} is larger than the {size}×{size} patches model {info.id} was trained on; use {size} or less"
        )
    if options.overlap >= tile:
        raise InvalidInput(f"overlap {options.overlap} must be smaller than the tile ({tile})")
    if fields.level is not None or fields.mpp is not None:
        resolve_resolution(source, level=fields.level, mpp=fields.mpp)
    return options


def _runtime(info: store.ModelInfo, asked: str | None) -> str:
    has_onnx = (info.path / store.ONNX_FILE).is_file()
    runtime = asked or ("onnx" if has_onnx else "torch")
    if runtime == "onnx" and not has_onnx:
        raise NotFound(f"model {info.id}: {store.ONNX_FILE} is missing; run gigavision export-model {info.id}")
    return runtime


# -- answering ----------------------------------------------------------------------------------------------
def _predict_now(
    ws: Workspace,
    predictor: Predictor,
    item: str,
    shown: str,
    fields: PredictFields,
    source: ImageSource,
    png: bool,
) -> Response:
    """The whole-image prediction of one image, as JSON records or as the overlay PNG."""
    from gigavision.infer.jobs import render_overlay
    from gigavision.infer.run import predict_whole

    try:
        (result,), stored = predict_whole(predictor, [item], ws=ws, store=fields.store, side=fields.side)
        if png:
            picture = render_overlay(source, result.annotations, class_colours(ws, predictor.info.classes))
    except GigavisionError as exc:  # name an upload as the client did, not by its path on the server
        raise type(exc)(str(exc).replace(item, shown)) from exc
    if png:
        return Response(
            picture,
            media_type="image/png",
            headers={"X-Gigavision-Annotations": str(len(result.annotations)), "Cache-Control": "no-store"},
        )
    body: dict[str, Any] = {
        "model": predictor.info.id,
        "runtime": predictor.runtime,
        "task": predictor.info.task,
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


def _queued(record: dict[str, Any]) -> JSONResponse:
    return JSONResponse(record, status_code=202, headers={"Location": f"/api/v1/jobs/{record['id']}"})


def _job_params(
    info: store.ModelInfo, runtime: str, fields: PredictFields, options: InferOptions, file: str | None, png: bool
) -> PredictParams:
    return predict_params(
        {
            "model": info.id,
            "runtime": runtime,
            "image_id": fields.image_id if file is None else None,
            "file": file,
            "options": {k: getattr(options, k) for k in OPTION_KEYS},
            "store": fields.store,
            "overlay": png,
            "side": fields.side or {},
            "zoom": fields.zoom,
        }
    )


@router.post(
    "/predict",
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
    format: Annotated[
        Literal["json", "png"],
        Query(description="png: answer a small image with the image and its predictions drawn (≤ 2048 px)"),
    ] = "json",
) -> Response:
    """Predict one image with a published model: fields ``model`` and ``image_id`` (JSON or form), or
    ``model`` and a multipart ``file``; optional ``runtime``, ``store`` (image_id only), tiling options
    (``tile``, ``overlap``, ``level``, ``mpp``, ``skip_background``, ``min_foreground``, ``merge``,
    ``merge_threshold``, ``min_score``, ``on_error``), ``batch``, ``side``, ``actor``.

    200: ``{"model", "runtime", "task", "input", "image_id", "width", "height", "n_annotations",
    "annotations": [records]}`` (``format=png``: ``image/png``). 202: the ``predict`` job; its result is
    ``{"model", "runtime", "items": [tiled result]}`` and with ``format=png`` its files hold ``overlay.png``.
    """
    fields, upload = await _read_request(request, ws)
    try:
        if (upload is None) == (fields.image_id is None):
            raise InvalidInput("give either an image file (multipart field file) or an image_id, not both")
        if fields.store and upload is not None:
            raise InvalidInput("store needs a workspace image: upload it to POST /api/v1/images, then send image_id")
        # the rest reads files, the database and the model: off the event loop
        return await run_in_threadpool(_answer, ws, _predictors(request), fields, upload, format == "png")
    finally:
        if upload is not None:
            await upload.close()


def _answer(
    ws: Workspace, predictors: PredictorCache, fields: PredictFields, upload: StarletteUpload | None, png: bool
) -> Response:
    info = store.get_model(ws, fields.model)
    runtime = _runtime(info, fields.runtime)
    require_runtime(runtime, feature=f"POST /api/v1/predict with runtime {runtime}")
    if upload is None:
        assert fields.image_id is not None  # checked by the caller: exactly one of upload and image_id
        return _predict_image(ws, predictors, info, runtime, fields, fields.image_id, png)
    return _predict_upload(ws, predictors, info, runtime, fields, upload, png)


def _predict_image(
    ws: Workspace,
    predictors: PredictorCache,
    info: store.ModelInfo,
    runtime: str,
    fields: PredictFields,
    image_id: str,
    png: bool,
) -> Response:
    image_id = ws.find_image(image_id)  # id, prefix or name: 404 unknown, 400 ambiguous
    fields = fields.model_copy(update={"image_id": image_id})  # a queued job names the image by its full id
    source = ws.open_source(image_id)  # the workspace's cached source: not closed here
    options = tiled_options(info, fields, source)
    if options is None:
        return _predict_now(ws, predictors.get(info, runtime), image_id, image_id, fields, source, png)
    params = _job_params(info, runtime, fields, options, None, png)
    return _queued(ws.jobs.submit("predict", params.as_params(), fields.actor))


def _predict_upload(
    ws: Workspace,
    predictors: PredictorCache,
    info: store.ModelInfo,
    runtime: str,
    fields: PredictFields,
    upload: StarletteUpload,
    png: bool,
) -> Response:
    """Spool the upload (under the limit), open it (400/413/422 for what is not a readable image), then
    predict it now or hand the file to a job."""
    from gigavision.images.registry import open_image

    name = safe_filename(upload.filename)
    if name.startswith("."):
        name = f"upload{name}"
    spool = ws.root / "cache" / "uploads" / uuid.uuid4().hex
    spool.mkdir(parents=True)
    path = spool / name
    try:
        # save_upload reads only ``.file``, which the form's starlette UploadFile has too
        size = save_upload(cast(UploadFile, upload), path, ws.settings.limits.max_upload_bytes)
        if size == 0:
            raise InvalidInput(f"{name}: empty upload (0 bytes)")
        with open_image(path, limits=ws.settings.limits) as source:
            options = tiled_options(info, fields, source)
            if options is None:
                return _predict_now(ws, predictors.get(info, runtime), str(path), name, fields, source, png)
        params = _job_params(info, runtime, fields, options, name, png)
        return _queued(ws.jobs.submit("predict", params.as_params(), fields.actor, inputs={name: path}))
    finally:
        shutil.rmtree(spool, ignore_errors=True)
