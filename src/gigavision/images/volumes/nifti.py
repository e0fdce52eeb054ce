"""NIfTI-1 / NIfTI-2 (``.nii``, ``.nii.gz``) through nibabel (the ``volumes`` extra).

The affine is nibabel's (sform, else qform, else pixdim): a zero, singular or non-finite one is refused, and so
are zero, negative or non-finite voxel sizes (pixdim). 4D files are accepted when the extra axes have one
element (a 3D volume saved as 4D); a time series is refused. scl_slope/scl_inter apply (float32 then).
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gigavision.errors import InvalidImage, InvalidInput
from gigavision.images.volumes.geometry import check_affine, spacing_of

SLAB = 16  # slices read at a time (a Fortran-ordered file stores each slice contiguously)


def _header_magic(head: bytes) -> bool:
    single = len(head) >= 348 and head[344:348] == b"n+1\x00"  # NIfTI-1 single file (not the .hdr/.img pair)
    two = len(head) >= 8 and head[4:8] == b"n+2\x00"
    return single or two


def is_nifti(path: Path, head: bytes) -> bool:
    """A NIfTI-1/2 single file, plain or gzip-compressed (then only by its ``.nii.gz`` name)."""
    if _header_magic(head):
        return True
    if head[:2] == b"\x1f\x8b" and path.name.lower().endswith(".nii.gz"):
        try:
            with gzip.open(path, "rb") as fh:
                return _header_magic(fh.read(352))
        except (OSError, EOFError):
            return True  # named .nii.gz but broken: let the NIfTI reader say why
    return False


@dataclass
class NiftiPlan:
    """A NIfTI file that makes a volume: the acquired grid ``(k, j, i)`` and its RAS affine."""

    image: Any  # nibabel's Nifti1Image / Nifti2Image
    shape: tuple[int, int, int]  # (k, j, i)
    affine: np.ndarray
    dtype: np.dtype[Any]
    description: str
    notes: list[str] = field(default_factory=list)


def plan_nifti(path: Path) -> NiftiPlan:
    """Open ``path`` and check it (module docstring); ``InvalidImage`` / ``InvalidInput`` naming the file."""
    from gigavision.extras import require

    require("volumes", "nibabel", feature="NIfTI ingest")
    import nibabel as nib

    name = path.name
    try:
        image: Any = nib.load(str(path), keep_file_open=True)
        shape = tuple(int(v) for v in image.shape)
        affine = np.asarray(image.affine, dtype=np.float64)
        zooms = tuple(float(z) for z in image.header.get_zooms()[:3])
        disk = np.dtype(image.get_data_dtype())
        slope, inter = image.dataobj.slope, image.dataobj.inter
        description = image.header.get("descrip")
    except Exception as exc:  # nibabel's many errors for a broken header
        raise InvalidImage(f"{name}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from exc
    if len(shape) < 3 or min(shape[:3]) < 1:
        raise InvalidImage(f"{name}: {len(shape)}D NIfTI ({'x'.join(map(str, shape))}) is not a volume")
    if any(s != 1 for s in shape[3:]):
        raise InvalidImage(
            f"{name}: a {len(shape)}D series of {int(np.prod(shape[3:]))} volumes ({'x'.join(map(str, shape))}); "
            "split it into 3D files first"
        )
    if shape[2] < 2:
        raise InvalidImage(f"{name}: one slice ({shape[0]}x{shape[1]}x1) is not a volume")
    if disk.fields is not None or disk.kind == "c":
        raise InvalidImage(f"{name}: {disk} voxels (colour or complex) are not supported")
    if not all(np.isfinite(z) and z > 0 for z in zooms):
        raise InvalidInput(f"{name}: voxel sizes (pixdim) {zooms} must be positive and finite")
    check_affine(affine, name)
    notes = []
    measured = spacing_of(affine)
    if not np.allclose(measured, zooms, rtol=0.01):
        notes.append(
            f"pixdim says {', '.join(f'{z:g}' for z in zooms)} mm, the affine "
            f"{', '.join(f'{z:g}' for z in measured)} mm: the affine is used"
        )
    scaled = slope is not None and inter is not None and np.isfinite([slope, inter]).all() and (slope, inter) != (1, 0)
    dtype: np.dtype[Any]
    if scaled or disk.kind == "f":
        dtype = np.dtype(np.float32)
    elif disk.kind == "b":
        dtype = np.dtype(np.uint8)
    else:
        dtype = disk.newbyteorder("=")
    text = description.item().decode("latin-1", "replace").strip("\x00 ") if description is not None else ""
    return NiftiPlan(image, (shape[2], shape[1], shape[0]), affine, dtype, text, notes)


def iter_slices(plan: NiftiPlan) -> Iterator[tuple[int, np.ndarray]]:
    """Slices ``k`` as ``(j, i)`` arrays in the plan's dtype, read ``SLAB`` at a time."""
    nk = plan.shape[0]
    extra = (0,) * (len(plan.image.shape) - 3)
    for k0 in range(0, nk, SLAB):
        k1 = min(k0 + SLAB, nk)
        try:
            slab = np.asarray(plan.image.dataobj[(slice(None), slice(None), slice(k0, k1), *extra)])
        except Exception as exc:  # truncated or corrupt voxel data
            raise InvalidImage(f"cannot read slices {k0}..{k1 - 1}: {type(exc).__name__}: {exc}") from exc
        for dk in range(k1 - k0):
            yield k0 + dk, np.ascontiguousarray(slab[:, :, dk].T).astype(plan.dtype, copy=False)
