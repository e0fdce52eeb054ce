"""A stored volume: one uncompressed ``.npy`` array ``(z, y, x)`` read through a memory map, and a JSON sidecar.

Why a memory-mapped ``.npy`` rather than compressed chunks (zarr) or a tiled 3D TIFF: a training patch or a
sliding window reads exactly the bytes it covers, with no decoding, and DataLoader workers share the pages
through the OS page cache instead of each decompressing chunks into private memory; the pages a read touched
are clean file pages the kernel drops under pressure, so reading a 96³ block costs 1.7 MB of the process's
memory whatever the volume's size. Any tool opens it (``np.load(path, mmap_mode="r")``). The price is disk:
2 bytes per CT voxel, as much as the DICOM pixels themselves (157 MB for 512 × 512 × 300), where zstd chunks
would take about half; and a sagittal slice touches a page of every row (a cold read pulls the whole file
once). Measured in benchmarks/bench_volumes.py.
"""

from __future__ import annotations

import json
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from gigavision.errors import InvalidImage, InvalidInput
from gigavision.images.volumes.geometry import PLANES, SLICE_AXIS, Grid, Plane, Reorientation, resample_rows

VOLUME_NAME, VOLUME_META = "volume.npy", "volume.json"
FORMAT = "gigavision-volume/1"
# Common CT windows (centre, width) in HU, for viewers and for intensity normalisation in training.
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "soft tissue": (40.0, 400.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
    "liver": (60.0, 160.0),
}
_SLAB = 16  # slices copied or reduced at a time: bounds the memory of a reorienting copy and of downsampling


@dataclass(frozen=True, slots=True)
class Block:
    """A box of voxels, half-open like Python slices: ``z0 <= z < z1`` and so on."""

    z0: int
    z1: int
    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.z1 - self.z0, self.y1 - self.y0, self.x1 - self.x0


