"""Torch datasets over dataset versions: whole (letterboxed) images, or patches read from the pyramids.

Two sample sources, one interface (``len``, ``sample(i)``, ``set_epoch``):

- ``WholeImages``: each image of a split read at the coarsest pyramid level that still has ``image_size``
  pixels across, resized to fit an ``image_size`` square and padded right/bottom (the letterbox keeps the
  scale isotropic, so boxes and masks map back with one factor).
- ``Patches``: a ``datasets.patches`` sampler (random/foreground, class-balanced, annotation-centred; the grid
  for validation and test). Big images are never decoded whole: a patch reads only the tiles it touches.

Both are pickle-safe (settings and ids only; each DataLoader worker opens its own workspace and readers).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler
from torchvision import tv_tensors

from gigavision.annotations import Annotations
from gigavision.datasets.patches import (
    AnnotationCentredSampler,
    ClassBalancedSampler,
    GridSampler,
    PatchImages,
    PatchSampler,
    RandomSampler,
)
from gigavision.errors import InvalidInput
from gigavision.images.pixels import letterbox, to_rgb_uint8
from gigavision.images.resolution import level_for_side, read_level
from gigavision.models.side import side_table
from gigavision.models.task import BACKGROUND
from gigavision.tiling.grid import GridSpec

if TYPE_CHECKING:
    from gigavision.datasets.versions import DatasetVersion
    from gigavision.models.task import Task
    from gigavision.train.recipe import Recipe

MAX_WHOLE_PIXELS = 64_000_000  # a level read whole for whole-image training; bigger images need patches
CACHE_BYTES = 512 * 1024**2  # letterboxed whole images kept in memory per process when they all fit


class SampleSource(Protocol):
    def __len__(self) -> int: ...
    def sample(self, index: int) -> tuple[np.ndarray, Annotations, str]: ...
    def set_epoch(self, epoch: int) -> None: ...


class WholeImages:
    """Whole images of a split, letterboxed to ``size`` (annotations scaled the same way)."""

    def __init__(self, images: PatchImages, size: int) -> None:
        self.images = images
        self.size = int(size)
        self.levels: list[int] = []
        for i in range(len(images)):
            width, height = (int(v) for v in images.sizes[i])
            level = level_for_side(images.downsamples[i], width, height, self.size)
            d = images.downsamples[i][level]
            if (width / d) * (height / d) > MAX_WHOLE_PIXELS:
                raise InvalidInput(
                    f"image {images.ids[i]} is {width}×{height} with no pyramid level small enough to read whole;"
                    " train on patches (recipe [patch], e.g. --patch-size 256)"
                )
            self.levels.append(level)
        # Small datasets (digits, phone photos at 224 px) fit in memory letterboxed: read each file once per
        # process instead of once per epoch.
        self.cache_all = len(images) * self.size * self.size * 3 <= CACHE_BYTES
        self._cache: dict[int, tuple[np.ndarray, Annotations, str]] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = {}
        return state

    def __len__(self) -> int:
        return len(self.images)

    def set_epoch(self, epoch: int) -> None:
        """Whole images do not change with the epoch (the DataLoader reshuffles them)."""

    def sample(self, index: int) -> tuple[np.ndarray, Annotations, str]:
        cached = self._cache.get(index)
        if cached is not None:
            return cached
        out = self._read(index)
        if self.cache_all:
            self._cache[index] = out
        return out

    def _read(self, index: int) -> tuple[np.ndarray, Annotations, str]:
        source = self.images.source(index)
        level = self.levels[index]
        lvl = source.levels[level]
        pixels = to_rgb_uint8(read_level(source, level))
        width = int(self.images.sizes[index][0])
        square, scale = letterbox(pixels, self.size)
        # the letterbox scale is relative to the level read; annotations are in level-0 pixels
        ann = self.images.annotations(index).scale(scale * lvl.width / width)
        return square, ann, self.images.ids[index]


class Patches:
    """Patches of a split from one of the ``datasets.patches`` samplers (3-band uint8 pixels)."""

    def __init__(self, sampler: PatchSampler) -> None:
        self.sampler = sampler

    def __len__(self) -> int:
        return len(self.sampler)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def sample(self, index: int) -> tuple[np.ndarray, Annotations, str]:
        patch = self.sampler[index]
        return to_rgb_uint8(patch.pixels), patch.annotations, patch.image_id


class SampleDataset(Dataset[tuple[Any, Any]]):
    """``(normalised image tensor, task target)`` pairs; a sample whose target is None is skipped in collate.
    With ``side`` (image id -> side-feature vector) the input is the pair ``(image tensor, side tensor)``.

    Keys are sample indices, or ``(epoch, index)`` pairs from ``EpochShuffle``: the epoch travels with the key,
    so patch samplers draw the same windows in a DataLoader worker as in the main process, resumed or not.
    ``indices`` restricts a source to the samples kept (whole images with a usable label).
    """

    def __init__(
        self,
        task: Task,
        source: SampleSource,
        transform: Any,
        indices: Sequence[int] | None = None,
        side: dict[str, np.ndarray] | None = None,
    ) -> None:
        self.task = task
        self.source = source
        self.transform = transform
        self.indices = list(indices) if indices is not None else None
        self.side = side
        self._epoch = 0

    def __len__(self) -> int:
        return len(self.indices) if self.indices is not None else len(self.source)

    def _resolve(self, key: int | tuple[int, int]) -> int:
        if isinstance(key, tuple):
            epoch, key = key
            if epoch != self._epoch:
                self._epoch = epoch
                self.source.set_epoch(epoch)
        return self.indices[key] if self.indices is not None else key

    def raw(self, key: int | tuple[int, int]) -> tuple[np.ndarray, Annotations, str]:
        """Pixels (3-band uint8), annotations in those pixels and the image id of one sample."""
        return self.source.sample(self._resolve(key))

    def with_side(self, image: torch.Tensor, image_id: str) -> Any:
        """The network input of one sample: the image, or (image, side features) when the task uses them."""
        if self.side is None:
            return image
        return image, torch.from_numpy(self.side[image_id])

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[Any, Any]:
        pixels, ann, image_id = self.raw(key)
        target = self.task.target(ann, pixels.shape[0], pixels.shape[1])
        image = tv_tensors.Image(torch.from_numpy(pixels).permute(2, 0, 1).contiguous())
        if target is None:
            out = self.transform(image)
            return self.with_side(out.as_subclass(torch.Tensor), image_id), None
        image, target = self.transform(image, target)
        return self.with_side(image.as_subclass(torch.Tensor), image_id), _plain(target)


class EvalDataset(Dataset[tuple[Any, Annotations]]):
    """``(network input, truth Annotations in the image tensor's pixels)`` for validation and evaluation."""

    def __init__(self, samples: SampleDataset, transform: Any) -> None:
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int) -> tuple[Any, Annotations]:
        pixels, ann, image_id = self.samples.raw(key)
        image = tv_tensors.Image(torch.from_numpy(pixels).permute(2, 0, 1).contiguous())
        return self.samples.with_side(self.transform(image).as_subclass(torch.Tensor), image_id), ann


