"""Voxel geometry of a volume: affines, the stored orientation, and the three display planes.

Conventions (docs/volumes.md):

- A volume is stored as a C-order array ``(z, y, x)`` whose axes point, as closely as the acquisition allows,
  to the patient's **L**eft (x), **P**osterior (y) and **S**uperior (z): DICOM's and ITK's LPS. ``array[z]`` is
  then an axial slice as radiologists look at it (the patient's right on the left of the screen, anterior up).
  Axes are only permuted and flipped to get there, never resampled, so voxel values stay the acquired ones.
- ``affine`` maps voxel indices ``(x, y, z, 1)`` (in that order, as nibabel and MONAI index) to world
  millimetres in **RAS** (nibabel's and MONAI's world); the exact, possibly oblique, orientation lives there.
- The viewer shows a plane's slices as 2D images with square display pixels: the horizontal axis keeps the
  voxel grid (x for axial and coronal, y for sagittal), the vertical axis is resampled to the horizontal
  spacing. Axial: rows y (anterior at the top); coronal and sagittal: rows z, superior at the top.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from gigavision.errors import InvalidInput

Plane = Literal["axial", "coronal", "sagittal"]
PLANES: tuple[Plane, ...] = ("axial", "coronal", "sagittal")
# Index of the array axis (in (z, y, x)) a plane's slices are taken along.
SLICE_AXIS: dict[Plane, int] = {"axial": 0, "coronal": 1, "sagittal": 2}
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
# RAS sign each stored axis (x, y, z) points to: x to L (-R), y to P (-A), z to S.
STORED_SIGNS = (-1, -1, 1)
_AXIS_LETTERS = (("L", "R"), ("P", "A"), ("I", "S"))  # (negative, positive) RAS direction of world axes 0, 1, 2


def check_affine(affine: np.ndarray, what: str) -> np.ndarray:
    """``affine`` as a float 4×4 whose 3×3 part is finite and invertible; ``InvalidInput`` naming ``what`` else."""
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4):
        raise InvalidInput(f"{what}: the affine must be 4x4, got {a.shape}")
    if not np.isfinite(a).all():
        raise InvalidInput(f"{what}: the affine holds NaN or infinite values")
    m = a[:3, :3]
    norms = np.linalg.norm(m, axis=0)
    if (norms == 0).any():
        raise InvalidInput(f"{what}: the affine is zero along voxel axis {int(np.argmin(norms))} (no voxel size)")
    # relative to the voxel sizes, so 0.001 mm voxels are not mistaken for a degenerate affine
    if abs(np.linalg.det(m / norms)) < 1e-6:
        raise InvalidInput(f"{what}: the affine is singular (its voxel axes are not independent)")
    return a


def axis_codes(affine: np.ndarray) -> str:
    """The RAS letters the voxel axes x, y, z of ``affine`` point to most (``"LPS"``, ``"RAS"``, ``"LIP"``)."""
    world, sign = closest_axes(affine)
    return "".join(_AXIS_LETTERS[w][s > 0] for w, s in zip(world, sign, strict=True))


def closest_axes(affine: np.ndarray) -> tuple[list[int], list[int]]:
    """For each voxel axis, the world axis it is closest to and the sign along it (greedy on |cosines|, each
    world axis used once: an oblique axis goes to its largest component that is still free)."""
    m = np.asarray(affine, dtype=np.float64)[:3, :3]
    cos = np.abs(m / np.linalg.norm(m, axis=0))
    world, sign = [-1, -1, -1], [1, 1, 1]
    for _ in range(3):
        w, a = np.unravel_index(int(np.argmax(cos)), cos.shape)
        world[a] = int(w)
        sign[a] = 1 if m[w, a] >= 0 else -1
        cos[w, :] = -1.0
        cos[:, a] = -1.0
    return world, sign


@dataclass(frozen=True, slots=True)
class Reorientation:
    """How an acquired array ``(k, j, i)`` becomes the stored ``(z, y, x)`` array: ``order`` for
    ``np.transpose`` then ``flips`` (axes of the transposed array to reverse), and the stored affine."""

    order: tuple[int, int, int]
    flips: tuple[int, ...]
    affine: np.ndarray
    shape: tuple[int, int, int]

    @property
    def identity(self) -> bool:
        return self.order == (0, 1, 2) and not self.flips

    @property
    def keeps_slices(self) -> bool:
        """Acquired slices stay stored slices (only reversed or flipped in-plane): written as they come."""
        return self.order == (0, 1, 2)

    def apply(self, acquired: np.ndarray) -> np.ndarray:
        """A view of ``acquired`` (``(k, j, i)``) in stored order."""
        out = np.transpose(acquired, self.order)
        return np.flip(out, self.flips) if self.flips else out


def reorientation(affine: np.ndarray, shape_kji: Sequence[int]) -> Reorientation:
    """The permutation and flips that make an acquired grid (``affine`` over (i, j, k), array ``(k, j, i)``)
    point to L, P, S, and the affine of the stored grid."""
    a = np.asarray(affine, dtype=np.float64)
    world, sign = closest_axes(a)
    n_acq = [int(shape_kji[2]), int(shape_kji[1]), int(shape_kji[0])]  # sizes along i, j, k
    # numpy axis of acquired voxel axis v is 2 - v; of stored axis s it is 2 - s
    order = [0, 0, 0]
    for v in range(3):
        order[2 - world[v]] = 2 - v
    flips = tuple(sorted(2 - world[v] for v in range(3) if sign[v] != STORED_SIGNS[world[v]]))
    # stored index t (x, y, z) -> acquired index: a[v] = t[world[v]], or n - 1 - t[world[v]] when flipped
    to_acq = np.zeros((4, 4))
    to_acq[3, 3] = 1.0
    for v in range(3):
        s = world[v]
        if sign[v] != STORED_SIGNS[s]:
            to_acq[v, s], to_acq[v, 3] = -1.0, n_acq[v] - 1
        else:
            to_acq[v, s] = 1.0
    shape = tuple(int(shape_kji[order[p]]) for p in range(3))
    return Reorientation(tuple(order), flips, a @ to_acq, shape)  # type: ignore[arg-type]


def spacing_of(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size (x, y, z) in mm: the lengths of the affine's columns."""
    norms = np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)
    return float(norms[0]), float(norms[1]), float(norms[2])


