"""``gigavision active regions``: the windows of big images an expert should label next.

``engine_predict`` joins the two stages the layering keeps apart (``infer`` and ``active`` may not import
each other): it runs ``infer.request``'s tiled prediction for ``active.regions.select_regions`` and hands back
each image's resolution, window side, foreground mask and predictions (with ``attributes.uncertainty``; the
per-window uncertainty of window classifiers from ``metrics.uncertainty``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from gigavision.cli.common import JsonOpt, WorkspaceOpt, err_console, open_ws, out_console, print_json, progress_bar

if TYPE_CHECKING:
    from gigavision.active.regions import ImagePredictions, Predict
    from gigavision.progress import Progress
    from gigavision.workspace import Workspace

CANDIDATE_SCORE = 0.05  # detections down to this score are weighed: a missed object often leaves a weak one
VIA = "gigavision active regions"


def engine_predict(
    ws: Workspace,
    *,
    min_score: float = CANDIDATE_SCORE,
    min_foreground: float = 0.05,
    runtime: str = "auto",
    batch: int = 16,
    progress: Progress | None = None,
) -> Predict:
    """A ``Predict`` for ``select_regions`` that runs the tiled engine over workspace images, background
    windows (less than ``min_foreground`` of the mask ingest stored) not run, detections kept down to
    ``min_score``."""
    from gigavision.active.regions import ImagePredictions
    from gigavision.infer.engine import model_resolution, tile_size
    from gigavision.infer.request import PredictRequest
    from gigavision.infer.run import foreground
    from gigavision.metrics.uncertainty import class_uncertainty

    def predict(
        model_ref: str, image_ids: Sequence[str], *, level: int | None, run: bool
    ) -> tuple[str, list[ImagePredictions]]:
        request = PredictRequest(
            model=model_ref,
            images=tuple(image_ids),
            runtime=runtime,
            level=level,
            batch=batch,
            tiled=True,
            skip_background=True,
            min_foreground=min_foreground,
            min_score=min_score,
            via=VIA,
        )
        prediction = request.resolve(ws)
        predictor = prediction.predictor()
        out: list[ImagePredictions] = []
        for image_id in image_ids:
            source = ws.open_source(image_id)
            prediction.plan(source)  # the level (or the model's resolution) must exist in the image
            res = model_resolution(predictor, source, prediction.options)
            out.append(
                ImagePredictions(
                    image_id=image_id,
                    width=source.width,
                    height=source.height,
                    level=res.level,
                    downsample=res.downsample,
                    tile=tile_size(predictor, prediction.options),
                    mask=foreground(ws, image_id, source),
                )
            )
        if not run:
            return prediction.info.id, out
        with tempfile.TemporaryDirectory(prefix=".regions-", dir=ws.root) as tmp:  # masks, heatmaps: not kept
            tiled = replace(request, out_dir=Path(tmp)).resolve(ws)
            results = tiled.predict_tiled(list(image_ids), progress)
        for item, result in zip(out, results, strict=True):
            item.annotations = result.annotations
            if result.window_boxes is not None and result.window_probs is not None:
                item.tiles = result.window_boxes
                item.tile_uncertainty = class_uncertainty(result.window_probs, prediction.options.uncertainty)
        return prediction.info.id, out

    return predict


def regions_cmd(
    model: Annotated[str, typer.Option("--model", "-m", help="Model id (or alias) whose uncertainty ranks windows.")],
    images: Annotated[list[str], typer.Argument(help="Workspace images (id, unique id prefix or unique name).")],
    budget: Annotated[
        int, typer.Option("--budget", "-n", help="How many windows to choose, across all the images.")
    ] = 20,
    window: Annotated[
        int | None,
        typer.Option(help="Window side in pixels at the resolution read (default: the model's input side)."),
    ] = None,
    strategy: Annotated[str, typer.Option(help="uncertainty, or random (the model is not run).")] = "uncertainty",
    aggregate: Annotated[
        str, typer.Option(help="A window's score from its predictions' uncertainty: max or sum.")
    ] = "max",
    level: Annotated[int | None, typer.Option(help="Pyramid level to read (default: the model's resolution).")] = None,
    min_foreground: Annotated[
        float, typer.Option(help="Foreground fraction (ingest's mask) below which a window is background.")
    ] = 0.05,
    spacing: Annotated[int, typer.Option(help="Keep chosen windows more than this many windows apart.")] = 0,
    min_score: Annotated[
        float, typer.Option(help="Detections down to this score are weighed (weak ones mark likely misses).")
    ] = CANDIDATE_SCORE,
    seed: Annotated[int, typer.Option(help="Seed of the random order (strategy random, and ties).")] = 0,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the windows without creating review tasks.")] = False,
    actor: Annotated[str, typer.Option("--as", help="Who creates the tasks (recorded).")] = "cli",
    runtime: Annotated[str, typer.Option(help="auto, torch or onnx.")] = "auto",
    workspace_opt: WorkspaceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Choose the windows of big images worth labelling next and create review tasks (reason "selected", the
    window as region) for them: the model runs tiled over each image, windows on background are skipped, the
    rest are ranked by the uncertainty of the predictions centred in them."""
    from gigavision.active.regions import select_regions

    with open_ws(workspace_opt) as ws, progress_bar("predicting", quiet=json_out) as advance:
        selection = select_regions(
            ws,
            model,
            images,
            budget,
            window,
            strategy,
            predict=engine_predict(
                ws, min_score=min_score, min_foreground=min_foreground, runtime=runtime, progress=advance
            ),
            level=level,
            aggregate=aggregate,
            min_foreground=min_foreground,
            spacing=spacing,
            seed=seed,
            create_tasks=not dry_run,
            actor=actor,
        )
    doc = selection.as_dict()
    if json_out:
        print_json(doc)
        return
    err_console.print(
        f"{len(selection.regions)} of {doc['candidates']} foreground windows ({selection.background} background"
        f" skipped), {selection.window} px at the model's resolution, by {selection.strategy}"
    )
    for r in selection.regions:
        what = f"{r.predictions} prediction(s)" + (f", most unsure: {r.label}" if r.label else "")
        out_console.print(
            f"{r.rank:>4}  {r.image_id[:12]}  {list(r.xyxy)}  score {r.score:.3f}  ({what})",
            highlight=False,
            soft_wrap=True,
        )
    if selection.tasks:
        err_console.print(f"created {selection.tasks} review task(s) in batch {selection.batch}")
