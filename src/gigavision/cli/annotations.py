"""``gigavision labels add|list`` and ``gigavision annotations add|list|history``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from gigavision.cli.common import JsonOpt, WorkspaceOpt, err_console, open_ws, out_console, print_json
from gigavision.errors import InvalidInput

labels_app = typer.Typer(
    help="The workspace's label schema: classes, kinds, colours, attributes.", no_args_is_help=True
)
annotations_app = typer.Typer(help="Annotations of images: add, query by viewport, history.", no_args_is_help=True)


def _parse_attribute(spec: str) -> tuple[str, list[str]]:
    name, sep, values = spec.partition("=")
    if not sep or not name:
        raise InvalidInput(f"--attribute {spec!r} must look like name=value1,value2")
    return name, [v for v in values.split(",") if v]


@labels_app.command("add")
def labels_add(
    name: str,
    kind: Annotated[str, typer.Option(help="tag | box | polygon | mask | point")],
    color: Annotated[
        str | None,
        typer.Option(
            help="Display colour, e.g. '#1f77b4' (default: the class keeps its colour; a new class gets its own "
            "from the palette imports use).",
            show_default=False,
        ),
    ] = None,
    parent: Annotated[str | None, typer.Option(help="Parent class.")] = None,
    attribute: Annotated[
        list[str] | None, typer.Option("--attribute", "-a", help="name=allowed1,allowed2 (repeatable)")
    ] = None,
    workspace_opt: WorkspaceOpt = None,
) -> None:
    """Add or replace a class, e.g. ``labels add roof --kind polygon -a overhang=none,low,high``."""
    attrs = dict(_parse_attribute(a) for a in attribute or [])
    with open_ws(workspace_opt) as ws:
        saved = ws.labels.set(name, kind, color, parent, attrs, actor="cli")
    err_console.print(f"class {name!r} ({kind}, {saved.color}) saved")


@labels_app.command("list")
def labels_list(workspace_opt: WorkspaceOpt = None, json_out: JsonOpt = False) -> None:
    """Show the label schema."""
    with open_ws(workspace_opt) as ws:
        classes = ws.labels.by_name()
    if json_out:
        print_json(
            {
                n: {"kind": c.kind, "color": c.color, "parent": c.parent, "attributes": c.attributes}
                for n, c in classes.items()
            }
        )
        return
    table = Table("class", "kind", "colour", "parent", "attributes")
    for name, c in classes.items():
        attrs = "; ".join(f"{k}: {', '.join(v)}" for k, v in c.attributes.items())
        table.add_row(name, c.kind, c.color, c.parent or "", attrs)
    out_console.print(table)


@labels_app.command("rename")
def labels_rename(
    old: str,
    new: str,
    actor: Annotated[str, typer.Option(help="Who is renaming (recorded).")] = "cli",
    workspace_opt: WorkspaceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Rename a class; its annotations are relabelled (and their version bumped), nothing is lost."""
    with open_ws(workspace_opt) as ws:
        done = ws.labels.rename(old, new, actor)
    if json_out:
        print_json(done.as_dict())
    else:
        err_console.print(f"class {old!r} renamed to {new!r}; {done.annotations_changed} annotations relabelled")


