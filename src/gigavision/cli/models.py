"""``gigavision train | sweep | evaluate | predict | export-model | models list|show|compare|remove``.

Recipe precedence for ``train``/``sweep``: the recipe file, then ``--set FIELD=VALUE`` (any field, dotted for
nested ones), then the named options (``--epochs`` …), which win. Torch is imported only inside the commands.
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Column, Table

from gigavision.cli.common import JsonOpt, WorkspaceOpt, err_console, open_ws, out_console, print_json, progress_bar
from gigavision.cli.pipelines import pipeline_app
from gigavision.errors import GigavisionError, InvalidInput
from gigavision.extras import require

if TYPE_CHECKING:
    from gigavision.models.store import ModelInfo
    from gigavision.workspace import Workspace

models_app = typer.Typer(help="Trained models: list, show, compare, remove.", no_args_is_help=True)

DatasetOpt = Annotated[str | None, typer.Option("--dataset", "-d", help="Dataset version NAME@N (NAME: latest).")]
ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="Architecture (a timm name for classify).")]
RecipeOpt = Annotated[Path | None, typer.Option("--recipe", "-r", help="Recipe file (.toml, .yaml or .json).")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="FIELD=VALUE for any recipe field, e.g. augment.vflip=true (repeatable)."),
]


def _quiet_lightning() -> None:
    """Lightning's info lines and library deprecation warnings would bury the one-line result on stderr."""
    import lightning.pytorch  # noqa: F401 - configures its loggers on import; quiet them after that

    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"lightning\..*")
    warnings.filterwarnings("ignore", category=FutureWarning)


def _overrides(
    task: str | None,
    dataset: str | None,
    sets: list[str] | None,
    named: dict[str, Any],
) -> dict[str, Any]:
    """Dotted recipe overrides: ``--set`` first, then the named options (None: not given)."""
    from gigavision.models.task import TASKS
    from gigavision.train.recipe import parse_assignment

    if task is not None and task not in TASKS:
        raise InvalidInput(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    out: dict[str, Any] = {}
    for text in sets or []:
        key, value = parse_assignment(text)
        out[key] = value
    out.update({"task": task, "dataset": dataset})
    out.update({k: v for k, v in named.items() if v is not None})
    return {k: v for k, v in out.items() if v is not None}


def _recipe_overrides(
    model: str | None,
    epochs: int | None,
    batch_size: int | None,
    lr: float | None,
    image_size: int | None,
    seed: int | None,
    devices: int | None,
    pretrained: bool | None,
    weights: Path | None,
    patch_size: int | None,
    level: int | None,
    mpp: float | None,
) -> dict[str, Any]:
    if (level is not None or mpp is not None) and patch_size is None:
        raise InvalidInput("--level and --mpp choose the resolution of patches: give --patch-size too")
    if weights is not None and not weights.is_file():
        raise InvalidInput(f"--weights {weights}: no such file")
    return {
        "arch": model,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "image_size": image_size,
        "seed": seed,
        "devices": devices,
        "pretrained": pretrained,
        "weights": str(weights) if weights is not None else None,
        "patch.size": patch_size,
        "patch.level": level,
        "patch.mpp": mpp,
    }


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.4f}"
    return "–" if value is None else str(value)


