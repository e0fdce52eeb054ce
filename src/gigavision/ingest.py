"""Ingest files into a workspace: check each input, derive its files (``images/ingest.py``: pyramid,
thumbnail, mask, outside any lock), then publish it (``store/catalog.py``: blob, files and row, all or
nothing). Rejections are results, not exceptions, so one bad file never stops a folder."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gigavision import files
from gigavision.errors import GigavisionError, InvalidInput
from gigavision.images.ingest import (
    MASK_NAME,
    PYRAMID_NAME,
    THUMBNAIL_NAME,
    InputFile,
    Prepared,
    collect_inputs,
    prepare,
)
from gigavision.images.metadata import jsonable
from gigavision.images.volumes.dicom_series import is_series_zip, is_zip, write_series_zip
from gigavision.images.volumes.ingest import SeriesInput, expand_inputs
from gigavision.progress import Progress
from gigavision.store.blobs import blob_key, sha256_file
from gigavision.store.fsck import Finding, scratch_folder
from gigavision.store.schema import ImageRow

if TYPE_CHECKING:
    from gigavision.config import Settings
    from gigavision.jobs.context import JobContext
    from gigavision.workspace import Workspace


@dataclass(slots=True)
class IngestResult:
    """One line of an ingest report (``--json`` prints these)."""

    path: str
    name: str
    status: str  # added | duplicate | rejected
    id: str | None = None
    width: int | None = None
    height: int | None = None
    levels: int | None = None
    mpp: float | None = None
    crs: str | None = None
    reason: str | None = None
    code: str | None = None  # error code of a rejection (invalid_image, limit_exceeded, ...)
    depth: int | None = None  # slices of a 3D volume (docs/volumes.md)
    notes: list[str] | None = None  # what a volume's ingest noticed and handled (mixed series, uneven spacing)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def of(cls, row: ImageRow, path: str, name: str, status: str) -> IngestResult:
        volume = (row.meta or {}).get("volume")
        return cls(
            path=path,
            name=name,
            status=status,
            id=row.id,
            width=row.width,
            height=row.height,
            levels=len(row.levels),
            mpp=row.mpp_x,
            crs=row.crs,
            depth=int(volume["shape"][0]) if isinstance(volume, dict) else None,
            notes=list(volume.get("notes") or []) or None if isinstance(volume, dict) else None,
        )


def ingest(
    ws: Workspace,
    paths: Iterable[str | Path],
    *,
    recursive: bool = False,
    follow_symlinks: bool | None = None,
    on_start: Callable[[int], None] | None = None,
    on_result: Callable[[IngestResult], None] | None = None,
    progress: Progress | None = None,
) -> list[IngestResult]:
    """Ingest files and folders; returns one result per file, in input order."""
    follow = ws.settings.ingest.follow_symlinks if follow_symlinks is None else follow_symlinks
    results = []
    # DICOM slices become one volume per series (images/volumes/ingest.py); everything else is a file
    with expand_inputs(
        [Path(p) for p in paths], recursive=recursive, follow_symlinks=follow, limits=ws.settings.limits
    ) as inputs:
        if on_start is not None:
            on_start(len(inputs))
        for item in inputs:
            if isinstance(item, SeriesInput):
                result = ingest_series(ws, item, progress=progress)
            elif item.rejected:
                result = IngestResult(str(item.path), item.name, "rejected", reason=item.rejected, code="invalid_input")
            else:
                result = ingest_file(ws, item.path, name=item.name, progress=progress)
            results.append(result)
            if on_result is not None:
                on_result(result)
    return results


def ingest_series(
    ws: Workspace, item: SeriesInput, *, name: str | None = None, progress: Progress | None = None
) -> IngestResult:
    """Ingest one DICOM series as a volume: its slices are zipped in order (the original kept for it, one id
    however the series arrived), then ingested like any file."""
    name = name or item.name
    if item.plan is None:
        return IngestResult(
            item.shown, name, "rejected", reason=item.rejected, code="invalid_image", notes=item.notes or None
        )
    with scratch_folder(ws.root / "pyramids") as scratch:
        original = scratch / "series.zip"
        try:
            write_series_zip(item.plan, original)
        except (OSError, GigavisionError) as exc:
            return IngestResult(
                item.shown, name, "rejected", reason=f"cannot read the series: {exc}", code="invalid_image"
            )
        result = ingest_file(ws, original, name=name, source_path=item.shown, progress=progress)
    notes = [*item.notes, *(n for n in result.notes or [] if n not in item.notes)]
    result.notes = notes or None
    return result


def ingest_file(
    ws: Workspace,
    path: Path,
    *,
    name: str | None = None,
    source_path: str | None = None,
    progress: Progress | None = None,
) -> IngestResult:
    """Ingest one file. Rejections are returned, not raised; nothing is left behind for them."""
    path = Path(path)
    name = name or path.name
    shown = source_path or str(path)
    checked = collect_inputs([path])[0]
    if checked.rejected:
        return IngestResult(shown, name, "rejected", reason=checked.rejected, code="invalid_image")
    if is_zip(path) and not is_series_zip(path):  # an uploaded zip of one DICOM series: its canonical zip
        return _ingest_zip(ws, path, name, shown, progress)
    try:
        sha = sha256_file(path)
    except OSError as exc:
        return IngestResult(shown, name, "rejected", reason=f"cannot read file: {exc.strerror or exc}")
    existing = ws.catalog.lookup(sha)
    if existing is not None:
        with ws.catalog.publish_lock():  # the same bytes restore an original lost from the blob store (fsck)
            ws.blobs.put_file(path, existing.blob_key)
        return IngestResult.of(existing, shown, name, "duplicate")
    # locked while we live: gigavision fsck removes the scratch of a killed ingest, never a running one's
    with scratch_folder(ws.root / "pyramids") as scratch:
        # The expensive part (validation, pyramid, thumbnail, mask) runs outside the publish lock.
        try:
            prepared = prepare(path, ws.settings, scratch, progress=progress)
        except GigavisionError as exc:
            return IngestResult(shown, name, "rejected", reason=str(exc), code=exc.code)
        row = image_row(ws, path, sha, name, shown, prepared)
        published = ws.catalog.publish(row, path, scratch, ws.blobs)
        return IngestResult.of(published, shown, name, "added" if published is row else "duplicate")


def _ingest_zip(ws: Workspace, path: Path, name: str, shown: str, progress: Progress | None) -> IngestResult:
    """A zip given as one file (an upload): ingested when it holds exactly one DICOM series."""
    with expand_inputs([path], recursive=False, follow_symlinks=False, limits=ws.settings.limits) as found:
        series = [s for s in found if isinstance(s, SeriesInput)]
        if len(series) == 1 and len(found) == 1:
            return ingest_series(ws, series[0], name=Path(name).stem, progress=progress)
        if not series:
            rejected = next((f.rejected for f in found if isinstance(f, InputFile) and f.rejected), None)
            return IngestResult(
                shown, name, "rejected", reason=rejected or f"{name}: no DICOM series", code="invalid_image"
            )
        why = f"{name}: holds {len(series)} DICOM series; ingest it with `gigavision ingest` (one volume per series)"
        return IngestResult(shown, name, "rejected", reason=why, code="invalid_image")


def check_derived(ws: Workspace, row: ImageRow, repair: bool) -> list[Finding]:
    """fsck of the files ingest derived for ``row`` (pyramid, thumbnail, mask): present and readable to
    their end. With ``repair``, damaged or missing ones are rebuilt from the original (already checked)."""
    folder = ws.catalog.image_dir(row.id)
    wanted = {THUMBNAIL_NAME: "thumbnail", MASK_NAME: "mask"}
    if row.pyramid:
        wanted[PYRAMID_NAME] = "pyramid"
    findings = []
    for file_name, check in wanted.items():
        path = folder / file_name
        problem = derived_problem(path)
        if problem is not None:
            kind, detail = problem
            rel = str(path.relative_to(ws.root))
            findings.append(Finding(check, rel, kind, f"{row.name}: {detail}", image=row.id, action="rebuild"))
    if findings and repair:
        try:
            rebuilt = rebuild_derived(ws, row, [Path(f.path).name for f in findings])
        except GigavisionError as exc:
            for f in findings:
                f.kept = f"kept: cannot rebuild from the original ({exc})"
        else:
            for f in findings:
                f.repaired = Path(f.path).name in rebuilt
                f.kept = "" if f.repaired else "kept: ingest settings no longer make this file; re-ingest the image"
    return findings


def derived_problem(path: Path) -> tuple[str, str] | None:
    """(problem, detail) of a derived file, or None when it is whole: a pyramid's tiles all lie inside the
    file (a truncated TIFF fails here, not in the viewer); a thumbnail or mask decodes to its end."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "missing", f"{path.name} is missing"
    try:
        if path.name == PYRAMID_NAME:
            import tifffile

            with tifffile.TiffFile(path) as tif:
                for page in tif.pages:
                    ends = [o + n for o, n in zip(page.dataoffsets, page.databytecounts, strict=False)]
                    if ends and max(ends) > size:
                        return "short", f"{path.name} is cut short ({size:,} bytes; its tiles reach {max(ends):,})"
        else:
            from PIL import Image

            with Image.open(path) as im:
                im.load()
    except Exception as exc:  # any decoder error means the file cannot be served
        return "unreadable", f"{path.name} cannot be read ({type(exc).__name__}: {exc})"
    return None


