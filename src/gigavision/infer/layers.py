"""The prediction raster catalogue: which rasters tiled inference wrote for an image, what they hold, and
reading them as coloured layers.

Tiled inference writes ``<workspace>/predictions/<model>/<image id>/{mask,mask.prob,heatmap,heatmap.prob}.tif``
(``infer.mask_file``: uint8 TIFF pyramids on the read level's grid, ``downsample``× smaller than the image).
Each one found for an image is a layer:

- ``mask`` / ``heatmap`` (kind ``labels``): class index per pixel, drawn in the class colour with alpha
  ``LABEL_ALPHA``; class 0 (background) is transparent. Resampled nearest-neighbour, so indices never blend.
- ``probability`` / ``heatmap_probability`` (kind ``scalar``): value ×255, drawn transparent → yellow → red
  with alpha rising with the value. Resampled bilinearly.

Paths are never taken from the caller: the image id is 64 hex digits, the model id matches the model store's
pattern, the name is one of four, and the file's resolved path must lie inside ``predictions/``. A layer is
keyed by its file's (inode, mtime, size), so a raster rewritten by a later run is read afresh. Unknown ids,
names or files are ``NotFound``; a corrupt raster is ``InvalidImage`` for that layer only.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from gigavision.cache import LRUCache, keep
from gigavision.errors import GigavisionError, InvalidImage, InvalidInput, NotFound
from gigavision.images.source import ImageSource
from gigavision.workspace import Workspace, check_image_id

log = logging.getLogger("gigavision.infer")

PREDICTIONS_DIR = "predictions"  # gigavision.infer.run.PREDICTIONS_DIR (not imported: it loads the engine)

LAYER_FILES: dict[str, str] = {
    "mask": "mask.tif",
    "probability": "mask.prob.tif",
    "heatmap": "heatmap.tif",
    "heatmap_probability": "heatmap.prob.tif",
}
LayerName = Literal["mask", "probability", "heatmap", "heatmap_probability"]
LayerKind = Literal["labels", "scalar"]
LAYER_KINDS: dict[str, LayerKind] = {
    "mask": "labels",
    "probability": "scalar",
    "heatmap": "labels",
    "heatmap_probability": "scalar",
}
LABEL_ALPHA = 160  # opacity of a labelled pixel (class 0 is fully transparent)
SCALAR_ALPHA = 210  # opacity at value 255; 0 at value 0
OPEN_LAYERS = 16  # open raster sources kept per server
DESCRIBED_LAYERS = 1024  # layer descriptions kept per server (a few hundred bytes each)


@dataclass(frozen=True)
class Layer:
    """One prediction raster of one image, as described by its TIFF's JSON description."""

    image_id: str
    model: str
    name: str
    path: Path
    stamp: tuple[int, int, int]  # (inode, mtime_ns, size): changes when a run rewrites the file
    classes: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    downsample: float
    level0_width: int
    level0_height: int
    mpp: float | None

    @property
    def kind(self) -> LayerKind:
        return LAYER_KINDS[self.name]

    @property
    def raster_size(self) -> tuple[int, int]:
        """The raster's own pixels (the read level's grid)."""
        from gigavision.tiling.grid import level_extent

        return level_extent(self.level0_width, self.level0_height, self.downsample)


# -- finding layers ----------------------------------------------------------------------------------------
def _check_model_id(model_id: str) -> str:
    from gigavision.models.store import check_model_id

    try:
        return check_model_id(model_id)
    except InvalidInput as exc:
        raise NotFound(f"no layers of model {model_id!r}: {exc}") from exc


def _check_name(name: str) -> str:
    if name not in LAYER_FILES:
        raise NotFound(f"no layer named {name!r}; layers are {', '.join(LAYER_FILES)}")
    return name


def predictions_root(ws: Workspace) -> Path:
    return (Path(ws.root) / PREDICTIONS_DIR).resolve()


def _raster_path(root: Path, image_id: str, model_id: str, name: str) -> Path | None:
    """The layer's file, resolved, when it is a regular file inside ``root``; None when absent."""
    path = (root / model_id / image_id / LAYER_FILES[name]).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        return None
    return path