class EpochShuffle(Sampler[tuple[int, int]]):
    """A shuffle that is a pure function of (seed, epoch), yielding ``(epoch, index)`` keys.

    Lightning calls ``set_epoch`` at each epoch start, so a run resumed from a checkpoint sees exactly the
    order an uninterrupted run would have.

    ``groups`` (a class per sample) with ``per_group`` K: the order is runs of K samples of one class, the
    runs shuffled, so a batch holds batch/K classes with K samples each (the P×K batches of metric learning,
    Hermans et al. 2017): the batch-hard triplet loss needs positives in every batch, which plain shuffling
    of hundreds of classes almost never gives (64 of 2,000 images of 300 classes: one positive pair a batch).
    """

    def __init__(
        self, n: int, seed: int, shuffle: bool = True, groups: Sequence[int] | None = None, per_group: int = 1
    ) -> None:
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0
        self.groups = None if groups is None else np.asarray(groups, dtype=np.int64)
        self.per_group = max(1, int(per_group))
        if self.groups is not None and len(self.groups) != n:
            raise ValueError(f"groups: {len(self.groups)} given for {n} samples")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        if not self.shuffle:
            order: Any = range(self.n)
        elif self.groups is None or self.per_group == 1:
            order = rng.permutation(self.n)
        else:
            runs = []
            for g in np.unique(self.groups):
                members = rng.permutation(np.flatnonzero(self.groups == g))
                runs += [members[i : i + self.per_group] for i in range(0, len(members), self.per_group)]
            order = np.concatenate([runs[i] for i in rng.permutation(len(runs))]) if runs else []
        return iter([(self.epoch, int(i)) for i in order])


def _plain(target: Any) -> Any:
    """tv_tensors back to plain tensors (so collate and losses see ordinary tensors)."""
    if isinstance(target, torch.Tensor):
        return target.as_subclass(torch.Tensor)
    if isinstance(target, dict):
        return {k: _plain(v) for k, v in target.items()}
    return target


