"""Patch samplers over big images: which windows to read (the sampler), then pixels and annotations for each.

Images of any size, up to gigapixel slides, are never decoded whole: a patch reads only the pyramid tiles its
window touches (``ImageSource.read_region``) and only the annotations near it, clipped and shifted into the
patch's pixels. Samplers (TorchGeo's split of "where" from "how"):

- ``GridSampler``: every window of a ``GridSpec`` grid (inference, evaluation), optionally tissue-only;
- ``RandomSampler``: uniform windows, by default rejected until enough of them is foreground (training);
- ``ClassBalancedSampler``: a class uniformly, one of its objects uniformly, a window containing it at a
  random offset (rare classes seen as often as common ones);
- ``AnnotationCentredSampler``: one window per object, centred on it (review, crops for classification).

Resolution: ``level=k`` reads pyramid level k as stored. ``mpp=m`` asks for ``m`` microns per patch pixel:
the finest level not coarser than that is read, and when its scale differs from the request by more than
``images.resolution.TOLERANCE`` (2 %) the read window is resized to the patch size, so a patch covers the
same physical area whichever scanner made the image. Annotations are scaled by the same factor.

Determinism and workers: sample ``i`` is a pure function of (seed, epoch, i): ``sampler[i]`` draws from its own
``numpy`` generator, so DataLoader workers compute any sample independently. Samplers hold settings, ids and
numbers only; each process opens its own workspace, readers and caches on first use, so a sampler pickles
into a ``spawn`` child (or survives a ``fork``) without sharing file handles or database connections.
"""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from gigavision.annotations import Annotations
from gigavision.cache import LRUCache, keep
from gigavision.errors import InvalidInput
from gigavision.geometry import Region
from gigavision.images.resolution import resolution_for_mpp
from gigavision.tiling.grid import GridSpec, MaskIndex, level_extent

if TYPE_CHECKING:
    from gigavision.config import Settings
    from gigavision.datasets.versions import DatasetVersion
    from gigavision.images.source import ImageSource
    from gigavision.workspace import Workspace

LIVE_STATUSES = ("proposed", "accepted", "adjudicated")  # live annotations used unless told otherwise
CACHED_IMAGES = 16  # annotations and masks kept per process, per image set


@dataclass(frozen=True, slots=True)
class PatchWindow:
    """Where one patch comes from: an image (index into the sampler's images, and its id) and a level-0 window."""

    image_index: int
    image_id: str
    window: tuple[int, int, int, int]  # level-0 x0, y0, x1, y1


@dataclass(frozen=True, slots=True, eq=False)
class Patch:
    """One patch: pixels read at ``level`` and the annotations inside it, in the patch's pixel coordinates.

    ``downsample`` is level-0 pixels per patch pixel (the level's own downsample, unless ``mpp=`` resized).
    """

    image_id: str
    level: int
    window: tuple[int, int, int, int]  # level-0 x0, y0, x1, y1
    pixels: np.ndarray  # (H, W, C), the image's dtype (uint8 for photos and slides)
    annotations: Annotations
    downsample: float


