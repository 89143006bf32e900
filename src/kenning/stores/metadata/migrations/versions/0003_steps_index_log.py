"""pipeline v2: steps and backoff on stage runs, index write-ahead log, kept counters

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 07:30:00

- ``stage_run`` gains ``tenant_id`` (filled from its job), ``step`` (existing runs form
  a step of their own: ``queue:processor``) and ``not_before`` (backoff), with the
  indexes the batch claim and the per-tenant dead-letter listing use.
- ``index_log``: the write-ahead log the vector, hash and keyword indexes follow.
- ``tenant_load``: unfinished stage runs per tenant, kept by writers, read by backpressure.
- ``step_bell``: doorbell de-duplication per step.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import kenning.stores.metadata.tables

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_TIME = kenning.stores.metadata.tables.UTCDateTime


def upgrade() -> None:
    with op.batch_alter_table("stage_run", schema=None) as batch_op:
        batch_op.add_column(sa.Column("tenant_id", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("step", sa.String(length=300), nullable=True))
        batch_op.add_column(sa.Column("not_before", _TIME(), nullable=True))
    op.execute(
        "UPDATE stage_run SET tenant_id = (SELECT job.tenant_id FROM job "
        "WHERE job.id = stage_run.job_id), step = queue || ':' || processor"
    )
    with op.batch_alter_table("stage_run", schema=None) as batch_op:
        batch_op.alter_column("tenant_id", existing_type=sa.String(length=32), nullable=False)
        batch_op.alter_column("step", existing_type=sa.String(length=300), nullable=False)
        batch_op.create_index("ix_stage_claim", ["step", "state", "not_before"], unique=False)
        batch_op.create_index("ix_stage_tenant_state", ["tenant_id", "state"], unique=False)

    op.create_table(
        "index_log",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("op", sa.String(length=8), nullable=False),
        sa.Column("item_id", sa.BigInteger(), nullable=False),
        sa.Column("namespace", sa.String(length=300), nullable=False),
        sa.Column("at", _TIME(), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    op.create_table(
        "tenant_load",
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("unfinished_stages", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenant.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("tenant_id"),
    )
    op.execute(
        "INSERT INTO tenant_load (tenant_id, unfinished_stages) "
        "SELECT tenant.id, (SELECT COUNT(*) FROM stage_run WHERE stage_run.tenant_id = "
        "tenant.id AND stage_run.state IN ('pending', 'queued', 'running')) FROM tenant"
    )
    op.create_table(
        "step_bell",
        sa.Column("step", sa.String(length=300), nullable=False),
        sa.Column("rung", sa.Boolean(), nullable=False),
        sa.Column("rung_at", _TIME(), nullable=True),
        sa.PrimaryKeyConstraint("step"),
    )


def downgrade() -> None:
    op.drop_table("step_bell")
    op.drop_table("tenant_load")
    op.drop_table("index_log")
    with op.batch_alter_table("stage_run", schema=None) as batch_op:
        batch_op.drop_index("ix_stage_tenant_state")
        batch_op.drop_index("ix_stage_claim")
        batch_op.drop_column("not_before")
        batch_op.drop_column("step")
        batch_op.drop_column("tenant_id")
