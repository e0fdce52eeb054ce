"""The seed of every training run in the tests, and a recorder for what the trained models reach.

Thresholds on trained models are set outside the spread measured over seeds 0-4 (written next to each
assertion). To measure again: `GIGAVISION_TEST_SEED=k GIGAVISION_TEST_MEASURE=out.jsonl pytest tests/test_train_*.py
tests/test_infer*.py` for k = 0..4, then compare the recorded values per name.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from gigavision.models.store import CHECKPOINT, ModelInfo

TRAIN_SEED = int(os.environ.get("GIGAVISION_TEST_SEED", "0"))
_MEASURE = os.environ.get("GIGAVISION_TEST_MEASURE")


def measured(name: str, value: float) -> float:
    """``value``, appended to ``$GIGAVISION_TEST_MEASURE`` (JSON lines) under ``name`` and the seed."""
    if _MEASURE:
        with Path(_MEASURE).open("a", encoding="utf-8") as out:
            out.write(json.dumps({"seed": TRAIN_SEED, "name": name, "value": float(value)}) + "\n")
    return value


# (name, model id, headline metric, its value, sha256 of the weights) of every model the tests trained
TRAINED: list[tuple[str, str, str, float, str]] = []


def trained(name: str, info: ModelInfo) -> ModelInfo:
    """``info``, remembered for the run's closing summary: two runs of one lock must print the same lines."""
    import hashlib

    import torch

    state = torch.load(info.path / CHECKPOINT, map_location="cpu", weights_only=True)["state_dict"]
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].detach().contiguous().numpy().tobytes())
    headline = info.headline or ""
    TRAINED.append((name, info.id, headline, float(info.metrics.get(headline, float("nan"))), digest.hexdigest()[:16]))
    return info
