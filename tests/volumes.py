"""3D test inputs as scanners and converters write them: a CT phantom (organ-like ellipsoids with texture and
noise, in HU) saved as a DICOM series with pydicom (one CT Image Storage file per slice, as a scanner exports
it: stored values + RescaleIntercept -1024, 12 bits) and as NIfTI with nibabel."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np

# organ: (centre z, y, x as fractions of the shape, radii as fractions, HU, texture amplitude)
ORGANS = {
    "body": ((0.5, 0.5, 0.5), (0.65, 0.42, 0.46), 30.0, 20.0),
    "lung_r": ((0.6, 0.42, 0.3), (0.3, 0.22, 0.13), -820.0, 60.0),
    "lung_l": ((0.6, 0.42, 0.7), (0.3, 0.22, 0.13), -820.0, 60.0),
    "liver": ((0.3, 0.5, 0.32), (0.18, 0.2, 0.16), 60.0, 12.0),
    "kidney_r": ((0.28, 0.66, 0.36), (0.1, 0.07, 0.05), 35.0, 10.0),
    "kidney_l": ((0.28, 0.66, 0.64), (0.1, 0.07, 0.05), 35.0, 10.0),
    "spine": ((0.5, 0.76, 0.5), (0.5, 0.06, 0.05), 700.0, 120.0),
}
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def phantom(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """A CT-like volume ``(z, y, x)`` in HU (int16): air, a body of soft tissue, lungs, liver, kidneys, spine,
    each with its own low-frequency texture, plus scanner noise."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    z, y, x = np.meshgrid(
        (np.arange(nz) + 0.5) / nz, (np.arange(ny) + 0.5) / ny, (np.arange(nx) + 0.5) / nx, indexing="ij"
    )
    hu = np.full(shape, -1000.0, dtype=np.float32)
    for (cz, cy, cx), (rz, ry, rx), value, amplitude in ORGANS.values():
        inside = ((z - cz) / rz) ** 2 + ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0
        texture = gaussian_filter(rng.standard_normal(shape).astype(np.float32), 2.0)
        texture *= amplitude / max(float(texture.std()), 1e-6)
        hu[inside] = value + texture[inside]
    hu += rng.normal(0.0, 8.0, shape).astype(np.float32)
    return np.clip(np.rint(hu), -1024, 3071).astype(np.int16)


def write_series(
    folder: Path,
    hu: np.ndarray,
    *,
    spacing: float = 0.7,
    step: float = 2.5,
    orientation: Sequence[float] = AXIAL,
    origin: Sequence[float] = (-120.0, -140.0, -300.0),
    series_uid: str | None = None,
    series_number: int = 1,
    description: str = "CT phantom",
    skip: Sequence[int] = (),
    steps: Sequence[float] | None = None,
    seed: int = 0,
) -> list[Path]:
    """``hu`` ``(z, y, x)`` as a CT series in ``folder``: slice ``k`` at ``origin + k * step * normal`` (or the
    running sum of ``steps``), one file per slice under a random name (so name order says nothing), shuffled
    InstanceNumbers; ``skip``: slices left out (a gap)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    series_uid = series_uid or generate_uid()
    study_uid, frame_uid = generate_uid(), generate_uid()
    row, col = np.array(orientation[:3], dtype=float), np.array(orientation[3:], dtype=float)
    normal = np.cross(row, col)
    nz = hu.shape[0]
    offsets = np.concatenate([[0.0], np.cumsum(steps)]) if steps is not None else np.arange(nz) * step
    numbers = list(range(1, nz + 1))
    rng.shuffle(numbers)
    paths = []
    for k in range(nz):
        if k in skip:
            continue
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CT_STORAGE
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = CT_STORAGE, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.Modality, ds.SeriesNumber, ds.SeriesDescription = "CT", series_number, description
        ds.PatientName, ds.PatientID = "Phantom^CT", "phantom-1"
        ds.InstanceNumber = numbers[k]
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in orientation]
        ds.ImagePositionPatient = [f"{v:.4f}" for v in np.asarray(origin) + offsets[k] * normal]
        ds.PixelSpacing = [spacing, spacing]
        ds.SliceThickness = step
        ds.Rows, ds.Columns = hu.shape[1], hu.shape[2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
        ds.WindowCenter, ds.WindowWidth = 40, 400
        ds.PixelData = (hu[k].astype(np.int32) + 1024).astype(np.uint16).tobytes()
        path = folder / f"IM{rng.getrandbits(48):012x}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_nifti(path: Path, data_ijk: np.ndarray, affine: np.ndarray) -> Path:
    """``data_ijk`` (i, j, k) with ``affine`` as NIfTI-1 (sform and qform), as nibabel writes it."""
    import nibabel as nib

    image = nib.Nifti1Image(data_ijk, affine)
    image.header.set_xyzt_units("mm")
    nib.save(image, str(path))
    return path
