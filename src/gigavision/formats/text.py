"""Canonical text for exports: numbers, JSON, file names and label folder names.

Byte-for-byte stable exports need one spelling per value: a number is rounded to a fixed number of decimals
and written in its shortest form (``12``, ``12.5``, ``0.12345678``), JSON has fixed separators and key order,
and every file name is unique in the export. Rounding makes export → import → export a fixed point: the
re-imported value differs from the written one by float noise far below the last written decimal.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import unquote

PIXEL_DIGITS = 6  # level-0 pixel coordinates: a millionth of a pixel
UNIT_DIGITS = 8  # coordinates normalised to 0..1 (YOLO): 1e-8 of a 100,000 px side is 0.001 px

_UNSAFE = re.compile(r"[\x00-\x1f/\\%:*?\"<>|\x7f]")


def num(value: float, digits: int = PIXEL_DIGITS) -> str:
    """``value`` rounded to ``digits`` decimals, shortest spelling; integers without ``.0``; never ``-0``."""
    r = round(float(value), digits)
    if r == 0:
        return "0"
    if r.is_integer() and abs(r) < 1e15:
        return str(int(r))
    return repr(r)


def round_array(values: Any, digits: int = PIXEL_DIGITS) -> Any:
    """``values`` (an array) rounded like ``num`` rounds (Python's correctly rounded ``round``, which
    ``np.round`` is not), so numbers computed from the result equal those computed from the file."""
    import numpy as np

    arr = np.asarray(values, dtype=np.float64)
    flat = np.fromiter((round(v, digits) for v in arr.ravel().tolist()), dtype=np.float64, count=arr.size)
    return flat.reshape(arr.shape)


def dumps(value: Any) -> str:
    """Compact canonical JSON: floats through ``num``, dict keys in insertion order, UTF-8 text kept."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"cannot write {value} in JSON")
        return num(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{_string(str(k))}:{dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(dumps(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} in JSON")


def _string(text: str) -> str:
    import json

    return json.dumps(text, ensure_ascii=False)


def sorted_dict(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """A user-supplied mapping (attributes) with sorted keys, recursively, for a stable spelling."""
    return {k: sorted_dict(v) if isinstance(v, Mapping) else v for k, v in sorted(mapping.items())}


def hex_to_rgb(color: str) -> list[int] | None:
    """``"#rrggbb"`` (or ``#rgb``) to ``[r, g, b]``; None when not a hex colour."""
    text = color.strip().lstrip("#")
    if len(text) == 3:
        text = "".join(c * 2 for c in text)
    if not re.fullmatch(r"[0-9a-fA-F]{6}", text):
        return None
    return [int(text[i : i + 2], 16) for i in (0, 2, 4)]


def rgb_to_hex(rgb: Iterable[Any]) -> str | None:
    values = list(rgb)
    if len(values) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in values):
        return None
    return "#" + "".join(f"{v:02x}" for v in values)


def safe_component(text: str) -> str:
    """A label or name as one path component: separators, control and ``%`` characters percent-encoded,
    leading dots too (no ``.``, ``..`` or hidden names). ``label_from_component`` reverses it."""
    out = _UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode("utf-8")), text)
    if out.startswith("."):
        out = "%2E" + out[1:]
    return out or "%00"


def label_from_component(name: str) -> str:
    """A folder name back to its label (percent-escapes decoded)."""
    return unquote(name) if "%" in name else name


class UniqueNames:
    """File names unique within one export, also by stem (``a.jpg`` and ``a.png`` would share ``a.txt``).

    The first image keeps its name; a later one with a taken name or stem gets ``<stem>_<id[:8]><suffix>``.
    Comparisons ignore case, so the export unpacks on case-insensitive file systems too.
    """

    def __init__(self) -> None:
        self._names: set[str] = set()
        self._stems: set[str] = set()

    def take(self, name: str, image_id: str) -> str:
        base = safe_component(PurePosixPath(name.replace("\\", "/")).name or image_id[:16])
        candidate = base
        n = 0
        while candidate.lower() in self._names or _stem(candidate).lower() in self._stems:
            n += 1
            tag = image_id[:8] if n == 1 else f"{image_id[:8]}-{n}"
            candidate = f"{_stem(base)}_{tag}{_suffix(base)}"
        self._names.add(candidate.lower())
        self._stems.add(_stem(candidate).lower())
        return candidate


def _stem(name: str) -> str:
    stem = PurePosixPath(name).stem
    return stem or name


def _suffix(name: str) -> str:
    return PurePosixPath(name).suffix