@labels_app.command("merge")
def labels_merge(
    sources: Annotated[list[str], typer.Argument(help="Classes to fold into --into.")],
    into: Annotated[str, typer.Option(help="Target class (created if new).")],
    actor: Annotated[str, typer.Option(help="Who is merging (recorded).")] = "cli",
    workspace_opt: WorkspaceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Merge classes of one kind into one: annotations relabelled, allowed attribute values united."""
    with open_ws(workspace_opt) as ws:
        done = ws.labels.merge(sources, into, actor)
    if json_out:
        print_json(done.as_dict())
    else:
        err_console.print(f"merged {', '.join(sources)} into {into!r}; {done.annotations_changed} relabelled")


@labels_app.command("remove")
def labels_remove(
    name: str,
    actor: Annotated[str, typer.Option(help="Who is removing (recorded).")] = "cli",
    workspace_opt: WorkspaceOpt = None,
) -> None:
    """Remove a class no live annotation uses (merge it into another class otherwise)."""
    with open_ws(workspace_opt) as ws:
        ws.labels.remove(name, actor)
    err_console.print(f"class {name!r} removed")


@labels_app.command("history")
def labels_history(
    workspace_opt: WorkspaceOpt = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    json_out: JsonOpt = False,
) -> None:
    """Changes to the label schema, newest first."""
    with open_ws(workspace_opt) as ws:
        events = ws.labels.events(limit)
    if json_out:
        print_json([e.as_dict() for e in events])
        return
    table = Table("when", "who", "action", "class", "annotations moved")
    for e in events:
        what = e.after or e.before or {}
        table.add_row(e.at[:19], e.actor, e.action, str(what.get("name", "")), str(e.annotations_changed))
    out_console.print(table)


ImageArg = Annotated[
    str, typer.Argument(metavar="IMAGE", help="Image id, a unique prefix of it (6+ characters) or a unique name.")
]


@annotations_app.command("add")
def annotations_add(
    image_id: ImageArg,
    file: Annotated[Path, typer.Argument(help="JSON: a list of annotation records (as the REST API takes).")],
    actor: Annotated[str, typer.Option(help="Who is adding them (recorded in the history).")] = "cli",
    workspace_opt: WorkspaceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Add annotations from a JSON file of records, all or none."""
    from gigavision.annotations import Annotations

    try:
        records = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"{file}: not a readable JSON file: {exc}") from exc
    if not isinstance(records, list):
        raise InvalidInput(f"{file}: expected a JSON list of annotation records")
    with open_ws(workspace_opt) as ws:
        image_id = ws.find_image(image_id)
        ids = ws.annotations.add(image_id, Annotations.from_records(records), actor=actor)
    if json_out:
        print_json({"ids": ids, "count": len(ids)})
    else:
        err_console.print(f"{len(ids)} annotations added")


@annotations_app.command("list")
def annotations_list(
    image_id: ImageArg,
    bbox: Annotated[str | None, typer.Option(help="Viewport x0,y0,x1,y1 in level-0 pixels.")] = None,
    label: Annotated[list[str] | None, typer.Option(help="Only these labels (repeatable).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1_000_000, help="Annotations per page.")] = 10_000,
    cursor: Annotated[
        str | None, typer.Option(help="Continue after the previous page (the next_cursor it printed).")
    ] = None,
    workspace_opt: WorkspaceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Annotations of an image in id order, a page at a time, optionally inside a viewport.

    The last line says how many match in all and, when more follow, the --cursor of the next page.
    """
    from gigavision.store.annotations import Viewport

    with open_ws(workspace_opt) as ws:
        page = ws.annotations.query_page(
            ws.find_image(image_id),
            Viewport.parse(bbox) if bbox else None,
            labels=label or (),
            limit=limit,
            cursor=cursor,
        )
    items = page.items
    if json_out:
        print_json(
            {
                "items": items,
                "count": len(items),
                "total": page.total,
                "truncated": page.truncated,
                "next_cursor": page.next_cursor,
            }
        )
        return
    table = Table("id", "kind", "label", "bbox", "status", "source", "v")
    for r in items:
        box = ", ".join(f"{v:.0f}" for v in r["bbox"]) if r["bbox"] else ""
        table.add_row(str(r["id"]), r["kind"], r["label"], box, r["status"], r["source"], str(r["version"]))
    out_console.print(table)
    more = f"; more with --cursor {page.next_cursor}" if page.next_cursor else ""
    out_console.print(f"{len(items):,} of {page.total:,} annotations{more}", highlight=False)


@annotations_app.command("history")
def annotations_history(annotation_id: int, workspace_opt: WorkspaceOpt = None, json_out: JsonOpt = False) -> None:
    """Every change of one annotation: who, when, what."""
    with open_ws(workspace_opt) as ws:
        events = ws.annotations.history(annotation_id)
    if json_out:
        print_json(events)
        return
    for e in events:
        out_console.print(f"v{e['version']}  {e['at']}  {e['action']:7} by {e['actor']}", highlight=False)
