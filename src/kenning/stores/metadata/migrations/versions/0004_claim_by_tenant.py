"""claims reach tenants behind another tenant's backlog

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 13:30:00

- ``ix_stage_step_tenant`` on ``stage_run (step, state, tenant_id, enqueued_at)``: the
  batch claim lists the tenants waiting on a step (a loose index scan) and reads each
  one's oldest runs, so a deep backlog of one tenant never hides another's work.
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("stage_run", schema=None) as batch_op:
        batch_op.create_index("ix_stage_step_tenant",
                              ["step", "state", "tenant_id", "enqueued_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("stage_run", schema=None) as batch_op:
        batch_op.drop_index("ix_stage_step_tenant")
