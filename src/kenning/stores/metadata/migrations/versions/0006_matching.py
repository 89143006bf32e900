"""matching: clusters of near-duplicates, match edges, verdicts, banks of known items

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 18:00:00

- ``match_cluster`` / ``match_cluster_member``: every matched asset in exactly one
  cluster (singletons included); merged clusters stay as tombstones (``merged_into``).
- ``match_edge``: near-duplicate pairs found by a method (or confirmed: ``verdict``).
- ``match_verdict``: a person's ``same`` / ``different`` decision on a pair.
- ``bank`` / ``bank_item``: a tenant's named sets of known items.

Every row goes with its asset (foreign keys ``ON DELETE CASCADE``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import kenning.stores.metadata.tables

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_TIME = kenning.stores.metadata.tables.UTCDateTime
_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _asset(column: str, *, primary_key: bool = False) -> sa.Column[str]:
    return sa.Column(column, sa.String(length=32), sa.ForeignKey("asset.id", ondelete="CASCADE"),
                     nullable=False, primary_key=primary_key)


def upgrade() -> None:
    op.create_table(
        "match_cluster",
        sa.Column("id", sa.String(length=32), primary_key=True),
        sa.Column("tenant_id", sa.String(length=32),
                  sa.ForeignKey("tenant.id", ondelete="CASCADE"), nullable=False),
        _asset("first_asset_id"),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("merged_into", sa.String(length=32), nullable=True),
        sa.Column("created_at", _TIME(), nullable=False),
        sa.Column("updated_at", _TIME(), nullable=False),
    )
    op.create_index("ix_match_cluster_first_asset_id", "match_cluster", ["first_asset_id"])
    op.create_index("ix_match_cluster_tenant_updated", "match_cluster",
                    ["tenant_id", "updated_at"])
    op.create_table(
        "match_cluster_member",
        _asset("asset_id", primary_key=True),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("cluster_id", sa.String(length=32),
                  sa.ForeignKey("match_cluster.id", ondelete="CASCADE"), nullable=False),
        sa.Column("joined_at", _TIME(), nullable=False),
    )
    op.create_index("ix_match_cluster_member_cluster_id", "match_cluster_member",
                    ["cluster_id"])
    op.create_table(
        "match_edge",
        sa.Column("id", _BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        _asset("asset_a"),
        _asset("asset_b"),
        sa.Column("method", sa.String(length=32), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("created_at", _TIME(), nullable=False),
        sa.UniqueConstraint("asset_a", "asset_b", "method", name="uq_match_edge_pair_method"),
    )
    op.create_index("ix_match_edge_asset_b", "match_edge", ["asset_b"])
    op.create_table(
        "match_verdict",
        _asset("asset_a", primary_key=True),
        _asset("asset_b", primary_key=True),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("verdict", sa.String(length=16), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("at", _TIME(), nullable=False),
    )
    op.create_index("ix_match_verdict_asset_b", "match_verdict", ["asset_b"])
    op.create_index("ix_match_verdict_tenant_id", "match_verdict", ["tenant_id"])
    op.create_table(
        "bank",
        sa.Column("id", sa.String(length=32), primary_key=True),
        sa.Column("tenant_id", sa.String(length=32),
                  sa.ForeignKey("tenant.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("webhook_url", sa.Text(), nullable=True),
        sa.Column("created_at", _TIME(), nullable=False),
        sa.UniqueConstraint("tenant_id", "name", name="uq_bank_tenant_name"),
    )
    op.create_table(
        "bank_item",
        sa.Column("bank_id", sa.String(length=32),
                  sa.ForeignKey("bank.id", ondelete="CASCADE"), primary_key=True),
        _asset("asset_id", primary_key=True),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("label", sa.Text(), nullable=True),
        sa.Column("added_at", _TIME(), nullable=False),
    )
    op.create_index("ix_bank_item_asset_id", "bank_item", ["asset_id"])


def downgrade() -> None:
    for table in ("bank_item", "bank", "match_verdict", "match_edge", "match_cluster_member",
                  "match_cluster"):
        op.drop_table(table)
