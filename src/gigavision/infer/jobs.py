"""Tiled inference as a background job (kind ``predict``), and the overlay picture of a prediction.

``POST /api/v1/predict`` answers small images in the request and queues this job for the rest (images the
whole-image path refuses, patch models, tiling options). The job reads a workspace image, or only the
upload kept in its own input folder, and writes only its own output folder (rasters, ``overlay.png``,
``annotations.json``), whatever its parameters say. ``predict_params`` checks the parameters' shape and
turns them into the one ``infer.request.PredictRequest`` (tiled), which checks what they ask, so a job
refuses a bad request with the message the CLI and the endpoint give.

    predict {"model": ID, "runtime": "onnx" | "torch", "image_id": ID | null, "file": NAME | null,
             "options": {InferOptions fields: tile, overlap, batch, level, mpp, skip_background, merge,
                         merge_threshold, min_score, on_error}, "store": false, "overlay": false,
             "side": {KEY: NUMBER}, "variant": "fp32" | "int8"}
            → {"model", "runtime", "items": [InferResult.as_dict()]} (+ "variant" when not fp32); annotations
              inline up to ``MAX_INLINE_ANNOTATIONS``, else in ``annotations.json`` among the job's files

``render_overlay`` draws predictions on an overview of the image (≤ ``OVERLAY_SIDE`` px): "send an image,
get back the tagged image", for the synchronous answer and for the job's ``overlay.png`` alike.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np

from gigavision.errors import GigavisionError, InvalidInput
from gigavision.infer.engine import InferOptions, InferResult
from gigavision.infer.request import MIN_FOREGROUND, PredictRequest
from gigavision.store.labels import palette_rgb

if TYPE_CHECKING:
    from gigavision.annotations import Annotations
    from gigavision.images.source import ImageSource
    from gigavision.jobs.context import JobContext
    from gigavision.workspace import Workspace

PREDICT_KEYS = ("model", "runtime", "image_id", "file", "options", "store", "overlay", "side", "zoom", "variant")
OPTION_KEYS = (
    "tile",
    "overlap",
    "batch",
    "level",
    "mpp",
    "skip_background",
    "merge",
    "merge_threshold",
    "min_score",
    "on_error",
)
MAX_INLINE_ANNOTATIONS = 10_000  # more than this go to annotations.json: a job record is a database row
ANNOTATIONS_FILE = "annotations.json"
OVERLAY_FILE = "overlay.png"
OVERLAY_SIDE = 2048


@dataclass(frozen=True)
class PredictParams:
    """A checked ``predict`` job: one input (workspace image or uploaded file) and how to run it."""

    model: str
    runtime: str
    image_id: str | None
    file: str | None
    options: InferOptions
    store: bool
    overlay: bool
    side: dict[str, float]
    zoom: str | None = None  # --zoom-in text (threshold=…,topk=…,model=…)
    variant: str = "fp32"  # the ONNX file run: fp32 (model.onnx) or int8 (model.int8.onnx)

    def request(self, item: str, out_dir: Path | None = None) -> PredictRequest:
        """The job as the one prediction request: ``item`` tiled, results under ``out_dir``."""
        o = self.options
        return PredictRequest(
            model=self.model,
            images=(item,),
            runtime=self.runtime,
            tile=o.tile,
            overlap=o.overlap,
            level=o.level,
            mpp=o.mpp,
            batch=o.batch,
            skip_background=o.skip_background is not None,
            min_foreground=o.skip_background if o.skip_background is not None else MIN_FOREGROUND,
            merge=o.merge,
            merge_threshold=o.merge_threshold,
            min_score=o.min_score,
            on_error=o.on_error,
            side=dict(self.side),
            zoom=self.zoom,
            store=self.store,
            out_dir=out_dir,
            tiled=True,
            via="a predict job",
            variant=self.variant,
        )

    def as_params(self) -> dict[str, Any]:
        """The JSON the job row keeps (``predict_params`` reads it back)."""
        return {
            "model": self.model,
            "runtime": self.runtime,
            "image_id": self.image_id,
            "file": self.file,
            "options": {k: getattr(self.options, k) for k in OPTION_KEYS},
            "store": self.store,
            "overlay": self.overlay,
            "side": dict(self.side),
            "zoom": self.zoom,
            "variant": self.variant,
        }


def _flag(params: Mapping[str, Any], key: str) -> bool:
    value = params.get(key, False)
    if not isinstance(value, bool):
        raise InvalidInput(f"{key} must be true or false, got {value!r}")
    return value


def predict_params(params: Mapping[str, Any]) -> PredictParams:
    """Check a ``predict`` job's parameters (``InvalidInput`` naming the bad one): no server paths, exactly
    one input, known option names and types; what they ask is checked by the ``PredictRequest`` they make."""
    from gigavision.models.predict import RUNTIMES

    unknown = sorted(set(params) - set(PREDICT_KEYS))
    if unknown:
        raise InvalidInput(f"unknown predict job parameters {unknown}; known: {', '.join(PREDICT_KEYS)}")
    model = params.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidInput("a predict job needs a model id")
    runtime = params.get("runtime")
    if runtime not in RUNTIMES:
        raise InvalidInput(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    image_id, file = params.get("image_id"), params.get("file")
    if (image_id is None) == (file is None):
        raise InvalidInput("a predict job needs either an image_id or an uploaded file, not both")
    if image_id is not None and not isinstance(image_id, str):
        raise InvalidInput(f"image_id must be text, got {image_id!r}")
    if file is not None and (
        not isinstance(file, str) or not file or PurePosixPath(file).name != file or file.startswith(".")
    ):
        raise InvalidInput(f"file must be the plain name of the uploaded file, got {file!r}")
    raw = dict(params.get("options") or {})
    bad = sorted(set(raw) - set(OPTION_KEYS))
    if bad:
        raise InvalidInput(f"unknown tiling options {bad}; known: {', '.join(OPTION_KEYS)}")
    try:
        options = InferOptions(**raw)
    except TypeError as exc:
        raise InvalidInput(f"tiling options: {exc}") from exc
    store = _flag(params, "store")
    if store and image_id is None:
        raise InvalidInput("store needs a workspace image: ingest the file (POST /api/v1/images), then use image_id")
    side_raw = params.get("side") or {}
    if not isinstance(side_raw, Mapping) or not all(
        isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool) for k, v in side_raw.items()
    ):
        raise InvalidInput("side must be an object of KEY: number (side features of the model)")
    side = {str(k): float(v) for k, v in side_raw.items()}
    zoom = params.get("zoom")
    if zoom is not None and not isinstance(zoom, str):
        raise InvalidInput(f"zoom must be text such as 'threshold=0.5' or 'topk=4', got {zoom!r}")
    overlay = _flag(params, "overlay")
    variant = params.get("variant") or "fp32"
    if not isinstance(variant, str):
        raise InvalidInput(f"variant must be text such as 'int8', got {variant!r}")
    checked = PredictParams(str(model), str(runtime), image_id, file, options, store, overlay, side, zoom, variant)
    checked.request(file or str(image_id))  # what the options ask is checked now: a 400, not a failed job
    return checked


def run_predict(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    """Run tiled inference on the job's one input; rasters, the overlay and big annotation lists become the
    job's output files (``GET /api/v1/jobs/{id}/files/{path}``)."""
    from gigavision.models.predict import open_input
    from gigavision.models.store import write_json

    p = predict_params(params)
    ws = ctx.workspace
    if p.file is not None:
        path = ctx.input_dir / p.file
        if not path.is_file():
            raise InvalidInput(f"{p.file}: the uploaded file is missing from the job's input folder")
        item, shown = str(path), p.file
    else:
        assert p.image_id is not None
        ws.get_image(p.image_id)  # NotFound (the image was deleted since) before a model is loaded
        item, shown = p.image_id, p.image_id

    def progress(done: float, total: float, message: str) -> None:
        ctx.progress(done, total, message.replace(item, shown))

    out = Path(ctx.output_dir)
    try:
        prediction = p.request(item, out_dir=out).resolve(ws)
        info = prediction.info
        (result,) = prediction.predict(progress).items
        assert isinstance(result, InferResult)  # a job's request is tiled
        overlay = None
        if p.overlay:
            source, _, owned = open_input(ws, item)
            try:
                png = render_overlay(source, result.annotations, class_colours(ws, info.classes))
            finally:
                if owned:
                    source.close()
            (out / OVERLAY_FILE).write_bytes(png)
            overlay = OVERLAY_FILE
    except GigavisionError as exc:  # name the upload as the user did, not by its path on the server
        raise type(exc)(str(exc).replace(item, shown)) from exc

    inline = len(result.annotations) <= MAX_INLINE_ANNOTATIONS
    record = result.as_dict(with_annotations=inline)
    record["input"] = shown
    record["outputs"] = {k: _relative(v, out) for k, v in result.outputs.items()}
    record["overlay"] = overlay
    record["annotations_file"] = None
    if not inline:
        write_json(out / ANNOTATIONS_FILE, result.annotations.to_records())
        record["annotations_file"] = ANNOTATIONS_FILE
    doc: dict[str, Any] = {"model": info.id, "runtime": prediction.runtime, "items": [record]}
    if p.variant != "fp32":
        doc["variant"] = p.variant
    return doc


