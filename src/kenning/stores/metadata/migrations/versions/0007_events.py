"""events: readers' interactions, the feedback recommendations learn from

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 12:00:00

- ``event``: one row per accepted event, unique by (tenant, client event id); indexed by
  reader, by asset and by author, each with time (see ``kenning.services.events``).
  Item events go with their asset (``ON DELETE CASCADE``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import kenning.stores.metadata.tables

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_TIME = kenning.stores.metadata.tables.UTCDateTime
_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "event",
        sa.Column("id", _BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("reader_id", sa.String(length=128), nullable=False),
        sa.Column("asset_id", sa.String(length=32),
                  sa.ForeignKey("asset.id", ondelete="CASCADE"), nullable=True),
        sa.Column("author_id", sa.String(length=128), nullable=True),
        sa.Column("at", _TIME(), nullable=False),
        sa.Column("received_at", _TIME(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.UniqueConstraint("tenant_id", "event_id", name="uq_event_tenant_event_id"),
    )
    op.create_index("ix_event_tenant_reader_at", "event", ["tenant_id", "reader_id", "at"])
    op.create_index("ix_event_asset_at", "event", ["asset_id", "at"])
    op.create_index("ix_event_tenant_author_at", "event", ["tenant_id", "author_id", "at"])


def downgrade() -> None:
    op.drop_table("event")