def collate_for(task: Task) -> Any:
    """A DataLoader ``collate_fn`` that drops unlabelled samples and lets the task stack the rest."""

    def collate(batch: Sequence[tuple[Any, Any]]) -> tuple[Any, Any] | None:
        kept = [(img, tgt) for img, tgt in batch if tgt is not None]
        if not kept:
            return None
        return task.collate([k[0] for k in kept], [k[1] for k in kept])

    return collate


@dataclass
class SplitData:
    """One split: the dataset the loader reads and, for evaluation, the truth of each sample."""

    name: str
    dataset: SampleDataset
    ids: list[str]  # whole images: the image id of each sample; patches: empty (``dataset.raw(i)`` names it)
    targets: list[Any] | None  # whole images: every kept sample's target (class counts, weights); None for patches
    left_out: int  # whole images without a usable label for this task


def patch_sampler(images: PatchImages, recipe: Recipe, *, training: bool, classes: Sequence[str]) -> PatchSampler:
    """The sampler the recipe asks for (training) or the tissue grid (validation, test)."""
    cfg = recipe.patch
    assert cfg is not None
    common: dict[str, Any] = {"level": cfg.level, "mpp": cfg.mpp, "min_visible": cfg.min_visible}
    if not training or cfg.sampler == "grid":
        grid = GridSpec(size=cfg.size, overlap=0, min_foreground=cfg.min_foreground if training else 0.0)
        return GridSampler(images, grid, **common)
    common["seed"] = recipe.seed
    if cfg.sampler == "random":
        return RandomSampler(images, cfg.size, num_samples=cfg.per_epoch, min_foreground=cfg.min_foreground, **common)
    wanted = _object_classes(images, classes)
    if cfg.sampler == "balanced":
        return ClassBalancedSampler(images, cfg.size, num_samples=cfg.per_epoch, classes=wanted, **common)
    return AnnotationCentredSampler(images, cfg.size, classes=wanted, **common)


def _object_classes(images: PatchImages, classes: Sequence[str]) -> list[str]:
    """The classes whose shapes the balanced and centred samplers visit. ``background`` is the class classify
    and segment give to what no shape covers: it is visited only when shapes carry that label (a dataset
    that outlines its background regions), not required of every dataset."""
    if BACKGROUND not in classes:
        return list(classes)
    outlined = any(BACKGROUND in images.annotations(i).label.tolist() for i in range(len(images)))
    return [c for c in classes if c != BACKGROUND or outlined]


def check_patchable(images: PatchImages, sampler: PatchSampler) -> None:
    """Images smaller than one patch at the sampled resolution are an error that names them."""
    small = []
    for i in range(len(images)):
        width, height = (int(v) for v in images.sizes[i])
        d = float(sampler.downsample[i])
        if math.ceil(width / d) < sampler.size[0] or math.ceil(height / d) < sampler.size[1]:
            small.append(f"{images.ids[i][:12]} ({width}×{height})")
    if small:
        raise InvalidInput(
            f"{len(small)} image(s) are smaller than the {sampler.size[0]}×{sampler.size[1]} patch at the sampled"
            f" resolution: {', '.join(small[:5])}; lower patch.size or train on whole images (no [patch])"
        )


def split_data(
    task: Task,
    version: DatasetVersion,
    recipe: Recipe,
    split: str,
    transform: Any,
    *,
    training: bool,
) -> SplitData:
    """The samples of one split of ``version`` for ``task``."""
    if split not in version.splits:
        raise InvalidInput(f"dataset {version.ref} has no split {split!r}; it has {', '.join(version.splits)}")
    entries = list(version.images(split))
    if not entries:
        raise InvalidInput(f"split {split!r} of dataset {version.ref} has no images")
    images = PatchImages.from_version(version, split)
    side = side_table(version.ws, images.ids, recipe.side_features) if recipe.side_features else None
    if recipe.patch is None:
        whole = WholeImages(images, recipe.input_size)
        keep, targets, left_out = [], [], 0
        for i in range(len(whole)):
            target = whole_target(task, whole, i)
            if target is None:
                left_out += 1
            else:
                keep.append(i)
                targets.append(target)
        ids = [images.ids[i] for i in keep]
        return SplitData(split, SampleDataset(task, whole, transform, keep, side), ids, targets, left_out)
    sampler = patch_sampler(images, recipe, training=training, classes=task.classes)
    check_patchable(images, sampler)
    return SplitData(split, SampleDataset(task, Patches(sampler), transform, side=side), [], None, 0)


def whole_target(task: Task, whole: WholeImages, index: int) -> Any:
    """The target of a whole image from its annotations alone (no pixels read)."""
    width, height = (int(v) for v in whole.images.sizes[index])
    scale = whole.size / max(width, height)
    return task.target(whole.images.annotations(index).scale(scale), whole.size, whole.size)