@dataclass
class Volume:
    """A stored volume, opened read-only (thread-safe: reads never mutate). ``open_volume`` caches these."""

    folder: Path
    voxels: np.ndarray  # read-only memory map (z, y, x)
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(cls, folder: Path) -> Volume:
        folder = Path(folder)
        try:
            meta = json.loads((folder / VOLUME_META).read_text(encoding="utf-8"))
            voxels = np.load(folder / VOLUME_NAME, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise InvalidImage(f"{folder}: cannot open the stored volume ({exc})") from exc
        if meta.get("format") != FORMAT or voxels.ndim != 3 or list(voxels.shape) != list(meta.get("shape", [])):
            raise InvalidImage(f"{folder}: the stored volume and its {VOLUME_META} disagree")
        return cls(folder, voxels, meta)

    # -- what the volume is ----------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        """``(z, y, x)`` voxels."""
        z, y, x = self.voxels.shape
        return int(z), int(y), int(x)

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.voxels.dtype

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size ``(x, y, z)`` in mm (nibabel's ``zooms`` order)."""
        sx, sy, sz = self.meta["spacing"]
        return float(sx), float(sy), float(sz)

    @property
    def affine(self) -> np.ndarray:
        """4×4: voxel ``(x, y, z, 1)`` to RAS millimetres (nibabel / MONAI convention)."""
        return np.asarray(self.meta["affine"], dtype=np.float64)

    @property
    def window(self) -> tuple[float, float]:
        """The default display window ``(low, high)``: DICOM's WindowCenter/Width, else the data's 0.5-99.5th
        percentiles."""
        lo, hi = self.meta["window"]
        return float(lo), float(hi)

    @property
    def modality(self) -> str | None:
        value = self.meta.get("modality")
        return str(value) if value else None

    @property
    def grid(self) -> Grid:
        return Grid(self.shape, self.spacing)

    # -- reading ---------------------------------------------------------------------------------------
    def read_block(
        self,
        z: tuple[int, int] | None = None,
        y: tuple[int, int] | None = None,
        x: tuple[int, int] | None = None,
        *,
        step: int | tuple[int, int, int] = 1,
        reduce: Literal["mean", "nearest"] = "mean",
        fill: float = 0,
    ) -> np.ndarray:
        """Voxels ``[z0:z1, y0:y1, x0:x1]`` (default: the whole axis) as a new array ``(z, y, x)``.

        Parts outside the volume are ``fill`` (a sliding window or a patch may overhang the edge). ``step``
        (one int or ``(z, y, x)``) reads every ``step``-th voxel block: ``reduce="mean"`` averages each block
        (intensities; float32 out), ``"nearest"`` takes its first voxel (label volumes; dtype kept). The output
        has ``ceil(extent / step)`` voxels per axis. Memory: the output plus ``step_z`` slices of the block.
        """
        nz, ny, nx = self.shape
        block = Block(*(z or (0, nz)), *(y or (0, ny)), *(x or (0, nx)))
        if min(block.shape) <= 0:
            raise InvalidInput(f"block {block} is empty: each end must be past its start")
        steps = (step, step, step) if isinstance(step, int) else tuple(int(s) for s in step)
        if len(steps) != 3 or min(steps) < 1:
            raise InvalidInput(f"step must be a positive int or three of them, got {step!r}")
        if steps == (1, 1, 1):
            return self._read(block, fill)
        if reduce == "nearest":
            sz, sy, sx = steps
            out = [
                self._read(Block(k, k + 1, block.y0, block.y1, block.x0, block.x1), fill)[:, ::sy, ::sx]
                for k in range(block.z0, block.z1, sz)
            ]
            return np.concatenate(out, axis=0)
        if reduce != "mean":
            raise InvalidInput(f"reduce must be 'mean' or 'nearest', got {reduce!r}")
        return self._mean(block, steps, fill)

    def _read(self, block: Block, fill: float) -> np.ndarray:
        nz, ny, nx = self.shape
        out = np.full(block.shape, fill, dtype=self.dtype)
        lo = (max(block.z0, 0), max(block.y0, 0), max(block.x0, 0))
        hi = (min(block.z1, nz), min(block.y1, ny), min(block.x1, nx))
        if all(h > low for low, h in zip(lo, hi, strict=True)):
            out[
                lo[0] - block.z0 : hi[0] - block.z0,
                lo[1] - block.y0 : hi[1] - block.y0,
                lo[2] - block.x0 : hi[2] - block.x0,
            ] = self.voxels[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        return out

    def _mean(self, block: Block, steps: tuple[int, ...], fill: float) -> np.ndarray:
        sz, sy, sx = steps
        dz, dy, dx = block.shape
        oz, oy, ox = math.ceil(dz / sz), math.ceil(dy / sy), math.ceil(dx / sx)
        out = np.empty((oz, oy, ox), dtype=np.float32)
        for i in range(oz):
            z0 = block.z0 + i * sz
            slab = self._read(Block(z0, min(z0 + sz, block.z1), block.y0, block.y1, block.x0, block.x1), fill)
            slab = slab.astype(np.float32)
            # a partial block at the far edge is padded with copies of its last voxels (edge mode)
            pad = ((0, sz - slab.shape[0]), (0, oy * sy - dy), (0, ox * sx - dx))
            if any(p[1] for p in pad):
                slab = np.pad(slab, pad, mode="edge")
            out[i] = slab.reshape(sz, oy, sy, ox, sx).mean(axis=(0, 2, 4))
        return out

    def slice(self, plane: Plane, index: int) -> np.ndarray:
        """Slice ``index`` of ``plane`` as stored voxels, oriented for display (rows top to bottom), not resampled:
        axial ``(y, x)``, coronal ``(z, x)`` and sagittal ``(z, y)`` with superior at the top."""
        if plane not in PLANES:
            raise InvalidInput(f"plane {plane!r} is not one of {', '.join(PLANES)}")
        n = self.shape[SLICE_AXIS[plane]]
        if not 0 <= index < n:
            raise InvalidInput(f"slice {index} of the {plane} plane does not exist (0..{n - 1})")
        if plane == "axial":
            return np.asarray(self.voxels[index])
        if plane == "coronal":
            return np.asarray(self.voxels[::-1, index, :])
        return np.asarray(self.voxels[::-1, :, index])

    def display_slice(self, plane: Plane, index: int) -> np.ndarray:
        """``slice`` resampled to the plane's square display pixels (``Grid.plane``); float32 when resampled."""
        image = self.slice(plane, index)
        rows = self.grid.plane(plane).height
        return image if rows == image.shape[0] else resample_rows(image, rows)


class VolumeWriter:
    """Writes a volume slice by slice, as acquired (array ``(k, j, i)``), into ``folder/volume.npy`` in stored
    orientation. Slices that stay slices (the usual axial stack) go straight to their place; a permuted
    volume (a coronal or sagittal acquisition) is first stacked in a scratch memory map, then copied slab by
    slab. Keeps a subsample of the values for the display window."""

    def __init__(self, folder: Path, reo: Reorientation, dtype: np.dtype[Any], acquired_shape: tuple[int, int, int]):
        self.folder, self.reo, self.dtype = folder, reo, np.dtype(dtype)
        self.acquired_shape = acquired_shape
        self.path = folder / VOLUME_NAME
        self._out = np.lib.format.open_memmap(self.path, mode="w+", dtype=self.dtype, shape=reo.shape)
        self._scratch: np.ndarray | None = None
        if not reo.keeps_slices:
            self._scratch_path = folder / ".acquired.npy"
            self._scratch = np.lib.format.open_memmap(
                self._scratch_path, mode="w+", dtype=self.dtype, shape=acquired_shape
            )
        self._sample: list[np.ndarray] = []
        self._every = max(1, acquired_shape[0] // 64)

    def put(self, k: int, image: np.ndarray) -> None:
        """Acquired slice ``k`` (rows j, columns i), already in the volume's dtype."""
        if image.shape != self.acquired_shape[1:]:
            raise InvalidImage(
                f"slice {k} has {image.shape[0]}x{image.shape[1]} pixels, the series {self.acquired_shape[1:]}"
            )
        if k % self._every == 0:
            self._sample.append(np.asarray(image[::4, ::4], dtype=np.float32).ravel())
        if self._scratch is not None:
            self._scratch[k] = image
            return
        flips = self.reo.flips
        z = self.reo.shape[0] - 1 - k if 0 in flips else k
        self._out[z] = image[:: -1 if 1 in flips else 1, :: -1 if 2 in flips else 1]

    def finish(self) -> np.ndarray:
        """Completes the stored array (the reorienting copy, if any), flushes it; returns the subsample."""
        if self._scratch is not None:
            view = self.reo.apply(self._scratch)
            for z0 in range(0, self.reo.shape[0], _SLAB):
                self._out[z0 : z0 + _SLAB] = view[z0 : z0 + _SLAB]
            del view
            self._scratch = None
            self._scratch_path.unlink()
        self._out.flush()
        del self._out
        return np.concatenate(self._sample) if self._sample else np.zeros(1, np.float32)


def write_meta(folder: Path, meta: dict[str, Any]) -> None:
    (folder / VOLUME_META).write_text(json.dumps({"format": FORMAT, **meta}, sort_keys=True), encoding="utf-8")


# -- an LRU of open volumes: the tile server opens a slice per request, the map is opened once --------------
_OPEN: OrderedDict[Path, Volume] = OrderedDict()
_OPEN_LOCK = threading.Lock()
_OPEN_MAX = 16


def open_volume(folder: Path) -> Volume:
    """The stored volume in ``folder`` (shared, read-only; kept open in a small LRU)."""
    key = Path(folder).resolve()
    with _OPEN_LOCK:
        found = _OPEN.get(key)
        if found is not None:
            _OPEN.move_to_end(key)
            return found
    volume = Volume.open(key)
    with _OPEN_LOCK:
        _OPEN[key] = volume
        while len(_OPEN) > _OPEN_MAX:
            _OPEN.popitem(last=False)
    return volume