def _relative(value: str, root: Path) -> str:
    """An output file as a path relative to the job's files (what ``/files/{path}`` takes); other values
    (the ``stored`` count) as they are."""
    path = Path(value)
    if path.is_absolute() and path.is_relative_to(root):
        return path.relative_to(root).as_posix()
    return value


# -- the overlay ------------------------------------------------------------------------------------------
def class_colours(ws: Workspace | None, classes: Sequence[str]) -> dict[str, tuple[int, int, int]]:
    """RGB per class: the label schema's colour when it has a readable one, else the palette colour of its
    name (``store.labels.palette_color``, the one the viewer draws it in)."""
    from PIL import ImageColor

    schema = {c.name: c.color for c in ws.labels.classes()} if ws is not None else {}
    out: dict[str, tuple[int, int, int]] = {}
    for name in classes:
        try:
            rgb = ImageColor.getrgb(schema[name])
            out[name] = (int(rgb[0]), int(rgb[1]), int(rgb[2]))
        except (KeyError, ValueError):
            out[name] = palette_rgb(name)
    return out


def _overview(source: ImageSource, max_side: int) -> np.ndarray:
    """The image as 8-bit ``(h, w, 1|3)``, longest side ``min(max_side, image side)``: read from the coarsest
    level still ``max_side`` across (``images.thumbnail.overview`` takes the coarsest level of an image smaller
    than ``max_side``, a blurrier picture than the image itself)."""
    from gigavision.images.display import to_uint8
    from gigavision.images.resolution import read_level
    from gigavision.images.thumbnail import MAX_OVERVIEW_PIXELS, shrink

    level = 0
    for k, lvl in enumerate(source.levels):
        if max(lvl.width, lvl.height) >= max_side and lvl.width * lvl.height <= MAX_OVERVIEW_PIXELS:
            level = k
    return shrink(to_uint8(read_level(source, level)), max_side)


