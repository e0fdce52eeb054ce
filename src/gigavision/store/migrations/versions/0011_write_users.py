"""who wrote it: the person who last changed an image's metadata, and who cancelled a job

Revision ID: 0011
Revises: 0010

Issue 13 asks that every write records its user; annotations, QC, datasets, models and reviews already
did, image metadata and job cancels did not.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("images", sa.Column("meta_by", sa.String(256), nullable=True))
    op.add_column("images", sa.Column("meta_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("jobs", sa.Column("cancelled_by", sa.String(256), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("cancelled_by")
    with op.batch_alter_table("images") as batch:
        batch.drop_column("meta_at")
        batch.drop_column("meta_by")
