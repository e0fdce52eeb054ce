"""Searching the image catalogue (the web app's image list): by name, by what is annotated on an image (label,
status), by a metadata value, and by whether a review task is still open on it. One query per page, counted
in the database, in the catalogue's order (the order images were added)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import String, and_, cast, exists, func, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from gigavision.errors import InvalidInput
from gigavision.store.schema import AnnotationImageRow, AnnotationRow, ImageRow, ReviewTaskRow


@dataclass(frozen=True, slots=True)
class ImageQuery:
    """What the list asks for; every field optional (None: no filter)."""

    name: str | None = None  # part of the name, any case
    label: str | None = None  # has an annotation of this label
    status: str | None = None  # has an annotation in this status (with label: the same annotation)
    meta: tuple[str, str] | None = None  # metadata KEY equals VALUE (compared as text: 3 matches "3")
    pending_review: bool | None = None  # True: an open review task on it; False: none

    @property
    def empty(self) -> bool:
        return all(v is None for v in (self.name, self.label, self.status, self.meta, self.pending_review))


def parse_meta(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` as typed in the list's filter; InvalidInput names the parameter."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise InvalidInput(f"meta: expected KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


def _clauses(q: ImageQuery) -> list[ColumnElement[bool]]:
    clauses: list[ColumnElement[bool]] = []
    if q.name:
        clauses.append(func.lower(ImageRow.name).contains(q.name.lower(), autoescape=True))
    if q.label is not None or q.status is not None:
        on = [AnnotationImageRow.image_id == ImageRow.id, AnnotationRow.image_key == AnnotationImageRow.image_key]
        if q.label is not None:
            on.append(AnnotationRow.label == q.label)
        if q.status is not None:
            on.append(AnnotationRow.status == q.status)
        clauses.append(exists(select(AnnotationRow.id).where(*on)))
    if q.meta is not None:
        key, value = q.meta
        # As text on every database (a number as it is written in JSON), so a text value never meets a cast.
        clauses.append(cast(ImageRow.meta[key].as_string(), String) == value)
    if q.pending_review is not None:
        open_task = exists(
            select(ReviewTaskRow.id).where(and_(ReviewTaskRow.image_id == ImageRow.id, ReviewTaskRow.status == "open"))
        )
        clauses.append(open_task if q.pending_review else ~open_task)
    return clauses


def search_images(
    session: Callable[[], Any], query: ImageQuery, offset: int = 0, limit: int = 50
) -> tuple[list[ImageRow], int]:
    """A page of the images matching ``query`` (oldest first, as ``ImageCatalog.page``) and how many match."""
    if offset < 0 or not 1 <= limit <= 1000:
        raise InvalidInput(f"offset must be ≥ 0 and limit 1..1000, got offset={offset} limit={limit}")
    clauses = _clauses(query)
    s: Session
    with session() as s:
        total = s.scalar(select(func.count()).select_from(ImageRow).where(*clauses)) or 0
        rows = s.scalars(
            select(ImageRow).where(*clauses).order_by(ImageRow.created_at, ImageRow.id).offset(offset).limit(limit)
        ).all()
    return list(rows), int(total)
