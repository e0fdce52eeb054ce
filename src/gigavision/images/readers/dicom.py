"""DICOM through pydicom: single-frame images, and tiled whole-slide (VL WSI, TILED_FULL) multi-frame files."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from gigavision.errors import InvalidImage, LimitExceeded
from gigavision.images.registry import register_reader
from gigavision.images.sniff import is_dicom
from gigavision.images.source import ImageInfo, ImageSource, Level


def _sniff(path: Path, head: bytes) -> bool:
    return is_dicom(head)


def _float(value: Any) -> float | None:
    try:
        return float(value[0] if isinstance(value, list | tuple) or hasattr(value, "__getitem__") else value)
    except (TypeError, ValueError, IndexError):
        return None


@register_reader("dicom", sniff=_sniff, priority=10, description="DICOM single-frame and tiled WSI (pydicom)")
class DicomSource(ImageSource):
    """A DICOM file. Single frames decode whole (with the modality LUT); TILED_FULL WSI frames are tiles."""

    def _probe(self) -> ImageInfo:
        import pydicom

        try:
            ds = pydicom.dcmread(self.path, stop_before_pixels=True)
            rows, cols = int(ds.Rows), int(ds.Columns)
        except Exception as exc:
            raise InvalidImage(f"{self.path.name}: not a readable DICOM image: {exc}") from exc
        self._ds = ds
        self._decode_lock = threading.Lock()
        frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
        spp = int(getattr(ds, "SamplesPerPixel", 1))
        self._tiled = (
            frames > 1
            and getattr(ds, "DimensionOrganizationType", "") == "TILED_FULL"
            and hasattr(ds, "TotalPixelMatrixColumns")
        )
        if self._tiled:
            w, h = int(ds.TotalPixelMatrixColumns), int(ds.TotalPixelMatrixRows)
            levels = [Level(w, h, 1.0, cols, rows)]
        else:
            w, h = cols, rows
            if w * h > self.limits.max_decode_pixels:
                raise LimitExceeded(
                    f"{self.path.name}: {w}x{h} pixels is more than limits.max_decode_pixels "
                    f"({self.limits.max_decode_pixels:,})"
                )
            levels = [Level(w, h, 1.0, w, h)]
        bits = int(getattr(ds, "BitsAllocated", 8))
        signed = int(getattr(ds, "PixelRepresentation", 0)) == 1
        rescaled = not self._tiled and (
            float(getattr(ds, "RescaleSlope", 1) or 1) != 1 or float(getattr(ds, "RescaleIntercept", 0) or 0) != 0
        )
        dtype = "float32" if rescaled else (f"{'int' if signed else 'uint'}{max(8, bits)}" if spp == 1 else "uint8")
        mpp = self._mpp(ds)
        center, width = _float(getattr(ds, "WindowCenter", None)), _float(getattr(ds, "WindowWidth", None))
        meta: dict[str, Any] = {"frames": frames, "transfer_syntax": str(ds.file_meta.TransferSyntaxUID)}
        if center is not None and width is not None and width > 0:
            meta["display_window"] = [center - width / 2, center + width / 2]
        return ImageInfo(
            width=w,
            height=h,
            levels=levels,
            bands=3 if spp == 3 else 1,
            dtype=dtype,
            reader=self.name,
            format="dicom",
            mpp_x=mpp,
            mpp_y=mpp,
            modality=str(getattr(ds, "Modality", "") or "") or None,
            tiled=self._tiled,
            metadata=meta,
        )

    @staticmethod
    def _mpp(ds: Any) -> float | None:
        spacing = None
        try:
            spacing = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
        except (AttributeError, IndexError, KeyError):
            spacing = getattr(ds, "PixelSpacing", None) or getattr(ds, "ImagerPixelSpacing", None)
        value = _float(spacing) if spacing is not None else None
        return value * 1000.0 if value else None  # DICOM spacing is in mm

    def _read_tile(self, level: int, tx: int, ty: int) -> np.ndarray:
        from pydicom.pixels.processing import apply_modality_lut
        from pydicom.pixels.utils import pixel_array

        if self._tiled:
            index = ty * self.levels[0].tiles_across + tx
            frame = pixel_array(str(self.path), index=index)  # opens and decodes only that frame
            return frame if frame.ndim == 3 else frame[:, :, None]
        with self._decode_lock:
            import pydicom

            ds = pydicom.dcmread(self.path)
            arr = ds.pixel_array
            if arr.ndim == 3 and arr.shape[-1] not in (3, 4):  # multi-frame, not tiled: the first frame
                arr = arr[0]
            if self.info.dtype == "float32":
                arr = apply_modality_lut(arr, ds).astype(np.float32)
            if getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1":
                arr = arr.max() + arr.min() - arr  # MONOCHROME1: high values are dark
        arr = arr.astype(self.info.dtype, copy=False)
        return arr if arr.ndim == 3 else arr[:, :, None]