def rebuild_derived(ws: Workspace, row: ImageRow, names: Iterable[str]) -> list[str]:
    """Derive ``row``'s files again from its original and publish ``names`` of them (when the current ingest
    settings still make them); returns the names rebuilt."""
    original = ws.blobs.local_path(row.blob_key)
    folder = ws.catalog.image_dir(row.id)
    rebuilt = []
    with scratch_folder(ws.root / "pyramids") as scratch:
        prepare(original, ws.settings, scratch)
        for file_name in names:
            if (scratch / file_name).is_file():
                files.make_dirs(folder)
                files.publish(scratch / file_name, folder / file_name)
                rebuilt.append(file_name)
    return rebuilt


def image_row(ws: Workspace, path: Path, sha: str, name: str, shown: str, prepared: Prepared) -> ImageRow:
    """The catalogue row of an image ingested from ``path`` (bytes ``sha``) and derived as ``prepared``."""
    info = prepared.info
    final = ws.catalog.image_dir(sha)
    return ImageRow(
        id=sha,
        name=name[:1024],
        source_path=shown,
        size_bytes=path.stat().st_size,
        blob_key=blob_key(sha, path.suffix),
        pyramid=str((final / PYRAMID_NAME).relative_to(ws.root)) if prepared.pyramid else None,
        reader=prepared.reader,
        format=info.format[:32],
        width=info.width,
        height=info.height,
        levels=[{"width": lv.width, "height": lv.height, "downsample": lv.downsample} for lv in info.levels],
        bands=info.bands,
        dtype=info.dtype,
        mpp_x=info.mpp_x,
        mpp_y=info.mpp_y,
        crs=info.crs,
        transform=list(info.transform) if info.transform else None,
        modality=info.modality,
        foreground_fraction=prepared.foreground_fraction,
        display_window=list(prepared.display_window) if prepared.display_window else None,
        meta={**jsonable(info.metadata), **prepared.extra},
    )


