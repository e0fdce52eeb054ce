"""The verbs of ``gigavision.formats``: export a source or the workspace, import a file, folder or zip."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gigavision.errors import InvalidInput
from gigavision.formats.live import workspace_source
from gigavision.formats.registry import get_format
from gigavision.formats.report import ExportOptions, ExportResult, ImportOptions, ImportReport
from gigavision.formats.source import AnnotatedImages
from gigavision.progress import Progress

if TYPE_CHECKING:
    from gigavision.formats.exporting import GeorefOf, ImageFile
    from gigavision.images.georef import Georef
    from gigavision.workspace import Workspace


# -- export -------------------------------------------------------------------------------------------------
def export_annotations(
    source: AnnotatedImages,
    fmt: str,
    out: str | Path,
    *,
    options: ExportOptions | None = None,
    progress: Progress | None = None,
    image_file: ImageFile | None = None,
    georef_of: GeorefOf | None = None,
) -> ExportResult:
    """Write ``source`` as ``fmt`` into the new folder ``out`` (or the zip ``out`` when it ends in .zip).

    ``image_file(image_id) -> Path`` gives the original of an image, for formats that copy images;
    ``georef_of(image_id)`` its georeferencing, for ``crs=map`` (formats with ``MAP_COORDINATES``).
    """
    from gigavision.formats.exporting import run_export

    module = get_format(fmt)
    options = options or ExportOptions()
    if options.crs == "map" and not getattr(module, "MAP_COORDINATES", False):
        raise InvalidInput(f"crs=map is for geojson and geoparquet; {fmt} writes level-0 pixel coordinates")
    return run_export(
        fmt,
        module.export,
        source,
        Path(out),
        options=options,
        progress=progress,
        image_file=image_file,
        default_images=module.DEFAULT_IMAGES,
        georef_of=georef_of,
    )


def export_workspace(
    ws: Workspace,
    fmt: str,
    out: str | Path,
    *,
    dataset: str | None = None,
    statuses: list[str] | None = None,
    labels: list[str] | None = None,
    options: ExportOptions | None = None,
    progress: Progress | None = None,
) -> ExportResult:
    """Export the live workspace, or the dataset version ``dataset`` (``NAME@N``), as ``fmt``."""
    source: Any
    if dataset:
        from gigavision.datasets import open_version  # a later stage; imported only when asked for

        source = open_version(ws, dataset)
        if statuses or labels:
            raise InvalidInput("a dataset version is exported as frozen: --status/--label filter the live workspace")
    else:
        source = workspace_source(ws, statuses=statuses, labels=labels)

    def image_file(image_id: str) -> Path:
        return ws.blobs.local_path(ws.get_image(image_id).blob_key)

    def georef_of(image_id: str) -> Georef | None:
        from gigavision.images.georef import Georef

        row = ws.get_image(image_id)
        return Georef.of(row.crs, row.transform)

    return export_annotations(
        source, fmt, out, options=options, progress=progress, image_file=image_file, georef_of=georef_of
    )


# -- import -------------------------------------------------------------------------------------------------
def import_annotations(
    ws: Workspace,
    fmt: str,
    path: str | Path,
    *,
    options: ImportOptions | None = None,
    actor: str = "import",
    progress: Progress | None = None,
) -> ImportReport:
    """Import ``path`` (a file, a folder, or a .zip extracted safely first) as ``fmt`` into ``ws``.

    What is valid is stored (each image's annotations in one transaction); what is not is listed in the
    report with file, item and reason. An input that cannot be read at all raises ``InvalidInput`` and
    changes nothing.
    """
    from gigavision.formats.archive import ArchiveLimits, safe_extract
    from gigavision.formats.importing import ImportSession

    module = get_format(fmt)
    path = Path(path).expanduser()
    if not path.exists():
        raise InvalidInput(f"{path}: no such file or folder")
    session = ImportSession(ws, fmt, options or ImportOptions(), actor, progress)
    if path.is_file() and path.suffix.lower() == ".zip":
        # under the workspace (its disk, swept with the upload spool), never the system temp folder
        scratch = ws.root / "cache" / "uploads" / f"import-{uuid.uuid4().hex}"
        scratch.mkdir(parents=True)
        try:
            for member, reason in safe_extract(path, scratch, ArchiveLimits.of(ws.settings.limits)):
                session.reject(path.name, member, reason)
            try:
                module.parse(_single_folder(scratch, fmt), session)
            except InvalidInput as exc:  # name the archive, not the private folder it was unpacked to
                raise InvalidInput(str(exc).replace(str(scratch), path.name)) from exc
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    else:
        module.parse(path, session)
    return session.finish()


def _single_folder(root: Path, fmt: str) -> Path:
    """The one folder an archive wraps everything in (``export/...``), else the archive's root.

    For ImageFolder a lone folder with files in it is a class folder, not a wrapper.
    """
    entries = [p for p in root.iterdir() if not p.name.startswith(".") and p.name != "__MACOSX"]
    if len(entries) != 1 or not entries[0].is_dir():
        return root
    if fmt == "imagefolder" and any(p.is_file() for p in entries[0].iterdir()):
        return root
    return entries[0]