def _describe(image_id: str, model_id: str, name: str, path: Path, stamp: tuple[int, int, int]) -> Layer:
    """Read and check the raster's description; ``InvalidImage`` naming the file when it is not a layer."""
    from gigavision.infer.mask_file import read_mask_info
    from gigavision.infer.palette import class_colors

    where = f"{model_id}/{image_id}/{path.name}"
    try:
        info = read_mask_info(path)
        classes = tuple(str(c) for c in info["classes"])
        downsample = float(info["downsample"])
        level0_width, level0_height = int(info["level0_width"]), int(info["level0_height"])
        mpp = float(info["mpp"]) if info.get("mpp") is not None else None
        colors = [tuple(int(v) for v in c) for c in info.get("colors") or []]
    except Exception as exc:  # a corrupt file raises anything from deep in tifffile: name it, never crash
        raise InvalidImage(f"prediction raster {where} is unreadable: {exc!r}") from exc
    if not classes or not (math.isfinite(downsample) and downsample > 0) or min(level0_width, level0_height) <= 0:
        raise InvalidImage(f"prediction raster {where}: its description has no classes, size or downsample")
    if len(colors) != len(classes) or not all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in colors):
        colors = [tuple(int(v) for v in c) for c in class_colors(len(classes))]  # the default palette
    return Layer(
        image_id=image_id,
        model=model_id,
        name=name,
        path=path,
        stamp=stamp,
        classes=classes,
        colors=tuple((c[0], c[1], c[2]) for c in colors),
        downsample=downsample,
        level0_width=level0_width,
        level0_height=level0_height,
        mpp=mpp,
    )


def _check_fits(layer: Layer, width: int, height: int) -> None:
    if (layer.level0_width, layer.level0_height) != (width, height):
        raise InvalidImage(
            f"prediction raster {layer.model}/{layer.image_id}/{layer.path.name} was made for a "
            f"{layer.level0_width}x{layer.level0_height} image, but the image is {width}x{height}"
        )


