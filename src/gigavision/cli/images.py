"""``gigavision ingest``, ``gigavision info`` and ``gigavision images list|show|meta``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from gigavision.cli.common import JsonOpt, WorkspaceOpt, err_console, open_ws, out_console, print_json
from gigavision.errors import InvalidInput

if TYPE_CHECKING:
    from gigavision.workspace import Workspace

images_app = typer.Typer(help="List and inspect the workspace's images.", no_args_is_help=True)


def run_ingest(ws: Workspace, paths: list[Path], *, recursive: bool, follow_symlinks: bool, json_out: bool) -> int:
    from gigavision.ingest import IngestResult

    results: list[IngestResult] = []
    with Progress(
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=json_out,
    ) as bar:
        files = bar.add_task("ingest", total=None)
        current = bar.add_task("", total=1.0, visible=False)

        def on_start(n: int) -> None:
            bar.update(files, total=n)

        def on_result(r: IngestResult) -> None:
            results.append(r)
            bar.update(current, visible=False, completed=0)
            bar.advance(files)
            if not json_out:
                style = {"added": "green", "duplicate": "yellow", "rejected": "red"}[r.status]
                size = f"{r.width:,}x{r.height:,}" + (f"x{r.depth:,} (volume)" if r.depth else "") if r.width else ""
                extra = r.reason if r.status == "rejected" else size
                line = Text.assemble((f"{r.status:9}", style), f" {r.name}  {extra}")
                bar.console.print(line, highlight=False, soft_wrap=True)
                for note in r.notes or []:  # what a volume's ingest noticed and handled
                    bar.console.print(Text(f"          note: {note}", style="dim"), highlight=False, soft_wrap=True)

        def on_progress(done: float, total: float, message: str) -> None:
            bar.update(current, visible=True, description=f"  {message}", completed=done / total if total else 0.0)

        ws.ingest(
            paths,
            recursive=recursive,
            follow_symlinks=follow_symlinks,
            on_start=on_start,
            on_result=on_result,
            progress=on_progress,
        )
    counts = {s: sum(r.status == s for r in results) for s in ("added", "duplicate", "rejected")}
    if json_out:
        print_json({"images": [r.as_dict() for r in results], "summary": counts})
    else:
        err_console.print(", ".join(f"{n} {s}" for s, n in counts.items()))
    return 1 if results and counts["rejected"] == len(results) else 0


def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Image files or folders.", show_default=False)],
    workspace_opt: WorkspaceOpt = None,
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Descend into folders.")] = False,
    follow_symlinks: Annotated[
        bool, typer.Option(help="Follow symlinks that point outside the folder being ingested.")
    ] = False,
    json_out: JsonOpt = False,
) -> int:
    """Add images to the workspace: originals stored once by sha256; big or untiled images get a pyramid.

    Exit code 1 when every input was rejected.
    """
    with open_ws(workspace_opt) as ws:
        return run_ingest(ws, paths, recursive=recursive, follow_symlinks=follow_symlinks, json_out=json_out)


def info(
    path: Annotated[Path, typer.Argument(help="An image file (not ingested).")],
    json_out: JsonOpt = False,
) -> None:
    """Describe an image file: reader, size, levels, bands, microns per pixel, CRS."""
    from gigavision.images.registry import open_image

    with open_image(path) as src:
        i = src.info
        levels = [{"width": lv.width, "height": lv.height, "downsample": lv.downsample} for lv in i.levels]
        data: dict[str, Any] = {
            "path": str(path),
            "reader": i.reader,
            "format": i.format,
            "width": i.width,
            "height": i.height,
            "bands": i.bands,
            "dtype": i.dtype,
            "tiled": i.tiled,
            "mpp_x": i.mpp_x,
            "mpp_y": i.mpp_y,
            "crs": i.crs,
            "transform": i.transform,
            "modality": i.modality,
            "levels": [{"width": lv.width, "height": lv.height, "downsample": lv.downsample} for lv in i.levels],
        }
    if json_out:
        print_json(data)
        return
    for key, value in data.items():
        if key != "levels" and value not in (None, ""):
            out_console.print(f"{key:>10}: {value}", highlight=False)
    out_console.print("    levels: " + ", ".join(f"{lv['width']}x{lv['height']}" for lv in levels))


@images_app.command("list")
def list_cmd(
    workspace_opt: WorkspaceOpt = None,
    offset: Annotated[int, typer.Option(min=0)] = 0,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    json_out: JsonOpt = False,
) -> None:
    """List images, oldest first."""
    with open_ws(workspace_opt) as ws:
        rows, total = ws.list_images(offset, limit)
    if json_out:
        print_json({"items": [_row_dict(r) for r in rows], "total": total, "offset": offset, "limit": limit})
        return
    table = Table("id", "name", "size", "levels", "mpp", "reader")
    for r in rows:
        table.add_row(
            r.id[:12],
            r.name,
            f"{r.width:,}x{r.height:,}",
            str(len(r.levels)),
            f"{r.mpp_x:.3g}" if r.mpp_x else "",
            r.reader,
        )
    out_console.print(table)
    out_console.print(f"{len(rows)} of {total}")


@images_app.command("show")
def show_cmd(
    image: Annotated[
        str, typer.Argument(metavar="IMAGE", help="Image id, a unique prefix of it (6+ characters) or a unique name.")
    ],
    workspace_opt: WorkspaceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Everything stored about one image."""
    with open_ws(workspace_opt) as ws:
        data = _row_dict(ws.get_image(ws.find_image(image), fresh=True))
    if json_out:
        print_json(data)
    else:
        for key, value in data.items():
            out_console.print(f"{key:>20}: {value}", highlight=False)


