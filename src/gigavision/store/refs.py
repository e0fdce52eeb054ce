"""Ids the way users type them: a unique prefix of a hex id (at least ``MIN_PREFIX`` characters, as git and
docker accept), found with an indexed range query, and the one error for a reference that fits several rows.

The callers own their identifiers (``ImageCatalog.find`` in ``store/catalog.py`` for images, also by name;
``JobManager.find`` for jobs); this module only knows how to look up a prefix and how to say that a
reference is ambiguous.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, and_, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from gigavision.errors import Ambiguous

MIN_PREFIX = 6  # shortest id prefix accepted (lists show SHOWN characters)
SHOWN = 12  # characters of an id that tables show; always a usable prefix
CANDIDATES = 5  # candidates an ambiguity error lists
HEX_PREFIX = re.compile(rf"[0-9a-fA-F]{{{MIN_PREFIX},}}")


def hex_prefix(ref: str, *, len_id: int) -> str | None:
    """``ref`` lower-cased when it can be a prefix (shorter than the whole) of a ``len_id``-digit hex id."""
    if HEX_PREFIX.fullmatch(ref) and len(ref) < len_id:
        return ref.lower()
    return None


def too_short(ref: str) -> bool:
    """``ref`` looks like the start of a hex id but is shorter than ``MIN_PREFIX``."""
    return 0 < len(ref) < MIN_PREFIX and all(c in "0123456789abcdefABCDEF" for c in ref)


def starts_with(column: InstrumentedAttribute[str], prefix: str) -> ColumnElement[bool]:
    """``column`` begins with the lower-case hex ``prefix``: ``prefix <= column < prefix + "g"``.

    A range on the column's own B-tree index on SQLite and PostgreSQL (``LIKE 'p%'`` would need a
    ``text_pattern_ops`` index on PostgreSQL under a non-C collation); "g" sorts after every hex digit.
    """
    return and_(column >= prefix, column < prefix + "g")


def by_prefix(
    s: Session, column: InstrumentedAttribute[str], prefix: str, *extra: InstrumentedAttribute[Any]
) -> list[tuple[Any, ...]]:
    """Rows ``(id, *extra)`` whose id starts with ``prefix``; at most ``CANDIDATES + 1`` (enough to tell one
    from several and to list the candidates)."""
    stmt = select(column, *extra).where(starts_with(column, prefix)).order_by(column).limit(CANDIDATES + 1)
    return [tuple(r) for r in s.execute(stmt).all()]


def ambiguous(head: str, hint: str, candidates: Sequence[str], *, capped: bool = False) -> Ambiguous:
    """The error for a reference that fits several rows: ``"{head}; {hint}: {candidates}"``, at most
    ``CANDIDATES`` of them listed (``capped``: the query stopped early, there may be more than were given)."""
    listed = ", ".join(candidates[:CANDIDATES])
    if capped or len(candidates) > CANDIDATES:
        listed += ", …"
    return Ambiguous(f"{head}; {hint}: {listed}")
