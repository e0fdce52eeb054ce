"""Inference over many inputs (files or workspace images): masks, output folders, storing results.

``predict_whole`` predicts small images whole; ``predict_tiled`` predicts any image window by window. Front
ends reach both through ``infer.request`` (which decides which one an image takes). Per input it opens the
image, finds its foreground mask (stored at ingest, else computed from a small overview), runs
``infer.engine.infer_image`` and optionally stores the annotations as proposed model annotations. Both give
every prediction ``attributes.uncertainty`` and ``attributes.model``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gigavision.errors import InvalidInput
from gigavision.infer.engine import InferOptions, InferResult, WindowPlan, infer_image, plan_windows
from gigavision.infer.zoom import ZoomSpec, zoom_plan
from gigavision.progress import Progress

if TYPE_CHECKING:
    from gigavision.images.source import ImageSource
    from gigavision.models.predict import PredictItem, Predictor
    from gigavision.workspace import Workspace

PREDICTIONS_DIR = "predictions"


def foreground(ws: Workspace | None, image_id: str | None, source: ImageSource) -> np.ndarray:
    """The image's foreground mask: the one ingest stored, else one computed from a small overview."""
    from gigavision.images.thumbnail import load_foreground

    stored = ws.mask_path(image_id) if ws is not None and image_id is not None else None
    return load_foreground(stored, lambda: source)


def output_dir(root: Path, model_id: str, item: str, image_id: str | None) -> Path:
    """``root/<model>/<image id, or the file's stem>``: one folder per image and model."""
    key = image_id or Path(item).stem or "image"
    return root / model_id / key


def prepare_input(
    predictor: Predictor,
    options: InferOptions,
    ws: Workspace | None,
    item: str,
    source: ImageSource,
    image_id: str | None,
    *,
    store: bool,
) -> tuple[np.ndarray | None, dict[str, Any], WindowPlan]:
    """What running one opened input needs, checked before any window runs: its foreground mask (when
    background is skipped), its metadata (side features) and its window plan."""
    if store and image_id is None:
        raise InvalidInput(f"--store needs workspace images; {item} is not ingested (gigavision ingest it first)")
    mask = foreground(ws, image_id, source) if options.skip_background is not None else None
    meta = (ws.get_image(image_id).meta or {}) if ws is not None and image_id else {}
    return mask, dict(meta), plan_windows(predictor, source, options, name=item, mask=mask)


def predict_whole(
    predictor: Predictor,
    items: Sequence[str],
    *,
    ws: Workspace | None,
    store: bool = False,
    side: Mapping[str, Any] | None = None,
) -> tuple[list[PredictItem], dict[str, Any] | None]:
    """Predict small images whole (``models.predict.predict_files``), each prediction with its
    ``attributes.uncertainty`` by the tiled engine's definitions and the model id; ``store`` adds them to the
    workspace as proposals. Returns the items and what was stored (None without ``store``)."""
    from gigavision.metrics.uncertainty import prediction_uncertainty, with_uncertainty
    from gigavision.models.predict import predict_files, store_predictions

    if store and ws is None:
        raise InvalidInput("--store needs a workspace")
    predicted = predict_files(predictor, items, ws, side=side)
    for item in predicted:
        item.annotations = with_uncertainty(item.annotations, prediction_uncertainty(item.annotations))
    stored = store_predictions(ws, predicted, predictor) if store and ws is not None else None
    return predicted, stored


def predict_tiled(
    predictor: Predictor,
    items: Sequence[str],
    options: InferOptions,
    *,
    ws: Workspace | None,
    out_root: Path | None = None,
    store: bool = False,
    side: Mapping[str, Any] | None = None,
    progress: Progress | None = None,
    zoom: ZoomSpec | None = None,
) -> list[InferResult]:
    """Run tiled inference on each input in turn (each image's windows stream through the model).

    ``zoom``: a coarse pass first (``infer.zoom``); only the windows it points at run at full resolution.
    """
    from gigavision.models.predict import PredictItem, open_input, store_predictions

    if not items:
        raise InvalidInput("name at least one image file or workspace image id")
    options.check()
    if out_root is None:
        if ws is None:
            raise InvalidInput("give an output folder (--out-dir) for the masks and heatmaps")
        out_root = ws.root / PREDICTIONS_DIR
    coarse = None
    if zoom is not None:
        from gigavision.infer.predictors import loaded_predictor
        from gigavision.models.store import get_model

        if zoom.model is None:
            coarse = predictor
        elif ws is None:
            raise InvalidInput("--zoom-in model=ID needs a workspace holding that model")
        else:
            coarse = loaded_predictor(get_model(ws, zoom.model), predictor.runtime, batch=options.batch)
    results = []
    for item in items:
        source, image_id, owned = open_input(ws, item)
        try:
            mask, meta, plan = prepare_input(predictor, options, ws, item, source, image_id, store=store)
            folder = output_dir(out_root, predictor.info.id, item, image_id)
            report: dict[str, Any] = {}
            background = int((~plan.keep).sum())
            if zoom is not None and coarse is not None:
                plan, report = zoom_plan(
                    predictor, coarse, source, plan, zoom, options, name=item, out_dir=folder, mask=mask
                )
            result = infer_image(
                predictor,
                source,
                name=item,
                options=options,
                out_dir=folder,
                image_id=image_id,
                mask=mask,
                side={**meta, **(side or {})},
                progress=progress,
                plan=plan,
            )
            result.zoom = report
            result.tiles_skipped = background  # windows the zoom-in left out are in the zoom report
        finally:
            if owned:
                source.close()
        if store and ws is not None:
            stored = store_predictions(
                ws, [PredictItem(item, image_id, result.width, result.height, result.annotations)], predictor
            )
            result.outputs["stored"] = str(stored["added"])
        results.append(result)
    return results
