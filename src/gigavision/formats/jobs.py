"""Import and export as background jobs (kinds ``import`` and ``export``, registered in ``jobs.registry``).

A job reads only its own input folder (the uploaded file) and writes only its own output folder, whatever
its parameters say: parameters are checked by ``export_params`` / ``import_params`` both when the REST
API submits a job and again when it runs.

    export  {"format": "coco", "dataset": "NAME@N" | null,
             "options": {"images": "copy", "task": "detect", "status": [...], "label": [...], "archive": true}}
            → ``<format>.zip`` in the job's output folder (``archive: false``: a folder of files instead)
    import  {"format": "voc", "file": "<name of the uploaded file>", "options": {"status": ..., ...}}
            → the import report (``ImportReport.as_dict``)
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from gigavision.errors import InvalidInput
from gigavision.formats.registry import FORMATS
from gigavision.formats.report import ExportOptions, ImportOptions

if TYPE_CHECKING:
    from gigavision.jobs import JobContext

UPLOAD_SUFFIXES = (".json", ".geojson", ".xml", ".txt", ".csv", ".zip")
FOLDER_FORMATS = ("yolo", "imagefolder")  # these are folders: uploaded as a .zip
UPLOAD_IMPORT_OPTIONS = tuple(
    sorted(f.name for f in fields(ImportOptions) if f.name != "images_dir")
)  # ImportOptions less images_dir (no server paths)


@dataclass(frozen=True)
class ExportParams:
    format: str
    dataset: str | None
    statuses: list[str] | None
    labels: list[str] | None
    archive: bool
    options: ExportOptions


def _format(params: dict[str, Any]) -> str:
    fmt = params.get("format")
    if fmt not in FORMATS:
        raise InvalidInput(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return str(fmt)


def _text_list(value: Any, name: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidInput(f"{name} must be a list of text values")
    return list(value) or None


def export_params(params: dict[str, Any]) -> ExportParams:
    """Check an export job's parameters (``InvalidInput`` naming the bad one)."""
    fmt = _format(params)
    dataset = params.get("dataset")
    if dataset is not None and (not isinstance(dataset, str) or not dataset):
        raise InvalidInput("dataset must be NAME@N")
    options = dict(params.get("options") or {})
    statuses = _text_list(options.pop("status", None), "status")
    labels = _text_list(options.pop("label", None), "label")
    archive = options.pop("archive", True)
    if not isinstance(archive, bool):
        raise InvalidInput("archive must be true or false")
    return ExportParams(fmt, dataset, statuses, labels, archive, ExportOptions.from_dict(options))


def import_params(params: dict[str, Any]) -> tuple[str, str, ImportOptions]:
    """Check an import job's parameters: format, the uploaded file's name, options (no server paths)."""
    fmt = _format(params)
    file = params.get("file")
    if not isinstance(file, str) or not file or PurePosixPath(file).name != file or file.startswith("."):
        raise InvalidInput(f"file must be the plain name of the uploaded file, got {file!r}")
    if Path(file).suffix.lower() not in UPLOAD_SUFFIXES:
        raise InvalidInput(f"{file}: upload one of {', '.join(UPLOAD_SUFFIXES)}")
    if fmt in FOLDER_FORMATS and not file.lower().endswith(".zip"):
        raise InvalidInput(f"a {fmt} import is a folder: upload it as a .zip")
    options = dict(params.get("options") or {})
    if "images_dir" in options:
        raise InvalidInput("images_dir is not available to uploads: put the images in the .zip, or ingest them first")
    unknown = sorted(set(options) - set(UPLOAD_IMPORT_OPTIONS))
    if unknown:
        raise InvalidInput(f"unknown import option(s) {unknown}; known: {', '.join(UPLOAD_IMPORT_OPTIONS)}")
    if "labels" in options:
        options["labels"] = tuple(_text_list(options["labels"], "labels") or ())
    return fmt, file, ImportOptions.from_dict(options)


def run_export(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    """Export the workspace (or a dataset version) into the job's output folder."""
    from gigavision.formats.api import export_workspace

    p = export_params(params)
    name = f"{p.format}.zip" if p.archive else p.format
    result = export_workspace(
        ctx.workspace,
        p.format,
        ctx.output_dir / name,
        dataset=p.dataset,
        statuses=p.statuses,
        labels=p.labels,
        options=p.options,
        progress=ctx.progress,
    )
    out = result.as_dict()
    out["out"] = name  # relative to the job's files: GET /api/v1/jobs/{id}/files/{out}
    return out


def run_import(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    """Import the uploaded file of this job."""
    from gigavision.formats.api import import_annotations

    fmt, file, options = import_params(params)
    path = ctx.input_dir / file
    if not path.is_file():
        raise InvalidInput(f"{file}: the uploaded file is missing from the job's input folder")
    report = import_annotations(ctx.workspace, fmt, path, options=options, actor=ctx.actor, progress=ctx.progress)
    ctx.conclude(report.summary())  # a partial import ends done, with ok false in the result and the job record
    return report.as_dict()
