"""The rules of an image's metadata (``ImageRow.meta``): which keys and values a user may set, which keys
belong to ingest, how text becomes a typed value, how a set of changes applies to one image, and the
metadata CSV (``images meta --csv``).

Pure functions over plain mappings: ``Workspace.set_images_meta`` runs them inside the catalogue's transaction
(``store/catalog.py``), which stores what they return.
"""

from __future__ import annotations

import csv
import math
import numbers
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gigavision.errors import InvalidInput, LimitExceeded

META_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
MAX_META_TEXT = 1000
MAX_USER_KEYS = 256
MAX_META_INT = 2**53 - 1  # larger integers lose digits in JavaScript (the viewer) and in float32 features
# The names of the user-set keys of an image, kept in its metadata so they stay distinguishable from what
# ingest wrote. "@" cannot start a user key, so this entry can never collide with one.
USER_KEYS = "@user_keys"
# Keys the built-in ingest writes (reader metadata + pyramid options): refused on every image, also on
# those that lack them, so ``pyramid`` or ``photometric`` always means what ingest meant. Keys that another
# reader wrote on one image are protected there through USER_KEYS (anything present and not user-set).
INGEST_KEYS = frozenset(
    {
        *("pyramid",),  # images/ingest.py: the options of the pyramid built at ingest
        *("display_window", "frames", "transfer_syntax"),  # images/readers/dicom.py
        *("compression", "photometric"),  # images/readers/tiff.py
        *("objective_power",),  # images/readers/slide.py
        *("volume", "depth", "spacing", "affine", "orientation"),  # images/volumes/ingest.py (3D volumes)
    }
)
# The user key naming the dataset split an image belongs in: imports set it where the layout says so (COCO's
# ``instances_val.json``, YOLO's ``images/val/``, CVAT's ``subset``) and ``dataset create`` keeps it.
SPLIT_HINT = "split"
_SPLIT_SPELLINGS = {"valid": "val", "validation": "val", "training": "train", "testing": "test"}


def split_hint(name: str) -> str:
    """A split name as tools spell it (``Train``, ``valid``, ``validation``) in the spelling datasets use."""
    lowered = name.strip().lower()
    return _SPLIT_SPELLINGS.get(lowered, lowered)


_META_INT_TEXT = re.compile(r"[+-]?(0|[1-9][0-9]*)")
_META_FLOAT_TEXT = re.compile(r"[+-]?([0-9]+\.[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|[+-]?[0-9]+[eE][+-]?[0-9]+")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
MetaValue = str | int | float | bool


@dataclass(slots=True)
class MetaCsvSummary:
    """What ``Workspace.set_images_meta_csv`` wrote (``--json`` prints this)."""

    rows: int  # data rows read
    images: int  # distinct images named
    changed: int  # images whose metadata changed
    keys: list[str] = field(default_factory=list)  # the CSV's key columns

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class MetaCsvRow:
    """One data row of a metadata CSV: its line number (the header is 1), the image it names, its values."""

    line: int
    ref: str
    values: dict[str, Any]


def public_meta(meta: Mapping[str, Any] | None) -> dict[str, Any]:
    """An image's metadata as shown to people: everything but the USER_KEYS bookkeeping entry."""
    return {k: v for k, v in (meta or {}).items() if k != USER_KEYS}


def user_meta_keys(meta: Mapping[str, Any] | None) -> list[str]:
    """The keys of ``meta`` that users set (the rest came from ingest)."""
    return sorted((meta or {}).get(USER_KEYS) or ())


def user_meta(meta: Mapping[str, Any] | None) -> dict[str, Any]:
    """Only the user-set part of an image's metadata (e.g. candidate side features: no TIFF codes)."""
    meta = meta or {}
    return {k: meta[k] for k in user_meta_keys(meta) if k in meta}


def jsonable(meta: Mapping[str, Any]) -> dict[str, Any]:
    """A reader's metadata as JSON scalars and lists (what ingest stores in ``ImageRow.meta``)."""
    out: dict[str, Any] = {}
    for k, v in meta.items():
        if isinstance(v, str | int | float | bool) or v is None:
            out[k] = v
        elif isinstance(v, Sequence):
            out[k] = [x if isinstance(x, str | int | float | bool) else str(x) for x in v]
        else:
            out[k] = str(v)
    return out


