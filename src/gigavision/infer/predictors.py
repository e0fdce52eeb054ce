"""The process's loaded models: one bounded cache of ``Predictor`` objects, shared by every prediction path
(the CLI, ``POST /api/v1/predict`` and its jobs, Dask workers, zoom-in's coarse model).

Loading an ONNX session or a checkpoint takes far longer than predicting one small image or one window
batch, and a server or a Dask worker runs the same model many times. The key is the model folder, its
``model.json`` file identity (a model removed and trained again under the same id is reloaded) and how the
model runs (runtime, ONNX variant, device, batch).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gigavision.cache import LRUCache
from gigavision.infer.engine import BATCH

if TYPE_CHECKING:
    from gigavision.models.predict import Predictor
    from gigavision.models.store import ModelInfo

KEEP_PREDICTORS = 4  # models kept per process: a server or a worker rarely alternates between more
PredictorKey = tuple[str, str, str, int, int, str, str, str, int]
PREDICTORS: LRUCache[PredictorKey, Predictor] = LRUCache(KEEP_PREDICTORS)


def predictor_key(
    info: ModelInfo, runtime: str, device: str = "cpu", batch: int = BATCH, variant: str = "fp32"
) -> PredictorKey:
    from gigavision.models.store import MODEL_JSON

    try:
        stat = (info.path / MODEL_JSON).stat()
        identity = (stat.st_ino, stat.st_mtime_ns)
    except OSError:  # a folder this process cannot stat: the record's creation time still tells models apart
        identity = (0, 0)
    return (str(info.path), info.id, str(info.created_at), *identity, runtime, variant, device, int(batch))


def loaded_predictor(
    info: ModelInfo, runtime: str, *, device: str = "cpu", batch: int = BATCH, variant: str = "fp32"
) -> Predictor:
    """The ``Predictor`` of ``info`` in ``runtime`` (``variant`` of its ONNX graph: fp32, int8) on ``device``
    (a pipeline's: ``PipelinePredictor``): kept from an earlier call, else loaded now."""
    from gigavision.models.predict import Predictor
    from gigavision.models.store import PIPELINE

    if info.task == PIPELINE:
        from gigavision.models.pipeline import PipelinePredictor

        kind: type[Predictor] = PipelinePredictor
    else:
        kind = Predictor
    key = predictor_key(info, runtime, device, batch, variant)
    return PREDICTORS.get_or_create(
        key, lambda: kind(info, runtime=runtime, device=device, batch=batch, variant=variant)
    )
