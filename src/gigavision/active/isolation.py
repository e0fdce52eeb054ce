"""Independence of QC labellings: what one annotator may not see while an item is open.

While a QC item is open, its annotators' labels are ordinary annotations of the image (status ``proposed``,
source ``user:NAME``), drawn in the viewer before they are handed in and linked to the item once they are.
Every endpoint that returns annotations of an image asks ``hidden_from`` first: for a person who labels on
that image (or any login of the annotator role), the other annotators' proposed rows of the image are left
out (by link, by source ``user:NAME`` / ``NAME``, or by who created them) until the items are decided.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import or_, select

from gigavision.active.quality_items import source_of
from gigavision.store.schema import AnnotationRow, QcAssignmentRow, QcItemRow, QcLabelRow

if TYPE_CHECKING:
    from gigavision.workspace import Workspace


@dataclass(frozen=True)
class Hidden:
    """Annotation ids of one image that a person may not see now (empty: nothing hidden)."""

    ids: frozenset[int] = field(default_factory=frozenset)

    def __bool__(self) -> bool:
        return bool(self.ids)


NOTHING = Hidden()


def hidden_from(ws: Workspace, image_id: str, viewer: str, *, always: bool) -> Hidden:
    """The other annotators' labels of ``image_id``'s open QC items, as seen by ``viewer``. ``always``: hide
    them even when ``viewer`` is not one of the item's annotators (a login of the annotator role)."""
    with ws.session() as s:
        rows = s.execute(
            select(QcItemRow.id, QcAssignmentRow.annotator)
            .join(QcAssignmentRow, QcAssignmentRow.item_id == QcItemRow.id)
            .where(QcItemRow.image_id == image_id, QcItemRow.status == "open", QcAssignmentRow.role == "annotator")
        ).all()
        annotators = {str(a) for _, a in rows}
        if not rows or not (always or viewer in annotators):
            return NOTHING
        others = sorted(annotators - {viewer})
        if not others:
            return NOTHING
        item_ids = sorted({int(i) for i, _ in rows})
        linked = s.scalars(
            select(QcLabelRow.annotation_id).where(
                QcLabelRow.item_id.in_(item_ids), QcLabelRow.role == "submission", QcLabelRow.annotator.in_(others)
            )
        ).all()
        sources = [source_of(n) for n in others] + others
        drafts = s.scalars(
            select(AnnotationRow.id).where(
                AnnotationRow.image_id == image_id,
                AnnotationRow.deleted.is_(False),
                AnnotationRow.status == "proposed",
                or_(AnnotationRow.source.in_(sources), AnnotationRow.created_by.in_(others)),
            )
        ).all()
    return Hidden(frozenset(int(i) for i in (*linked, *drafts)))


def annotation_owner(ws: Workspace, annotation_id: int) -> tuple[str, str, str] | None:
    """(image id, created_by, source) of a live annotation; None when there is none."""
    with ws.session() as s:
        row = s.execute(
            select(AnnotationRow.image_id, AnnotationRow.created_by, AnnotationRow.source).where(
                AnnotationRow.id == annotation_id, AnnotationRow.deleted.is_(False)
            )
        ).first()
    return None if row is None else (str(row[0]), str(row[1]), str(row[2]))


def owns(name: str, created_by: str, source: str) -> bool:
    """Whether an annotation is ``name``'s own: created by them, or labelled as theirs (``user:NAME``)."""
    return name in (created_by, source) or source == source_of(name)
