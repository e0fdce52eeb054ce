"""``gigavision dataset create|list|show|diff|images|check``: immutable, content-hashed dataset versions."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from gigavision.cli.common import JsonOpt, WorkspaceOpt, err_console, open_ws, out_console, print_json, progress_bar

if TYPE_CHECKING:
    from gigavision.datasets import DatasetVersion

dataset_app = typer.Typer(
    help="Dataset versions: frozen images + annotations + schema + splits, named NAME@N.", no_args_is_help=True
)


@dataset_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Dataset name (1-64 of A-Z a-z 0-9 _ . -); creates NAME@N.")],
    filter_: Annotated[
        list[str] | None,
        typer.Option(
            "--filter",
            "-f",
            help="key=value[,value...] (repeatable). Keys: image (name glob), image_id, label, source (glob), "
            "status, kind, has=annotations, meta:KEY.",
        ),
    ] = None,
    split: Annotated[str, typer.Option(help="Split ratios summing to 1.")] = "train=0.8,val=0.1,test=0.1",
    stratify: Annotated[
        bool, typer.Option("--stratify", help="Give every split its share of each class (majority label).")
    ] = False,
    group_by: Annotated[
        str, typer.Option(help="Unit kept on one side: 'image' or 'meta:KEY' (e.g. meta:patient_id).")
    ] = "image",
    seed: Annotated[int, typer.Option(min=0, help="Shuffle seed: same seed, same assignment.")] = 0,
    status: Annotated[
        list[str] | None,
        typer.Option(help="Annotation statuses to freeze (repeatable or comma list). Default: accepted,adjudicated."),
    ] = None,
    dup_distance: Annotated[
        int, typer.Option(help="Near-duplicate perceptual-hash distance in bits (0: identical hash, -1: off).")
    ] = 4,
    dedupe: Annotated[
        str | None,
        typer.Option(
            help="Also group embedding near-duplicates: embed:INDEX or embed:INDEX@COSINE (an image index;"
            " default cosine 0.95), so they never straddle splits."
        ),
    ] = None,
    reshuffle: Annotated[
        bool, typer.Option("--reshuffle", help="Do not keep the splits of the latest version of NAME.")
    ] = False,
    split_hints: Annotated[
        bool,
        typer.Option(
            help="Put images whose metadata 'split' names one of the splits there (imports set it from the"
            " layout: COCO instances_val.json, YOLO images/val/, CVAT subset)."
        ),
    ] = True,
    allow_duplicate: Annotated[
        bool, typer.Option("--allow-duplicate", help="Create a version even if one has the same content hash.")
    ] = False,
    qc_submissions: Annotated[
        bool,
        typer.Option("--qc-submissions", help="Also freeze annotators' QC submissions (default: their consensus)."),
    ] = False,
    actor: Annotated[str, typer.Option(help="Who creates it (recorded).")] = "cli",
    workspace_opt: WorkspaceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Freeze the selected images and their annotations into the next version NAME@N."""
    from gigavision.datasets import create_version

    with open_ws(workspace_opt) as ws, progress_bar(f"dataset {name}") as progress:
        version = create_version(
            ws,
            name,
            filters=filter_ or [],
            split=split,
            stratify=stratify,
            group_by=group_by,
            seed=seed,
            statuses=status,
            dup_distance=dup_distance,
            dedupe=dedupe,
            reshuffle=reshuffle,
            split_hints=split_hints,
            allow_duplicate=allow_duplicate,
            qc_submissions=qc_submissions,
            actor=actor,
            progress=progress,
        )
        summary = version.summary(schema=False)
    if json_out:
        print_json(summary)
        return
    _print_summary(summary)
    err_console.print(f"created {version.ref}", highlight=False)


