"""multi-annotator quality control: items, assignments, the annotations of submissions and consensus

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22

``qc_items`` are whole images or regions labelled independently by several annotators; ``qc_assignments``
says who labels or adjudicates which item (unique per item and person, so nobody is assigned twice and no
annotator adjudicates their own item); ``qc_labels`` links each submission and each consensus to its rows in
``annotations``, which stay ordinary annotations; a submitted row's ``verdict`` (accepted / rejected against
the consensus) is decided with the item and then applied to the annotation's status.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "qc_items",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("image_id", sa.String(64), sa.ForeignKey("images.id"), nullable=False),
        sa.Column("x0", sa.Float()),
        sa.Column("y0", sa.Float()),
        sa.Column("x1", sa.Float()),
        sa.Column("y1", sa.Float()),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("required", sa.Integer(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("agreement", sa.Float()),
        sa.Column("result", sa.JSON()),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(256), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_by", sa.String(256)),
        sa.Column("decided_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_qc_items_image_id", "qc_items", ["image_id"])
    op.create_index("ix_qc_items_status", "qc_items", ["status"])
    op.create_table(
        "qc_assignments",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("item_id", sa.BigInteger(), sa.ForeignKey("qc_items.id"), nullable=False),
        sa.Column("annotator", sa.String(256), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("assigned_by", sa.String(256), nullable=False),
        sa.Column("assigned_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("submitted_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("item_id", "annotator", name="uq_qc_assignments_item_annotator"),
    )
    op.create_index("ix_qc_assignments_item_id", "qc_assignments", ["item_id"])
    op.create_index("ix_qc_assignments_annotator", "qc_assignments", ["annotator"])
    op.create_table(
        "qc_labels",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("item_id", sa.BigInteger(), sa.ForeignKey("qc_items.id"), nullable=False),
        sa.Column("annotation_id", sa.BigInteger(), sa.ForeignKey("annotations.id"), nullable=False),
        sa.Column("annotator", sa.String(256)),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("verdict", sa.String(16)),
    )
    op.create_index("ix_qc_labels_item_id", "qc_labels", ["item_id"])


def downgrade() -> None:
    op.drop_index("ix_qc_labels_item_id", "qc_labels")
    op.drop_table("qc_labels")
    op.drop_index("ix_qc_assignments_annotator", "qc_assignments")
    op.drop_index("ix_qc_assignments_item_id", "qc_assignments")
    op.drop_table("qc_assignments")
    op.drop_index("ix_qc_items_status", "qc_items")
    op.drop_index("ix_qc_items_image_id", "qc_items")
    op.drop_table("qc_items")
