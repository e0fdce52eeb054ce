"""A DICOM series as one volume: find the slices (files of a folder, members of a zip), group them by
SeriesInstanceUID, order them by ImagePositionPatient along the slice normal and check that they stack.

What stacks (docs/volumes.md, "Bad input"):

- every slice of a series has the same Rows × Columns, PixelSpacing and ImageOrientationPatient (within 0.5°),
  else the series is refused naming the first slice that differs;
- slices are ordered by their position projected on the normal (row × column direction), never by file name or
  InstanceNumber; two slices at one position (several echoes or time points in one series) are refused, two
  copies of one SOPInstanceUID are kept once, with a note;
- the steps between positions are the slice spacing: within 1% of their median, regular; a step that is a
  whole multiple (2, 3, …) of the others means missing slices: refused, naming where (filling them would invent
  anatomy, stacking without them would squash it); steps that vary up to 10% otherwise (rounded positions,
  table jitter): ingested on the mean spacing, with a note; more: refused;
- positions that drift in-plane from slice to slice (gantry tilt) are kept by the affine, with a note.

RescaleSlope/Intercept apply per slice (CT values become HU); the stored type is the smallest integer type that
holds every rescaled value the header allows (int16 for CT), float32 for fractional rescales.
"""

from __future__ import annotations

import shutil
import stat
import zipfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from gigavision.errors import InvalidImage, LimitExceeded
from gigavision.images.sniff import is_dicom
from gigavision.images.volumes.geometry import LPS_TO_RAS

# A zip gigavision wrote for one series (the original kept for it): members 00000.dcm... in slice order.
SERIES_ZIP_COMMENT = b"gigavision dicom series 1"
FIXED_DATE = (1980, 1, 1, 0, 0, 0)
ORIENTATION_TOLERANCE_DEG = 0.5
REGULAR = 0.01  # steps within 1% of their median: a regular series
JITTER = 0.10  # up to 10%: ingested on the mean spacing, with a note
MAX_ZIP_RATIO = 1000.0  # uncompressed / compressed bytes of one member (zip bombs reach millions)

