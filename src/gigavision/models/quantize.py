"""Compressed variants of a model's ONNX graph: ``model.int8.onnx`` beside ``model.onnx``.

``gigavision export-model ID --quantize int8`` writes it with onnxruntime's quantisation tools and records
what it is in ``model.json`` (``variants.int8``: method, calibration inputs, size, fidelity); ``predict
--variant int8``, ``evaluate --variant int8`` and ``models compare ID --variant int8`` run it. The file is
written beside the model and renamed into place, the card after it: never half-written.

How, decided per graph and recorded (``VariantCard.method`` and ``reason``):

1. **static** (``quantize_static``): weights int8 per output channel, activations uint8 with ranges
   measured (MinMax) on inputs of the model's own training split, QDQ format, after ``quant_pre_process``
   (shape inference and graph optimisation, so a BatchNorm folded into its Conv is quantised with it).
   uint8 activations with int8 weights (U8S8) is what onnxruntime's x86 kernels run fastest: measured on
   a digits resnet10t, int8 activations (S8S8) ran 0.6× fp32, U8S8 1.5-1.8×.
2. The result is checked against ``model.onnx`` on the calibration inputs: the worst output's
   signal-to-quantisation-noise ratio (``fidelity_db``) must reach ``MIN_FIDELITY_DB``. Quantising every
   operator can fail that where float operators sit between the convolutions (a detector head's GroupNorm:
   the scene detector's class scores fell to 21.6 dB; 37.0 dB with only ``WEIGHT_OPS`` quantised, which
   also made its file smaller, 0.35× fp32 instead of 0.40×, and faster), so the second try quantises only
   the weight-heavy operators.
3. **dynamic** (``quantize_dynamic``: int8 weights, activation ranges computed per batch at run time) when
   static fails or both tries lose too much, or when asked (``--dynamic``, e.g. a model whose dataset
   version is gone: nothing to calibrate on). It shrinks the file as much but, on convolutions, runs
   slower than fp32 on onnxruntime's CPU kernels (ConvInteger: 0.15× on both test models).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gigavision.errors import GigavisionError, InvalidInput, NotFound
from gigavision.files import atomic_path
from gigavision.models.card import VariantCard
from gigavision.models.store import ONNX_FILE, ModelInfo

if TYPE_CHECKING:
    from onnxruntime import InferenceSession

FP32 = "fp32"
INT8 = "int8"
VARIANT_FILES = {FP32: ONNX_FILE, INT8: "model.int8.onnx"}
VARIANTS = tuple(VARIANT_FILES)
METHODS = ("static", "dynamic")
MIN_FIDELITY_DB = 30.0  # worst output SQNR vs fp32 a static graph must keep (≈ 3 % RMS noise on the outputs)
WEIGHT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")  # the second static try quantises only these
CALIBRATION_BATCH = 16


class QuantizeError(GigavisionError):
    code = "quantize_failed"
    http_status = 500


def check_variant(variant: str) -> str:
    if variant not in VARIANT_FILES:
        raise InvalidInput(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    return variant


def export_command(model_id: str, variant: str) -> str:
    """The command that writes ``variant`` of a model."""
    base = f"gigavision export-model {model_id}"
    return base if variant == FP32 else f"{base} --quantize {variant}"


def variant_path(info: ModelInfo, variant: str = FP32) -> Path:
    """The ONNX file of ``variant`` of a model; ``NotFound`` naming the command that makes it."""
    path = info.path / VARIANT_FILES[check_variant(variant)]
    if not path.is_file():
        what = path.name if variant == FP32 else f"{variant} variant ({path.name})"
        raise NotFound(f"model {info.id} has no {what}; make it with: {export_command(info.id, variant)}")
    return path


def check_available(info: ModelInfo, variant: str) -> None:
    """Refuse, before anything loads, a ``variant`` the model lacks: a ``NotFound`` naming the command that
    makes it. A pipeline runs its stages' own files (copies made when it was published), so each stage must
    carry the variant, and the fix is to quantize the stage models and create the pipeline again."""
    from gigavision.models.store import PIPELINE, STAGES_DIR

    if info.task != PIPELINE:
        variant_path(info, variant)
        return
    stages = sorted(p for p in (info.path / STAGES_DIR).iterdir() if p.is_dir()) if variant != FP32 else []
    missing = [p.name for p in stages if not (p / VARIANT_FILES[check_variant(variant)]).is_file()]
    if missing:
        raise NotFound(
            f"pipeline {info.id}: stage(s) {', '.join(missing)} have no {variant} variant; make one for each stage"
            f" model (gigavision export-model MODEL --quantize {variant}), then create the pipeline again"
        )


def variant_card(info: ModelInfo, variant: str) -> VariantCard | None:
    """What ``model.json`` records about ``variant`` (None for fp32, or a file written by hand)."""
    return info.card.variants.get(variant)


@dataclass(frozen=True)
class Calibration:
    """Inputs to measure activation ranges on. ``batches()`` yields the network's inputs, ``[images]`` or
    ``[images, side]`` (``(N, 3, S, S)`` normalised float32, ``(N, K)`` raw side features), the same ones
    on every call (it is read once per static try and once for the fidelity check, never held in memory)."""

    batches: Callable[[], Iterator[list[np.ndarray]]]
    samples: int
    source: str  # NAME@N/split, for the record


@dataclass(frozen=True)
class _Try:
    method: str
    path: Path
    op_types: list[str] | None
    fidelity_db: float | None


def quantize_onnx(
    info: ModelInfo, calibration: Calibration | None, *, method: str = "auto", variant: str = INT8
) -> ModelInfo:
    """Write ``model.int8.onnx`` of ``info`` (``method``: ``auto``, see the module docstring, or
    ``dynamic``) and record it in ``model.json``; returns the model with its updated card."""
    import onnxruntime

    if check_variant(variant) != INT8:
        raise InvalidInput(f"--quantize {variant!r} is not supported; supported: {INT8}")
    if method not in ("auto", "dynamic"):
        raise InvalidInput(f"quantisation method must be auto or dynamic, got {method!r}")
    source = variant_path(info, FP32)
    if method == "auto" and (calibration is None or calibration.samples == 0):
        raise InvalidInput(
            f"model {info.id}: static int8 needs calibration inputs and none were given;"
            f" quantise without them: {export_command(info.id, INT8)} --dynamic"
        )
    with tempfile.TemporaryDirectory(prefix="gigavision-quantize-") as tmp, _quiet():
        work = Path(tmp)
        prepared = _preprocess(source, work / "prepared.onnx")
        reference = _session(source)
        tried: list[_Try] = []
        failure = ""
        if method == "auto":
            assert calibration is not None
            for op_types in (None, list(WEIGHT_OPS)):
                try:
                    path = _static(prepared, work / f"static-{len(tried)}.onnx", calibration, reference, op_types)
                except Exception as exc:  # onnxruntime's quantiser raises anything on a graph it cannot take
                    failure = f"static quantisation failed ({type(exc).__name__}: {str(exc)[:200]})"
                    break
                tried.append(_Try("static", path, op_types, fidelity(reference, _session(path), calibration)))
                if tried[-1].fidelity_db is not None and tried[-1].fidelity_db >= MIN_FIDELITY_DB:
                    break
        chosen = next((t for t in tried if t.fidelity_db is not None and t.fidelity_db >= MIN_FIDELITY_DB), None)
        if chosen is None:
            path = _dynamic(prepared, work / "dynamic.onnx")
            db = fidelity(reference, _session(path), calibration) if calibration is not None else None
            chosen = _Try("dynamic", path, None, db)
        reason = _reason(chosen, tried, failure, method)
        fp32_bytes = source.stat().st_size
        with atomic_path(info.path / VARIANT_FILES[variant]) as out:
            shutil.copyfile(chosen.path, out)
    record = VariantCard(
        file=VARIANT_FILES[variant],
        method=chosen.method,
        reason=reason,
        calibration_samples=calibration.samples if calibration is not None and chosen.method == "static" else 0,
        calibration_data=calibration.source if calibration is not None and chosen.method == "static" else None,
        op_types=chosen.op_types,
        per_channel=True,
        bytes=(info.path / VARIANT_FILES[variant]).stat().st_size,
        fp32_bytes=fp32_bytes,
        fidelity_db=chosen.fidelity_db,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        onnxruntime_version=onnxruntime.__version__,
    )
    card = info.card.model_copy(update={"variants": {**info.card.variants, variant: record}})
    card.write(info.path)
    return ModelInfo(path=info.path, card=card)


def _reason(chosen: _Try, tried: Sequence[_Try], failure: str, method: str) -> str:
    if method == "dynamic":
        return "dynamic asked (--dynamic)"
    lost = ", ".join(
        f"{'every operator' if t.op_types is None else '/'.join(t.op_types)} {t.fidelity_db:.1f} dB" for t in tried
    )
    if chosen.method == "static":
        scope = "every operator" if chosen.op_types is None else "only " + "/".join(chosen.op_types)
        before = f" (static over every operator lost too much: {tried[0].fidelity_db:.1f} dB)" if len(tried) > 1 else ""
        return f"static over {scope}: outputs {chosen.fidelity_db:.1f} dB ≥ {MIN_FIDELITY_DB:g} dB vs fp32{before}"
    if failure:
        return f"{failure}; dynamic instead"
    return f"static lost too much ({lost} < {MIN_FIDELITY_DB:g} dB vs fp32); dynamic instead"


@contextmanager
def _quiet() -> Iterator[None]:
    """onnxruntime's quantiser logs advice and per-tensor warnings on the root logger: keep stderr for ours."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _session(path: Path) -> InferenceSession:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _preprocess(source: Path, out: Path) -> Path:
    """``quant_pre_process`` (symbolic and ONNX shape inference, graph optimisation); a graph it cannot
    take is quantised as exported (the quantiser then works with the shapes the export recorded)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(source), str(out))
    except Exception:
        try:
            quant_pre_process(str(source), str(out), skip_symbolic_shape=True)
        except Exception:
            shutil.copyfile(source, out)
    return out


def _feeds(session: InferenceSession, calibration: Calibration) -> Iterator[dict[str, np.ndarray]]:
    """The calibration inputs as feeds for ``session``; a graph exported with a fixed batch (Faster R-CNN)
    gets chunks of its size, the last one filled up with repeated rows (repeats do not move a range)."""
    inputs = session.get_inputs()
    names = [i.name for i in inputs]
    fixed = inputs[0].shape[0] if isinstance(inputs[0].shape[0], int) else None
    for arrays in calibration.batches():
        if len(arrays) != len(names):
            raise InvalidInput(f"the graph takes {names}; calibration gave {len(arrays)} input(s)")
        n = len(arrays[0])
        step = fixed or n
        for start in range(0, n, step):
            rows = np.arange(start, start + step) % n if fixed else np.arange(start, min(n, start + step))
            yield {name: np.ascontiguousarray(a[rows]) for name, a in zip(names, arrays, strict=True)}


def _static(
    prepared: Path, out: Path, calibration: Calibration, reference: InferenceSession, op_types: list[str] | None
) -> Path:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):  # type: ignore[misc]  # onnxruntime is untyped
        def __init__(self) -> None:
            self.feeds = _feeds(reference, calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.feeds, None)

    quantize_static(
        str(prepared),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=op_types,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )
    return out


def _dynamic(prepared: Path, out: Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    try:
        quantize_dynamic(str(prepared), str(out), per_channel=True, weight_type=QuantType.QInt8)
    except Exception as exc:
        raise QuantizeError(f"int8 quantisation failed, static and dynamic: {type(exc).__name__}: {exc}") from exc
    return out


def fidelity(reference: InferenceSession, quantised: InferenceSession, calibration: Calibration) -> float | None:
    """The worst float output's signal-to-quantisation-noise ratio in dB, ``10·log10(Σ ref² / Σ (ref − q)²)``
    over the calibration inputs (capped at ±200 dB); None when no float output was compared."""
    signal: dict[int, float] = {}
    noise: dict[int, float] = {}
    for feed in _feeds(reference, calibration):
        ref = reference.run(None, feed)
        got = quantised.run(None, feed)
        for k, (a, b) in enumerate(zip(ref, got, strict=True)):
            a, b = np.asarray(a), np.asarray(b)
            if not np.issubdtype(a.dtype, np.floating) or a.shape != b.shape:
                continue
            a64 = a.astype(np.float64)
            signal[k] = signal.get(k, 0.0) + float(np.square(a64).sum())
            noise[k] = noise.get(k, 0.0) + float(np.square(a64 - b).sum())
    if not signal:
        return None
    worst = min(10.0 * np.log10((signal[k] + 1e-30) / (noise[k] + 1e-30)) for k in signal)
    return round(float(np.clip(worst, -200.0, 200.0)), 2)


def describe(info: ModelInfo, variant: str) -> dict[str, Any]:
    """The variant's file and record, for reports: ``{"variant", "file", "bytes", "fp32_bytes", "size_ratio",
    "method", ...}`` (method None when the file has no record in model.json)."""
    path = variant_path(info, variant)
    size = path.stat().st_size
    fp32 = variant_path(info, FP32).stat().st_size
    record = variant_card(info, variant)
    extra = record.model_dump(mode="json", exclude={"file", "bytes", "fp32_bytes"}) if record is not None else {}
    return {
        "variant": variant,
        "file": path.name,
        "bytes": size,
        "fp32_bytes": fp32,
        "size_ratio": round(size / fp32, 4) if fp32 else None,
        "method": None,
        **extra,
    }
