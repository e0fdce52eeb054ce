"""Writers for each supported format, filled with real pixels from scikit-image (tests' own fixtures)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def ihc_scene(width: int, height: int) -> np.ndarray:
    """Real IHC texture (scikit-image) tiled with flips up to ``width × height``: no two neighbours alike."""
    from skimage import data

    base = data.immunohistochemistry()
    row = np.concatenate([base, base[:, ::-1]], axis=1)
    block = np.concatenate([row, row[::-1]], axis=0)  # 1024 x 1024, seamless
    reps = (-(-height // block.shape[0]), -(-width // block.shape[1]), 1)
    return np.ascontiguousarray(np.tile(block, reps)[:height, :width])


def write_ome_tiff(path: Path, arr: np.ndarray, mpp: float) -> Path:
    """Pyramidal OME-TIFF (SubIFDs) with PhysicalSizeX/Y in µm, as bioformats writes it."""
    import tifffile

    levels = [arr]
    while max(levels[-1].shape[:2]) > 512:
        levels.append(levels[-1][::2, ::2])
    with tifffile.TiffWriter(path, bigtiff=True, ome=True) as tif:
        opts = {"tile": (256, 256), "compression": "zlib", "photometric": "rgb"}
        tif.write(levels[0], subifds=len(levels) - 1, metadata={"PhysicalSizeX": mpp, "PhysicalSizeY": mpp}, **opts)
        for lvl in levels[1:]:
            tif.write(lvl, subfiletype=1, **opts)
    return path


def write_geotiff(path: Path, arr: np.ndarray, origin: tuple[float, float], pixel: float, epsg: int) -> Path:
    """A tiled GeoTIFF in a projected CRS with ModelPixelScale + ModelTiepoint, like GDAL writes."""
    import tifffile

    geokeys = [1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, epsg]  # projected, pixel-is-area
    extratags = [
        (33550, "d", 3, (pixel, pixel, 0.0), True),
        (33922, "d", 6, (0.0, 0.0, 0.0, origin[0], origin[1], 0.0), True),
        (34735, "H", len(geokeys), geokeys, True),
    ]
    tifffile.imwrite(path, arr, tile=(256, 256), compression="zlib", photometric="rgb", extratags=extratags)
    return path


def write_svs(path: Path, arr: np.ndarray, mpp: float) -> Path:
    """An Aperio SVS (tiled JPEG pages with Aperio's ImageDescription), which OpenSlide reads as 'aperio'."""
    import tifffile

    h, w = arr.shape[:2]
    desc = f"Aperio Image Library v12.0.15\r\n{w}x{h} [0,0 {w}x{h}] (256x256) JPEG/RGB Q=90|AppMag = 20|MPP = {mpp}"
    with tifffile.TiffWriter(path, bigtiff=False) as tif:
        level = arr
        first = True
        while True:
            tif.write(
                level,
                tile=(256, 256),
                compression="jpeg",
                compressionargs={"level": 90},
                photometric="rgb",
                description=desc
                if first
                else f"Aperio Image Library v12.0.15\r\n{w}x{h} -> {level.shape[1]}x{level.shape[0]}",
                subfiletype=0 if first else 1,
                metadata=None,
            )
            first = False
            if max(level.shape[:2]) <= 1024:
                break
            level = np.ascontiguousarray(level[::4, ::4])
    return path


def _dicom_base(modality: str, sop_class: str):  # type: ignore[no-untyped-def]
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = modality
    ds.PatientName, ds.PatientID = "Test^Coins", "0"
    return ds


def write_dicom_gray(
    path: Path, arr: np.ndarray, spacing_mm: float, slope: float = 1.0, intercept: float = 0.0
) -> Path:
    """A single-frame 16-bit greyscale DICOM (secondary capture) with pixel spacing and a rescale."""
    ds = _dicom_base("OT", "1.2.840.10008.5.1.4.1.1.7")
    pixels = arr.astype(np.uint16)
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelSpacing = [spacing_mm, spacing_mm]
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def write_dicom_wsi(path: Path, arr: np.ndarray, tile: int, mpp: float) -> Path:
    """A VL Whole Slide Microscopy image: TILED_FULL frames of ``tile``², native RGB, one level."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    h, w = arr.shape[:2]
    th, tw = -(-h // tile), -(-w // tile)
    padded = np.full((th * tile, tw * tile, 3), 255, dtype=np.uint8)
    padded[:h, :w] = arr
    frames = [padded[r * tile : (r + 1) * tile, c * tile : (c + 1) * tile] for r in range(th) for c in range(tw)]
    ds = _dicom_base("SM", "1.2.840.10008.5.1.4.1.1.77.1.6")
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    ds.Rows = ds.Columns = tile
    ds.TotalPixelMatrixColumns, ds.TotalPixelMatrixRows = w, h
    ds.NumberOfFrames = len(frames)
    ds.DimensionOrganizationType = "TILED_FULL"
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    measures = Dataset()
    measures.PixelSpacing = [mpp / 1000, mpp / 1000]
    measures.SliceThickness = 0.001
    shared = Dataset()
    shared.PixelMeasuresSequence = Sequence([measures])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    ds.PixelData = np.stack(frames).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path