@dataset_app.command("list")
def list_cmd(
    name: Annotated[str | None, typer.Argument(help="Only the versions of this dataset.")] = None,
    workspace_opt: WorkspaceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Every dataset version with its size and hash."""
    from gigavision.datasets import list_versions

    with open_ws(workspace_opt) as ws:
        versions = list_versions(ws, name)
    if json_out:
        print_json({"items": [v.summary(schema=False) for v in versions], "count": len(versions)})
        return
    table = Table("version", "images", "annotations", "splits", "hash", "created", "by")
    for v in versions:
        splits = ", ".join(f"{s} {p['images']}" for s, p in v.counts["splits"].items())
        table.add_row(
            v.ref,
            str(v.counts["images"]),
            str(v.counts["annotations"]),
            splits,
            v.content_hash[:12],
            v.created_at.strftime("%Y-%m-%d %H:%M"),
            v.created_by,
        )
    out_console.print(table)


@dataset_app.command("show")
def show(
    ref: Annotated[str, typer.Argument(help="NAME@N, NAME@latest or NAME.")],
    workspace_opt: WorkspaceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """A version's spec, counts per split and per class, schema and content hash."""
    from gigavision.datasets import open_version

    with open_ws(workspace_opt) as ws:
        summary = open_version(ws, ref).summary()
    if json_out:
        print_json(summary)
        return
    _print_summary(summary)
    if not summary["classes"]:
        return
    classes = Table("class", "kind", "annotations", *summary["spec"]["split"], title="classes")
    per_split = summary["counts"]["splits"]
    for c in summary["classes"]:
        n = summary["counts"]["labels"].get(c["name"], 0)
        table_row = [str(per_split[s]["labels"].get(c["name"], 0)) for s in summary["spec"]["split"]]
        classes.add_row(c["name"], c["kind"], str(n), *table_row)
    out_console.print(classes)


@dataset_app.command("diff")
def diff(
    a: Annotated[str, typer.Argument(help="The older version, NAME@N.")],
    b: Annotated[str, typer.Argument(help="The newer version, NAME@M.")],
    limit: Annotated[int, typer.Option(min=0, max=100_000, help="Most items listed per section.")] = 1000,
    workspace_opt: WorkspaceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """What changed from A to B: images added/removed/moved, annotations, classes, spec."""
    from gigavision.datasets import diff_versions

    with open_ws(workspace_opt) as ws:
        result = diff_versions(ws, a, b, limit=limit)
    if json_out:
        print_json(result)
        return
    same = " (same content)" if result["same_content"] else ""
    out_console.print(f"{result['a']} → {result['b']}{same}", highlight=False)
    images, annotations = result["images"], result["annotations"]
    out_console.print(
        f"images: {images['added']['count']} added, {images['removed']['count']} removed, "
        f"{images['moved']['count']} moved between splits, {images['unchanged']} unchanged",
        highlight=False,
    )
    out_console.print(
        f"annotations: {annotations['added']} added, {annotations['removed']} removed, "
        f"{annotations['changed']} changed, {annotations['unchanged']} unchanged",
        highlight=False,
    )
    for item in images["moved"]["items"]:
        out_console.print(f"  moved   {item['name']}: {item['from']} → {item['to']}", highlight=False)
    for kind in ("added", "removed"):
        for item in images[kind]["items"]:
            out_console.print(f"  {kind:7} {item['name']} ({item['split']})", highlight=False)
    classes = result["classes"]
    if classes["added"] or classes["removed"] or classes["changed"]:
        changed = [c["name"] for c in classes["changed"]]
        out_console.print(
            f"classes: added {classes['added']}, removed {classes['removed']}, changed {changed}", highlight=False
        )
    for key, values in result["spec"].items():
        out_console.print(f"spec {key}: {values['a']} → {values['b']}", highlight=False)


@dataset_app.command("images")
def images(
    ref: Annotated[str, typer.Argument(help="NAME@N, NAME@latest or NAME.")],
    split: Annotated[str | None, typer.Option(help="Only this split.")] = None,
    offset: Annotated[int, typer.Option(min=0)] = 0,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    workspace_opt: WorkspaceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """The images of a version with their split, group, class and number of frozen annotations."""
    from gigavision.datasets import open_version

    with open_ws(workspace_opt) as ws:
        version: DatasetVersion = open_version(ws, ref)
        items, total = version.page(split, offset, limit)
    if json_out:
        print_json({"items": items, "total": total})
        return
    table = Table("name", "split", "group", "class", "annotations", "id")
    for item in items:
        label, n = item["label"] or "", str(item["n_annotations"])
        table.add_row(item["name"], item["split"], str(item["group"]), label, n, item["id"][:12])
    out_console.print(table)
    out_console.print(f"{len(items)} of {total} images", highlight=False)


def _print_summary(summary: dict[str, Any]) -> None:
    counts, spec = summary["counts"], summary["spec"]
    table = Table("split", "target", "images", "achieved", "annotations", title=summary["ref"])
    for name, part in counts["splits"].items():
        table.add_row(
            name, f"{part['ratio']:.3f}", str(part["images"]), f"{part['achieved']:.3f}", str(part["annotations"])
        )
    table.add_row("all", "1.000", str(counts["images"]), "1.000", str(counts["annotations"]))
    out_console.print(table)
    dups = counts["near_duplicates"]
    out_console.print(
        f"groups: {counts['groups']} (by {spec['group_by']}; {dups['images']} near-duplicate images joined)"
        + (f"; {counts['ungrouped']} images without {spec['group_by']}" if counts["ungrouped"] else "")
        + (f"; kept splits of {spec['base']}: {counts['kept']} kept, {counts['moved']} moved" if spec["base"] else ""),
        highlight=False,
    )
    out_console.print(f"content hash: {summary['content_hash']}", highlight=False)


@dataset_app.command("check")
def check_cmd(
    ref: Annotated[str, typer.Argument(help="Dataset version NAME@N (or NAME: the latest).")],
    index: Annotated[
        str | None, typer.Option(help="An image index whose vectors find embedding near-duplicates.")
    ] = None,
    threshold: Annotated[float, typer.Option(help="Cosine similarity at which two images are near-duplicates.")] = 0.95,
    hash_distance: Annotated[
        int, typer.Option(help="Perceptual-hash distance in bits at which two images are near-duplicates (-1: off).")
    ] = 4,
    html: Annotated[Path | None, typer.Option(help="Write an HTML page of the pairs side by side here.")] = None,
    fail_on_leak: Annotated[
        bool, typer.Option("--fail-on-leak", help="Exit with code 1 when a pair straddles splits (for CI).")
    ] = False,
    workspace_opt: WorkspaceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Near-duplicate images of a dataset version, within and across splits (across: leakage), by perceptual
    hash and, with --index, by embedding cosine."""
    from gigavision.search.duplicates import check_version

    with open_ws(workspace_opt) as ws, progress_bar(f"checking {ref}", quiet=json_out) as progress:
        report = check_version(
            ws,
            ref,
            index=index,
            threshold=threshold,
            hash_distance=None if hash_distance < 0 else hash_distance,
            html=html,
            progress=progress,
        )
    doc = report.as_dict()
    if json_out:
        print_json(doc)
    else:
        err_console.print(
            f"{doc['dataset']}: {doc['pairs']} near-duplicate pair(s) among {doc['images']} images,"
            f" {doc['within_split']} within a split, {doc['across_splits']} across splits"
            + (f" {doc['across_by_splits']}" if doc["across_by_splits"] else ""),
            highlight=False,
        )
        for p in doc["duplicates"][:50]:
            why = (f"cosine {p['cosine']:.3f}, " if p["cosine"] is not None else "") + f"hash {p['hash_distance']}"
            out_console.print(
                f"{'LEAK ' if p['leak'] else '     '}{p['a']['name']} ({p['a']['split']})"
                f"  {p['b']['name']} ({p['b']['split']})  {why}",
                highlight=False,
                soft_wrap=True,
            )
        if doc["html"]:
            err_console.print(f"wrote {doc['html']}")
    if fail_on_leak and doc["across_splits"]:
        raise typer.Exit(1)