def render_overlay(
    source: ImageSource,
    annotations: Annotations,
    colours: Mapping[str, tuple[int, int, int]] | None = None,
    max_side: int = OVERLAY_SIDE,
) -> bytes:
    """PNG of the image (an overview, longest side ≤ ``max_side``) with the annotations drawn on it: boxes
    and outlines in the class colour, polygons and masks filled translucently, points as dots, each with
    its label and score; image-level tags listed in the top-left corner."""
    from PIL import Image, ImageDraw, ImageFont

    base = _overview(source, max_side)
    image = Image.fromarray(base[:, :, 0] if base.shape[2] == 1 else base).convert("RGBA")
    sx, sy = image.width / source.width, image.height / source.height
    layer = Image.new("RGBA", image.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    font = ImageFont.load_default()
    line = max(1, round(max(image.size) / 600))
    colours = dict(colours or {})
    tags: list[str] = []
    for i, shape in enumerate(annotations.shapes()):
        label, kind = str(annotations.label[i]), str(annotations.kind[i])
        score = float(annotations.score[i])
        text = label if math.isnan(score) else f"{label} {score:.2f}"
        if kind == "tag":
            tags.append(text)
            continue
        rgb = colours.get(label) or palette_rgb(label)
        solid, faint = (*rgb, 255), (*rgb, 70)
        if kind == "box":
            x0, y0, x1, y1 = (float(v) for v in annotations.xyxy[i])
            draw.rectangle(
                (x0 * sx, y0 * sy, max(x0 * sx, x1 * sx - 1), max(y0 * sy, y1 * sy - 1)), outline=solid, width=line
            )
        elif kind == "point" and shape is not None:
            r = 2 * line + 1
            draw.ellipse((shape.x * sx - r, shape.y * sy - r, shape.x * sx + r, shape.y * sy + r), fill=solid)
        elif shape is not None and not shape.is_empty:
            for poly in getattr(shape, "geoms", [shape]):
                if poly.geom_type != "Polygon":
                    continue
                ring = [(x * sx, y * sy) for x, y in np.asarray(poly.exterior.coords)[:, :2]]
                if len(ring) >= 3:
                    draw.polygon(ring, fill=faint, outline=solid, width=line)
                for hole in poly.interiors:
                    draw.line([(x * sx, y * sy) for x, y in np.asarray(hole.coords)[:, :2]], fill=solid, width=line)
        x0, y0 = float(annotations.xyxy[i][0]) * sx, float(annotations.xyxy[i][1]) * sy
        draw.text((x0 + line, max(0.0, y0 - 11)), text, fill=solid, font=font)
    for k, text in enumerate(tags):
        draw.text(
            (5, 4 + 12 * k), text, fill=(255, 255, 255, 255), font=font, stroke_width=2, stroke_fill=(0, 0, 0, 255)
        )
    buffer = io.BytesIO()
    Image.alpha_composite(image, layer).convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()
