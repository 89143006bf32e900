"""rec_served: the served log of recommendations (one row per item served)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-14 12:00:00

- ``rec_served``: what ``GET /v1/users/{id}/recommendations`` answered, one row per
  item: the request id (clients echo it in impression events), reader, surface, story,
  position, the first reason's source, the final score, the serving policy (``blend`` or
  ``ranker:<version>``), the probability that the item was shown at that position under
  that policy (``propensity``, in (0, 1], for off-policy estimates) and the online feature
  values the policy used (``features``, the feature store's online side). Rows go with
  their asset (``ON DELETE CASCADE``). Indexed by (tenant, request) for joining
  impressions, by (tenant, reader, time) and by (tenant, time) for training windows.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import kenning.stores.metadata.tables

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_TIME = kenning.stores.metadata.tables.UTCDateTime
_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "rec_served",
        sa.Column("id", _BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("request_id", sa.String(length=32), nullable=False),
        sa.Column("reader_id", sa.String(length=128), nullable=False),
        sa.Column("surface", sa.String(length=32), nullable=False),
        sa.Column("asset_id", sa.String(length=32),
                  sa.ForeignKey("asset.id", ondelete="CASCADE"), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("propensity", sa.Float(), nullable=False),
        sa.Column("policy", sa.String(length=64), nullable=False),
        sa.Column("features", sa.JSON(), nullable=False),
        sa.Column("at", _TIME(), nullable=False),
    )
    op.create_index("ix_rec_served_tenant_request", "rec_served", ["tenant_id", "request_id"])
    op.create_index("ix_rec_served_tenant_reader_at", "rec_served",
                    ["tenant_id", "reader_id", "at"])
    op.create_index("ix_rec_served_tenant_at", "rec_served", ["tenant_id", "at"])


def downgrade() -> None:
    op.drop_table("rec_served")
