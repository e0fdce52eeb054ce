"""``export-model --quantize int8``: calibration inputs from a model's own training split, then
``models.quantize.quantize_onnx``.

The inputs are the samples training fed the network — whole images letterboxed, or the patch grid of a
patch model, read by ``train.data.split_data`` — normalised by ``Predictor.prepare``, the step prediction
runs: the activation ranges are measured on exactly what the deployed graph will see. Samples are spread
evenly over the split (not its first images) and read lazily on each pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from gigavision.errors import InvalidInput, NotFound
from gigavision.models.quantize import CALIBRATION_BATCH, INT8, Calibration, export_command, quantize_onnx

if TYPE_CHECKING:
    from gigavision.models.store import ModelInfo
    from gigavision.workspace import Workspace

CALIBRATION_SPLIT = "train"
# On bench_quantize's resnet18 digits classifier, 32 / 128 / 512 / all 1,257 training inputs gave outputs at
# 38.8 / 37.1 / 38.4 / 36.8 dB and test accuracy within 2 of 269 images of fp32 every time: more buys nothing
CALIBRATION_SAMPLES = 128


def _no_calibration(info: ModelInfo, why: str) -> InvalidInput:
    return InvalidInput(
        f"model {info.id}: {why}, so there is nothing to calibrate int8 activation ranges on;"
        f" quantise without calibration (int8 weights, ranges computed at run time):"
        f" {export_command(info.id, INT8)} --dynamic"
    )


def training_calibration(
    ws: Workspace, info: ModelInfo, samples: int = CALIBRATION_SAMPLES, split: str = CALIBRATION_SPLIT
) -> Calibration:
    """Up to ``samples`` inputs of ``split`` of the dataset version the model records (its lineage).

    A version that is gone, a split that is missing or holds no usable sample is an ``InvalidInput`` naming
    the fallback (``--dynamic``)."""
    from gigavision.datasets.versions import open_version
    from gigavision.models.predict import Predictor
    from gigavision.train.data import split_data
    from gigavision.train.transforms import build_transform

    if samples < 1:
        raise InvalidInput(f"--calibration-samples must be at least 1, got {samples}")
    try:
        version = open_version(ws, info.dataset)
    except NotFound:
        raise _no_calibration(info, f"its dataset version {info.dataset} is gone") from None
    if split not in version.splits:
        raise _no_calibration(info, f"dataset {version.ref} has no {split!r} split")
    task = info.task_instance()
    recipe = info.recipe().model_copy(update={"dataset": version.ref})
    transform = build_transform(None, info.input.mean, info.input.std, info.input.size)
    try:
        data = split_data(task, version, recipe, split, transform, training=False)
    except InvalidInput as exc:
        raise _no_calibration(info, f"the {split!r} split of {version.ref} cannot be read ({exc})") from exc
    total = len(data.dataset)
    if total == 0:
        raise _no_calibration(info, f"the {split!r} split of {version.ref} has no sample a {task.name} model can use")
    picks = np.unique(np.linspace(0, total - 1, min(samples, total)).round().astype(int))
    prepare = Predictor(info, runtime="onnx")  # its preprocessing: the fp32 graph is needed to quantise anyway
    side_table = data.dataset.side

    def batches() -> Iterator[list[np.ndarray]]:
        for start in range(0, len(picks), CALIBRATION_BATCH):
            images, side = [], []
            for i in picks[start : start + CALIBRATION_BATCH]:
                pixels, _, image_id = data.dataset.raw(int(i))
                images.append(prepare.prepare(pixels, f"image {image_id[:12]}")[0])
                if side_table is not None:
                    side.append(side_table[image_id])
            arrays = [np.stack(images)]
            if side_table is not None:
                arrays.append(np.stack(side).astype(np.float32))
            yield arrays

    return Calibration(batches, len(picks), f"{version.ref}/{split}")


def quantize_model(
    ws: Workspace, info: ModelInfo, *, dynamic: bool = False, samples: int = CALIBRATION_SAMPLES
) -> ModelInfo:
    """Write and record ``model.int8.onnx`` of ``info``: static on its training split's inputs (falling back
    by itself to dynamic where static fails or loses too much), or dynamic when ``dynamic``."""
    if dynamic:
        return quantize_onnx(info, None, method="dynamic")
    return quantize_onnx(info, training_calibration(ws, info, samples), method="auto")
