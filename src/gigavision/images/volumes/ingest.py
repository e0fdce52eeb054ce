"""Ingest of volumes, the pixel side: which inputs are volumes (DICOM slices grouped into series, zips of
them, NIfTI files), and ``prepare_volume``, which writes a volume's derived files into the scratch folder as
``images.ingest.prepare`` does for 2D images (volume.npy + volume.json, a thumbnail and a foreground mask of
the middle axial slice).

A DICOM series is kept as one original: a zip gigavision writes (``dicom_series.write_series_zip``), so a
series has one content id however it arrived (a folder, a zip, loose files) and its original can rebuild it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gigavision.config import Limits, Settings
from gigavision.errors import InvalidImage, LimitExceeded
from gigavision.images.display import display_window, to_uint8
from gigavision.images.ingest import (
    MASK_NAME,
    THUMBNAIL_NAME,
    InputFile,
    Prepared,
    _save_jpeg,
    _save_png,
    collect_inputs,
)
from gigavision.images.source import ImageInfo, Level
from gigavision.images.thumbnail import foreground_mask, shrink
from gigavision.images.volumes.dicom_series import (
    SeriesPlan,
    SliceFile,
    ZipSlices,
    group_series,
    is_zip,
    iter_decoded,
    plan_series,
    scan_files,
    series_label,
)
from gigavision.images.volumes.geometry import Grid, axis_codes, reorientation, spacing_of
from gigavision.images.volumes.nifti import is_nifti, iter_slices, plan_nifti
from gigavision.images.volumes.store import Volume, VolumeWriter, write_meta
from gigavision.progress import Progress

ARCHIVE_EXPANSION = 10  # a zip may hold at most this many times limits.max_upload_bytes (as imports allow)


def volume_kind(path: Path) -> str | None:
    """``"nifti"``, ``"dicom-zip"`` (a zip is read as DICOM series) or None for anything else."""
    try:
        with path.open("rb") as fh:
            head = fh.read(512)
    except OSError:
        return None
    if is_nifti(path, head):
        return "nifti"
    if head[:4] == b"PK\x03\x04" and is_zip(path):
        return "dicom-zip"
    return None


def _zip_slices(path: Path, limits: Limits) -> ZipSlices:
    return ZipSlices(
        path, max_members=limits.max_archive_members, max_bytes=ARCHIVE_EXPANSION * limits.max_upload_bytes
    )


def _skipped(rejected: list[tuple[str, str]]) -> str:
    member, reason = rejected[0]
    return f"{len(rejected)} member(s) not read, e.g. {member}: {reason}"


# -- which inputs are volumes --------------------------------------------------------------------------------
@dataclass(slots=True)
class SeriesInput:
    """One DICOM series found among the inputs: planned (it stacks) or refused with ``rejected``."""

    name: str
    shown: str
    plan: SeriesPlan | None = None
    rejected: str | None = None
    notes: list[str] = field(default_factory=list)


def _series_items(
    slices: list[SliceFile], base: str, shown: str, *, keep_single: bool, root: Path | None = None
) -> tuple[list[SeriesInput], list[SliceFile]]:
    """The series among ``slices`` (planned or refused), and the single slices left for the 2D ingest.

    A series is named ``base``, or after its folder below ``root`` (``patient1/ct``) when it lies deeper, with
    its series number and description added when one place holds several series."""
    groups = list(group_series(slices).values())
    several = [g for g in groups if len(g) > 1 or not keep_single]
    singles = [g[0] for g in groups if len(g) == 1 and keep_single]

    def place(group: list[SliceFile]) -> str:
        parent = Path(group[0].header.ref).parent
        if root is None or parent == root or not parent.is_relative_to(root):
            return base
        return parent.relative_to(root).as_posix()

    places = [place(g) for g in several]
    labels = [series_label(g[0].header, i) for i, g in enumerate(several)]
    labels = [f"{label}-{i + 1}" if labels.count(label) > 1 else label for i, label in enumerate(labels)]
    out = []
    for index, group in enumerate(several):
        label = labels[index]
        shared = places.count(places[index])
        name = places[index] if shared == 1 else f"{places[index]}-{label}"
        item = SeriesInput(name, shown if len(several) == 1 else f"{shown} [{label}]")
        if shared > 1:
            item.notes.append(
                f"{places[index]} holds {shared} series (SeriesInstanceUID): ingested as {shared} volumes"
            )
        try:
            item.plan = plan_series(group, name)
        except InvalidImage as exc:
            item.rejected = str(exc)
        if item.plan is not None:
            item.notes.extend(item.plan.notes)
        out.append(item)
    return out, singles


@contextmanager
def expand_inputs(
    paths: Iterable[Path], *, recursive: bool, follow_symlinks: bool, limits: Limits
) -> Iterator[list[InputFile | SeriesInput]]:
    """The user's paths as what to ingest: 2D files (``InputFile``) and DICOM series (``SeriesInput``).

    DICOM slices (files with a position and orientation) are grouped by series per folder argument, per zip,
    and over the loose file arguments; a series of one slice stays a 2D image. A folder without ``recursive``
    is read as DICOM series (its other files are rejected with the reason); one without any slice is rejected
    as before. Zips are read as DICOM series. Zips stay open while the caller ingests (the context)."""
    out: list[InputFile | SeriesInput] = []
    loose: list[SliceFile] = []
    loose_at: int | None = None
    with ExitStack() as stack:

        def add_zip(item: InputFile) -> None:
            try:
                archive = stack.enter_context(_zip_slices(item.path, limits))
            except (InvalidImage, LimitExceeded) as exc:
                out.append(InputFile(item.path, item.name, rejected=str(exc)))
                return
            if not archive.slices:
                why = _skipped(archive.rejected) if archive.rejected else "the archive is empty"
                out.append(InputFile(item.path, item.name, rejected=f"no DICOM slices in this zip: {why}"))
                return
            series, _ = _series_items(archive.slices, Path(item.name).stem, str(item.path), keep_single=False)
            for s in series:
                if archive.rejected:
                    s.notes.append(_skipped(archive.rejected))
            out.extend(series)

        for raw in paths:
            path = Path(raw).expanduser()
            series_folder = "\x00" not in str(raw) and path.is_dir() and not recursive
            files = collect_inputs([path], recursive=recursive or series_folder, follow_symlinks=follow_symlinks)
            if not path.is_dir() or "\x00" in str(raw):
                for item in files:
                    if item.rejected:
                        out.append(item)
                    elif is_zip(item.path):
                        add_zip(item)
                    else:
                        slices, _ = scan_files([item.path])
                        if slices:
                            loose.extend(slices)
                            if loose_at is None:
                                loose_at = len(out)
                        else:
                            out.append(item)
                continue
            zips = {f.path for f in files if not f.rejected and is_zip(f.path)}
            slices, others = scan_files([f.path for f in files if not f.rejected and f.path not in zips])
            series, singles = _series_items(slices, path.name, str(path), keep_single=True, root=path)
            if series_folder and not series and not singles:
                out.append(
                    InputFile(path, path.name, rejected="is a directory; pass --recursive to ingest the images inside")
                )
                continue
            out.extend(series)
            single_paths = {Path(s.header.ref) for s in singles}
            other_paths = set(others)
            for f in files:
                if f.rejected:
                    out.append(f)
                elif f.path in zips:
                    add_zip(f)
                elif f.path in single_paths or (f.path in other_paths and not series_folder):
                    out.append(f)
                elif f.path in other_paths:
                    why = "not a DICOM slice (a folder without --recursive is read as DICOM series)"
                    out.append(InputFile(f.path, f.name, rejected=why))
        if loose:
            parent = Path(loose[0].header.ref).parent
            series, singles = _series_items(loose, parent.name or "series", str(parent), keep_single=True)
            single_items: list[InputFile | SeriesInput] = [
                InputFile(Path(s.header.ref), Path(s.header.ref).name) for s in singles
            ]
            at = loose_at if loose_at is not None else len(out)
            out[at:at] = [*series, *single_items]
        yield out


# -- preparing one volume --------------------------------------------------------------------------------------
def prepare_volume(
    path: Path, kind: str, settings: Settings, folder: Path, *, progress: Progress | None = None
) -> Prepared:
    """Validate the volume in ``path`` (a NIfTI file, or a zip of one DICOM series) and write its derived files
    into ``folder``; ``InvalidImage`` / ``LimitExceeded`` with the reason otherwise."""
    with ExitStack() as stack:
        notes: list[str] = []
        window_tag = None
        if kind == "nifti":
            nplan = plan_nifti(path)
            affine, shape, dtype = nplan.affine, nplan.shape, nplan.dtype
            slices: Iterator[tuple[int, np.ndarray]] = iter_slices(nplan)
            notes += nplan.notes
            source: dict[str, Any] = {"source": "nifti", "description": nplan.description, "modality": None}
        else:
            archive = stack.enter_context(_zip_slices(path, settings.limits))
            groups = group_series(archive.slices)
            if len(groups) != 1:
                what = "no DICOM slices" if not groups else f"{len(groups)} DICOM series"
                raise InvalidImage(
                    f"{path.name}: holds {what}"
                    + (f" ({_skipped(archive.rejected)})" if archive.rejected and not groups else "")
                    + "; one volume is one series (`gigavision ingest` splits a zip or folder into its series)"
                )
            plan = plan_series(next(iter(groups.values())), path.name)
            if archive.rejected:
                notes.append(_skipped(archive.rejected))
            notes += plan.notes
            affine, shape, dtype, window_tag = plan.affine, plan.shape, plan.dtype, plan.window
            slices = iter_decoded(plan)
            first = plan.first
            source = {
                "source": "dicom",
                "description": first.description,
                "modality": first.modality,
                "series_uid": first.series,
                "units": first.units,
            }
        voxels = int(np.prod(shape))
        if voxels > settings.limits.max_decode_pixels:
            raise LimitExceeded(
                f"{path.name}: {'x'.join(map(str, shape[::-1]))} = {voxels:,} voxels is more than "
                f"limits.max_decode_pixels ({settings.limits.max_decode_pixels:,})"
            )
        reo = reorientation(affine, shape)
        writer = VolumeWriter(folder, reo, dtype, shape)
        for k, image in slices:
            writer.put(k, image)
            if progress is not None:
                progress(k + 1, shape[0], "volume")
        sample = writer.finish()
    return _describe(folder, settings, reo.affine, reo.shape, dtype, window_tag, sample, affine, source, notes)


def _describe(
    folder: Path,
    settings: Settings,
    affine: np.ndarray,
    shape: tuple[int, int, int],
    dtype: np.dtype[Any],
    window_tag: tuple[float, float] | None,
    sample: np.ndarray,
    acquired_affine: np.ndarray,
    source: dict[str, Any],
    notes: list[str],
) -> Prepared:
    """volume.json, the thumbnail and the mask of a written volume, and what the image row records."""
    spacing = spacing_of(affine)
    grid = Grid(shape, spacing)
    window = window_tag or display_window(sample)
    meta: dict[str, Any] = {
        "shape": list(shape),
        "dtype": str(dtype),
        "spacing": [round(s, 6) for s in spacing],
        "affine": [[round(float(v), 6) for v in row] for row in affine],
        "orientation": axis_codes(affine),
        "acquired_orientation": axis_codes(acquired_affine),
        "window": [float(window[0]), float(window[1])],
        "planes": grid.planes(),
        **{k: v for k, v in source.items() if v},
        "notes": notes,
    }
    write_meta(folder, meta)
    volume = Volume.open(folder)  # not the shared LRU: this scratch folder is renamed once published
    middle = volume.display_slice("axial", shape[0] // 2)
    view = to_uint8(middle[:, :, None], window)
    _save_jpeg(shrink(view, settings.ingest.thumbnail_size), folder / THUMBNAIL_NAME)
    mask = foreground_mask(view)
    _save_png(mask.astype(np.uint8) * 255, folder / MASK_NAME)
    axial = grid.plane("axial")
    info = ImageInfo(
        width=axial.width,
        height=axial.height,
        levels=[Level(axial.width, axial.height, 1.0, axial.width, axial.height)],
        bands=1,
        dtype=str(dtype),
        reader="volume",
        format=f"{source['source']}-volume",
        mpp_x=spacing[0] * 1000.0,
        mpp_y=spacing[0] * 1000.0,
        modality=source.get("modality"),
    )
    extra = {
        "volume": meta,
        "depth": shape[0],
        "spacing": meta["spacing"],
        "affine": meta["affine"],
        "orientation": meta["orientation"],
    }
    return Prepared(
        info=info,
        reader="volume",
        folder=folder,
        pyramid=False,
        foreground_fraction=float(mask.mean()),
        display_window=(float(window[0]), float(window[1])),
        extra=extra,
    )
