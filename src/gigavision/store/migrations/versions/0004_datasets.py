"""dataset versions, their images, cached perceptual hashes

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22

A dataset version is written once and never updated; its images' frozen annotations live in the blob store
(content-addressed), so the rows here are small. ``dataset_images`` is keyed by (version, position) where
position is the rank by (name, id), giving the same listing order on SQLite and PostgreSQL.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "dataset_versions",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("ref", sa.String(80), nullable=False, unique=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(256), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("label_schema", sa.JSON(), nullable=False),
        sa.Column("counts", sa.JSON(), nullable=False),
    )
    op.create_index("ix_dataset_versions_name", "dataset_versions", ["name"])
    op.create_index("ix_dataset_versions_content_hash", "dataset_versions", ["content_hash"])
    op.create_table(
        "dataset_images",
        sa.Column("version_id", sa.BigInteger(), sa.ForeignKey("dataset_versions.id"), primary_key=True),
        sa.Column("position", sa.Integer(), primary_key=True),
        sa.Column("image_id", sa.String(64), sa.ForeignKey("images.id"), nullable=False),
        sa.Column("name", sa.String(1024), nullable=False),
        sa.Column("width", sa.BigInteger(), nullable=False),
        sa.Column("height", sa.BigInteger(), nullable=False),
        sa.Column("bands", sa.Integer(), nullable=False),
        sa.Column("split", sa.String(32), nullable=False),
        sa.Column("group_index", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(256)),
        sa.Column("n_annotations", sa.Integer(), nullable=False),
        sa.Column("annotations_sha", sa.String(64), nullable=False),
        sa.Column("annotations_key", sa.Text(), nullable=False),
    )
    op.create_index("ix_dataset_images_image_id", "dataset_images", ["image_id"])
    op.create_table(
        "image_hashes",
        sa.Column("image_id", sa.String(64), sa.ForeignKey("images.id"), primary_key=True),
        sa.Column("phash", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("image_hashes")
    op.drop_index("ix_dataset_images_image_id", "dataset_images")
    op.drop_table("dataset_images")
    op.drop_index("ix_dataset_versions_content_hash", "dataset_versions")
    op.drop_index("ix_dataset_versions_name", "dataset_versions")
    op.drop_table("dataset_versions")