@images_app.command("meta")
def meta_cmd(
    image: Annotated[
        str | None,
        typer.Argument(
            metavar="IMAGE",
            help="Image id, a unique prefix of it (6+ characters) or its name as `images list` shows it.",
            show_default=False,
        ),
    ] = None,
    assignments: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="KEY=VALUE",
            help="KEY=VALUE to set; VALUE is read as an integer, a float, true/false, else text (007 stays text).",
            show_default=False,
        ),
    ] = None,
    unset: Annotated[list[str] | None, typer.Option("--unset", metavar="KEY", help="Remove KEY (repeatable).")] = None,
    csv_file: Annotated[
        Path | None,
        typer.Option(
            "--csv",
            metavar="FILE",
            help="Set many images at once: header image,KEY,...; a row per image (id or name); "
            "an empty cell leaves the key as it is.",
        ),
    ] = None,
    workspace_opt: WorkspaceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Set image metadata (patient id, age, visual-field indices…) for dataset grouping, filters and side
    features; prints the image's metadata. Keys that ingest wrote cannot be changed.

    All or nothing: one bad key, value or CSV row and nothing is written.
    """
    from gigavision.images.metadata import parse_meta_value, public_meta, user_meta_keys

    if csv_file is not None:
        if image is not None or unset:
            raise InvalidInput("--csv names the images in the file: give no IMAGE, KEY=VALUE or --unset with it")
        with open_ws(workspace_opt) as ws:
            summary = ws.set_images_meta_csv(csv_file)
        if json_out:
            print_json(summary.as_dict())
        else:
            out_console.print(
                f"{summary.changed} of {summary.images} images changed ({summary.rows} rows; "
                f"keys: {', '.join(summary.keys)})",
                highlight=False,
            )
        return
    if image is None:
        raise InvalidInput("name an image (id or name) with KEY=VALUE / --unset, or give --csv FILE")
    values: dict[str, Any] = {}
    for text in assignments or []:
        key, sep, raw = text.partition("=")
        if not sep or not key or not raw:
            raise InvalidInput(f"{text!r} must look like KEY=VALUE (use --unset KEY to remove a key)")
        if key in values:
            raise InvalidInput(f"{key!r} is given twice")
        values[key] = parse_meta_value(raw)
    for key in unset or []:
        if key in values:
            raise InvalidInput(f"{key!r} is both set and --unset")
        values[key] = None
    with open_ws(workspace_opt) as ws:
        image_id = ws.find_image(image)
        if values:
            ws.set_image_meta(image_id, values)
        row = ws.get_image(image_id, fresh=True)
    meta, user_keys = public_meta(row.meta), user_meta_keys(row.meta)
    if json_out:
        print_json({"id": row.id, "name": row.name, "meta": meta, "user_keys": user_keys})
        return
    for key in sorted(meta, key=lambda k: (k not in user_keys, k)):  # the user's keys first
        origin = "" if key in user_keys else "  (ingest)"
        out_console.print(f"{key:>20}: {json.dumps(meta[key], ensure_ascii=False)}{origin}", highlight=False)


def _row_dict(row: Any) -> dict[str, Any]:
    from gigavision.server.routers.images import ImageOut

    return ImageOut.from_row(row).model_dump(mode="json")