class PatchImages:
    """The images patches are cut from: one split of a dataset version, or image ids of a workspace.

    Pickle-safe: it keeps the workspace settings, the ids and each image's size, mpp and level downsamples
    (read from the database, not the files). Workspace, readers, annotations and masks are opened lazily,
    once per process.
    """

    def __init__(
        self,
        ws: Workspace,
        image_ids: Sequence[str],
        *,
        version: DatasetVersion | None = None,
        statuses: Sequence[str] = LIVE_STATUSES,
    ) -> None:
        self.settings: Settings = ws.settings
        self.ids = [str(i) for i in image_ids]
        if not self.ids:
            raise InvalidInput("no images to sample patches from (empty split or id list)")
        self.version_ref = version.ref if version is not None else None
        self.statuses = tuple(statuses)
        rows = [ws.get_image(i) for i in self.ids]
        self.sizes = np.array([[r.width, r.height] for r in rows], dtype=np.int64).reshape(-1, 2)
        self.mpp = np.array([r.mpp_x if r.mpp_x else math.nan for r in rows], dtype=np.float64)
        self.downsamples = [tuple(float(lv["downsample"]) for lv in (r.levels or [{"downsample": 1.0}])) for r in rows]
        self._attach(ws, version)

    @classmethod
    def from_version(cls, version: DatasetVersion, split: str | None = None) -> PatchImages:
        """The images of a dataset version (one split when given) with its frozen annotations."""
        return cls(version.ws, [e.id for e in version.images(split)], version=version)

    @classmethod
    def from_workspace(
        cls, ws: Workspace, image_ids: Sequence[str], *, statuses: Sequence[str] = LIVE_STATUSES
    ) -> PatchImages:
        """Workspace images with their live annotations (rejected ones left out unless ``statuses`` says)."""
        return cls(ws, image_ids, statuses=statuses)

    # -- per-process state ---------------------------------------------------------------------------------
    def _attach(self, ws: Workspace | None, version: DatasetVersion | None) -> None:
        self._pid = os.getpid()
        self._ws = ws
        self._owned = False
        self._version = version
        self._annotations: LRUCache[int, Annotations] = LRUCache(CACHED_IMAGES, on_evict=keep)
        self._masks: LRUCache[int, MaskIndex] = LRUCache(CACHED_IMAGES, on_evict=keep)

    def __getstate__(self) -> dict[str, Any]:
        keep = ("settings", "ids", "version_ref", "statuses", "sizes", "mpp", "downsamples")
        return {k: self.__dict__[k] for k in keep}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._attach(None, None)

    def workspace(self) -> Workspace:
        """This process's workspace (a forked or spawned worker opens its own)."""
        ws = self._ws
        if ws is None or self._pid != os.getpid():
            from gigavision.workspace import Workspace

            ws = Workspace(self.settings)
            self._attach(ws, None)
            self._owned = True
        return ws

    def close(self) -> None:
        """Close the workspace this object opened itself (not one it was given)."""
        if self._owned and self._ws is not None and self._pid == os.getpid():
            self._ws.close()
        self._attach(None, None)

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        origin = self.version_ref or "workspace"
        return f"PatchImages({origin}, images={len(self)})"

    # -- reads ---------------------------------------------------------------------------------------------
    def source(self, index: int) -> ImageSource:
        return self.workspace().open_source(self.ids[index])

    def annotations(self, index: int) -> Annotations:
        """All annotations of image ``index`` in level-0 pixels (cached for the last few images)."""
        return self._annotations.get_or_create(index, lambda: self._read_annotations(index))

    def _read_annotations(self, index: int) -> Annotations:
        ws = self.workspace()
        if self.version_ref is not None:
            if self._version is None:
                from gigavision.datasets.versions import open_version

                self._version = open_version(ws, self.version_ref)
            ann = self._version.annotations(self.ids[index])
        else:
            ann = ws.annotations.query(self.ids[index], statuses=list(self.statuses), limit=1_000_000)
        return ann

    def mask(self, index: int) -> MaskIndex:
        """Foreground of image ``index``: the mask stored at ingest, else one computed from a low level."""
        return self._masks.get_or_create(index, lambda: self._read_mask(index))

    def _read_mask(self, index: int) -> MaskIndex:
        from gigavision.images.thumbnail import load_foreground

        mask = load_foreground(self.workspace().mask_path(self.ids[index]), lambda: self.source(index))
        width, height = (int(v) for v in self.sizes[index])
        return MaskIndex(mask, width, height)


def _pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int | np.integer) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int | np.integer) and v > 0 for v in pair):
        raise InvalidInput(f"{name} must be a positive int or (width, height) pair, got {value!r}")
    return int(pair[0]), int(pair[1])


