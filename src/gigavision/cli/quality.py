"""``gigavision qc``: multi-annotator quality control.

items add|list|show, assign, submit, agreement, queue, adjudicate, consensus, annotators. Who is acting is
``--as NAME``: there are no accounts yet, so independence of annotators is by convention.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from gigavision.cli.common import JsonOpt, WorkspaceOpt, err_console, open_ws, out_console, print_json
from gigavision.errors import InvalidInput

if TYPE_CHECKING:
    from gigavision.active.quality import QualityControl
    from gigavision.active.quality_items import Assignment, QcItem
    from gigavision.annotations import Annotations
    from gigavision.workspace import Workspace

qc_app = typer.Typer(
    help="Quality control: items labelled independently by several annotators, agreement, adjudication.",
    no_args_is_help=True,
)
items_app = typer.Typer(help="QC items: whole images or regions, each labelled by N people.", no_args_is_help=True)
qc_app.add_typer(items_app, name="items")

AsOpt = Annotated[str, typer.Option("--as", help="Who is acting (no accounts yet: by convention).")]
FileOpt = Annotated[
    Path | None, typer.Option("--file", help="JSON list of annotation records (as `annotations add` takes).")
]
TagOpt = Annotated[list[str] | None, typer.Option("--tag", help="A tag (repeatable), for tag items.")]
EmptyOpt = Annotated[bool, typer.Option("--empty", help="Submit an explicit empty answer (nothing to label).")]


def _qc(ws: Workspace) -> QualityControl:
    from gigavision.active.quality import QualityControl

    return QualityControl(ws)


def _numbers(text: str, what: str, count: int) -> list[float]:
    try:
        values = [float(v) for v in text.replace("x", ",").split(",")]
    except ValueError:
        raise InvalidInput(f"{what} {text!r} must be {count} numbers separated by commas") from None
    if len(values) != count:
        raise InvalidInput(f"{what} {text!r} must be {count} numbers separated by commas")
    return values


def _read_json(file: Path) -> Any:
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"{file}: not a readable JSON file: {exc}") from exc


def _labels(file: Path | None, tags: list[str] | None, empty: bool) -> Annotations | None:
    """Annotations from ``--file`` / ``--tag`` / ``--empty``, or None (collect the proposals in the item)."""
    from gigavision.annotations import Annotations

    given = (file is not None) + bool(tags) + empty
    if given > 1:
        raise InvalidInput("give labels one way: --file, --tag or --empty")
    if file is not None:
        records = _read_json(file)
        if not isinstance(records, list):
            raise InvalidInput(f"{file}: expected a JSON list of annotation records")
        return Annotations.from_records(records)
    if tags:
        return Annotations.from_tags(tags)
    if empty:
        return Annotations.empty()
    return None


def _items_table(items: Sequence[QcItem]) -> None:
    table = Table("id", "image", "region", "kind", "status", "agreement", "annotators", "adjudicator")
    for i in items:
        region = ",".join(f"{v:.0f}" for v in i["region"]) if i["region"] else "whole image"
        people = ", ".join(f"{a['name']} ({a['status']})" for a in i["annotators"])
        agreement = "" if i["agreement"] is None else f"{i['agreement']:.3f}"
        judge = i["adjudicator"]["name"] if i["adjudicator"] else ""
        table.add_row(str(i["id"]), i["image_id"][:12], region, i["kind"], i["status"], agreement, people, judge)
    out_console.print(table)


def _show(item: Mapping[str, Any]) -> None:
    region = item["region"] or "whole image"
    out_console.print(
        f"item {item['id']}  {item['kind']}  {region}  status {item['status']}  "
        f"agreement {item['agreement'] if item['agreement'] is not None else '-'} (threshold {item['threshold']})",
        highlight=False,
    )
    for sub in item.get("submissions", []):
        count = "hidden until the item is evaluated" if sub["labels"] is None else f"{sub['count']} labels"
        out_console.print(f"  {sub['annotator']:<20} {sub['status']:<10} {count}", highlight=False)
    if item.get("pairwise"):
        names, matrix = item["pairwise"]["annotators"], item["pairwise"]["matrix"]
        table = Table("", *names, title=f"pairwise {item['measure']}")
        for name, row in zip(names, matrix, strict=True):
            table.add_row(name, *(f"{v:.3f}" for v in row))
        out_console.print(table)
    if item.get("consensus"):
        out_console.print(f"  consensus: {len(item['consensus'])} annotations", highlight=False)


@items_app.command("add")
def items_add(
    image_id: str,
    kind: Annotated[str, typer.Option(help="What annotators label: tag | box | polygon | mask | point.")],
    actor: AsOpt = "cli",
    region: Annotated[
        list[str] | None, typer.Option("--region", help="x0,y0,x1,y1 in level-0 pixels (repeatable).")
    ] = None,
    regions_file: Annotated[
        Path | None, typer.Option("--regions", help="JSON list of \\[x0, y0, x1, y1] regions.")
    ] = None,
    grid: Annotated[str | None, typer.Option(help="Cover the image with cells: 1024 or 1024x512.")] = None,
    label: Annotated[
        list[str] | None,
        typer.Option("--label", help="Candidate class (repeatable); a class of the label schema with the item's kind."),
    ] = None,
    required: Annotated[int, typer.Option(help="Independent labellings per item (≥ 2).")] = 2,
    threshold: Annotated[float, typer.Option(help="Least agreement for an automatic consensus (0..1).")] = 0.8,
    iou: Annotated[float, typer.Option(help="Least IoU for two shapes to match.")] = 0.5,
    ignore_labels: Annotated[bool, typer.Option("--ignore-labels", help="Match shapes by geometry only.")] = False,
    point_radius: Annotated[float, typer.Option(help="Largest distance (px) for two points to match.")] = 10.0,
    workspace_opt: WorkspaceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Create items for an image: the whole image, regions, or a grid of cells."""
    from gigavision.active.agreement import MatchOptions

    options = MatchOptions(iou_threshold=iou, match_labels=not ignore_labels, point_radius=point_radius)
    regions: list[list[float]] | None = None
    if region:
        regions = [_numbers(r, "--region", 4) for r in region]
    if regions_file is not None:
        loaded = _read_json(regions_file)
        if not isinstance(loaded, list):
            raise InvalidInput(f"{regions_file}: expected a JSON list of [x0, y0, x1, y1]")
        regions = (regions or []) + loaded
    cells = None
    if grid is not None:
        size = _numbers(grid, "--grid", 2) if "x" in grid or "," in grid else _numbers(grid, "--grid", 1) * 2
        cells = (int(size[0]), int(size[1]))
    with open_ws(workspace_opt) as ws:
        items = _qc(ws).add_items(
            image_id,
            kind,
            actor=actor,
            regions=regions,
            grid=cells,
            labels=label or (),
            required=required,
            threshold=threshold,
            options=options,
        )
    if json_out:
        print_json({"items": items, "count": len(items)})
    else:
        ids = [i["id"] for i in items]
        span = f"{ids[0]}" if len(ids) == 1 else f"{ids[0]}..{ids[-1]}"
        err_console.print(f"{len(items)} item(s) added: {span}")


