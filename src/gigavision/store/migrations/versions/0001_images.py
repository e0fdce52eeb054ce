"""images table

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "images",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(1024), nullable=False),
        sa.Column("source_path", sa.Text()),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("blob_key", sa.Text(), nullable=False),
        sa.Column("pyramid", sa.Text()),
        sa.Column("reader", sa.String(32), nullable=False),
        sa.Column("format", sa.String(32), nullable=False),
        sa.Column("width", sa.BigInteger(), nullable=False),
        sa.Column("height", sa.BigInteger(), nullable=False),
        sa.Column("levels", sa.JSON(), nullable=False),
        sa.Column("bands", sa.Integer(), nullable=False),
        sa.Column("dtype", sa.String(16), nullable=False),
        sa.Column("mpp_x", sa.Float()),
        sa.Column("mpp_y", sa.Float()),
        sa.Column("crs", sa.String(256)),
        sa.Column("transform", sa.JSON()),
        sa.Column("modality", sa.String(32)),
        sa.Column("foreground_fraction", sa.Float()),
        sa.Column("display_window", sa.JSON()),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_images_name", "images", ["name"])
    op.create_index("ix_images_created_at", "images", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_images_created_at", "images")
    op.drop_index("ix_images_name", "images")
    op.drop_table("images")