def parse_meta_value(text: str) -> MetaValue:
    """A typed value from text (command line, CSV cell): an integer, then a float, then ``true``/``false``,
    else the text itself. Integers with leading zeros (``007``) and beyond 2^53 stay text: they are
    identifiers, and a number would lose their digits."""
    if _META_INT_TEXT.fullmatch(text):
        number = int(text)
        return number if abs(number) <= MAX_META_INT else text
    if _META_FLOAT_TEXT.fullmatch(text):
        return float(text)  # 1e999 becomes inf, which the check refuses with a reason
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def clean_meta(values: Any, where: str = "") -> tuple[dict[str, Any], list[str]]:
    """``values`` checked for ``set_image_meta``: (the values as plain JSON scalars, problems).

    NumPy/pandas numbers become ``int``/``float``; ``None`` stays (it deletes the key). Each problem names
    the key and the reason, prefixed by ``where``.
    """
    if not isinstance(values, Mapping):
        return {}, [f"{where}metadata must be a mapping of key -> value, got {type(values).__name__}"]
    cleaned: dict[str, Any] = {}
    problems: list[str] = []
    for key, value in values.items():
        if not isinstance(key, str) or not META_KEY.fullmatch(key):
            problems.append(
                f"{where}metadata key {key!r} must be 1 to 64 characters: a letter or _ first, then letters, "
                "digits, _ . or -"
            )
            continue
        if value is None or isinstance(value, bool | str):
            plain: Any = value
        elif isinstance(value, numbers.Integral):
            plain = int(value)
        elif isinstance(value, numbers.Real):
            plain = float(value)
        else:
            problems.append(
                f"{where}metadata {key!r}: a value is text, a number or true/false, not {type(value).__name__}"
            )
            continue
        reason = _value_problem(plain)
        if reason:
            problems.append(f"{where}metadata {key!r}: {reason}")
        else:
            cleaned[key] = plain
    return cleaned, problems


def _value_problem(value: Any) -> str | None:
    if isinstance(value, str):
        if len(value) > MAX_META_TEXT:
            return f"text is {len(value):,} characters; at most {MAX_META_TEXT:,}"
        if _CONTROL.search(value):
            return "text contains a control character"
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_META_INT:
        return f"integer {value} is beyond ±2^53; store it as text"
    elif isinstance(value, float) and not math.isfinite(value):
        return f"{value} is not a finite number"
    return None


def check_problems(problems: Sequence[str]) -> None:
    """Raise ``InvalidInput`` listing ``problems`` (the first few), if any."""
    if len(problems) == 1:
        raise InvalidInput(f"{problems[0]}; nothing was written")
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise InvalidInput(f"{len(problems)} problems, nothing was written: {shown}")


def apply_meta(
    meta: Mapping[str, Any] | None, values: Mapping[str, Any], where: str = ""
) -> tuple[dict[str, Any], list[str]]:
    """``values`` (already cleaned) applied to an image's stored metadata: (the new stored metadata, with its
    USER_KEYS entry, problems). ``None`` deletes a key; keys that ingest wrote cannot be set or removed.

    Raises ``LimitExceeded`` when the image would hold more than ``MAX_USER_KEYS`` user keys.
    """
    new = dict(meta or {})
    owned = set(new.pop(USER_KEYS, None) or ())
    problems: list[str] = []
    for key, value in values.items():
        if key in INGEST_KEYS or (key in new and key not in owned):
            problems.append(
                f"{where}metadata key {key!r} belongs to ingest (what it read from the file or "
                "built) and cannot be set or removed; choose another name"
            )
        elif value is None:
            new.pop(key, None)
            owned.discard(key)
        else:
            new[key] = value
            owned.add(key)
    if len(owned) > MAX_USER_KEYS:
        raise LimitExceeded(f"{where}{len(owned)} metadata keys; an image holds at most {MAX_USER_KEYS} user keys")
    return new | ({USER_KEYS: sorted(owned)} if owned else {}), problems


def read_meta_csv(path: Path) -> tuple[list[MetaCsvRow], list[str]]:
    """The data rows of a metadata CSV and its key columns.

    Row numbers are the file's line numbers (the header is row 1), as a spreadsheet shows them. Raises
    ``InvalidInput`` listing every bad header, row and cell.
    """
    records: list[tuple[int, list[str]]] = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            for cells in reader:
                records.append((reader.line_num, cells))
    except FileNotFoundError as exc:
        raise InvalidInput(f"{path}: no such file") from exc
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except (OSError, csv.Error) as exc:
        raise InvalidInput(f"{path}: cannot read as CSV: {exc}") from exc
    records = [(line, cells) for line, cells in records if any(c.strip() for c in cells)]
    if not records:
        raise InvalidInput(f"{path}: empty; expected a header like image,patient,age and one row per image")
    header = [c.strip() for c in records[0][1]]
    if header[0].lower() != "image" or len(header) < 2:
        raise InvalidInput(f"{path}: the header must start with 'image' followed by metadata keys, got {header}")
    keys = header[1:]
    problems = [f"{path}: column {k!r} appears twice" for k in {k for k in keys if keys.count(k) > 1}]
    problems += clean_meta(dict.fromkeys(keys, 0), f"{path}: header: ")[1]
    rows: list[MetaCsvRow] = []
    for line, cells in records[1:]:
        if len(cells) != len(header):
            problems.append(f"row {line}: {len(cells)} cells, the header has {len(header)}")
            continue
        ref = cells[0].strip()
        if not ref:
            problems.append(f"row {line}: the image cell is empty")
            continue
        parsed = {k: parse_meta_value(c.strip()) for k, c in zip(keys, cells[1:], strict=True) if c.strip()}
        values, found = clean_meta(parsed, f"row {line}: ")
        problems += found
        rows.append(MetaCsvRow(line, ref, values))
    check_problems(problems)
    return rows, keys
