"""Predict with a published model on small images, in torch or onnxruntime, with the same preprocessing.

Preprocessing is the evaluation path of training: 3-band uint8 (``to_rgb_uint8``), letterboxed into the
model's ``input.size`` square (isotropic resize, zero padding right/bottom), scaled to 0..1 and normalised
with the model's mean/std. ``task.decode`` gets each image's *original* (height, width), so shapes come back in
the image's own pixels (the letterbox scale is ``max(h, w) / size``, the one factor decode undoes).

Models trained on patches (``input.patch``) see an image at most one patch large, zero-padded (never resized:
their scale is part of what they learned). Anything larger, and any whole image above ``MAX_PREDICT_PIXELS``
at the level read, is refused here: tiling a big image into windows and merging the results is the
big-image inference engine (``gigavision.infer.engine``), which ``gigavision predict`` picks by itself.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from gigavision.errors import InvalidInput, LimitExceeded, NotFound
from gigavision.models import store
from gigavision.models.side import side_values

if TYPE_CHECKING:
    from gigavision.annotations import Annotations
    from gigavision.images.resolution import Resolution
    from gigavision.images.source import ImageSource
    from gigavision.models.recipe import PatchConfig
    from gigavision.models.task import Task
    from gigavision.workspace import Workspace

Runtime = Literal["torch", "onnx"]
RUNTIMES = ("torch", "onnx")
MAX_PREDICT_PIXELS = 64_000_000  # the most pixels decoded for one whole-image prediction
BATCH = 16
_IMAGE_ID = re.compile(r"^[0-9a-f]{64}$")


def require_runtime(runtime: str, feature: str) -> None:
    """Raise ``MissingExtra`` before anything is loaded or written when ``runtime`` cannot run here.

    torch needs the 'train' extra; onnx needs only the 'onnx' extra (onnxruntime): the tasks' decoding is
    NumPy (``models/<task>.py``), their torch half is never imported.
    """
    from gigavision.extras import require

    if runtime == "onnx":
        require("onnx", "onnxruntime", feature=feature)
    elif runtime == "torch":
        require("train", "torch", feature=feature)


def _too_big(what: str, detail: str) -> LimitExceeded:
    return LimitExceeded(
        f"{what}: {detail}; whole-image prediction handles small images only — run tiled inference over big"
        " images (gigavision.infer.engine.infer_image, or gigavision predict, which tiles them itself)"
    )


class Predictor:
    """A model loaded once for many ``predict`` calls. ``runtime``: "torch" (the checkpoint) or "onnx";
    ``variant``: which ONNX file onnxruntime runs, ``fp32`` (``model.onnx``) or ``int8``
    (``model.int8.onnx``, ``gigavision export-model ID --quantize int8``; ``models.quantize``)."""

    def __init__(
        self,
        info: store.ModelInfo,
        runtime: str = "torch",
        device: str = "cpu",
        batch: int = BATCH,
        variant: str = "fp32",
    ) -> None:
        from gigavision.models.quantize import FP32, check_variant, variant_path

        if runtime not in RUNTIMES:
            raise InvalidInput(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
        if check_variant(variant) != FP32 and runtime != "onnx":
            raise InvalidInput(
                f"variant {variant} runs on onnxruntime: predict with runtime onnx (or auto), not {runtime}"
            )
        require_runtime(runtime, f"predicting with the {runtime} runtime")
        self.info = info
        self.runtime = runtime
        self.variant = variant
        self.batch = max(1, int(batch))
        self.size = info.input.size
        self.mean = np.asarray(info.input.mean, dtype=np.float32).reshape(3, 1, 1)
        self.std = np.asarray(info.input.std, dtype=np.float32).reshape(3, 1, 1)
        self.patch: PatchConfig | None = info.input.patch
        self.side_names: list[str] = list(info.input.side_features)
        self.source_name = f"model:{info.id}"
        self._net: Any = None
        self._session: Any = None
        self.task: Task
        if runtime == "torch":
            self.task, self._net = info.load_network(device)
            self._device = device
        else:
            import onnxruntime as ort

            self.task = info.task_instance()
            path = variant_path(info, variant)  # NotFound naming the export-model command that makes it
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device.startswith("cuda") else None
            self._session = ort.InferenceSession(str(path), providers=providers or ["CPUExecutionProvider"])
            self._input_names = [i.name for i in self._session.get_inputs()]

    @property
    def network(self) -> Any:
        """The torch network (eval mode) of the torch runtime; None on onnxruntime."""
        return self._net

    @property
    def device(self) -> str:
        return self._device if self._net is not None else "cpu"

    def stamp(self, ann: Annotations) -> Annotations:
        """``ann`` as this model's predictions: source ``model:<id>`` and ``attributes.model`` = the id."""
        attrs = np.empty(len(ann), dtype=object)
        attrs[:] = [{**a, "model": self.info.id} for a in ann.attributes]
        return replace(ann, source=np.asarray([self.source_name] * len(ann), dtype=object), attributes=attrs)

    def finish_image(self, ann: Annotations, source: ImageSource, res: Resolution) -> Annotations:
        """An image's merged predictions (level-0 pixels; the tiled engine read it at ``res``) as returned:
        as they are; a pipeline runs its later stages on them here (``models.pipeline``)."""
        return ann

    # -- preprocessing -----------------------------------------------------------------------------------
    def prepare(self, pixels: np.ndarray, name: str = "image") -> tuple[np.ndarray, tuple[int, int] | None]:
        """The normalised ``(3, S, S)`` float32 input for one image, and the size decode must scale to
        (None: the network's own pixels, for padded patches)."""
        from gigavision.images.pixels import letterbox, to_rgb_uint8

        if pixels.ndim not in (2, 3) or pixels.shape[0] == 0 or pixels.shape[1] == 0:
            raise InvalidInput(f"{name}: expected an (H, W) or (H, W, C) image array, got shape {pixels.shape}")
        h, w = int(pixels.shape[0]), int(pixels.shape[1])
        rgb = to_rgb_uint8(pixels)
        if self.patch is not None:
            if h > self.size or w > self.size:
                raise _too_big(
                    name, f"{w}×{h} is larger than the {self.size}×{self.size} patches model {self.info.id} saw"
                )
            square = np.zeros((self.size, self.size, 3), dtype=np.uint8)
            square[:h, :w] = rgb
            sizes: tuple[int, int] | None = None
        else:
            if h * w > MAX_PREDICT_PIXELS:
                raise _too_big(name, f"{w}×{h} is more than {MAX_PREDICT_PIXELS:,} pixels")
            square, _ = letterbox(rgb, self.size)
            sizes = (h, w)
        return self._normalise(square[None])[0], sizes

    def prepare_batch(self, pixels: np.ndarray) -> np.ndarray:
        """``prepare`` of ``N`` windows of the network's own side at once: ``(N, S, S, 3)`` uint8 → normalised
        ``(N, 3, S, S)`` float32, the same numbers as ``prepare`` window by window (at the input side neither
        the padding of a patch nor the letterbox changes a pixel), in one vectorised pass."""
        if pixels.ndim != 4 or pixels.shape[1:] != (self.size, self.size, 3) or pixels.dtype != np.uint8:
            raise InvalidInput(
                f"prepare_batch takes (N, {self.size}, {self.size}, 3) uint8 windows, got {pixels.shape} {pixels.dtype}"
            )
        return self._normalise(pixels)

    def _normalise(self, squares: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(squares.transpose(0, 3, 1, 2), dtype=np.float32)
        x /= np.float32(255.0)
        x -= self.mean
        x /= self.std
        return x

    # -- inference ---------------------------------------------------------------------------------------
    def run(self, batch: np.ndarray, side: np.ndarray | None = None) -> list[np.ndarray]:
        """The network's outputs for a normalised ``(N, 3, S, S)`` batch (and the ``(N, K)`` raw side
        features of a model trained with them), as NumPy arrays."""
        inputs = [batch] if side is None else [batch, np.ascontiguousarray(side, dtype=np.float32)]
        if len(inputs) != 1 + bool(self.side_names):
            raise InvalidInput(f"model {self.info.id} takes side features {self.side_names}; pass them")
        if self._session is not None:
            fixed = self._session.get_inputs()[0].shape[0]
            if isinstance(fixed, int) and fixed != len(batch):
                # a graph exported with a static batch (Faster R-CNN loops over images inside): feed it in
                # chunks of its size, padding the last one, and keep only the real rows
                chunks = []
                for start in range(0, len(batch), fixed):
                    parts = [a[start : start + fixed] for a in inputs]
                    n = len(parts[0])
                    padded = [np.concatenate([p, np.zeros((fixed - n, *p.shape[1:]), dtype=p.dtype)]) for p in parts]
                    outs = self._session.run(None, dict(zip(self._input_names, padded, strict=True)))
                    chunks.append([np.asarray(o)[:n] for o in outs])
                return [np.concatenate(parts) for parts in zip(*chunks, strict=True)]
            return [np.asarray(o) for o in self._session.run(None, dict(zip(self._input_names, inputs, strict=True)))]
        import torch

        from gigavision.models.nets.task import to_numpy

        with torch.inference_mode():
            return to_numpy(self._net(*(torch.from_numpy(a).to(self._device) for a in inputs)))

    def side_batch(self, metas: Sequence[Mapping[str, Any]] | None, names: Sequence[str]) -> np.ndarray | None:
        """``(N, K)`` side features from each image's metadata, or None for a model without them."""
        if not self.side_names:
            return None
        if metas is None or len(metas) != len(names):
            raise InvalidInput(
                f"model {self.info.id} was trained with side features {', '.join(self.side_names)}:"
                " give each image's values (workspace image metadata, or --side KEY=VALUE)"
            )
        return np.stack([side_values(self.side_names, m, n) for m, n in zip(metas, names, strict=True)])

    def predict(
        self,
        images: Sequence[np.ndarray],
        sizes: Sequence[tuple[int, int]] | None = None,
        names: Sequence[str] | None = None,
        side: Sequence[Mapping[str, Any]] | None = None,
    ) -> list[Annotations]:
        """Annotations per image, in each image's own pixels.

        ``sizes`` (optional, one (h, w) per image) replaces the arrays' sizes when they were read from a
        pyramid level: results then come back in level-0 pixels of the image (same aspect, bigger scale).
        ``side``: per image, a mapping holding the model's side features (an image's metadata).
        """
        if sizes is not None and len(sizes) != len(images):
            raise InvalidInput(f"sizes: {len(sizes)} given for {len(images)} images")
        labels = list(names) if names else [f"image {i}" for i in range(len(images))]
        side_all = self.side_batch(side, labels)
        out: list[Annotations] = []
        for start in range(0, len(images), self.batch):
            chunk = images[start : start + self.batch]
            inputs: list[np.ndarray] = []
            decode_sizes: list[tuple[int, int]] = []
            crops: list[tuple[int, int] | None] = []
            for k, pixels in enumerate(chunk):
                i = start + k
                array = np.asarray(pixels)
                x, own = self.prepare(array, labels[i])
                inputs.append(x)
                if own is None:  # a padded patch: network pixels are image pixels; cut off the padding after
                    decode_sizes.append((self.size, self.size))
                    crops.append((int(array.shape[0]), int(array.shape[1])))
                else:
                    decode_sizes.append((int(sizes[i][0]), int(sizes[i][1])) if sizes is not None else own)
                    crops.append(None)
            chunk_side = None if side_all is None else side_all[start : start + len(chunk)]
            outputs = self.run(np.ascontiguousarray(np.stack(inputs)), chunk_side)
            for ann, crop in zip(self.task.decode(outputs, decode_sizes), crops, strict=True):
                if crop is not None and crop != (self.size, self.size):
                    ann = ann.crop(0, 0, crop[1], crop[0])
                out.append(self.stamp(ann))
        return out


# -- images by path or workspace id ----------------------------------------------------------------------
@dataclass
class PredictItem:
    """One input of ``predict_files``: what the user named, the image id when the workspace has it, size."""

    input: str
    image_id: str | None
    width: int
    height: int
    annotations: Annotations

    def as_dict(self) -> dict[str, Any]:
        return {
            "input": self.input,
            "image_id": self.image_id,
            "width": self.width,
            "height": self.height,
            "annotations": self.annotations.to_records(),
        }


def _file_id(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _known(ws: Workspace | None, image_id: str) -> bool:
    if ws is None:
        return False
    try:
        ws.get_image(image_id)
    except NotFound:
        return False
    return True


def open_input(ws: Workspace | None, item: str) -> tuple[ImageSource, str | None, bool]:
    """(source, workspace image id or None, owned) for an image file path or a workspace image (its id, a
    unique id prefix or a unique name: ``Workspace.find_image``); an existing file wins over a name.

    A file already ingested is recognised by its sha256, so its predictions can be stored against it.
    ``owned``: the caller closes the source (workspace sources stay in the workspace's cache).
    """
    from gigavision.images.registry import open_image

    if _IMAGE_ID.match(item) and _known(ws, item):
        assert ws is not None
        return ws.open_source(item), item, False
    path = Path(item)
    if not path.exists():
        if ws is None:
            raise NotFound(f"{item}: no such image file")
        try:
            found = ws.find_image(item)  # Ambiguous (a shared name, a short prefix) says which ones fit
        except NotFound:
            raise NotFound(f"{item}: no such image file nor an image (id, prefix, name) of this workspace") from None
        return ws.open_source(found), found, False
    source = open_image(path, limits=ws.settings.limits if ws is not None else None)
    image_id = _file_id(path) if ws is not None and path.is_file() else None
    return source, image_id if image_id and _known(ws, image_id) else None, True


def read_for(predictor: Predictor, source: ImageSource, name: str) -> np.ndarray:
    """The pixels the model should see: level 0 for patch models; for whole-image models the coarsest level
    still at least ``input.size`` across (a pyramid is never decoded whole at full resolution)."""
    from gigavision.images.resolution import read_level, whole_level

    width, height = source.width, source.height
    level = 0 if predictor.patch is not None else whole_level(source, predictor.size)
    lvl = source.levels[level]
    if lvl.width * lvl.height > MAX_PREDICT_PIXELS:
        raise _too_big(name, f"{width}×{height} has no pyramid level under {MAX_PREDICT_PIXELS:,} pixels")
    if predictor.patch is not None and (lvl.width > predictor.size or lvl.height > predictor.size):
        raise _too_big(
            name, f"{width}×{height} is larger than the {predictor.size}×{predictor.size} patches the model saw"
        )
    return read_level(source, level)


def predict_files(
    predictor: Predictor,
    items: Sequence[str],
    ws: Workspace | None = None,
    side: Mapping[str, Any] | None = None,
) -> list[PredictItem]:
    """Predict image files and/or workspace image ids (checked and read one batch at a time).

    Side features of a model trained with them come from each workspace image's metadata; ``side``
    (``--side KEY=VALUE``) gives or overrides them for every input.
    """
    if not items:
        raise InvalidInput("name at least one image file or workspace image id")
    out: list[PredictItem] = []
    for start in range(0, len(items), predictor.batch):
        chunk = items[start : start + predictor.batch]
        pixels, sizes, ids, metas = [], [], [], []
        for item in chunk:
            source, image_id, owned = open_input(ws, item)
            try:
                pixels.append(read_for(predictor, source, item))
                sizes.append((source.height, source.width))
                ids.append(image_id)
                meta = (ws.get_image(image_id).meta or {}) if ws is not None and image_id else {}
                metas.append({**meta, **(side or {})})
            finally:
                if owned:
                    source.close()
        anns = predictor.predict(pixels, sizes, names=list(chunk), side=metas)
        for item, image_id, (h, w), ann in zip(chunk, ids, sizes, anns, strict=True):
            out.append(PredictItem(item, image_id, w, h, ann))
    return out


STORE_ROUTED = "gigavision.active.routing:store_routed"


def store_predictions(ws: Workspace, items: Sequence[PredictItem], predictor: Predictor) -> dict[str, Any]:
    """Add the predictions to the workspace as proposed annotations from ``model:<id>``.

    Every input must be a workspace image (ingest files first). With a label schema, predictions of a class
    it lacks (classify's implicit ``background``: "none of the classes") are left out and counted, and
    attributes the class does not declare (classify's per-class ``scores``) are dropped: the stored row keeps
    the label, its score and the prediction's ``model`` and ``uncertainty`` (``PREDICTION_ATTRIBUTES``). Under a
    routing policy of the model (``gigavision routing``, ``active.routing``) the confident ones are stored
    ``accepted`` and the uncertain ones and an audit share become review tasks (counted under ``routed``).
    """
    from gigavision.annotations import PREDICTION_ATTRIBUTES
    from gigavision.registry import import_path

    missing = [i.input for i in items if i.image_id is None]
    if missing:
        raise InvalidInput(
            f"--store needs workspace images; not ingested: {', '.join(missing[:5])} (gigavision ingest them first)"
        )
    schema = {c.name: set(c.attributes) for c in ws.labels.classes()}
    added, skipped = 0, 0
    routing: dict[str, int] = {}
    for item in items:
        ann = item.annotations
        if schema and len(ann):
            keep = np.asarray([lab in schema for lab in ann.label], dtype=bool)
            skipped += int((~keep).sum())
            ann = ann[keep]
            attrs = np.empty(len(ann), dtype=object)
            for k, (a, lab) in enumerate(zip(ann.attributes, ann.label, strict=True)):
                attrs[k] = {key: v for key, v in a.items() if key in schema[str(lab)] or key in PREDICTION_ATTRIBUTES}
            ann = ws.labels.fit(replace(ann, attributes=attrs))  # boxes of a detector under polygon classes
        assert item.image_id is not None
        # routing policies (issue 14: uncertain ones to review, the rest accepted) are a layer up: named, not imported
        routed = import_path(STORE_ROUTED)(
            ws, item.image_id, ann, model_id=predictor.info.id, actor=predictor.source_name
        )
        added += len(routed.ids)
        for key, count in routed.summary().items():
            routing[key] = routing.get(key, 0) + count
    out: dict[str, Any] = {"added": added, "skipped_unknown_class": skipped, "source": predictor.source_name}
    if any(routing.values()):
        out["routed"] = routing
    return out
