"""rec_model: versions of each tenant's learned recommendation model

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-14 13:00:00

- ``rec_model``: one row per trained version (``kind`` ``ranker``), numbered per tenant
  and kind (unique), with its state (training, candidate, serving, rejected, retired),
  offline metrics and off-policy estimates (``metrics``), the evaluation gate's decision
  and reasons (``gate``), the fitted model (``artefact``) and a failure's ``error``. Rows
  go with their tenant (``ON DELETE CASCADE``). Indexed by (tenant, kind, state): the
  serving version is read on every recommendation request.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import kenning.stores.metadata.tables

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_TIME = kenning.stores.metadata.tables.UTCDateTime


def upgrade() -> None:
    op.create_table(
        "rec_model",
        sa.Column("id", sa.String(length=32), primary_key=True),
        sa.Column("tenant_id", sa.String(length=32),
                  sa.ForeignKey("tenant.id", ondelete="CASCADE"), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_at", _TIME(), nullable=False),
        sa.Column("finished_at", _TIME(), nullable=True),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("gate", sa.JSON(), nullable=False),
        sa.Column("artefact", sa.LargeBinary(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.UniqueConstraint("tenant_id", "kind", "version",
                            name="uq_rec_model_tenant_kind_version"),
    )
    op.create_index("ix_rec_model_tenant_kind_state", "rec_model",
                    ["tenant_id", "kind", "state"])


def downgrade() -> None:
    op.drop_table("rec_model")