@dataclass(frozen=True, slots=True)
class PlaneSize:
    """A plane's display image: ``width`` × ``height`` square pixels, ``slices`` positions of the slider."""

    width: int
    height: int
    slices: int

    def as_dict(self) -> dict[str, int]:
        return {"width": self.width, "height": self.height, "slices": self.slices}


@dataclass(frozen=True, slots=True)
class Grid:
    """A stored volume's shape ``(z, y, x)`` and voxel size ``(x, y, z)`` mm: everything the planes need."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]

    @classmethod
    def of(cls, meta: Mapping[str, Any]) -> Grid:
        """From an image's ``volume`` metadata (``shape`` [z, y, x], ``spacing`` [x, y, z])."""
        z, y, x = (int(v) for v in meta["shape"])
        sx, sy, sz = (float(v) for v in meta["spacing"])
        return cls((z, y, x), (sx, sy, sz))

    def plane(self, plane: Plane) -> PlaneSize:
        nz, ny, nx = self.shape
        sx, sy, sz = self.spacing
        if plane == "axial":
            return PlaneSize(nx, _display_rows(ny, sy, sx), nz)
        if plane == "coronal":
            return PlaneSize(nx, _display_rows(nz, sz, sx), ny)
        if plane == "sagittal":
            return PlaneSize(ny, _display_rows(nz, sz, sy), nx)
        raise InvalidInput(f"plane {plane!r} is not one of {', '.join(PLANES)}")

    def planes(self) -> dict[str, dict[str, int]]:
        return {p: self.plane(p).as_dict() for p in PLANES}

    def canvas(self) -> tuple[int, int]:
        """The smallest rectangle every plane's display image fits in (what annotations on slices must fit)."""
        sizes = [self.plane(p) for p in PLANES]
        return max(s.width for s in sizes), max(s.height for s in sizes)

    def to_voxels(self, plane: Plane, index: int, xyxy: Sequence[float]) -> tuple[float, ...]:
        """A rectangle ``[x0, y0, x1, y1]`` drawn on slice ``index`` of ``plane`` (display pixels) as a voxel box
        ``(x0, y0, z0, x1, y1, z1)``: voxel edges, so voxel ``v`` spans ``[v, v + 1)`` and the slice is one
        voxel thick."""
        size = self.plane(plane)
        if not 0 <= index < size.slices:
            raise InvalidInput(f"slice {index} of the {plane} plane does not exist (0..{size.slices - 1})")
        nz, ny, _ = self.shape
        u0, v0, u1, v1 = (float(c) for c in xyxy)
        if plane == "axial":
            k = ny / size.height
            return (u0, v0 * k, float(index), u1, v1 * k, float(index + 1))
        k = nz / size.height
        z0, z1 = nz - v1 * k, nz - v0 * k  # rows run from superior (top) down
        if plane == "coronal":
            return (u0, float(index), z0, u1, float(index + 1), z1)
        return (float(index), u0, z0, float(index + 1), u1, z1)

    def voxel_box(self, xyxy: Sequence[float], attributes: Mapping[str, Any]) -> tuple[float, ...]:
        """An annotation on this volume (its bbox and attributes, ``annotations.VOLUME_ATTRIBUTES``) as a voxel
        box ``(x0, y0, z0, x1, y1, z1)``: a 3D box (``z0``/``z1`` on the axial plane) spans its slices, a shape
        drawn on one slice is one voxel thick. ``InvalidInput`` for attributes that place it nowhere."""
        plane = attributes.get("plane", "axial" if "z0" in attributes else None)
        if plane not in PLANES:
            raise InvalidInput(f"an annotation on a volume needs plane (one of {', '.join(PLANES)}), got {plane!r}")
        if "z0" in attributes or "z1" in attributes:
            z0, z1 = _int(attributes.get("z0"), "z0"), _int(attributes.get("z1"), "z1")
            if plane != "axial" or not 0 <= z0 < z1 <= self.shape[0]:
                raise InvalidInput(
                    f"a 3D box is drawn on the axial plane with 0 <= z0 < z1 <= {self.shape[0]}, "
                    f"got plane {plane!r}, z0 {z0}, z1 {z1}"
                )
            x0, y0, _, x1, y1, _ = self.to_voxels("axial", z0, xyxy)
            return (x0, y0, float(z0), x1, y1, float(z1))
        return self.to_voxels(plane, _int(attributes.get("slice"), "slice"), xyxy)


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).lstrip("-").isdigit():
        raise InvalidInput(f"{name} must be a whole number, got {value!r}")
    return int(value)


def _display_rows(n: int, spacing: float, along: float) -> int:
    """Rows that show ``n`` voxels of ``spacing`` mm with square pixels of ``along`` mm (the same n when equal)."""
    rows = n * spacing / along
    return n if math.isclose(rows, n, rel_tol=1e-3) else max(1, round(rows))


def resample_rows(image: np.ndarray, rows: int) -> np.ndarray:
    """``image`` ``(n, w)`` linearly resampled to ``rows`` rows (pixel centres aligned, edges clamped), float32."""
    n = image.shape[0]
    if rows == n:
        return image.astype(np.float32, copy=False)
    centres = (np.arange(rows, dtype=np.float64) + 0.5) * (n / rows) - 0.5
    centres = np.clip(centres, 0, n - 1)
    lo = np.floor(centres).astype(np.intp)
    hi = np.minimum(lo + 1, n - 1)
    w = (centres - lo).astype(np.float32)[:, None]
    src = image.astype(np.float32, copy=False)
    out: np.ndarray = src[lo] * (1.0 - w) + src[hi] * w
    return out