HEADER_TAGS = [
    *("SOPInstanceUID", "SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "Modality"),
    *("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing", "Rows", "Columns"),
    *("NumberOfFrames", "SamplesPerPixel", "BitsAllocated", "BitsStored", "PixelRepresentation"),
    *("RescaleSlope", "RescaleIntercept", "RescaleType", "WindowCenter", "WindowWidth"),
]
Opener = Callable[[], AbstractContextManager[IO[bytes]]]


@dataclass(frozen=True, slots=True)
class SliceHeader:
    """What one slice file says about its place in a volume (read without its pixels)."""

    ref: str  # the file or zip member, for messages
    sop: str
    series: str
    series_number: int | None
    description: str
    modality: str | None
    rows: int
    cols: int
    spacing: tuple[float, float]  # PixelSpacing: (between rows, between columns) mm
    iop: tuple[float, float, float, float, float, float]
    ipp: tuple[float, float, float]
    slope: float
    intercept: float
    bits_stored: int
    signed: bool
    window: tuple[float, float] | None  # WindowCenter, WindowWidth
    units: str | None  # HU for CT

    @property
    def normal(self) -> np.ndarray:
        r, c = np.array(self.iop[:3]), np.array(self.iop[3:])
        n = np.cross(r, c)
        return np.asarray(n / np.linalg.norm(n))


@dataclass(slots=True)
class SliceFile:
    """A slice and how to open its bytes again (for the pixels, or to copy it)."""

    header: SliceHeader
    open: Opener


@dataclass(slots=True)
class SeriesPlan:
    """A series that stacks: its slices in order and the acquired grid ``(k, j, i)`` with its RAS affine."""

    slices: list[SliceFile]
    affine: np.ndarray
    dtype: np.dtype[Any]
    window: tuple[float, float] | None  # (low, high)
    notes: list[str] = field(default_factory=list)

    @property
    def first(self) -> SliceHeader:
        return self.slices[0].header

    @property
    def shape(self) -> tuple[int, int, int]:
        return len(self.slices), self.first.rows, self.first.cols


def _floats(value: Any, n: int) -> tuple[float, ...] | None:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return out if len(out) == n and all(np.isfinite(out)) else None


def _first(value: Any) -> float | None:
    if value is None:
        return None
    try:
        v = float(value[0] if not isinstance(value, str | bytes) and hasattr(value, "__getitem__") else value)
    except (TypeError, ValueError, IndexError):
        return None
    return v if np.isfinite(v) else None


def read_header(fp: IO[bytes] | Path, ref: str) -> SliceHeader | None:
    """The header of a DICOM slice, or None when the file is not one slice of a volume: no position or
    orientation (a radiograph, a secondary capture), several frames (a whole-slide image), colour, or not
    readable as DICOM (the 2D reader then says why)."""
    import pydicom

    try:
        ds = pydicom.dcmread(fp, stop_before_pixels=True, specific_tags=HEADER_TAGS)  # 2x faster than all tags
        iop = _floats(getattr(ds, "ImageOrientationPatient", None), 6)
        ipp = _floats(getattr(ds, "ImagePositionPatient", None), 3)
        spacing = _floats(getattr(ds, "PixelSpacing", None), 2)
        if iop is None or ipp is None or spacing is None or min(spacing) <= 0:
            return None
        if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1 or int(getattr(ds, "SamplesPerPixel", 1) or 1) != 1:
            return None
        r, c = np.array(iop[:3]), np.array(iop[3:])
        if not (0.99 < np.linalg.norm(r) < 1.01 and 0.99 < np.linalg.norm(c) < 1.01 and abs(r @ c) < 0.01):
            return None  # not an orthonormal orientation: no grid to stack on
        center, width = _first(getattr(ds, "WindowCenter", None)), _first(getattr(ds, "WindowWidth", None))
        modality = str(getattr(ds, "Modality", "") or "") or None
        number = getattr(ds, "SeriesNumber", None)
        rescale_type = str(getattr(ds, "RescaleType", "") or "")
        bits = int(getattr(ds, "BitsStored", 0) or getattr(ds, "BitsAllocated", 16) or 16)
        return SliceHeader(
            ref=ref,
            sop=str(getattr(ds, "SOPInstanceUID", "") or ref),
            series=str(getattr(ds, "SeriesInstanceUID", "") or "unknown"),
            series_number=int(number) if number not in (None, "") else None,
            description=str(getattr(ds, "SeriesDescription", "") or ""),
            modality=modality,
            rows=int(ds.Rows),
            cols=int(ds.Columns),
            spacing=(spacing[0], spacing[1]),
            iop=iop,  # type: ignore[arg-type]
            ipp=ipp,  # type: ignore[arg-type]
            slope=float(getattr(ds, "RescaleSlope", 1) or 1),
            intercept=float(getattr(ds, "RescaleIntercept", 0) or 0),
            bits_stored=max(1, min(bits, 32)),
            signed=int(getattr(ds, "PixelRepresentation", 0) or 0) == 1,
            window=(center, width) if center is not None and width is not None and width > 0 else None,
            units=rescale_type or ("HU" if modality == "CT" else None),
        )
    except Exception:  # any parse failure: not a slice we can stack; the 2D path reports the reason
        return None


# -- finding slices -----------------------------------------------------------------------------------------
def _file_opener(path: Path) -> Opener:
    return lambda: path.open("rb")


def scan_files(paths: Iterable[Path]) -> tuple[list[SliceFile], list[Path]]:
    """The DICOM slices among ``paths`` (files on disk) and the other files."""
    slices, others = [], []
    for path in paths:
        try:
            with path.open("rb") as fh:
                head = fh.read(132)
        except OSError:
            others.append(path)
            continue
        header = read_header(path, str(path)) if is_dicom(head) else None
        if header is None:
            others.append(path)
        else:
            slices.append(SliceFile(header, _file_opener(path)))
    return slices, others


def is_zip(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            return fh.read(4) == b"PK\x03\x04" and zipfile.is_zipfile(path)
    except OSError:
        return False


def is_series_zip(path: Path) -> bool:
    """A zip gigavision wrote for one series (``write_series_zip``): ingested as it is."""
    try:
        with zipfile.ZipFile(path) as zf:
            return zf.comment == SERIES_ZIP_COMMENT
    except (OSError, zipfile.BadZipFile):
        return False


def _member_problem(info: zipfile.ZipInfo) -> str | None:
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return "symbolic link (not read)"
    if info.flag_bits & 0x1:
        return "encrypted (no password is asked for)"
    if info.file_size > MAX_ZIP_RATIO * max(info.compress_size, 1):
        return f"compression ratio over {MAX_ZIP_RATIO:.0f} (zip bomb?)"
    return None


class ZipSlices:
    """The DICOM slices in a zip archive, read in place (members are never extracted under their own names, so
    ``..`` or absolute member paths cannot write anywhere). Use as a context manager."""

    def __init__(self, path: Path, *, max_members: int, max_bytes: int) -> None:
        self.path = path
        try:
            self._zip = zipfile.ZipFile(path)
        except (OSError, zipfile.BadZipFile) as exc:
            raise InvalidImage(f"{path.name}: not a readable zip archive ({exc})") from exc
        members = [m for m in self._zip.infolist() if not m.is_dir()]
        if len(members) > max_members:
            self._zip.close()
            raise LimitExceeded(f"{path.name}: {len(members):,} members, more than limits.max_archive_members")
        total = sum(m.file_size for m in members)
        if total > max_bytes:
            self._zip.close()
            raise LimitExceeded(f"{path.name}: {total:,} bytes uncompressed, more than the limit {max_bytes:,}")
        self.canonical = self._zip.comment == SERIES_ZIP_COMMENT
        self.slices: list[SliceFile] = []
        self.rejected: list[tuple[str, str]] = []  # (member, reason)
        for m in sorted(members, key=lambda m: m.filename):
            problem = _member_problem(m)
            if problem is None:
                try:
                    with self._zip.open(m) as fh:
                        head = fh.read(132)
                        header = None
                        if is_dicom(head):
                            fh.seek(0)
                            header = read_header(fh, m.filename)
                except (OSError, zipfile.BadZipFile, RuntimeError, EOFError) as exc:
                    problem = f"cannot read: {exc}"
                else:
                    if header is None:
                        problem = "not a DICOM slice with a position and orientation (a zip is read as DICOM series)"
            if problem:
                self.rejected.append((m.filename, problem))
            else:
                assert header is not None
                self.slices.append(SliceFile(header, self._opener(m)))

    def _opener(self, member: zipfile.ZipInfo) -> Opener:
        return lambda: self._zip.open(member)

    def close(self) -> None:
        self._zip.close()

    def __enter__(self) -> ZipSlices:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def group_series(slices: Iterable[SliceFile]) -> dict[str, list[SliceFile]]:
    """Slices by SeriesInstanceUID, in first-seen order."""
    groups: dict[str, list[SliceFile]] = {}
    for s in slices:
        groups.setdefault(s.header.series, []).append(s)
    return groups


# -- checking that a series stacks ----------------------------------------------------------------------------
def _angle(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip(abs(float(a @ b)), -1.0, 1.0))))