def _param(value: Any) -> str:
    """A searched value: 4 significant digits (learning rates are small)."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _print_model(info: ModelInfo) -> None:
    headline = info.headline
    value = info.metrics.get(headline) if headline else None
    out_console.print(f"model {info.id}  ({info.task}, {info.arch}, trained on {info.dataset})", highlight=False)
    out_console.print(f"path  {info.path}", highlight=False, soft_wrap=True)
    if headline:
        split = info.card.evaluated_on or "test"
        out_console.print(f"{headline} on {split}: {_fmt(value)}", highlight=False)
    for key, val in sorted(info.metrics.items()):
        if key not in ("headline", "split") and key != headline:
            out_console.print(f"  {key}: {_fmt(val)}", highlight=False)


# -- train ---------------------------------------------------------------------------------------------------
def train_cmd(
    task: Annotated[str | None, typer.Argument(help="classify, detect, segment, embed or probe.")] = None,
    dataset: DatasetOpt = None,
    model: ModelOpt = None,
    recipe: RecipeOpt = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Samples per step.")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate.")] = None,
    image_size: Annotated[int | None, typer.Option(help="Whole images are letterboxed to this square.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (same seed, same model).")] = None,
    devices: Annotated[int | None, typer.Option(help="GPUs (DDP when > 1).")] = None,
    pretrained: Annotated[
        bool | None, typer.Option("--pretrained/--no-pretrained", help="Start from cached pretrained weights.")
    ] = None,
    weights: Annotated[Path | None, typer.Option(help="Initial weights file (safetensors or weights_only).")] = None,
    patch_size: Annotated[int | None, typer.Option(help="Train on patches of this side from the pyramid.")] = None,
    level: Annotated[int | None, typer.Option(help="Pyramid level of the patches.")] = None,
    mpp: Annotated[float | None, typer.Option(help="Microns per patch pixel (instead of --level).")] = None,
    set_: SetOpt = None,
    model_id: Annotated[str | None, typer.Option("--id", help="Model id (default <dataset>-<task>-<k>).")] = None,
    resume: Annotated[str | None, typer.Option(help="Continue the interrupted run with this id.")] = None,
    workspace_opt: WorkspaceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Train a model on a dataset version; prints its id, folder and test metrics."""
    require("train", feature="gigavision train")
    from gigavision.train.jobs import saved_recipe
    from gigavision.train.recipe import load_recipe
    from gigavision.train.trainer import train

    named = _recipe_overrides(
        model, epochs, batch_size, lr, image_size, seed, devices, pretrained, weights, patch_size, level, mpp
    )
    overrides = _overrides(task, dataset, set_, named)
    with open_ws(workspace_opt) as ws:
        if resume is not None:
            given = sorted(k for k in overrides if k != "task") + (["--recipe"] if recipe else [])
            if given or model_id:
                raise InvalidInput(
                    f"--resume continues the run with its saved recipe; drop {', '.join(given) or '--id'}"
                )
            resolved = saved_recipe(ws, resume)
            if task is not None and task != resolved.task:
                raise InvalidInput(f"run {resume} trains {resolved.task}, not {task}")
        else:
            if task is None and recipe is None:
                raise InvalidInput("name the task: gigavision train classify --dataset NAME@N")
            resolved = load_recipe(recipe, overrides)
        _quiet_lightning()
        show_bar = err_console.is_terminal and not json_out
        info = train(ws, resolved, model_id=model_id, resume=resume, show_bar=show_bar)
    if json_out:
        print_json({**info.as_dict(), "path": str(info.path)})
        return
    _print_model(info)


