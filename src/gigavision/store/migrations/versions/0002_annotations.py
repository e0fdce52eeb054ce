"""label schema, annotations with a spatial index, annotation events

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22

SQLite: a 2-D R*Tree over the bbox kept in step by triggers; PostgreSQL: a GiST index on the bbox as
a ``box``. Both answer "annotations of image I inside this viewport" without a table scan.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite autoincrements INTEGER PRIMARY KEY only


def upgrade() -> None:
    op.create_table(
        "label_classes",
        sa.Column("name", sa.String(256), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("color", sa.String(16), nullable=False),
        sa.Column("parent", sa.String(256)),
        sa.Column("attributes", sa.JSON(), nullable=False),
    )
    op.create_table(
        "annotations",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("image_id", sa.String(64), sa.ForeignKey("images.id"), nullable=False),
        sa.Column("image_key", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("label", sa.String(256), nullable=False),
        sa.Column("x0", sa.Float()),
        sa.Column("y0", sa.Float()),
        sa.Column("x1", sa.Float()),
        sa.Column("y1", sa.Float()),
        sa.Column("geometry", sa.LargeBinary()),
        sa.Column("mask", sa.JSON()),
        sa.Column("score", sa.Float()),
        sa.Column("source", sa.String(256), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(256), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    # One small integer index per image; label/source/status filters apply after the spatial or image
    # narrowing, so indexing those text columns would only cost ingest time and disk.
    op.create_index("ix_annotations_image_key", "annotations", ["image_key"])
    op.create_table(
        "annotation_events",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("annotation_id", sa.BigInteger(), nullable=False),
        sa.Column("image_id", sa.String(64), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(256), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("before", sa.JSON()),
        sa.Column("after", sa.JSON()),
    )
    op.create_index("ix_annotation_events_annotation_id", "annotation_events", ["annotation_id"])

    if op.get_bind().dialect.name == "sqlite":
        # Two dimensions only. A third "image" dimension looked attractive, but its zero extent within an
        # image wrecks SQLite's node splits: 31 ms vs 0.05 ms per 1024² query at 500k polygons (measured).
        # Rows of other images are dropped by the exact image_id filter of the query.
        op.execute("CREATE VIRTUAL TABLE annotations_rtree USING rtree(id, x0, x1, y0, y1)")
        values = "NEW.id, NEW.x0, NEW.x1, NEW.y0, NEW.y1"
        live = "NEW.x0 IS NOT NULL AND NEW.deleted = 0"
        op.execute(
            f"CREATE TRIGGER annotations_rtree_insert AFTER INSERT ON annotations WHEN {live} "  # noqa: S608
            f"BEGIN INSERT INTO annotations_rtree VALUES ({values}); END"
        )
        op.execute(
            "CREATE TRIGGER annotations_rtree_update AFTER UPDATE OF x0, y0, x1, y1, deleted ON annotations "  # noqa: S608
            "BEGIN DELETE FROM annotations_rtree WHERE id = OLD.id; "
            f"INSERT INTO annotations_rtree SELECT {values} WHERE {live}; END"
        )
        op.execute(
            "CREATE TRIGGER annotations_rtree_delete AFTER DELETE ON annotations "
            "BEGIN DELETE FROM annotations_rtree WHERE id = OLD.id; END"
        )
    else:
        op.execute(
            "CREATE INDEX ix_annotations_bbox ON annotations USING gist "
            "(box(point(x0, y0), point(x1, y1))) WHERE x0 IS NOT NULL AND NOT deleted"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for trig in ("insert", "update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS annotations_rtree_{trig}")
        op.execute("DROP TABLE IF EXISTS annotations_rtree")
    op.drop_table("annotation_events")
    op.drop_table("annotations")
    op.drop_table("label_classes")
