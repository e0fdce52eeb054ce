"""Ingest files into a workspace: check each input, derive its files (``images/ingest.py``: pyramid,
thumbnail, mask, outside any lock), then publish it (``store/catalog.py``: blob, files and row, all or
nothing). Rejections are results, not exceptions, so one bad file never stops a folder."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gigavision.errors import GigavisionError, InvalidInput
from gigavision.images.ingest import PYRAMID_NAME, Prepared, collect_inputs, prepare
from gigavision.images.metadata import jsonable
from gigavision.progress import Progress
from gigavision.store.blobs import blob_key, sha256_file
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

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def of(cls, row: ImageRow, path: str, name: str, status: str) -> IngestResult:
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
    inputs = collect_inputs([Path(p) for p in paths], recursive=recursive, follow_symlinks=follow)
    if on_start is not None:
        on_start(len(inputs))
    results = []
    for item in inputs:
        if item.rejected:
            result = IngestResult(str(item.path), item.name, "rejected", reason=item.rejected, code="invalid_input")
        else:
            result = ingest_file(ws, item.path, name=item.name, progress=progress)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results


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
    try:
        sha = sha256_file(path)
    except OSError as exc:
        return IngestResult(shown, name, "rejected", reason=f"cannot read file: {exc.strerror or exc}")
    existing = ws.catalog.lookup(sha)
    if existing is not None:
        return IngestResult.of(existing, shown, name, "duplicate")
    scratch = ws.root / "pyramids" / f".tmp-{uuid.uuid4().hex}"
    scratch.mkdir(parents=True)
    try:
        # The expensive part (validation, pyramid, thumbnail, mask) runs outside the publish lock.
        try:
            prepared = prepare(path, ws.settings, scratch, progress=progress)
        except GigavisionError as exc:
            return IngestResult(shown, name, "rejected", reason=str(exc), code=exc.code)
        row = image_row(ws, path, sha, name, shown, prepared)
        published = ws.catalog.publish(row, path, scratch, ws.blobs)
        return IngestResult.of(published, shown, name, "added" if published is row else "duplicate")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


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