def sweep_cmd(
    task: Annotated[str, typer.Argument(help="classify, detect, segment, embed or probe.")],
    dataset: DatasetOpt = None,
    space: Annotated[
        list[str] | None,
        typer.Option("--space", help="FIELD=low:high[:log] or FIELD=a,b,c (repeatable)."),
    ] = None,
    trials: Annotated[int, typer.Option(min=1, max=10_000, help="Trainings to run.")] = 10,
    epochs: Annotated[int | None, typer.Option(help="Epochs per trial (a small budget; default 2).")] = None,
    model: ModelOpt = None,
    recipe: RecipeOpt = None,
    image_size: Annotated[int | None, typer.Option(help="Whole images are letterboxed to this square.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Samples per step.")] = None,
    set_: SetOpt = None,
    seed: Annotated[int, typer.Option(help="Sampler seed (same seed, same proposals).")] = 0,
    keep_all: Annotated[bool, typer.Option("--keep-all", help="Keep every trial's model, not only the best.")] = False,
    workspace_opt: WorkspaceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Search recipe fields with Optuna: each trial trains a model; prints the best trial and its model."""
    require("train", feature="gigavision sweep")
    from gigavision.train.recipe import load_recipe
    from gigavision.train.sweep import parse_space, run_sweep

    spaces = [parse_space(s) for s in space or []]
    named = {"arch": model, "image_size": image_size, "batch_size": batch_size}
    overrides = _overrides(task, dataset, set_, named)
    if epochs is not None or recipe is None:
        overrides["epochs"] = epochs if epochs is not None else 2
    base = load_recipe(recipe, overrides).resolved()
    _quiet_lightning()
    with open_ws(workspace_opt) as ws, progress_bar(f"sweep {task}", quiet=json_out) as update:
        summary = run_sweep(ws, base, spaces, trials, seed=seed, keep_all=keep_all, progress=update)
    if json_out:
        print_json(summary)
        return
    table = Table("trial", *[s.field for s in spaces], "metric", "value", "model", title=summary["study"])
    best = summary["best"]
    for t in summary["trials"]:
        mark = " (best)" if t["trial"] == best["trial"] else ""
        model_cell = "removed" if t.get("removed") else t["model"]
        table.add_row(
            str(t["trial"]),
            *[_param(t["params"][s.field]) for s in spaces],
            f"{t['metric']} ({t['split']})",
            _fmt(t["value"]) + mark,
            model_cell,
        )
    out_console.print(table)
    params = ", ".join(f"{k}={_param(v)}" for k, v in best["params"].items())
    out_console.print(
        f"best: trial {best['trial']} ({params}) {best['metric']} {_fmt(best['value'])} → model {best['model']}",
        highlight=False,
    )


# -- evaluate / predict / export -----------------------------------------------------------------------------
def evaluate_cmd(
    model_id: Annotated[str, typer.Argument(help="Model id.")],
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Dataset version NAME@N.")],
    split: Annotated[str, typer.Option(help="Split to score.")] = "test",
    out: Annotated[
        Path | None, typer.Option(help="Folder for metrics.json + report.html (default <ws>/evaluations/…).")
    ] = None,
    variant: Annotated[
        str | None,
        typer.Option(
            help="Score this ONNX variant (int8, from export-model --quantize int8) against model.onnx on"
            " onnxruntime: metric delta, file size and CPU images/s of both."
        ),
    ] = None,
    workspace_opt: WorkspaceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Score a model on a dataset version's split; writes metrics.json and report.html (never into the model).
    A pipeline is scored per stage and end to end (a hit needs the right box and the right stage answers)."""
    require("train", feature="gigavision evaluate")
    from gigavision.models.store import PIPELINE, get_model
    from gigavision.train.assess import default_out, evaluate_model

    with open_ws(workspace_opt) as ws, progress_bar(f"evaluate {model_id}", quiet=json_out) as update:
        info = get_model(ws, model_id)
        from gigavision.datasets.versions import open_version

        ref = open_version(ws, dataset).ref
        folder = out if out is not None else default_out(ws, info.id, ref, split)
        if info.task == PIPELINE and variant is not None:
            raise InvalidInput(f"model {info.id} is a pipeline: --variant applies to its stage models")
        if info.task == PIPELINE:
            from gigavision.infer.pipeline_eval import evaluate_pipeline

            result = evaluate_pipeline(ws, info, ref, split, out=folder, progress=update)
        elif variant is not None:
            from gigavision.train.assess import compare_variant

            result = compare_variant(ws, info, ref, split, variant, out=folder, progress=update).as_dict()
        else:
            result = evaluate_model(ws, info, ref, split, out=folder, progress=update)
    if json_out:
        print_json(result)
        return
    metrics = result["metrics"]
    headline = result["headline"]
    out_console.print(
        f"{info.id} on {result['dataset']} ({split}): {headline} {_fmt(metrics.get(headline))}", highlight=False
    )
    for key, val in sorted(metrics.items()):
        if key not in ("headline", "split", headline) and not isinstance(val, list | dict):
            out_console.print(f"  {key}: {_fmt(val)}", highlight=False)
    if variant is not None:
        _print_variant(result)
    report = Path(result["out"]) / "report.html"
    shown = report if report.is_file() else Path(result["out"]) / "metrics.json"
    out_console.print(f"{shown.stem}: {shown}", highlight=False, soft_wrap=True)


def _print_variant(doc: dict[str, Any]) -> None:
    """The lines of a ``VariantComparison`` (evaluate --variant, models compare --variant)."""
    name, headline, file = doc["variant"], doc["headline"], doc["file"]
    points = doc["headline_delta_points"]
    delta = "" if points is None else f" ({points:+.2f} points)"
    mb = 1024 * 1024
    out_console.print(
        f"{name} vs fp32: {headline} {_fmt(doc['metrics'].get(headline))} vs {_fmt(doc['fp32_metrics'].get(headline))}"
        f"{delta}; {file['bytes'] / mb:.2f} MB vs {file['fp32_bytes'] / mb:.2f} MB ({file['size_ratio']:.2f}×);"
        f" {doc['images_per_s']:.0f} vs {doc['fp32_images_per_s']:.0f} images/s on CPU ({doc['speedup']:.2f}×)",
        highlight=False,
        soft_wrap=True,
    )
    if file.get("method"):
        out_console.print(f"{name}: {file['method']} — {file.get('reason', '')}", highlight=False, soft_wrap=True)


def predict_cmd(
    model_id: Annotated[str, typer.Argument(help="Model id, or an alias (production) naming one.")],
    images: Annotated[
        list[str], typer.Argument(help="Image files and/or workspace images (id, unique id prefix or unique name).")
    ],
    runtime: Annotated[
        str, typer.Option(help="auto (onnx when the model has model.onnx and onnxruntime is installed), torch or onnx.")
    ] = "auto",
    store_: Annotated[
        bool, typer.Option("--store", help="Add the predictions to the workspace (source model:<id>, proposed).")
    ] = False,
    out: Annotated[Path | None, typer.Option(help="Also write the JSON document to this file.")] = None,
    side: Annotated[
        list[str] | None,
        typer.Option(
            "--side",
            help="KEY=NUMBER side feature for a model trained with side features (default: image metadata).",
        ),
    ] = None,
    tile: Annotated[
        int | None,
        typer.Option(help="Tiled inference: window side in pixels at the level read (default: the model's input)."),
    ] = None,
    overlap: Annotated[
        int | None,
        typer.Option(help="Tiled: overlap between windows in pixels (default: 64, at most a quarter of the tile)."),
    ] = None,
    level: Annotated[int | None, typer.Option(help="Tiled: pyramid level to read.")] = None,
    mpp: Annotated[
        float | None, typer.Option(help="Tiled: microns per pixel to read at (resized if between levels).")
    ] = None,
    batch: Annotated[int, typer.Option(help="Windows per model batch.")] = 16,
    skip_background: Annotated[
        bool, typer.Option("--skip-background", help="Tiled: do not run windows on empty background.")
    ] = False,
    min_foreground: Annotated[
        float, typer.Option(help="Tiled: foreground fraction below which a window is background.")
    ] = 0.05,
    merge: Annotated[str, typer.Option(help="Tiled detect: nms, soft_nms, wbf, ios or none.")] = "nms",
    merge_threshold: Annotated[float, typer.Option(help="Tiled detect: IoU (IoS for ios) of one object.")] = 0.5,
    min_score: Annotated[float, typer.Option(help="Tiled detect: keep detections scoring at least this.")] = 0.3,
    on_error: Annotated[
        str, typer.Option(help="Tiled: a window that fails to decode: fail, or skip (reported as a failed region).")
    ] = "fail",
    out_dir: Annotated[
        Path | None,
        typer.Option(help="Tiled: folder for masks and heatmaps (default: <workspace>/predictions/<model>/<image>)."),
    ] = None,
    dask: Annotated[
        str | None,
        typer.Option(
            "--dask",
            help="Tiled: spread images (and regions of big detect images) over Dask workers:"
            " tcp://scheduler:8786, or local[:N] worker processes here [N: 2; default: the workspace's dask].",
        ),
    ] = None,
    zoom_in: Annotated[
        str | None,
        typer.Option(
            "--zoom-in",
            help="Tiled: a coarse pass first, full resolution only where it points: threshold=0.5 and/or topk=4,"
            " optionally model=ID (a coarse classify model), level=N, factor=4.",
        ),
    ] = None,
    task: Annotated[
        str | None, typer.Option(help="The task the model must have (detect, segment, classify, ...): a check.")
    ] = None,
    variant: Annotated[
        str,
        typer.Option(help="fp32 (model.onnx) or int8 (model.int8.onnx from export-model --quantize int8), on onnx."),
    ] = "fp32",
    workspace_opt: WorkspaceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Predict images. Small images are predicted whole; with tiling options (or a model trained on
    patches, or an image too big to predict whole) any image, gigapixel included, is predicted window by
    window in bounded memory. The runtime is ONNX when the model has model.onnx, unless --runtime torch."""
    from gigavision.infer.request import PredictRequest
    from gigavision.models.store import write_json

    request = PredictRequest(
        model=model_id,
        images=tuple(images),
        runtime=runtime,
        task=task,
        tile=tile,
        overlap=overlap,
        level=level,
        mpp=mpp,
        batch=batch,
        skip_background=skip_background,
        min_foreground=min_foreground,
        merge=merge,
        merge_threshold=merge_threshold,
        min_score=min_score,
        on_error=on_error,
        side=_side_values(side or []),
        zoom=zoom_in,
        dask=dask,
        workspace_dask=True,
        store=store_,
        out_dir=out_dir,
        variant=variant,
    )
    request.require_extras()  # before the workspace is opened: nothing written when an extra is missing
    with open_ws(workspace_opt) as ws:
        prediction = request.resolve(ws)
        with progress_bar("predicting", quiet=json_out) as advance:
            outcome = prediction.predict(progress=advance)
    doc = outcome.as_dict()
    if out is not None:
        write_json(out, doc)
    if json_out:
        print_json(doc)
        return
    for item in outcome.items:
        _print_item(item)
    if outcome.stored is not None:
        err_console.print(f"stored {outcome.stored['added']} annotation(s) as {outcome.stored['source']} (proposed)")


def _summary(ann: Any) -> str:
    if ann.kind.size and (ann.kind == "tag").all():
        return ", ".join(f"{lab} {s:.3f}" for lab, s in zip(ann.label, ann.score, strict=True))
    counts: dict[str, int] = {}
    for lab in ann.label:
        counts[str(lab)] = counts.get(str(lab), 0) + 1
    return ", ".join(f"{n} {lab}" for lab, n in sorted(counts.items())) or "nothing"


def _print_item(r: Any) -> None:
    """One line per image: a whole-image ``PredictItem``, or a tiled ``InferResult`` with its windows."""
    if not hasattr(r, "tiles_total"):
        out_console.print(f"{r.input}: {_summary(r.annotations)}", highlight=False, soft_wrap=True)
        return
    tiles = f"{r.tiles_run}/{r.tiles_total} windows run, {r.tiles_skipped} background"
    if r.zoom:
        tiles += f", zoom-in ran {r.zoom['selected']} of {r.zoom['exhaustive']}"
    failed = f", {len(r.failed_regions)} failed" if r.failed_regions else ""
    out_console.print(
        f"{r.input}: {_summary(r.annotations)} ({tiles}{failed}; {r.seconds:.1f} s)",
        highlight=False,
        soft_wrap=True,
    )
    for name, path in r.outputs.items():
        out_console.print(f"  {name}: {path}", highlight=False, soft_wrap=True)


def _side_values(pairs: list[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        try:
            value = float(raw)
        except ValueError:
            value = float("nan")
        if not sep or not key or value != value:
            raise InvalidInput(f"--side {pair!r}: expected KEY=NUMBER (e.g. --side md=-2.5)")
        out[key] = value
    return out


def export_model_cmd(
    model_id: Annotated[str, typer.Argument(help="Model id.")],
    format_: Annotated[str, typer.Option("--format", help="Export format (onnx).")] = "onnx",
    out: Annotated[Path | None, typer.Option(help="Copy the exported file here.")] = None,
    quantize: Annotated[
        str | None,
        typer.Option(
            help="int8: also write model.int8.onnx (static, calibrated on the model's training split;"
            " dynamic where static fails or loses too much) and record it in model.json."
        ),
    ] = None,
    dynamic: Annotated[
        bool,
        typer.Option("--dynamic", help="With --quantize: dynamic quantisation (no calibration data needed)."),
    ] = False,
    calibration_samples: Annotated[
        int | None,
        typer.Option(min=1, help="With --quantize: training-split inputs to calibrate activation ranges on [128]."),
    ] = None,
    workspace_opt: WorkspaceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Export a model for deployment (ONNX for onnxruntime; rebuilt from the checkpoint if missing); with
    --quantize int8, an int8 copy beside it (predict/evaluate --variant int8)."""
    from gigavision.models import store

    if format_ != "onnx":
        raise InvalidInput(f"--format {format_!r} is not supported; supported: onnx")
    if quantize is not None and quantize != "int8":
        raise InvalidInput(f"--quantize {quantize!r} is not supported; supported: int8")
    if dynamic and quantize is None:
        raise InvalidInput("--dynamic chooses how --quantize int8 quantises: give --quantize int8 too")
    if quantize is not None:
        require("train", "torch", "onnx", "onnxruntime", feature="gigavision export-model --quantize")
    with open_ws(workspace_opt) as ws:
        info = store.get_model(ws, model_id)
        if info.task == store.PIPELINE:
            raise InvalidInput(
                f"model {info.id} is a pipeline: its folder is deployable as it is (each stage's {store.ONNX_FILE}"
                f" is in {info.path / store.STAGES_DIR}/<stage>/); export its stage models instead"
            )
        path = info.path / store.ONNX_FILE
        exported = not path.is_file()
        diff = None
        if exported:
            require("train", "torch", "onnx", "onnxscript", feature="gigavision export-model")
            from gigavision.models.onnx_export import export_onnx

            task, net = info.load_network()
            diff = export_onnx(task, net, path, info.input.size)
        record = None
        if quantize is not None:
            from gigavision.train.quantize import quantize_model

            samples = {} if calibration_samples is None else {"samples": calibration_samples}
            info = quantize_model(ws, info, dynamic=dynamic, **samples)
            record = info.card.variants[quantize]
            path = info.path / record.file
        target = path if out is None else store.copy_file(path, out)
    result: dict[str, Any] = {
        "model": info.id,
        "format": "onnx",
        "path": str(target),
        "re_exported": exported,
        "max_abs_diff": diff,
    }
    if record is not None:
        result.update(variant=quantize, **record.model_dump(mode="json"), size_ratio=record.bytes / record.fp32_bytes)
    if json_out:
        print_json(result)
        return
    note = f" (re-exported, max |onnx − torch| {diff:.2g})" if exported and diff is not None else ""
    out_console.print(f"{target}{note}", highlight=False, soft_wrap=True)
    if record is not None:
        mb = 1024 * 1024
        out_console.print(
            f"{quantize}: {record.method}, {record.bytes / mb:.2f} MB ({record.bytes / record.fp32_bytes:.2f}× fp32)"
            f" — {record.reason}",
            highlight=False,
            soft_wrap=True,
        )


# -- models list / show / compare / remove -------------------------------------------------------------------
@models_app.command("list")
def list_cmd(workspace_opt: WorkspaceOpt = None, json_out: JsonOpt = False) -> None:
    """Published models, newest first, with the aliases serving them."""
    from gigavision.models.aliases import aliases_by_model
    from gigavision.models.store import list_models

    with open_ws(workspace_opt) as ws:
        infos = list_models(ws)
        served = aliases_by_model(ws)
    if json_out:
        items = [{**m.as_dict(), "path": str(m.path), "aliases": served.get(m.id, [])} for m in infos]
        print_json({"items": items, "count": len(infos)})
        return
    table = Table(Column("id", no_wrap=True), "task", "arch", "dataset", "metric", "value", "created", "aliases")
    for m in infos:
        value = m.metrics.get(m.headline) if m.headline else None
        row = (m.id, m.task, m.arch, m.dataset, m.headline or "–", _fmt(value), m.created_at[:19])
        table.add_row(*row, ", ".join(served.get(m.id, [])))
    out_console.print(table)
    err_console.print(f"{len(infos)} model(s)")


@models_app.command("show")
def show_cmd(
    model_id: Annotated[str, typer.Argument(help="Model id.")],
    workspace_opt: WorkspaceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """A model: task, architecture, classes, input, lineage (aliases -> model -> dataset version), metrics, files."""
    from gigavision.models.aliases import lineage, resolve
    from gigavision.models.store import get_model

    with open_ws(workspace_opt) as ws:
        info = get_model(ws, resolve(ws, model_id))
        links = lineage(ws, info.id, labellers=True)
    if json_out:
        print_json({**info.as_dict(), "path": str(info.path), "lineage": links})
        return
    _print_model(info)
    ds = links["dataset"]
    made = (
        f" by {ds['created_by']}, {ds['images']} images, {ds['annotations']} annotations" if ds["exists"] else " (gone)"
    )
    served = ", ".join(links["aliases"]) or "no alias"
    out_console.print(f"lineage: {served} -> {info.id} -> {ds['ref']}{made}", highlight=False, soft_wrap=True)
    if ds.get("labels"):
        who = ", ".join(f"{src} {n}" for src, n in list(ds["labels"]["by_source"].items())[:10]) or "none"
        part = "" if ds["labels"]["complete"] else f" (first {ds['labels']['images_read']} images)"
        out_console.print(f"labels by source{part}: {who}", highlight=False, soft_wrap=True)
    out_console.print(f"classes ({len(info.classes)}): {', '.join(info.classes)}", highlight=False, soft_wrap=True)
    patch = info.input.patch.model_dump() if info.input.patch is not None else "none"
    out_console.print(f"input: {info.input.size}px, patch {patch}", highlight=False, soft_wrap=True)
    out_console.print(f"files: {', '.join(info.as_dict()['files'])}", highlight=False, soft_wrap=True)


def _scores(ws: Workspace, info: ModelInfo, dataset: str | None, split: str) -> tuple[dict[str, Any], str, str]:
    """(metrics, dataset ref, split) of ``info``: stored ones when they are on that data, else evaluated now."""
    from gigavision.train.assess import evaluate_model, evaluated_on

    stored_ref, stored_split = evaluated_on(info)
    if dataset is None or (dataset == stored_ref and split == stored_split):
        return dict(info.metrics), stored_ref, str(stored_split)
    require("train", feature="gigavision models compare --dataset")
    from gigavision.models.store import PIPELINE

    if info.task == PIPELINE:
        from gigavision.infer.pipeline_eval import evaluate_pipeline

        result = evaluate_pipeline(ws, info, dataset, split)
    else:
        result = evaluate_model(ws, info, dataset, split)
    return dict(result["metrics"]), result["dataset"], split


@models_app.command("compare")
def compare_cmd(
    a: Annotated[str, typer.Argument(help="First model id.")],
    b: Annotated[str | None, typer.Argument(help="Second model id (none with --variant).")] = None,
    dataset: Annotated[
        str | None, typer.Option("--dataset", "-d", help="Score both on this version NAME@N (when not already).")
    ] = None,
    split: Annotated[str, typer.Option(help="Split to score with --dataset.")] = "test",
    variant: Annotated[
        str | None,
        typer.Option(
            help="Compare model A's ONNX variant (int8) with its model.onnx: metrics and their delta, file size,"
            " CPU images/s (on --dataset, default the version it was trained on)."
        ),
    ] = None,
    workspace_opt: WorkspaceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Side by side: headline and metrics of two models, and whether the numbers are comparable; or, with
    --variant int8, one model's int8 file against its fp32 one."""
    from gigavision.datasets.versions import open_version
    from gigavision.models.store import get_model

    if variant is not None:
        _compare_variant(a, b, dataset, split, variant, workspace_opt, json_out)
        return
    if b is None:
        raise InvalidInput("name two models to compare (or one model and --variant int8)")
    with open_ws(workspace_opt) as ws:
        infos = [get_model(ws, a), get_model(ws, b)]
        ref = open_version(ws, dataset).ref if dataset is not None else None
        scored = [_scores(ws, info, ref, split) for info in infos]
    (ma, da, sa), (mb, db, sb) = scored
    same = (da, sa) == (db, sb)
    headline = infos[0].headline if infos[0].headline == infos[1].headline else None
    va, vb = (ma.get(headline), mb.get(headline)) if headline else (None, None)
    better = None
    if same and isinstance(va, int | float) and isinstance(vb, int | float) and va != vb:
        better = infos[0].id if va > vb else infos[1].id
    keys = [k for k in dict.fromkeys([*ma, *mb]) if k not in ("headline", "split")]
    rows = [
        {"metric": k, "values": [ma.get(k), mb.get(k)]}
        for k in keys
        if not isinstance(ma.get(k, mb.get(k)), list | dict)
    ]
    note = (
        f"both evaluated on {da} ({sa})"
        if same
        else f"not comparable: {a} on {da} ({sa}), {b} on {db} ({sb}); pass --dataset NAME@N to score both"
    )
    doc = {
        "models": [m.as_dict() for m in infos],
        "evaluated_on": [{"dataset": da, "split": sa}, {"dataset": db, "split": sb}],
        "same_data": same,
        "headline": headline,
        "better": better,
        "metrics": rows,
        "note": note,
    }
    if json_out:
        print_json(doc)
        return
    table = Table("", a, b)
    table.add_row("task / arch", f"{infos[0].task} / {infos[0].arch}", f"{infos[1].task} / {infos[1].arch}")
    table.add_row("evaluated on", f"{da} ({sa})", f"{db} ({sb})")
    for row in rows:
        metric = str(row["metric"])
        values = list(row["values"])
        table.add_row(f"{metric} (headline)" if metric == headline else metric, _fmt(values[0]), _fmt(values[1]))
    out_console.print(table)
    out_console.print(note + (f"; better {headline}: {better}" if better else ""), highlight=False)


def _compare_variant(
    a: str, b: str | None, dataset: str | None, split: str, variant: str, workspace: Path | None, json_out: bool
) -> None:
    """``models compare ID --variant int8``: the variant against fp32 on one split (``train.assess``)."""
    require("train", feature="gigavision models compare --variant")
    from gigavision.datasets.versions import open_version
    from gigavision.models.store import get_model
    from gigavision.train.assess import compare_variant

    if b is not None and b != a:
        raise InvalidInput(f"--variant compares one model's files: name one model, not {a} and {b}")
    with open_ws(workspace) as ws, progress_bar(f"compare {a} {variant} vs fp32", quiet=json_out) as update:
        info = get_model(ws, a)
        ref = open_version(ws, dataset if dataset is not None else info.dataset).ref
        doc = compare_variant(ws, info, ref, split, variant, progress=update).as_dict()
    if json_out:
        print_json(doc)
        return
    table = Table("", "fp32", variant, "delta")
    for key, value in doc["metrics"].items():
        ref_value = doc["fp32_metrics"].get(key)
        if key in ("headline", "split") or isinstance(value, list | dict):
            continue
        shown = f"{key} (headline)" if key == doc["headline"] else key
        table.add_row(shown, _fmt(ref_value), _fmt(value), _fmt(doc["delta"].get(key)))
    out_console.print(table)
    _print_variant(doc)


@models_app.command("remove")
def remove_cmd(
    model_id: Annotated[str, typer.Argument(help="Model id.")],
    workspace_opt: WorkspaceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Delete a model folder (checkpoint, ONNX, report); refused while an alias serves it."""
    from gigavision.models.aliases import check_unserved
    from gigavision.models.store import remove_model

    with open_ws(workspace_opt) as ws:
        check_unserved(ws, model_id)
        remove_model(ws, model_id)
    if json_out:
        print_json({"removed": model_id})
        return
    err_console.print(f"removed model {model_id}")


@models_app.command("monitor")
def monitor_cmd(
    model_id: Annotated[str, typer.Argument(help="Model id or alias.")],
    workspace_opt: WorkspaceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Production metrics from the review answers: audit error rate (95 % interval), precision by score band,
    backlog (docs/review.md)."""
    from gigavision.active.monitor import monitor

    with open_ws(workspace_opt) as ws:
        doc = monitor(ws, model_id)
    if json_out:
        print_json(doc)
        return
    audit = doc["audit"]
    rate = "n/a" if audit["error_rate"] is None else f"{audit['error_rate']:.3f}"
    ci = "" if audit["ci95"] is None else f" (95 % CI {audit['ci95'][0]:.3f}-{audit['ci95'][1]:.3f})"
    out_console.print(
        f"{doc['model_id']}: {doc['predictions_routed']} routed, {doc['auto_accepted']} auto-accepted, "
        f"{doc['sent_to_review']['uncertain']} uncertain + {doc['sent_to_review']['audit']} audit to review, "
        f"{doc['answered']} answered, backlog {doc['backlog']}",
        highlight=False,
    )
    out_console.print(f"audit: {audit['errors']} errors in {audit['n']}: rate {rate}{ci}", highlight=False)
    table = Table("score band", "answers", "precision")
    for band in doc["precision_by_score_band"]:
        lo, hi = band["band"]
        table.add_row(f"{lo:.1f}-{hi:.1f}", str(band["n"]), f"{band['precision']:.3f}")
    out_console.print(table)


# -- aliases: models alias set|list|history|remove, models promote, models rollback (issue 14) ----------------
alias_app = typer.Typer(
    help="Model aliases (production, staging, any name): what predict --model NAME serves.", no_args_is_help=True
)
models_app.add_typer(alias_app, name="alias")
models_app.add_typer(pipeline_app, name="pipeline")  # models pipeline create (cli/pipelines.py)
AliasAsOpt = Annotated[str, typer.Option("--as", help="Who is acting (recorded in the alias history).")]
ReasonOpt = Annotated[str, typer.Option("--reason", help="Why (recorded in the alias history).")]
ExpectOpt = Annotated[
    int | None, typer.Option("--expect-version", help="Refuse (conflict) unless the alias is still at this version.")
]


def _print_alias(alias: Any, verb: str) -> None:
    out_console.print(f"{alias.name} -> {alias.model_id} ({verb}, version {alias.version})", highlight=False)


@alias_app.command("set")
def alias_set_cmd(
    name: Annotated[str, typer.Argument(help="Alias name (production, staging, ...).")],
    model_ref: Annotated[str, typer.Argument(help="Model id (or unique prefix, or another alias).")],
    force: Annotated[
        bool, typer.Option("--force", help="Allow a model of another label set or task than the one served.")
    ] = False,
    reason: ReasonOpt = "",
    expect_version: ExpectOpt = None,
    actor: AliasAsOpt = "cli",
    workspace_opt: WorkspaceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Point an alias at a model (created when new); predict --model NAME serves it from the next request."""
    from gigavision.models import aliases

    with open_ws(workspace_opt) as ws:
        alias = aliases.set_alias(
            ws, name, model_ref, actor=actor, reason=reason, force=force, expected_version=expect_version
        )
    if json_out:
        print_json(alias.as_dict())
        return
    _print_alias(alias, "set")


@alias_app.command("list")
def alias_list_cmd(workspace_opt: WorkspaceOpt = None, json_out: JsonOpt = False) -> None:
    """Every alias, the model it serves and that model's dataset version."""
    from gigavision.models import aliases, store

    with open_ws(workspace_opt) as ws:
        items = []
        for a in aliases.list_aliases(ws):
            try:
                dataset: str | None = store.get_model(ws, a.model_id).dataset
            except GigavisionError:
                dataset = None  # the model folder was removed: shown as such
            items.append({**a.as_dict(), "dataset": dataset})
    if json_out:
        print_json({"items": items, "count": len(items)})
        return
    table = Table("alias", Column("model", no_wrap=True), "dataset", "version", "by", "at")
    for item in items:
        table.add_row(
            item["name"],
            item["model"],
            item["dataset"] or "(model removed)",
            str(item["version"]),
            item["updated_by"],
            item["updated_at"][:19],
        )
    out_console.print(table)
    err_console.print(f"{len(items)} alias(es)")


@alias_app.command("history")
def alias_history_cmd(
    name: Annotated[str, typer.Argument(help="Alias name.")],
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Most recent moves to show.")] = 50,
    workspace_opt: WorkspaceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """The moves of an alias, newest first: set / promote / rollback / remove, who, why, the evidence."""
    from gigavision.models import aliases

    with open_ws(workspace_opt) as ws:
        events = aliases.history(ws, name, limit)
    if json_out:
        print_json({"alias": name, "items": [e.as_dict() for e in events]})
        return
    table = Table("at", "action", "model", "previous", "by", "reason")
    for e in events:
        table.add_row(e.at.isoformat()[:19], e.action, e.model_id or "–", e.previous_model_id or "–", e.actor, e.reason)
    out_console.print(table)


@alias_app.command("remove")
def alias_remove_cmd(
    name: Annotated[str, typer.Argument(help="Alias name.")],
    reason: ReasonOpt = "",
    expect_version: ExpectOpt = None,
    actor: AliasAsOpt = "cli",
    workspace_opt: WorkspaceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Delete an alias (its history stays); predict --model NAME fails from then on."""
    from gigavision.models import aliases

    with open_ws(workspace_opt) as ws:
        aliases.remove(ws, name, actor=actor, reason=reason, expected_version=expect_version)
    if json_out:
        print_json({"removed": name})
        return
    err_console.print(f"removed alias {name}")


@models_app.command("promote")
def promote_cmd(
    model_ref: Annotated[str, typer.Argument(help="Model id (or unique prefix).")],
    alias: Annotated[str, typer.Option("--alias", "-a", help="The alias to move.")] = "production",
    reason: ReasonOpt = "",
    expect_version: ExpectOpt = None,
    actor: AliasAsOpt = "cli",
    workspace_opt: WorkspaceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Point an alias at a model of the same task and label set as the one it serves (checked)."""
    from gigavision.models import aliases

    with open_ws(workspace_opt) as ws:
        moved = aliases.promote(ws, alias, model_ref, actor=actor, reason=reason, expected_version=expect_version)
    if json_out:
        print_json(moved.as_dict())
        return
    _print_alias(moved, "promoted")


@models_app.command("rollback")
def rollback_cmd(
    alias: Annotated[str, typer.Argument(help="The alias to move back.")],
    reason: ReasonOpt = "",
    expect_version: ExpectOpt = None,
    actor: AliasAsOpt = "cli",
    workspace_opt: WorkspaceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Point an alias back at the model it served before the current one."""
    from gigavision.models import aliases

    with open_ws(workspace_opt) as ws:
        moved = aliases.rollback(ws, alias, actor=actor, reason=reason, expected_version=expect_version)
    if json_out:
        print_json(moved.as_dict())
        return
    _print_alias(moved, "rolled back")
