"""``workspace_source``: the live workspace as an ``AnnotatedImages`` (every image, its live annotations).

Images stream in pages ordered by (name, id) with a byte-wise collation on both databases, so SQLite and
PostgreSQL export the same order; annotations stream per image in stored id order.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import and_, func, or_, select

from gigavision.annotations import STATUSES, Annotations
from gigavision.errors import InvalidInput
from gigavision.formats.source import ImageEntry
from gigavision.store.annotations import image_key
from gigavision.store.schema import AnnotationRow, ImageRow

if TYPE_CHECKING:
    from gigavision.workspace import Workspace

PAGE = 500
ROWS_PAGE = 50_000
DEFAULT_STATUSES = tuple(s for s in STATUSES if s != "rejected")


class WorkspaceSource:
    """Every image of a workspace and its non-deleted annotations, filtered by status and label.

    ``statuses`` defaults to every status except ``rejected`` (a reviewer said those are wrong).
    """

    def __init__(
        self,
        ws: Workspace,
        *,
        statuses: Sequence[str] | None = None,
        labels: Sequence[str] | None = None,
        image_ids: Sequence[str] | None = None,
    ) -> None:
        self.ws = ws
        self.statuses = tuple(statuses) if statuses else DEFAULT_STATUSES
        bad = sorted(set(self.statuses) - set(STATUSES))
        if bad:
            raise InvalidInput(f"status must be one of {', '.join(STATUSES)}, got {bad}")
        self.labels = tuple(labels) if labels else None
        self.image_ids = tuple(sorted(set(image_ids))) if image_ids else None
        self._name = ImageRow.name.collate("C") if ws.engine.dialect.name == "postgresql" else ImageRow.name

    def classes(self) -> list[dict[str, Any]]:
        """The schema sorted by name, plus labels in use that the schema lacks (kind = their commonest)."""
        found = {
            name: {"name": name, "kind": c.kind, "color": c.color, "parent": c.parent, "attributes": c.attributes}
            for name, c in self.ws.labels.by_name().items()
        }
        a = AnnotationRow
        stmt = (
            select(a.label, a.kind, func.count())
            .where(~a.deleted, a.status.in_(self.statuses))
            .group_by(a.label, a.kind)
            .order_by(func.count().desc(), a.label, a.kind)
        )
        with self.ws.session() as s:
            for label, kind, _ in s.execute(stmt):
                if label not in found:
                    found[label] = {"name": label, "kind": kind, "color": "#ff0000", "parent": None, "attributes": {}}
        chosen = [found[n] for n in sorted(found) if self.labels is None or n in self.labels]
        return chosen

    def images(self) -> Iterator[ImageEntry]:
        last: tuple[str, str] | None = None
        while True:
            stmt = select(ImageRow.id, ImageRow.name, ImageRow.width, ImageRow.height, ImageRow.bands)
            if self.image_ids is not None:
                stmt = stmt.where(ImageRow.id.in_(self.image_ids))
            if last is not None:
                stmt = stmt.where(or_(self._name > last[0], and_(self._name == last[0], ImageRow.id > last[1])))
            stmt = stmt.order_by(self._name, ImageRow.id).limit(PAGE)
            with self.ws.session() as s:
                rows = s.execute(stmt).all()
            for r in rows:
                yield ImageEntry(r.id, r.name, int(r.width), int(r.height), None, int(r.bands))
            if len(rows) < PAGE:
                return
            last = (rows[-1].name, rows[-1].id)

    def annotations(self, image_id: str) -> Annotations:
        a = AnnotationRow
        parts: list[Annotations] = []
        last = 0
        while True:
            stmt = select(a).where(a.image_key == image_key(image_id), a.image_id == image_id, ~a.deleted, a.id > last)
            stmt = stmt.where(a.status.in_(self.statuses))
            if self.labels is not None:
                stmt = stmt.where(a.label.in_(self.labels))
            with self.ws.session() as s:
                rows = list(s.scalars(stmt.order_by(a.id).limit(ROWS_PAGE)))
            if rows:
                parts.append(rows_to_annotations(rows))
                last = rows[-1].id
            if len(rows) < ROWS_PAGE:
                return Annotations.merge(parts)

    def image_file(self, image_id: str) -> Path:
        """A local file with the image's original bytes."""
        return self.ws.blobs.local_path(self.ws.get_image(image_id).blob_key)

    def __len__(self) -> int:
        stmt = select(func.count()).select_from(ImageRow)
        if self.image_ids is not None:
            stmt = stmt.where(ImageRow.id.in_(self.image_ids))
        with self.ws.session() as s:
            return int(s.scalar(stmt) or 0)


def workspace_source(
    ws: Workspace,
    statuses: Sequence[str] | None = None,
    labels: Sequence[str] | None = None,
    image_ids: Sequence[str] | None = None,
) -> WorkspaceSource:
    """The live workspace as an export source (see ``WorkspaceSource``)."""
    return WorkspaceSource(ws, statuses=statuses, labels=labels, image_ids=image_ids)


def rows_to_annotations(rows: Sequence[AnnotationRow]) -> Annotations:
    """Database rows to ``Annotations`` in one pass (geometry decoded from WKB in bulk)."""
    import shapely

    n = len(rows)
    geometry = np.empty(n, dtype=object)
    wkb = [r.geometry for r in rows]
    have = [i for i, g in enumerate(wkb) if g is not None]
    if have:
        geometry[have] = shapely.from_wkb([wkb[i] for i in have])
    mask = np.empty(n, dtype=object)
    attributes = np.empty(n, dtype=object)
    for i, r in enumerate(rows):
        mask[i] = r.mask
        attributes[i] = r.attributes or {}
    return Annotations(
        kind=np.array([r.kind for r in rows], dtype=object),
        label=np.array([r.label for r in rows], dtype=object),
        xyxy=np.array([[math.nan] * 4 if r.x0 is None else [r.x0, r.y0, r.x1, r.y1] for r in rows], dtype=np.float64),
        geometry=geometry,
        mask=mask,
        score=np.array([math.nan if r.score is None else r.score for r in rows], dtype=np.float64),
        source=np.array([r.source for r in rows], dtype=object),
        status=np.array([r.status for r in rows], dtype=object),
        attributes=attributes,
        id=np.array([r.id for r in rows], dtype=np.int64),
    )