class PatchSampler(ABC):
    """Base of the samplers: resolution per image, deterministic draws, reading a window into a ``Patch``.

    ``size``: patch ``(width, height)`` in output pixels. ``level`` or ``mpp`` (not both; default level 0).
    ``min_visible``: objects cut by the patch edge are dropped below that visible fraction of their area.
    """

    def __init__(
        self,
        images: PatchImages,
        size: int | tuple[int, int] = 512,
        *,
        level: int | None = None,
        mpp: float | None = None,
        seed: int = 0,
        min_visible: float = 0.0,
    ) -> None:
        if level is not None and mpp is not None:
            raise InvalidInput("give level= or mpp=, not both")
        if mpp is not None and not (math.isfinite(mpp) and mpp > 0):
            raise InvalidInput(f"mpp must be a positive number of microns per pixel, got {mpp}")
        if level is not None and level < 0:
            raise InvalidInput(f"level must be ≥ 0, got {level}")
        if not 0.0 <= min_visible <= 1.0:
            raise InvalidInput(f"min_visible must be in [0, 1], got {min_visible}")
        self.images = images
        self.size = _pair(size, "size")
        self.level = 0 if level is None and mpp is None else level
        self.mpp = mpp
        self.seed = int(seed)
        self.epoch = 0
        self.min_visible = float(min_visible)
        resolved = [self._resolve(i) for i in range(len(images))]
        self.levels = np.array([r[0] for r in resolved], dtype=np.int64)
        self.downsample = np.array([r[1] for r in resolved], dtype=np.float64)

    def _resolve(self, i: int) -> tuple[int, float]:
        """(level to read, level-0 pixels per patch pixel) for image ``i``."""
        downsamples = self.images.downsamples[i]
        if self.level is not None:
            if self.level >= len(downsamples):
                raise InvalidInput(
                    f"image {self.images.ids[i]} has levels 0..{len(downsamples) - 1}, not level {self.level};"
                    " sample by mpp= or a lower level"
                )
            return self.level, downsamples[self.level]
        base = float(self.images.mpp[i])
        if self.mpp is None or math.isnan(base):
            raise InvalidInput(f"image {self.images.ids[i]} has no microns-per-pixel; sample it with level=")
        res = resolution_for_mpp(downsamples, base, self.mpp)
        return res.level, res.downsample

    # -- sampler interface ---------------------------------------------------------------------------------
    @abstractmethod
    def __len__(self) -> int:
        """Samples per epoch."""

    @abstractmethod
    def _window(self, index: int, rng: np.random.Generator) -> tuple[int, tuple[int, int, int, int]]:
        """(image index, level-0 window) of sample ``index`` (already range-checked)."""

    def window(self, index: int) -> PatchWindow:
        """Where sample ``index`` is, without reading pixels; the same for the same (seed, epoch, index)."""
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"sample {index} out of range 0..{n - 1}")
        index = index % n
        image, window = self._window(index, np.random.default_rng([self.seed, self.epoch, index]))
        return PatchWindow(image, self.images.ids[image], window)

    def __getitem__(self, index: int) -> Patch:
        return self.read(self.window(index))

    def __iter__(self) -> Iterator[Patch]:
        for i in range(len(self)):
            yield self[i]

    def set_epoch(self, epoch: int) -> None:
        """Draw a different (still deterministic) set of windows for each epoch, like ``DistributedSampler``."""
        self.epoch = int(epoch)

    # -- geometry helpers ----------------------------------------------------------------------------------
    def _extent(self, image: int) -> tuple[int, int]:
        """Image size in patch pixels."""
        width, height = (int(v) for v in self.images.sizes[image])
        return level_extent(width, height, float(self.downsample[image]))

    def _to_level0(self, image: int, px: int, py: int) -> tuple[int, int, int, int]:
        """The level-0 window of a patch whose top-left is ``(px, py)`` in patch pixels."""
        d = float(self.downsample[image])
        pw, ph = self.size
        return round(px * d), round(py * d), round((px + pw) * d), round((py + ph) * d)

    # -- reading -------------------------------------------------------------------------------------------
    def read(self, where: PatchWindow) -> Patch:
        """Pixels and annotations of one window (only the tiles and annotations it touches)."""
        i = where.image_index
        level, d = int(self.levels[i]), float(self.downsample[i])
        source = self.images.source(i)
        pw, ph = self.size
        x0, y0, x1, y1 = where.window
        region = Region(x0, y0, max(1, x1 - x0), max(1, y1 - y0))
        pixels = source.read_region(region, level, downsample=d, size=(pw, ph))
        # the level-0 area the pixels cover exactly: reads start on the level's pixel grid (equal to the
        # window when it sits on that grid)
        level_ds = source.levels[level].downsample
        ox, oy = round(x0 / level_ds) * level_ds, round(y0 / level_ds) * level_ds
        ann = self.images.annotations(i).crop(ox, oy, ox + pw * d, oy + ph * d, self.min_visible).scale(1.0 / d)
        return Patch(where.image_id, level, where.window, pixels, ann, d)


