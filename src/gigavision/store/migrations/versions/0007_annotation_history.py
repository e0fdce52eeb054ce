"""annotation history: one event per (annotation, version)

Revision ID: 0007
Revises: 0006

Every write of an annotation bumps its version and records one ``annotation_events`` row stamped with the
new version, so ``(annotation_id, version)`` is unique from now on (a unique index, which also serves the
lookups of ``annotation_id`` alone: it replaces ``ix_annotation_events_annotation_id``). A second writer
that slips past the version check then fails on the index instead of leaving two histories.

Before 0007 a stale delete could land after a concurrent edit, leaving two events with the same version.
None is dropped: the events of such an annotation are renumbered in their order (``id``), each at least one
above the one before, and the annotation's version is raised to its last event's, so its history stays
complete and strictly increasing. A plain ``CREATE UNIQUE INDEX`` works on SQLite and PostgreSQL alike:
no table is rebuilt.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

UNIQUE = "ux_annotation_events_version"
OLD_INDEX = "ix_annotation_events_annotation_id"


def _renumber_duplicates(conn: sa.Connection) -> None:
    events = sa.table("annotation_events", sa.column("id"), sa.column("annotation_id"), sa.column("version"))
    rows = sa.table("annotations", sa.column("id"), sa.column("version"))
    clashing = conn.scalars(
        sa.select(events.c.annotation_id)
        .group_by(events.c.annotation_id, events.c.version)
        .having(sa.func.count() > 1)
        .distinct()
    ).all()
    for annotation_id in clashing:
        history = conn.execute(
            sa.select(events.c.id, events.c.version)
            .where(events.c.annotation_id == annotation_id)
            .order_by(events.c.id)
        ).all()
        last = 0
        for event_id, version in history:
            new = max(int(version), last + 1)
            if new != version:
                conn.execute(sa.update(events).where(events.c.id == event_id).values(version=new))
            last = new
        conn.execute(sa.update(rows).where(rows.c.id == annotation_id, rows.c.version < last).values(version=last))


def upgrade() -> None:
    _renumber_duplicates(op.get_bind())
    op.create_index(UNIQUE, "annotation_events", ["annotation_id", "version"], unique=True)
    op.drop_index(OLD_INDEX, table_name="annotation_events")


def downgrade() -> None:
    op.create_index(OLD_INDEX, "annotation_events", ["annotation_id"])
    op.drop_index(UNIQUE, table_name="annotation_events")
