"""the loop: review tasks, routing policies, model aliases with their history, retraining loops and runs

Revision ID: 0010
Revises: 0009

Issue 14: uncertain predictions become review tasks for experts, their answers become labels, a loop
retrains and promotes the better model behind an alias that predict can name.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def _id() -> sa.Column[int]:
    return sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True)


def _at(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "review_tasks",
        _id(),
        sa.Column("reason", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("image_id", sa.String(64), sa.ForeignKey("images.id"), nullable=False),
        sa.Column("x0", sa.Float()),
        sa.Column("y0", sa.Float()),
        sa.Column("x1", sa.Float()),
        sa.Column("y1", sa.Float()),
        sa.Column("annotation_id", sa.BigInteger()),
        sa.Column("model_id", sa.String(64)),
        sa.Column("label", sa.String(256)),
        sa.Column("score", sa.Float()),
        sa.Column("uncertainty", sa.Float()),
        sa.Column("priority", sa.Float(), nullable=False),
        sa.Column("batch", sa.String(64)),
        sa.Column("details", sa.JSON()),
        sa.Column("assignee", sa.String(256)),
        sa.Column("created_by", sa.String(256), nullable=False),
        _at("created_at"),
        sa.Column("decision", sa.String(16)),
        sa.Column("decided_by", sa.String(256)),
        _at("decided_at", nullable=True),
        sa.Column("result_annotation_id", sa.BigInteger()),
        sa.Column("version", sa.Integer(), nullable=False),
    )
    op.create_index("ix_review_tasks_open", "review_tasks", ["status", "priority"])
    for column in ("image_id", "annotation_id", "model_id", "batch"):
        op.create_index(f"ix_review_tasks_{column}", "review_tasks", [column])
    op.create_table(
        "routing_policies",
        sa.Column("model_ref", sa.String(128), primary_key=True),
        sa.Column("label", sa.String(256), primary_key=True),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("audit_share", sa.Float(), nullable=False),
        sa.Column("updated_by", sa.String(256), nullable=False),
        _at("updated_at"),
    )
    op.create_table(
        "model_aliases",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("model_id", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_by", sa.String(256), nullable=False),
        _at("updated_at"),
    )
    op.create_table(
        "model_alias_events",
        _id(),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("model_id", sa.String(64)),
        sa.Column("previous_model_id", sa.String(64)),
        sa.Column("actor", sa.String(256), nullable=False),
        _at("at"),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("evidence", sa.JSON()),
    )
    op.create_index("ix_model_alias_events_name", "model_alias_events", ["name"])
    op.create_table(
        "loops",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("dataset", sa.String(64), nullable=False),
        sa.Column("recipe", sa.JSON(), nullable=False),
        sa.Column("every", sa.Integer(), nullable=False),
        sa.Column("metric", sa.String(64), nullable=False),
        sa.Column("margin", sa.Float(), nullable=False),
        sa.Column("alias", sa.String(64), nullable=False),
        sa.Column("warm_start", sa.Boolean(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(256), nullable=False),
        _at("created_at"),
    )
    op.create_table(
        "loop_runs",
        _id(),
        sa.Column("loop", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("job_id", sa.String(32)),
        sa.Column("dataset_ref", sa.String(80)),
        sa.Column("baseline_model_id", sa.String(64)),
        sa.Column("candidate_model_id", sa.String(64)),
        sa.Column("comparison", sa.JSON()),
        sa.Column("message", sa.Text(), nullable=False),
        _at("started_at"),
        _at("finished_at", nullable=True),
    )
    op.create_index("ix_loop_runs_loop", "loop_runs", ["loop"])


def downgrade() -> None:
    for table in ("loop_runs", "loops", "model_alias_events", "model_aliases", "routing_policies"):
        op.drop_table(table)
    op.drop_table("review_tasks")