def _stamp(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def find_layer(ws: Workspace, rasters: LayerRasters, image_id: str, model_id: str, name: str) -> Layer:
    """One layer of a workspace image: 404 for unknown ids/names/files, 422 for a corrupt raster."""
    check_image_id(image_id)
    _check_model_id(model_id)
    _check_name(name)
    row = ws.get_image(image_id)
    path = _raster_path(predictions_root(ws), image_id, model_id, name)
    if path is None:
        raise NotFound(f"image {image_id} has no {name} layer from model {model_id}")
    layer = rasters.describe(image_id, model_id, name, path)
    _check_fits(layer, row.width, row.height)
    return layer


def list_layers(ws: Workspace, rasters: LayerRasters, image_id: str) -> list[Layer]:
    """Every readable layer of a workspace image, by model then name; unreadable rasters are logged, skipped."""
    from gigavision.models.store import check_model_id

    check_image_id(image_id)
    row = ws.get_image(image_id)
    root = predictions_root(ws)
    if not root.is_dir():
        return []
    layers = []
    for model_dir in sorted(root.iterdir(), key=lambda p: p.name):
        try:
            check_model_id(model_dir.name)
        except InvalidInput:
            continue
        for name in LAYER_FILES:
            path = _raster_path(root, image_id, model_dir.name, name)
            if path is None:
                continue
            try:
                layer = rasters.describe(image_id, model_dir.name, name, path)
                _check_fits(layer, row.width, row.height)
            except InvalidImage as exc:
                log.warning("layer skipped: %s", exc)
                continue
            layers.append(layer)
    return layers


# -- open rasters ------------------------------------------------------------------------------------------
@dataclass
class OpenRaster:
    layer: Layer
    source: ImageSource
    lut: np.ndarray  # (256, 4) uint8 RGBA per raster value
    users: int = 0  # requests reading it now
    evicted: bool = False  # out of the LRU: close once no request reads it


class LayerRasters:
    """Layer descriptions and a small LRU of open layer rasters, keyed by path and (inode, mtime, size), so a
    rewritten raster is read afresh. A source evicted while a request reads it is closed when that request
    is done (closing under a reader could hand it a recycled file descriptor)."""

    def __init__(self, capacity: int = OPEN_LAYERS) -> None:
        self.capacity = capacity
        self._items: LRUCache[tuple[Any, ...], OpenRaster] = LRUCache(capacity, on_evict=self._retire)
        self._described: LRUCache[tuple[Any, ...], Layer] = LRUCache(DESCRIBED_LAYERS, on_evict=keep)
        self._lock = threading.RLock()  # guards OpenRaster.users / .evicted (re-entered by _retire)

    def describe(self, image_id: str, model_id: str, name: str, path: Path) -> Layer:
        """The layer at ``path`` (resolved, inside ``predictions/``); its description is read once per version."""
        try:
            stamp = _stamp(path)
        except OSError as exc:
            raise NotFound(f"image {image_id} has no {name} layer from model {model_id}") from exc
        key = (str(path), stamp)
        layer = self._described.get(key)
        if layer is None:
            layer = _describe(image_id, model_id, name, path, stamp)
            self._described.put(key, layer)
        return layer

    @contextmanager
    def use(self, ws: Workspace, layer: Layer) -> Iterator[OpenRaster]:
        key = (str(layer.path), layer.stamp)
        with self._lock:
            entry = self._items.get(key)
            if entry is not None:
                entry.users += 1
        if entry is None:
            opened = self._open(ws, layer)
            with self._lock:
                entry = self._items.add(key, opened)  # another request may have opened it meanwhile
                entry.users += 1
        try:
            yield entry
        finally:
            with self._lock:
                entry.users -= 1
                if entry.evicted and entry.users == 0:
                    entry.source.close()

    def _retire(self, entry: OpenRaster) -> None:
        """Out of the LRU (or lost an opening race): close now, or when its last reader is done."""
        with self._lock:
            entry.evicted = True
            if entry.users == 0:
                entry.source.close()

    @staticmethod
    def _open(ws: Workspace, layer: Layer) -> OpenRaster:
        from gigavision.images.registry import open_image

        try:
            source = open_image(layer.path, reader="tiff", limits=ws.settings.limits, cache=ws.tile_cache)
        except GigavisionError as exc:
            raise InvalidImage(f"prediction raster {layer.model}/{layer.image_id}/{layer.path.name}: {exc}") from exc
        if source.info.dtype != "uint8" or source.info.bands != 1:
            source.close()
            raise InvalidImage(
                f"prediction raster {layer.model}/{layer.image_id}/{layer.path.name} must be one uint8 band, "
                f"got {source.info.bands} band(s) of {source.info.dtype}"
            )
        lut = label_lut(layer.colors) if layer.kind == "labels" else scalar_lut()
        return OpenRaster(layer, source, lut)


# -- rendering ---------------------------------------------------------------------------------------------
def label_lut(colors: tuple[tuple[int, int, int], ...]) -> np.ndarray:
    """``(256, 4)`` uint8 RGBA per class index: the class colour at ``LABEL_ALPHA``; class 0 transparent."""
    from gigavision.infer.palette import class_colors

    lut = np.zeros((256, 4), dtype=np.uint8)
    lut[:, :3] = class_colors(256)  # indices past the classes (never written) keep the palette
    lut[: len(colors), :3] = np.asarray(colors, dtype=np.uint8).reshape(-1, 3)
    lut[1:, 3] = LABEL_ALPHA
    return lut


def scalar_lut() -> np.ndarray:
    """``(256, 4)`` uint8 RGBA per value: transparent at 0, yellow → red, alpha rising to ``SCALAR_ALPHA``."""
    t = np.arange(256, dtype=np.float64) / 255.0
    lut = np.zeros((256, 4), dtype=np.uint8)
    lut[:, 0] = 255
    lut[:, 1] = np.rint(255.0 * (1.0 - t))
    lut[:, 3] = np.rint(SCALAR_ALPHA * t)
    return lut


def read_raster(
    source: ImageSource, box: tuple[float, float, float, float], out_w: int, out_h: int, *, nearest: bool
) -> np.ndarray:
    """``(out_h, out_w)`` uint8 values of ``box`` (x0, y0, x1, y1 in raster level-0 pixels, fractional),
    read from the coarsest pyramid level that is fine enough and resampled once (nearest for class labels)."""
    from gigavision.images.resolution import read_sized

    values: np.ndarray = read_sized(source, box, out_w, out_h, resample="nearest" if nearest else "bilinear")
    return values[:, :, 0]


def render_layer(raster: OpenRaster, box: tuple[float, float, float, float], width: int, height: int) -> np.ndarray:
    """``(height, width, 4)`` uint8 RGBA of the level-0 image rectangle ``box`` (x0, y0, x1, y1; cut at the
    image edge by the caller), from the layer's raster, coloured by its lookup table."""
    ds = raster.layer.downsample
    x0, y0, x1, y1 = box
    values = read_raster(
        raster.source, (x0 / ds, y0 / ds, x1 / ds, y1 / ds), width, height, nearest=raster.layer.kind == "labels"
    )
    return np.ascontiguousarray(raster.lut[values])