def plan_series(slices: list[SliceFile], name: str) -> SeriesPlan:
    """Order and check the slices of one series (module docstring); ``InvalidImage`` naming ``name`` and the
    reason when they do not make one regular volume."""
    notes: list[str] = []
    unique: dict[str, SliceFile] = {}
    for s in slices:
        unique.setdefault(s.header.sop, s)
    if len(unique) < len(slices):
        notes.append(f"{len(slices) - len(unique)} duplicate slice file(s) (same SOPInstanceUID) read once")
    items = list(unique.values())
    if len(items) < 2:
        raise InvalidImage(f"{name}: one slice is not a volume")
    first = items[0].header
    r0, c0, n0 = np.array(first.iop[:3]), np.array(first.iop[3:]), first.normal
    for s in items[1:]:
        h = s.header
        if (h.rows, h.cols) != (first.rows, first.cols):
            raise InvalidImage(
                f"{name}: slices differ in size ({h.ref} is {h.cols}x{h.rows}, {first.ref} {first.cols}x{first.rows})"
            )
        if not np.allclose(h.spacing, first.spacing, rtol=1e-3, atol=1e-4):
            raise InvalidImage(
                f"{name}: inconsistent pixel spacing ({h.ref}: {h.spacing[1]:g} x {h.spacing[0]:g} mm, "
                f"{first.ref}: {first.spacing[1]:g} x {first.spacing[0]:g} mm)"
            )
        tilt = max(_angle(np.array(h.iop[:3]), r0), _angle(np.array(h.iop[3:]), c0))
        if tilt > ORIENTATION_TOLERANCE_DEG:
            raise InvalidImage(
                f"{name}: inconsistent orientation: {h.ref} is turned {tilt:.1f} degrees from {first.ref} "
                "(ImageOrientationPatient); its slices do not stack into one volume"
            )
    depth = np.array([np.asarray(s.header.ipp) @ n0 for s in items])
    order = np.argsort(depth, kind="stable")
    items = [items[i] for i in order]
    depth = depth[order]
    steps = np.diff(depth)
    median = float(np.median(steps))
    if median <= 1e-4 or (steps <= 1e-3 * median).any():
        at = int(np.argmax(steps <= max(1e-3 * median, 1e-4)))
        raise InvalidImage(
            f"{name}: {items[at].header.ref} and {items[at + 1].header.ref} lie at the same position "
            f"({depth[at]:.2f} mm along the normal): several acquisitions (echoes, time points) in one series?"
        )
    ratio = steps / median
    gaps = np.nonzero((ratio > 1.5) & (np.abs(ratio - np.rint(ratio)) <= 0.1))[0]
    if gaps.size:
        missing = int(sum(np.rint(ratio[gaps]) - 1))
        g = int(gaps[0])
        raise InvalidImage(
            f"{name}: {missing} slice(s) missing: a gap of {steps[g]:.2f} mm between slice {g} (at {depth[g]:.2f} mm) "
            f"and slice {g + 1} (at {depth[g + 1]:.2f} mm) where the series steps {median:.2f} mm"
            + (f", and {gaps.size - 1} more gap(s)" if gaps.size > 1 else "")
        )
    spread = float(np.max(np.abs(ratio - 1.0)))
    if spread > JITTER:
        raise InvalidImage(
            f"{name}: inconsistent slice spacing: steps from {steps.min():.2f} to {steps.max():.2f} mm "
            f"(more than {JITTER:.0%} from their median {median:.2f} mm); it is not one regular volume"
        )
    ipp = np.array([s.header.ipp for s in items], dtype=np.float64)
    step = (ipp[-1] - ipp[0]) / (len(items) - 1)
    if spread > REGULAR:
        notes.append(
            f"slice spacing varies from {steps.min():.3f} to {steps.max():.3f} mm (up to {spread:.1%}); "
            f"stored on the mean spacing {np.linalg.norm(step):.3f} mm"
        )
    drift = step - (step @ n0) * n0
    if np.linalg.norm(drift) > 0.01 * np.linalg.norm(step):
        notes.append(
            f"slice positions drift {np.linalg.norm(drift):.3f} mm in-plane per slice (gantry tilt); "
            "the affine keeps it (the grid is sheared)"
        )
    dr, dc = first.spacing
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = r0 * dc, c0 * dr, step, ipp[0]
    headers = [s.header for s in items]
    middle = headers[len(headers) // 2]
    window_tag = middle.window or next((h.window for h in headers if h.window), None)
    window = (window_tag[0] - window_tag[1] / 2, window_tag[0] + window_tag[1] / 2) if window_tag else None
    return SeriesPlan(items, LPS_TO_RAS @ lps, _stored_dtype(headers), window, notes)


def _stored_dtype(headers: list[SliceHeader]) -> np.dtype[Any]:
    """The smallest type holding every rescaled value the headers allow (float32 for fractional rescales)."""
    lo, hi, whole = np.inf, -np.inf, True
    for h in headers:
        raw = (-(2 ** (h.bits_stored - 1)), 2 ** (h.bits_stored - 1) - 1) if h.signed else (0, 2**h.bits_stored - 1)
        ends = [h.slope * raw[0] + h.intercept, h.slope * raw[1] + h.intercept]
        lo, hi = min(lo, *ends), max(hi, *ends)
        whole = whole and float(h.slope).is_integer() and float(h.intercept).is_integer()
    if whole:
        for dtype in (np.uint8, np.int16, np.uint16, np.int32):
            info = np.iinfo(dtype)
            if info.min <= lo and hi <= info.max:
                return np.dtype(dtype)
    return np.dtype(np.float32)


def decode(item: SliceFile, dtype: np.dtype[Any]) -> np.ndarray:
    """The slice's rescaled pixels ``(rows, cols)`` as ``dtype`` (values beyond it clipped)."""
    import pydicom

    h = item.header
    try:
        with item.open() as fh:
            ds = pydicom.dcmread(fh)
            raw = ds.pixel_array
    except Exception as exc:  # a codec pydicom lacks, truncated pixel data: name the slice
        raise InvalidImage(f"{h.ref}: cannot decode the pixels: {exc}") from exc
    if raw.shape != (h.rows, h.cols):
        raise InvalidImage(f"{h.ref}: pixel data is {raw.shape}, the header says {h.rows}x{h.cols}")
    if dtype.kind == "f":
        return (raw.astype(np.float32) * np.float32(h.slope) + np.float32(h.intercept)).astype(dtype)
    values = raw.astype(np.int64)
    if h.slope != 1:
        values *= int(h.slope)
    if h.intercept:
        values += int(h.intercept)
    info = np.iinfo(dtype)
    return np.clip(values, info.min, info.max).astype(dtype)


def write_series_zip(plan: SeriesPlan, out: Path) -> None:
    """The series as gigavision keeps it: one zip, members ``00000.dcm``... in slice order, stored (DICOM pixels
    are often compressed already), fixed dates and modes: the same slices give the same bytes, so the same
    series ingested from a folder or from another zip is recognised as a duplicate."""
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as zf:
        for index, item in enumerate(plan.slices):
            info = zipfile.ZipInfo(f"{index:05d}.dcm", date_time=FIXED_DATE)
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            info.create_system = 3
            with item.open() as src, zf.open(info, "w", force_zip64=True) as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        zf.comment = SERIES_ZIP_COMMENT


def series_label(header: SliceHeader, index: int) -> str:
    """How a series is told apart in a name: its SeriesNumber (else its place) and description."""
    number = header.series_number if header.series_number is not None else index + 1
    text = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in header.description)[:40].strip("_")
    return f"s{number}" + (f"-{text}" if text else "")


def iter_decoded(plan: SeriesPlan) -> Iterator[tuple[int, np.ndarray]]:
    for k, item in enumerate(plan.slices):
        yield k, decode(item, plan.dtype)
