"""``gigavision import FORMAT PATH`` and ``gigavision export FORMAT OUT``.

Exit codes of ``import``: 0 when everything was imported, 1 when something was rejected or an image
reference matched nothing (the valid rest IS imported; the report says what and why), 2 when the input
could not be read at all (nothing changed). ``export``: 0, or 2 on an error (nothing is left at OUT).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import typer

from gigavision.cli.common import JsonOpt, WorkspaceOpt, err_console, open_ws, print_json, progress_bar

FormatName = Literal[
    "coco", "voc", "yolo", "cvat", "labelstudio", "geojson", "imagefolder", "csv", "geoparquet"
]  # = FORMATS (a test checks)
FormatArg = Annotated[
    FormatName,
    typer.Argument(metavar="FORMAT", help="One of: " + ", ".join(get_args(FormatName)) + ".", show_default=False),
]
SHOWN = 20  # rejections printed without --json


def import_cmd(
    fmt: FormatArg,
    path: Annotated[Path, typer.Argument(help="A file, a folder, or a .zip archive.", show_default=False)],
    images: Annotated[
        Path | None,
        typer.Option("--images", help="Folder where image references are looked up (file name or relative path)."),
    ] = None,
    status: Annotated[str, typer.Option(help="Status of the imported annotations.")] = "accepted",
    source: Annotated[str | None, typer.Option(help="Recorded source (default: import:FORMAT).")] = None,
    strict_labels: Annotated[
        bool, typer.Option("--strict-labels", help="Reject labels not in the schema instead of adding them.")
    ] = False,
    label: Annotated[list[str] | None, typer.Option("--label", help="Import only this label (repeatable).")] = None,
    ingest: Annotated[bool, typer.Option(help="Ingest image files found under --images.")] = True,
    max_vertices: Annotated[int, typer.Option(help="Largest geometry accepted (vertices).")] = 1_000_000,
    image: Annotated[
        str | None, typer.Option("--image", help="GeoJSON: the image (id, id prefix or name) of a single file.")
    ] = None,
    default_label: Annotated[
        str, typer.Option(help="GeoJSON: label of features without a classification.")
    ] = "unclassified",
    actor: Annotated[str, typer.Option(help="Who is importing (recorded in the history).")] = "cli",
    workspace_opt: WorkspaceOpt = None,
    json_out: JsonOpt = False,
) -> int:
    """Import annotations; images are matched by file name (and ingested from --images when missing).

    Exit code 0: all imported; 1: something was rejected or unmatched (the rest is imported); 2: unreadable.
    """
    from gigavision.formats.api import import_annotations
    from gigavision.formats.report import ImportOptions

    options = ImportOptions(
        images_dir=images,
        status=status,
        source=source,
        strict_labels=strict_labels,
        labels=tuple(label or ()),
        ingest=ingest,
        max_vertices=max_vertices,
        image=image,
        default_label=default_label,
    )
    with open_ws(workspace_opt) as ws, progress_bar(f"import {fmt}", quiet=json_out) as progress:
        report = import_annotations(ws, fmt, path, options=options, actor=actor, progress=progress)
    data = report.as_dict()
    if json_out:
        print_json(data)
    else:
        _print_import(data)
    return 0 if report.ok else 1


def _print_import(data: dict[str, Any]) -> None:
    kinds = ", ".join(f"{n} {k}" for k, n in data["by_kind"].items()) or "none"
    err_console.print(
        f"imported {data['annotations']} annotations ({kinds}) into {data['images_matched']} existing and "
        f"{data['images_ingested']} newly ingested images from {data['files']} file(s)",
        highlight=False,
    )
    if data["classes_added"]:
        err_console.print("classes added: " + ", ".join(data["classes_added"]), highlight=False)
    if data["attributes_added"]:
        err_console.print("attributes added: " + ", ".join(data["attributes_added"]), highlight=False)
    for u in data["unmatched"]:
        err_console.print(f"unmatched {u['file']}: {u['ref']}: {u['reason']}", highlight=False)
    for r in data["rejected"][:SHOWN]:
        err_console.print(f"rejected {r['file']} {r['item']}: {r['reason']}", highlight=False)
    if data["rejected_count"] > SHOWN:
        err_console.print(f"... and {data['rejected_count'] - SHOWN} more rejected (see --json)")
    for note in data["notes"]:
        err_console.print(f"note: {note}", highlight=False)


def export_cmd(
    fmt: FormatArg,
    out: Annotated[Path, typer.Argument(help="A new folder, or a file ending in .zip.", show_default=False)],
    dataset: Annotated[
        str | None, typer.Option("--dataset", help="Export this dataset version (NAME@N) instead of the workspace.")
    ] = None,
    status: Annotated[
        list[str] | None,
        typer.Option("--status", help="Only annotations with this status (repeatable; default: all but rejected)."),
    ] = None,
    label: Annotated[list[str] | None, typer.Option("--label", help="Only this label (repeatable).")] = None,
    images: Annotated[
        Literal["copy", "link", "none"] | None,
        typer.Option(
            "--images",
            help="Put the image files in the export: copy, link or none (default: copy for yolo and "
            "imagefolder, none otherwise).",
        ),
    ] = None,
    task: Annotated[
        Literal["detect", "segment", "obb"], typer.Option(help="YOLO: detect (boxes), segment or obb (oriented boxes).")
    ] = "detect",
    layout: Annotated[
        Literal["ultralytics", "darknet"],
        typer.Option(help="YOLO: ultralytics (data.yaml) or darknet (YOLO 1.1: obj.names, obj.data, train.txt)."),
    ] = "ultralytics",
    crs: Annotated[
        Literal["image", "map"],
        typer.Option(help="GeoJSON / GeoParquet: image pixels, or map coordinates of georeferenced images."),
    ] = "image",
    workspace_opt: WorkspaceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Export annotations of the workspace (or of a dataset version) as FORMAT; deterministic bytes."""
    from gigavision.formats.api import export_workspace
    from gigavision.formats.report import ExportOptions

    options = ExportOptions(images=images, task=task, layout=layout, crs=crs)
    with open_ws(workspace_opt) as ws, progress_bar(f"export {fmt}", quiet=json_out) as progress:
        result = export_workspace(
            ws, fmt, out, dataset=dataset, statuses=status, labels=label, options=options, progress=progress
        )
    data = result.as_dict()
    if json_out:
        print_json(data)
        return
    err_console.print(
        f"exported {data['annotations']} annotations of {data['images']} images to {data['out']} "
        f"({data['files']} files)",
        highlight=False,
    )
    for reason, n in data["converted"].items():
        err_console.print(f"converted: {n} {reason}", highlight=False)
    for reason, n in data["skipped"].items():
        err_console.print(f"not written: {n} {reason}", highlight=False)
