"""Which annotation sources a filter keeps: exact names, ``*``/``?`` globs, and ``!`` exclusions.

One reading of a ``source`` filter for every layer: the annotation queries (REST ``source=model:*`` or
``source=!model:*``: the viewer's model vs human switch), dataset versions (``source=!model:*``: no model
predictions, whoever accepted them) and anything that filters records in memory. Several patterns are
alternatives (OR); an exclusion removes what it matches whatever else matches; only exclusions: everything else.
``*`` is any run of characters, ``?`` one character, everything else (``[`` included) stands for itself, and
case matters, in SQL (SQLite ``GLOB``, PostgreSQL ``LIKE``) as in Python.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from sqlalchemy import false, not_, or_

from gigavision.errors import InvalidInput

WILDCARDS = ("*", "?")


def _is_glob(pattern: str) -> bool:
    return any(w in pattern for w in WILDCARDS)


def _regex(pattern: str) -> str:
    return "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)


def _sqlite_glob(pattern: str) -> str:
    """SQLite GLOB reads ``[`` as a character class: ``[[]`` is a literal one."""
    return pattern.replace("[", "[[]")


def _like(pattern: str) -> str:
    """A PostgreSQL LIKE pattern (escape ``\\``) for a glob."""
    out = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return out.replace("*", "%").replace("?", "_")


@dataclass(frozen=True)
class SourceFilter:
    """Parsed ``source`` patterns (``SourceFilter.parse``); empty: every source."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    @classmethod
    def parse(cls, patterns: Sequence[str]) -> SourceFilter:
        include: list[str] = []
        exclude: list[str] = []
        for pattern in patterns:
            if pattern.startswith("!"):
                if len(pattern) == 1:
                    raise InvalidInput("source filter '!' names nothing to leave out: give !PATTERN, e.g. !model:*")
                exclude.append(pattern[1:])
            else:
                include.append(pattern)
        return cls(tuple(include), tuple(exclude))

    def __bool__(self) -> bool:
        return bool(self.include or self.exclude)

    @cached_property
    def _include_re(self) -> re.Pattern[str] | None:
        return re.compile("|".join(_regex(p) for p in self.include), re.DOTALL) if self.include else None

    @cached_property
    def _exclude_re(self) -> re.Pattern[str] | None:
        return re.compile("|".join(_regex(p) for p in self.exclude), re.DOTALL) if self.exclude else None

    def matches(self, source: str) -> bool:
        if self._exclude_re is not None and self._exclude_re.fullmatch(source):
            return False
        return self._include_re is None or self._include_re.fullmatch(source) is not None

    def clauses(self, column: Any, *, sqlite: bool) -> list[Any]:
        """SQL WHERE clauses on a (NOT NULL) source ``column``; exact names compare with ``IN``."""

        def any_of(patterns: tuple[str, ...]) -> Any:
            exact = [p for p in patterns if not _is_glob(p)]
            tests = [column.in_(exact)] if exact else []
            for p in patterns:
                if _is_glob(p):
                    tests.append(
                        column.op("GLOB", is_comparison=True)(_sqlite_glob(p))
                        if sqlite
                        else column.like(_like(p), escape="\\")
                    )
            return or_(false(), *tests)

        clauses = [any_of(self.include)] if self.include else []
        if self.exclude:
            clauses.append(not_(any_of(self.exclude)))
        return clauses