class GridSampler(PatchSampler):
    """Every window of a grid over every image, image by image, row-major (inference, evaluation)."""

    def __init__(
        self,
        images: PatchImages,
        grid: GridSpec | None = None,
        *,
        level: int | None = None,
        mpp: float | None = None,
        min_visible: float = 0.0,
    ) -> None:
        self.grid = grid if grid is not None else GridSpec()
        super().__init__(images, self.grid.size, level=level, mpp=mpp, min_visible=min_visible)
        parts, owners = [], []
        for i in range(len(images)):
            width, height = (int(v) for v in images.sizes[i])
            mask = images.mask(i) if self.grid.min_foreground > 0 else None
            windows = self.grid.windows(width, height, float(self.downsample[i]), mask)
            parts.append(windows)
            owners.append(np.full(len(windows), i, dtype=np.int64))
        self.windows = np.concatenate(parts) if parts else np.zeros((0, 4), dtype=np.int64)
        self.owners = np.concatenate(owners) if owners else np.zeros(0, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.windows)

    def _window(self, index: int, rng: np.random.Generator) -> tuple[int, tuple[int, int, int, int]]:
        x0, y0, x1, y1 = (int(v) for v in self.windows[index])
        return int(self.owners[index]), (x0, y0, x1, y1)


class RandomSampler(PatchSampler):
    """``num_samples`` windows at uniform positions of uniformly chosen images.

    With ``foreground`` (default), ``tries`` candidates are drawn at once and the first whose foreground
    fraction (under the image's low-resolution mask) reaches ``min_foreground`` is taken; if none does, the
    one with the most foreground. Positions sit on the patch pixel grid; windows stay inside the image
    (an image smaller than a patch gives one padded window at its origin).
    """

    def __init__(
        self,
        images: PatchImages,
        size: int | tuple[int, int] = 512,
        *,
        num_samples: int,
        foreground: bool = True,
        min_foreground: float = 0.5,
        tries: int = 32,
        level: int | None = None,
        mpp: float | None = None,
        seed: int = 0,
        min_visible: float = 0.0,
    ) -> None:
        if num_samples < 1 or tries < 1:
            raise InvalidInput(f"num_samples and tries must be ≥ 1, got {num_samples} and {tries}")
        if not 0.0 <= min_foreground <= 1.0:
            raise InvalidInput(f"min_foreground must be in [0, 1], got {min_foreground}")
        super().__init__(images, size, level=level, mpp=mpp, seed=seed, min_visible=min_visible)
        self.num_samples = int(num_samples)
        self.foreground = foreground
        self.min_foreground = float(min_foreground)
        self.tries = int(tries)

    def __len__(self) -> int:
        return self.num_samples

    def _window(self, index: int, rng: np.random.Generator) -> tuple[int, tuple[int, int, int, int]]:
        image = int(rng.integers(len(self.images)))
        lw, lh = self._extent(image)
        pw, ph = self.size
        count = self.tries if self.foreground else 1
        px = rng.integers(0, max(lw - pw, 0) + 1, size=count)
        py = rng.integers(0, max(lh - ph, 0) + 1, size=count)
        pick = 0
        if self.foreground:
            d = float(self.downsample[image])
            cands = np.rint(np.stack([px, py, px + pw, py + ph], axis=1) * d)
            fractions = self.images.mask(image).fractions(cands)
            good = np.nonzero(fractions >= self.min_foreground)[0]
            pick = int(good[0]) if len(good) else int(np.argmax(fractions))
        return image, self._to_level0(image, int(px[pick]), int(py[pick]))


@dataclass(frozen=True, slots=True)
class _Objects:
    """Spatial annotations of all images, flattened: owner image, level-0 box, label."""

    image: np.ndarray  # (K,) int64
    xyxy: np.ndarray  # (K, 4) float64
    label: np.ndarray  # (K,) object


def _collect_objects(images: PatchImages, classes: Sequence[str] | None) -> _Objects:
    owners, boxes, labels = [], [], []
    for i in range(len(images)):
        ann = images.annotations(i)
        ann = ann[ann.kind != "tag"]
        if classes is not None:
            ann = ann[np.isin(ann.label, list(classes))]
        owners.append(np.full(len(ann), i, dtype=np.int64))
        boxes.append(ann.xyxy)
        labels.append(ann.label)
    found = _Objects(np.concatenate(owners), np.concatenate(boxes).reshape(-1, 4), np.concatenate(labels))
    if classes is not None:
        missing = sorted(set(classes) - set(found.label.tolist()))
        if missing:
            raise InvalidInput(f"no boxes, polygons, masks or points labelled {missing} in these images")
    if len(found.image) == 0:
        raise InvalidInput("these images have no boxes, polygons, masks or points to sample around")
    return found


