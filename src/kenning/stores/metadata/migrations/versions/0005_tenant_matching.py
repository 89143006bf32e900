"""match thresholds per tenant

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 16:40:00

- ``tenant.matching``: the tenant's match thresholds by method (JSON object, ``{}``: the
  server's defaults), read by ``POST /v1/similar`` and set by ``PUT /v1/matching``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tenant", schema=None) as batch_op:
        batch_op.add_column(sa.Column("matching", sa.JSON(), nullable=False,
                                      server_default="{}"))


def downgrade() -> None:
    with op.batch_alter_table("tenant", schema=None) as batch_op:
        batch_op.drop_column("matching")
