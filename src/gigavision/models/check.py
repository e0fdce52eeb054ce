"""fsck of model folders (``gigavision fsck``, ``store/fsck.py``): each ``models/<id>/`` holds a readable model
card and the files it needs — the recipe, the weights, and ``model.onnx`` when the card records an ONNX export.

A model is never removed by fsck (its card and metrics are the lineage of what it predicted): a broken one is
reported with the fix. Folders half-way through ``models rm`` and temp files are swept by ``store/fsck.py``.
"""

from __future__ import annotations

from pathlib import Path

from gigavision.errors import InvalidInput
from gigavision.models.card import MODEL_JSON, ModelCard
from gigavision.models.store import CHECKPOINT, ONNX_FILE, PIPELINE, RECIPE_JSON, STAGES_DIR
from gigavision.store.fsck import Finding


def check_models(folder: Path, repair: bool) -> list[Finding]:
    """Findings for every model folder under ``folder`` (``repair`` changes nothing here; see the docstring)."""
    if not folder.is_dir():
        return []
    findings = []
    for model in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        findings += check_model(model)
    return findings


def check_model(model: Path, where: str | None = None) -> list[Finding]:
    """What is wrong with one model folder (an empty list: nothing); a pipeline's: its stages' folders."""
    where = where or f"models/{model.name}"
    top = where.split("/")[1]  # the model folder (a pipeline's, for a stage)
    kept = f"kept: retrain the model or restore the file (gigavision models rm {top} removes it)"
    try:
        card = ModelCard.read(model)
    except InvalidInput as exc:
        problem = "missing" if not (model / MODEL_JSON).exists() else "unreadable"
        return [Finding("model", f"{where}/{MODEL_JSON}", problem, str(exc), kept=kept)]
    if card.task == PIPELINE:
        stages = sorted(p for p in (model / STAGES_DIR).glob("*") if p.is_dir())
        if not stages:
            detail = f"model {card.id}: a pipeline without its {STAGES_DIR}/ folder"
            return [Finding("model", f"{where}/{STAGES_DIR}", "missing", detail, kept=kept)]
        return [f for stage in stages for f in check_model(stage, f"{where}/{STAGES_DIR}/{stage.name}")]
    needed = [RECIPE_JSON, CHECKPOINT] + ([ONNX_FILE] if card.onnx_max_abs_diff is not None else [])
    findings = []
    for name in needed:
        path = model / name
        if not path.is_file():
            detail = f"model {card.id}: {name} is missing"
            findings.append(Finding("model", f"{where}/{name}", "missing", detail, kept=kept))
        elif path.stat().st_size == 0:
            detail = f"model {card.id}: {name} is empty"
            findings.append(Finding("model", f"{where}/{name}", "short", detail, kept=kept))
    return findings
