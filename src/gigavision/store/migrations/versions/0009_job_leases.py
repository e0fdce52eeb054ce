"""job leases: a running job's lease, the worker that claimed it, and how many times it was claimed

Revision ID: 0009
Revises: 0008

A worker renews ``lease_until`` while it runs a job; a job whose lease expired lost its worker (SIGKILL,
OOM, a power cut) and is requeued (up to ``[jobs] max_retries``) or failed by the reaper. Jobs already
``running`` when this migration runs were started without a lease by a server that is now stopped: they
get an expired lease and one attempt, so the next consumer's start-up requeues them instead of leaving
them ``running`` forever.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True))
    op.add_column("jobs", sa.Column("worker", sa.String(256), nullable=True))
    op.add_column("jobs", sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
    jobs = sa.table(
        "jobs",
        sa.column("status", sa.String),
        sa.column("lease_until", sa.DateTime(timezone=True)),
        sa.column("attempts", sa.Integer),
    )
    op.execute(
        jobs.update().where(jobs.c.status == "running").values(lease_until=sa.func.current_timestamp(), attempts=1)
    )


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("attempts")
        batch.drop_column("worker")
        batch.drop_column("lease_until")
