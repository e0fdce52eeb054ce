"""What a dataset version is made of, parsed and validated: names, refs, filters, split ratios, grouping.

Every parser raises ``InvalidInput`` with the expected form and what was given, so the CLI and the REST API
report the same one-line message.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from gigavision.annotations import KINDS, STATUSES
from gigavision.errors import InvalidInput
from gigavision.store.source_patterns import SourceFilter

NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
SPLIT_NAME = re.compile(r"^[a-z0-9_-]{1,32}$")
DEFAULT_SPLIT = "train=0.8,val=0.1,test=0.1"
DEFAULT_STATUSES = ("accepted", "adjudicated")  # consensus: what reviewers accepted or adjudicated
DEFAULT_DUP_DISTANCE = 4
MAX_DUP_DISTANCE = 32  # random 64-bit hashes differ in ~32 bits: beyond that everything is a "duplicate"
MAX_SPLITS = 16
RATIO_TOLERANCE = 1e-6
FILTER_KEYS = ("image", "image_id", "label", "source", "status", "kind", "has", "meta:KEY")


def check_name(name: str) -> str:
    """A dataset name: 1-64 characters of ``A-Z a-z 0-9 _ . -`` (not ``.`` or ``..``)."""
    if not isinstance(name, str) or not NAME.match(name) or name in (".", ".."):
        raise InvalidInput(f"dataset name {name!r} must be 1-64 characters of A-Z a-z 0-9 _ . - (e.g. fundus-v1)")
    return name


def parse_ref(ref: str) -> tuple[str, int | None]:
    """``NAME@N`` -> (NAME, N); ``NAME`` or ``NAME@latest`` -> (NAME, None) meaning the newest version."""
    if not isinstance(ref, str) or not ref:
        raise InvalidInput("a dataset version is named NAME@N, NAME@latest or NAME")
    name, sep, version = ref.partition("@")
    check_name(name)
    if not sep or version == "latest":
        return name, None
    if not version.isdigit() or int(version) < 1 or len(version) > 9:
        raise InvalidInput(f"dataset version {ref!r}: the part after @ must be a version number ≥ 1 or 'latest'")
    return name, int(version)


def parse_split(spec: str | Mapping[str, float]) -> dict[str, float]:
    """``"train=0.8,val=0.1,test=0.1"`` (or a mapping) -> ordered {split: ratio}; ratios > 0 summing to 1."""
    pairs: list[tuple[str, Any]]
    if isinstance(spec, str):
        pairs = []
        for part in spec.split(","):
            name, sep, value = part.strip().partition("=")
            if not sep:
                raise InvalidInput(f"split {spec!r}: each part must be name=ratio, e.g. {DEFAULT_SPLIT}")
            pairs.append((name.strip(), value.strip()))
    elif isinstance(spec, Mapping):
        pairs = list(spec.items())
    else:
        raise InvalidInput(f"split must be text like {DEFAULT_SPLIT!r} or a mapping of split name to ratio")
    if not pairs:
        raise InvalidInput(f"split: give at least one name=ratio, e.g. {DEFAULT_SPLIT}")
    if len(pairs) > MAX_SPLITS:
        raise InvalidInput(f"split: at most {MAX_SPLITS} splits, got {len(pairs)}")
    out: dict[str, float] = {}
    for name, value in pairs:
        if not isinstance(name, str) or not SPLIT_NAME.match(name):
            raise InvalidInput(f"split name {name!r} must be 1-32 characters of a-z 0-9 _ -")
        if name in out:
            raise InvalidInput(f"split name {name!r} is given twice")
        try:
            ratio = float(value)
        except (TypeError, ValueError):
            raise InvalidInput(f"split {name}: ratio {value!r} is not a number") from None
        if not math.isfinite(ratio) or ratio <= 0:
            raise InvalidInput(f"split {name}: ratio must be a positive number, got {value!r}")
        out[name] = ratio
    total = math.fsum(out.values())
    if abs(total - 1.0) > RATIO_TOLERANCE:
        shown = ", ".join(f"{k}={v:g}" for k, v in out.items())
        raise InvalidInput(f"split ratios must sum to 1, got {total:g} ({shown})")
    return out


def parse_group_by(value: str) -> str:
    """``image`` (each image is a unit) or ``meta:KEY`` (images sharing that metadata value are one unit)."""
    if value == "image":
        return value
    if isinstance(value, str) and value.startswith("meta:") and 1 <= len(value) - 5 <= 128:
        return value
    raise InvalidInput(f"group-by {value!r} must be 'image' or 'meta:KEY' (e.g. meta:patient_id)")


def parse_statuses(statuses: Iterable[str] | None) -> tuple[str, ...]:
    """Annotation statuses to freeze, in canonical order; None gives the consensus default."""
    if statuses is None:
        return DEFAULT_STATUSES
    given = [s.strip() for item in statuses for s in item.split(",") if s.strip()]
    bad = sorted({s for s in given if s not in STATUSES})
    if bad:
        raise InvalidInput(f"status {', '.join(map(repr, bad))} is not one of {', '.join(STATUSES)}")
    if not given:
        raise InvalidInput(f"give at least one status ({', '.join(STATUSES)})")
    return tuple(s for s in STATUSES if s in given)


def parse_dup_distance(value: int | None) -> int | None:
    """Hamming distance (bits of a 64-bit perceptual hash) under which images are near-duplicates; None: off."""
    if value is None or value == -1:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_DUP_DISTANCE:
        raise InvalidInput(f"dup-distance must be 0..{MAX_DUP_DISTANCE} bits (or -1 to turn it off), got {value!r}")
    return value


@dataclass(frozen=True)
class Filters:
    """Which images and which of their annotations go into a version.

    Image filters (``image`` name globs, ``image_id``, ``meta:KEY``) pick images; annotation filters
    (``label``, ``source`` globs, ``kind``) pick what is frozen of each; ``has=annotations`` then drops images
    left with none. Several values of one key are alternatives (OR); different keys must all hold (AND).
    """

    image: tuple[str, ...] = ()
    image_id: tuple[str, ...] = ()
    meta: tuple[tuple[str, tuple[str, ...]], ...] = ()
    label: tuple[str, ...] = ()
    source: tuple[str, ...] = ()
    kind: tuple[str, ...] = ()
    has_annotations: bool = False
    status: tuple[str, ...] | None = field(default=None, compare=False)  # folded into the statuses

    def as_dict(self) -> dict[str, Any]:
        """Canonical JSON form (sorted values), as stored in the version's spec."""
        out: dict[str, Any] = {}
        for key in ("image", "image_id", "label", "source", "kind"):
            values = getattr(self, key)
            if values:
                out[key] = sorted(values)
        for key, values in self.meta:
            out[f"meta:{key}"] = sorted(values)
        if self.has_annotations:
            out["has"] = ["annotations"]
        return out

    def image_matches(self, image_id: str, name: str, meta: Mapping[str, Any]) -> bool:
        if self.image_id and image_id not in self.image_id:
            return False
        if self.image and not any(fnmatchcase(name, pattern) for pattern in self.image):
            return False
        return all(key in meta and _meta_text(meta[key]) in values for key, values in self.meta)

    def annotation_matches(self, record: Mapping[str, Any]) -> bool:
        """The filters the database query does not apply itself (kind, source globs). A source glob with a
        leading ``!`` excludes (``source=!model:*``: no model predictions, whoever accepted them); globs are
        read as the annotation queries read them (``SourceFilter``)."""
        if self.kind and record["kind"] not in self.kind:
            return False
        return SourceFilter.parse(self.source).matches(str(record["source"]))


