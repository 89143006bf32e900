"""events by tenant, type and time (the exposure audit)

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 20:00:00

- ``ix_event_tenant_type_at`` on ``event (tenant_id, type, at)``: the tenant's impressions
  in a time window without reading its other events (``GET /v1/recommendations/exposure``;
  also what training on logged impressions reads). Measured on 400k events per tenant,
  5k stories: a 7-day audit 967 -> 379 ms on SQLite, 756 -> 301 ms on PostgreSQL.
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_event_tenant_type_at", "event", ["tenant_id", "type", "at"])


def downgrade() -> None:
    op.drop_index("ix_event_tenant_type_at", table_name="event")