def _containing_start(rng: np.random.Generator, a: float, b: float, size: int, extent: int) -> int:
    """A random start of a ``size`` window holding ``[a, b)`` (or inside it, when it is longer), in the image."""
    if extent <= size:
        return 0
    if a == b:  # a point: the half-open window [start, start + size) must hold it
        lo, hi = math.floor(a) - size + 1, math.floor(a)
    elif b - a <= size:
        lo, hi = math.ceil(b) - size, math.floor(a)
    else:
        lo, hi = math.floor(a), math.ceil(b) - size
    lo, hi = max(lo, 0), min(hi, extent - size)
    if hi < lo:  # object at a sub-pixel boundary or past the edge: centre it, clamped
        return min(max(round((a + b) / 2 - size / 2), 0), extent - size)
    return int(rng.integers(lo, hi + 1))


class ClassBalancedSampler(PatchSampler):
    """``num_samples`` windows: a class uniformly, one of its objects uniformly, a window containing it.

    The object lands at a random offset inside the window (a random part of it, when it is larger than
    the window); windows stay inside the image. ``classes`` restricts to those labels (default: all).
    """

    def __init__(
        self,
        images: PatchImages,
        size: int | tuple[int, int] = 512,
        *,
        num_samples: int,
        classes: Sequence[str] | None = None,
        level: int | None = None,
        mpp: float | None = None,
        seed: int = 0,
        min_visible: float = 0.0,
    ) -> None:
        if num_samples < 1:
            raise InvalidInput(f"num_samples must be ≥ 1, got {num_samples}")
        super().__init__(images, size, level=level, mpp=mpp, seed=seed, min_visible=min_visible)
        self.num_samples = int(num_samples)
        self.objects = _collect_objects(images, classes)
        self.classes = sorted(set(self.objects.label.tolist()))
        self.by_class = [np.nonzero(self.objects.label == c)[0] for c in self.classes]

    def __len__(self) -> int:
        return self.num_samples

    def _window(self, index: int, rng: np.random.Generator) -> tuple[int, tuple[int, int, int, int]]:
        members = self.by_class[int(rng.integers(len(self.classes)))]
        k = int(members[int(rng.integers(len(members)))])
        image = int(self.objects.image[k])
        d = float(self.downsample[image])
        bx0, by0, bx1, by1 = self.objects.xyxy[k] / d
        lw, lh = self._extent(image)
        px = _containing_start(rng, bx0, bx1, self.size[0], lw)
        py = _containing_start(rng, by0, by1, self.size[1], lh)
        return image, self._to_level0(image, px, py)


class AnnotationCentredSampler(PatchSampler):
    """One window per object, centred on its box (± ``jitter`` patch pixels, seeded), images in order.

    The object stays centred at image edges: parts of the window outside the image read as zeros.
    """

    def __init__(
        self,
        images: PatchImages,
        size: int | tuple[int, int] = 512,
        *,
        classes: Sequence[str] | None = None,
        jitter: int = 0,
        level: int | None = None,
        mpp: float | None = None,
        seed: int = 0,
        min_visible: float = 0.0,
    ) -> None:
        if jitter < 0:
            raise InvalidInput(f"jitter must be ≥ 0 patch pixels, got {jitter}")
        super().__init__(images, size, level=level, mpp=mpp, seed=seed, min_visible=min_visible)
        self.objects = _collect_objects(images, classes)
        self.jitter = int(jitter)

    def __len__(self) -> int:
        return len(self.objects.image)

    def _window(self, index: int, rng: np.random.Generator) -> tuple[int, tuple[int, int, int, int]]:
        image = int(self.objects.image[index])
        d = float(self.downsample[image])
        bx0, by0, bx1, by1 = self.objects.xyxy[index] / d
        px = math.floor((bx0 + bx1) / 2 - self.size[0] / 2 + 0.5)
        py = math.floor((by0 + by1) / 2 - self.size[1] / 2 + 0.5)
        if self.jitter:
            dx, dy = rng.integers(-self.jitter, self.jitter + 1, size=2)
            px, py = px + int(dx), py + int(dy)
        return image, self._to_level0(image, px, py)


__all__ = [
    "AnnotationCentredSampler",
    "ClassBalancedSampler",
    "GridSampler",
    "Patch",
    "PatchImages",
    "PatchSampler",
    "PatchWindow",
    "RandomSampler",
]
