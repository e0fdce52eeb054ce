"""Helpers shared by the metric modules: JSON-safe conversion and input checks."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from gigavision.errors import InvalidInput


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON types: dataclasses and mappings → dicts, arrays → lists, NaN/inf → None."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value) if f.repr}
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return [jsonable(v) for v in value.tolist()]
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def optional_float(value: float) -> float | None:
    """A Python float, or None where the metric is undefined (NaN)."""
    v = float(value)
    return None if math.isnan(v) else v


def as_1d(values: Any, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise InvalidInput(f"{name} must be one value per sample (1-D), got shape {arr.shape}")
    return arr


def check_same_length(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if len(a) != len(b):
        raise InvalidInput(f"{name_a} and {name_b} must have one entry per sample, got {len(a)} and {len(b)}")
