"""``gigavision index build|add|list|show|drop`` and ``gigavision search``: visual search over embeddings."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from gigavision.cli.common import JsonOpt, WorkspaceOpt, err_console, open_ws, out_console, print_json, progress_bar

index_app = typer.Typer(
    help="Embedding indexes of images or of their foreground regions, for visual search.", no_args_is_help=True
)

DaskOpt = Annotated[
    str | None,
    typer.Option(
        "--dask",
        help="Compute the vectors on Dask workers: tcp://scheduler:8786, or local[:N] worker processes here"
        " [default: the workspace's dask, else this process].",
    ),
]
RuntimeOpt = Annotated[
    str, typer.Option(help="auto, torch or onnx (classify/probe backbones need torch; embed runs on either).")
]


def _print_card(card: dict[str, Any]) -> None:
    what = "whole images" if card["mode"] == "image" else f"regions {card['regions']}"
    faiss = card["faiss"]
    how = faiss["kind"] + (f" (nlist {faiss['nlist']}, nprobe {faiss['nprobe']})" if faiss.get("nlist") else "")
    out_console.print(
        f"{card['name']}: {card['count']} vectors of {card['images']} image(s), {what}; model {card['model']}"
        f" ({card['model_task']}, {card['dim']}-d), {how}" + ("; follows ingest" if card["follow"] else ""),
        highlight=False,
        soft_wrap=True,
    )


def _report(doc: dict[str, Any], json_out: bool) -> None:
    if json_out:
        print_json(doc)
        return
    _print_card(doc)
    err_console.print(f"added {doc['added_images']} image(s)")
    for f in doc["failed"]:
        err_console.print(f"skipped {f['image'][:12]}: {f['error']}")


@index_app.command("build")
def build_cmd(
    name: Annotated[str, typer.Argument(help="Index name (A-Z a-z 0-9 _ . -).")],
    model: Annotated[str, typer.Option("--model", "-m", help="An embed, classify or probe model (id or alias).")],
    images: Annotated[
        list[str] | None,
        typer.Option("--images", help="Image filter key=value (image=GLOB, image_id=…, meta:KEY=…); repeatable."),
    ] = None,
    dataset: Annotated[str | None, typer.Option(help="Index the images of this dataset version (NAME@N).")] = None,
    regions: Annotated[
        str | None,
        typer.Option(
            help="Index a grid of foreground regions per image: tile=256,level=1 (or mpp=0.5), min_foreground=0.5;"
            " '' for the model's defaults. Without it: one vector per image."
        ),
    ] = None,
    follow: Annotated[bool, typer.Option("--follow", help="Add newly ingested images by itself (a job).")] = False,
    runtime: RuntimeOpt = "auto",
    dask: DaskOpt = None,
    actor: Annotated[str, typer.Option("--as", help="Who builds it (recorded).")] = "cli",
    workspace_opt: WorkspaceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Embed images (or their foreground regions) with a model into a new FAISS index: exact search up to
    20,000 vectors, IVF beyond with its probes tuned on the data."""
    from gigavision.search.build import RegionSpec, build_index

    spec = RegionSpec.parse(regions) if regions is not None else None
    with open_ws(workspace_opt) as ws, progress_bar("indexing", quiet=json_out) as advance:
        doc = build_index(
            ws,
            name,
            model,
            images=images or [],
            dataset=dataset,
            regions=spec,
            follow=follow,
            runtime=runtime,
            dask=dask,
            actor=actor,
            progress=advance,
        )
    _report(doc, json_out)


@index_app.command("add")
def add_cmd(
    name: Annotated[str, typer.Argument(help="Index name.")],
    images: Annotated[
        list[str] | None,
        typer.Argument(help="Workspace images (id, prefix or name); default: every new image the index selects."),
    ] = None,
    runtime: RuntimeOpt = "auto",
    dask: DaskOpt = None,
    workspace_opt: WorkspaceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Embed images not yet in the index and append them (images already in it are left as they are)."""
    from gigavision.search.build import add_images

    with open_ws(workspace_opt) as ws, progress_bar("indexing", quiet=json_out) as advance:
        ids = list(ws.find_images(images).values()) if images else None
        doc = add_images(ws, name, ids, runtime=runtime, dask=dask, progress=advance)
    _report(doc, json_out)


@index_app.command("list")
def list_cmd(workspace_opt: WorkspaceOpt = None, json_out: JsonOpt = False) -> None:
    """The workspace's indexes."""
    from gigavision.search.store import list_cards

    with open_ws(workspace_opt) as ws:
        cards = [c.as_dict() for c in list_cards(ws)]
    if json_out:
        print_json(cards)
        return
    if not cards:
        err_console.print("no index yet: gigavision index build NAME --model MODEL")
    for card in cards:
        _print_card(card)


@index_app.command("show")
def show_cmd(
    name: Annotated[str, typer.Argument(help="Index name.")],
    workspace_opt: WorkspaceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """One index's card: model, what is indexed, FAISS parameters, counts."""
    from gigavision.search.store import get_card

    with open_ws(workspace_opt) as ws:
        card = get_card(ws, name).as_dict()
    if json_out:
        print_json(card)
    else:
        _print_card(card)


@index_app.command("drop")
def drop_cmd(
    name: Annotated[str, typer.Argument(help="Index name.")],
    workspace_opt: WorkspaceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Delete an index (the images and models are untouched)."""
    from gigavision.search.store import drop

    with open_ws(workspace_opt) as ws:
        drop(ws, name)
    if json_out:
        print_json({"dropped": name})
    else:
        err_console.print(f"dropped index {name}")


def search_cmd(
    index: Annotated[str, typer.Argument(help="Index name.")],
    image: Annotated[str, typer.Argument(help="An image file, or a workspace image (id, prefix or name).")],
    region: Annotated[
        str | None, typer.Option(help="Search with this region of the image: x0,y0,x1,y1 in level-0 pixels.")
    ] = None,
    k: Annotated[int, typer.Option("-k", help="How many results.")] = 20,
    label: Annotated[
        list[str] | None, typer.Option(help="Only images holding an annotation of this label (repeatable).")
    ] = None,
    dataset: Annotated[str | None, typer.Option(help="Only images of this dataset version (NAME@N).")] = None,
    meta: Annotated[list[str] | None, typer.Option(help="Only images whose metadata KEY=VALUE (repeatable).")] = None,
    include_self: Annotated[
        bool, typer.Option("--include-self", help="Let the query image's own entries be results.")
    ] = False,
    runtime: RuntimeOpt = "auto",
    workspace_opt: WorkspaceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """The index entries (images, or regions of images) most like an image or a region of one."""
    from gigavision.errors import InvalidInput
    from gigavision.search.query import search

    pairs: dict[str, str] = {}
    for text in meta or []:
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise InvalidInput(f"--meta {text!r} must be KEY=VALUE")
        pairs[key] = value
    with open_ws(workspace_opt) as ws:
        result = search(
            ws,
            index,
            image=image,  # a file already ingested is recognised as that workspace image
            region=region,
            k=k,
            labels=label or [],
            dataset=dataset,
            meta=pairs,
            include_self=include_self,
            runtime=runtime,
        ).as_dict()
    if json_out:
        print_json(result)
        return
    err_console.print(f"{len(result['results'])} of {result['searched']} entries of index {index}")
    for hit in result["results"]:
        out_console.print(
            f"{hit['rank']:>4}  {hit['score']:.4f}  {hit['image_id'][:12]}  {hit['name']}  {hit['region']}",
            highlight=False,
            soft_wrap=True,
        )