# -- ingest of an upload as a job (kind ``ingest``) ------------------------------------------------------------
LONG_INGEST_BYTES = 64 * 1024**2  # hashing and copying this much alone takes about a second


def runs_long(path: Path, settings: Settings) -> bool:
    """Whether ingesting ``path`` takes long enough to be a job rather than part of a request: a side over
    ``ingest.pyramid_threshold`` (a pyramid is built, or a big tiled file is read for its thumbnail and mask:
    seconds to minutes) or more than ``LONG_INGEST_BYTES``. Reads only the header; a file whose header cannot be
    read is not long: the synchronous ingest rejects it with its reason."""
    from gigavision.images.registry import open_image

    if path.stat().st_size > LONG_INGEST_BYTES:
        return True
    try:
        with open_image(path, limits=settings.limits) as source:
            return max(source.info.width, source.info.height) > settings.ingest.pyramid_threshold
    except (GigavisionError, OSError):
        return False


def run_ingest(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    """Ingest the job's uploaded file (``{"file": NAME}``, in its input folder); a rejection fails the job with
    its reason. The input is deleted once ingested (the image store holds the bytes now)."""
    from gigavision.errors import InvalidImage, LimitExceeded

    name = params.get("file")
    if not isinstance(name, str) or not name or Path(name).name != name:
        raise InvalidInput(f"file must be the plain name of the uploaded file, got {name!r}")
    path = ctx.input_dir / name
    if not path.is_file():
        raise InvalidInput(f"{name}: the uploaded file is missing from the job's input folder")
    result = ingest_file(ctx.workspace, path, name=name, source_path=f"upload:{name}", progress=ctx.progress)
    path.unlink(missing_ok=True)
    if result.status == "rejected":
        error = LimitExceeded if result.code == "limit_exceeded" else InvalidImage
        raise error(result.reason or f"{name}: rejected")
    ctx.conclude(f"{result.status}: {result.id}")
    return result.as_dict()