@items_app.command("list")
def items_list(
    status: Annotated[str | None, typer.Option(help="open | agreed | adjudication | adjudicated")] = None,
    annotator: Annotated[str | None, typer.Option(help="Items this person is on.")] = None,
    image: Annotated[str | None, typer.Option(help="Items of this image.")] = None,
    kind: Annotated[str | None, typer.Option(help="tag | box | polygon | mask | point")] = None,
    offset: Annotated[int, typer.Option(min=0)] = 0,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 100,
    workspace_opt: WorkspaceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """List items with filters."""
    with open_ws(workspace_opt) as ws:
        items, total = _qc(ws).list_items(
            status=status, annotator=annotator, image_id=image, kind=kind, offset=offset, limit=limit
        )
    if json_out:
        print_json({"items": items, "total": total, "offset": offset, "limit": limit})
        return
    _items_table(items)
    out_console.print(f"{len(items)} of {total} items")


@items_app.command("show")
def items_show(
    item_id: int,
    viewer: Annotated[str | None, typer.Option("--as", help="Who is looking (sees own labels while open).")] = None,
    workspace_opt: WorkspaceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """One item: annotators, submissions, pairwise agreement, consensus."""
    with open_ws(workspace_opt) as ws:
        item = _qc(ws).item(item_id, viewer=viewer)
    if json_out:
        print_json(item)
    else:
        _show(item)


@qc_app.command("assign")
def assign(
    items: Annotated[list[int] | None, typer.Argument(help="Item ids (or --all).")] = None,
    annotator: Annotated[list[str] | None, typer.Option("--annotator", help="Annotator (repeatable).")] = None,
    pool: Annotated[str | None, typer.Option(help="Comma-separated annotators to spread items over.")] = None,
    adjudicator: Annotated[str | None, typer.Option(help="Adjudicator for items in adjudication.")] = None,
    adjudicator_pool: Annotated[
        str | None, typer.Option("--adjudicator-pool", help="Comma-separated adjudicators to spread items over.")
    ] = None,
    all_items: Annotated[
        bool,
        typer.Option("--all", help="Every open item short of annotators / queued item without an adjudicator."),
    ] = False,
    image: Annotated[str | None, typer.Option(help="With --all: only items of this image.")] = None,
    actor: AsOpt = "cli",
    workspace_opt: WorkspaceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Assign annotators (explicitly or round-robin from a pool) or an adjudicator to items."""
    ways = {
        "annotator": (annotator or [], []),
        "pool": ([], _split(pool)),
        "adjudicator": ([adjudicator] if adjudicator else [], []),
        "adjudicator-pool": ([], _split(adjudicator_pool)),
    }
    chosen = [k for k, (names, members) in ways.items() if names or members]
    if len(chosen) != 1:
        raise InvalidInput("give one of --annotator, --pool, --adjudicator or --adjudicator-pool")
    names, members = ways[chosen[0]]
    role = "adjudicator" if chosen[0].startswith("adjudicator") else "annotator"
    if bool(items) == all_items:
        raise InvalidInput("give item ids or --all")
    with open_ws(workspace_opt) as ws:
        qc = _qc(ws)
        ids = list(items or []) if not all_items else qc.unstaffed(role, image_id=image)
        if not ids:
            report: list[Assignment] = []
        else:
            report = qc.assign(ids, actor=actor, annotators=names, pool=members, role=role)
    if json_out:
        print_json({"assignments": [r.as_dict() for r in report]})
        return
    for r in report:
        if r.added:
            out_console.print(f"item {r.item}: {r.role} {', '.join(r.added)}", highlight=False)
    err_console.print(f"{sum(len(r.added) for r in report)} assignment(s) added to {len(report)} item(s)")


def _split(text: str | None) -> list[str]:
    return [n.strip() for n in (text or "").split(",") if n.strip()]


@qc_app.command("submit")
def submit(
    item_id: int,
    actor: AsOpt,
    file: FileOpt = None,
    tag: TagOpt = None,
    empty: EmptyOpt = False,
    workspace_opt: WorkspaceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Hand in your labels for an item: from --file / --tag / --empty, or your proposed annotations in it."""
    labels = _labels(file, tag, empty)
    with open_ws(workspace_opt) as ws:
        item = _qc(ws).submit(item_id, actor, labels)
    if json_out:
        print_json(item)
        return
    mine = next((s for s in item["submissions"] if s["annotator"] == actor), None)
    count = mine["count"] if mine else 0
    err_console.print(f"item {item_id}: {count} label(s) submitted by {actor}; item is {item['status']}")
    if item["status"] != "open":
        _show(item)


@qc_app.command("agreement")
def agreement(
    item_id: Annotated[int | None, typer.Argument(help="One item (default: a summary over items).")] = None,
    kind: Annotated[str | None, typer.Option(help="Summary over items of this kind.")] = None,
    image: Annotated[str | None, typer.Option(help="Summary over items of this image.")] = None,
    workspace_opt: WorkspaceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Agreement of one item (pairwise table) or over many (per pair, Fleiss' κ for tags)."""
    with open_ws(workspace_opt) as ws:
        qc = _qc(ws)
        if item_id is not None:
            one = qc.agreement(item_id)
        else:
            data = qc.summary(kind=kind, image_id=image)
    if item_id is not None:
        if json_out:
            print_json(one)
        elif one["pairwise"] is None:
            out_console.print(f"item {item_id} is {one['status']}: no agreement measured yet")
        else:
            _show({**one, "id": item_id, "kind": "", "region": None})
        return
    if json_out:
        print_json(data)
        return
    out_console.print(f"{data['items']} items: " + ", ".join(f"{k} {v}" for k, v in data["by_status"].items()))
    for kind_name, s in data["kinds"].items():
        extra = f", Fleiss' κ {s['fleiss_kappa']:.3f}" if "fleiss_kappa" in s else ""
        out_console.print(
            f"{kind_name}: {s['items']} evaluated, mean {s['measure']} {s['mean_agreement']}, "
            f"{s['disputed']} disputed{extra}",
            highlight=False,
        )


@qc_app.command("queue")
def queue(
    adjudicator: Annotated[str | None, typer.Option(help="What this person can adjudicate.")] = None,
    image: Annotated[str | None, typer.Option(help="Items of this image.")] = None,
    offset: Annotated[int, typer.Option(min=0)] = 0,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 100,
    workspace_opt: WorkspaceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Items awaiting adjudication, lowest agreement first."""
    with open_ws(workspace_opt) as ws:
        items, total = _qc(ws).queue(adjudicator=adjudicator, image_id=image, offset=offset, limit=limit)
    if json_out:
        print_json({"items": items, "total": total, "offset": offset, "limit": limit})
        return
    _items_table(items)
    out_console.print(f"{len(items)} of {total} items awaiting adjudication")


@qc_app.command("adjudicate")
def adjudicate(
    item_id: int,
    actor: AsOpt,
    choose: Annotated[str | None, typer.Option(help="Take this annotator's labels as the consensus.")] = None,
    file: FileOpt = None,
    tag: TagOpt = None,
    empty: EmptyOpt = False,
    own: Annotated[bool, typer.Option("--own", help="Use your proposed annotations in the item.")] = False,
    workspace_opt: WorkspaceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Decide a disputed item: choose an annotator's labels or give your own."""
    labels = _labels(file, tag, empty)
    with open_ws(workspace_opt) as ws:
        item = _qc(ws).adjudicate(item_id, actor, choose=choose, annotations=labels, own=own)
    if json_out:
        print_json(item)
        return
    err_console.print(f"item {item_id} adjudicated by {actor}: {len(item['consensus'])} consensus annotation(s)")


@qc_app.command("consensus")
def consensus(
    item_id: Annotated[int | None, typer.Argument(help="One item (or --image).")] = None,
    image: Annotated[str | None, typer.Option(help="Every consensus annotation of this image.")] = None,
    workspace_opt: WorkspaceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Consensus annotations of an item or an image."""
    with open_ws(workspace_opt) as ws:
        records = _qc(ws).consensus(item_id=item_id, image_id=image)
    if json_out:
        print_json({"items": records, "count": len(records)})
        return
    table = Table("id", "kind", "label", "bbox", "status")
    for r in records:
        box = ", ".join(f"{v:.0f}" for v in r["bbox"]) if r["bbox"] else ""
        table.add_row(str(r["id"]), r["kind"], r["label"], box, r["status"])
    out_console.print(table)
    out_console.print(f"{len(records)} consensus annotations")


@qc_app.command("annotators")
def annotators(
    kind: Annotated[str | None, typer.Option(help="Only items of this kind.")] = None,
    image: Annotated[str | None, typer.Option(help="Only items of this image.")] = None,
    workspace_opt: WorkspaceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Per-annotator quality: work done, agreement with peers and with the consensus."""
    with open_ws(workspace_opt) as ws:
        rows = _qc(ws).annotators(kind=kind, image_id=image)
    if json_out:
        print_json({"annotators": [r.as_dict() for r in rows]})
        return

    def fmt(v: float | None) -> str:
        return "" if v is None else f"{v:.3f}"

    table = Table("annotator", "submitted", "pending", "agreed", "disputed", "peers", "consensus", "κ tags", "adjud.")
    for r in rows:
        table.add_row(
            r.annotator,
            str(r.submitted),
            str(r.pending),
            str(r.agreed),
            str(r.disputed),
            fmt(r.peer_agreement),
            fmt(r.consensus_agreement),
            fmt(r.tag_kappa),
            str(r.adjudicated),
        )
    out_console.print(table)