def _meta_text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def parse_filters(filters: Sequence[str] | Mapping[str, str | Sequence[str]] | None) -> Filters:
    """``["label=roof,tree", "image=*.tif", "has=annotations"]`` (or the same as a mapping) -> ``Filters``."""
    items: list[tuple[str, list[str]]] = []
    if filters is None:
        return Filters()
    if isinstance(filters, Mapping):
        for key, value in filters.items():
            values = [value] if isinstance(value, str) else list(value)
            items.append((str(key), [v.strip() for x in values for v in str(x).split(",")]))
    elif isinstance(filters, str):
        raise InvalidInput("filters must be a list of key=value[,value...] texts, not one text")
    else:
        for text in filters:
            key, sep, value = str(text).partition("=")
            if not sep or not key.strip():
                raise InvalidInput(
                    f"filter {text!r} must look like key=value[,value...]; keys: {', '.join(FILTER_KEYS)}"
                )
            items.append((key.strip(), [v.strip() for v in value.split(",")]))
    collected: dict[str, set[str]] = {}
    for key, given in items:
        values = [v for v in given if v]
        if not values:
            raise InvalidInput(f"filter {key}= has no values; give key=value[,value...]")
        if key not in FILTER_KEYS[:-1] and not (key.startswith("meta:") and len(key) > 5):
            close = difflib.get_close_matches(key, FILTER_KEYS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise InvalidInput(f"unknown filter key {key!r}{hint}; keys: {', '.join(FILTER_KEYS)}")
        collected.setdefault(key, set()).update(values)
    for key, chosen in collected.items():
        if key == "kind":  # image_id values (ids, prefixes, names) are resolved with the workspace (versions.py)
            bad = sorted(chosen - set(KINDS))
            if bad:
                raise InvalidInput(f"filter kind={bad[0]!r}: kind must be one of {', '.join(KINDS)}")
        elif key == "status":
            parse_statuses(chosen)
        elif key == "source":
            SourceFilter.parse(sorted(chosen))  # a bare "!" is refused here, not when freezing
        elif key == "has" and chosen != {"annotations"}:
            raise InvalidInput(f"filter has={','.join(sorted(chosen))!r}: only has=annotations is supported")
    meta = tuple(sorted((k[5:], tuple(sorted(v))) for k, v in collected.items() if k.startswith("meta:")))
    return Filters(
        image=tuple(sorted(collected.get("image", ()))),
        image_id=tuple(sorted(collected.get("image_id", ()))),
        meta=meta,
        label=tuple(sorted(collected.get("label", ()))),
        source=tuple(sorted(collected.get("source", ()))),
        kind=tuple(k for k in KINDS if k in collected.get("kind", ())),
        has_annotations="has" in collected,
        status=parse_statuses(collected["status"]) if "status" in collected else None,
    )
