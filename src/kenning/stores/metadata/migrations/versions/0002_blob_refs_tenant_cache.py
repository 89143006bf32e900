"""blob lifetime rows, tenant-scoped feature cache, clean stored metadata

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 06:00:00

- ``blob_ref``: one row per stored blob, the lock and clock of its lifetime; filled
  from every asset and derived blob that exists.
- ``feature_cache`` gains ``tenant_id`` in its key. The cache is disposable, so the old
  table is dropped rather than guessed into tenants.
- indexes for the collector's "is this blob still referenced?" lookups.
- metadata stored before validation existed (NaN, lone surrogates, deep nesting) is
  rewritten into strict JSON, so reads and filters of those tenants work again.
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

import kenning.stores.metadata.tables

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "blob_ref",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("created_at", kenning.stores.metadata.tables.UTCDateTime(), nullable=False),
        sa.Column("released_at", kenning.stores.metadata.tables.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("key"),
    )
    with op.batch_alter_table("blob_ref", schema=None) as batch_op:
        batch_op.create_index("ix_blob_ref_released", ["released_at"], unique=False)
    op.execute(
        "INSERT INTO blob_ref (key, created_at) "
        "SELECT k, CURRENT_TIMESTAMP FROM ("
        "SELECT sha256 AS k FROM asset UNION SELECT blob_key AS k FROM derived_blob) AS refs"
    )
    with op.batch_alter_table("asset", schema=None) as batch_op:
        batch_op.create_index("ix_asset_sha256", ["sha256"], unique=False)
    with op.batch_alter_table("derived_blob", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_derived_blob_blob_key"), ["blob_key"], unique=False)

    op.drop_table("feature_cache")
    op.create_table(
        "feature_cache",
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("processor", sa.String(length=100), nullable=False),
        sa.Column("version", sa.String(length=100), nullable=False),
        sa.Column("output", sa.JSON(), nullable=False),
        sa.Column("created_at", kenning.stores.metadata.tables.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "sha256", "processor", "version"),
    )
    _clean_metadata()


def _clean_metadata(batch: int = 1000) -> None:
    """Rewrite every asset's metadata as strict JSON (sanitised), page by page."""
    from kenning.stores.metadata.repair import sanitize_metadata

    conn = op.get_bind()
    cast = "CAST(:m AS JSON)" if conn.dialect.name == "postgresql" else ":m"
    update = sa.text(f"UPDATE asset SET metadata = {cast} WHERE id = :id")
    last = ""
    while rows := conn.execute(
        sa.text("SELECT id, metadata FROM asset WHERE id > :last ORDER BY id LIMIT :n"),
        {"last": last, "n": batch},
    ).all():
        for asset_id, raw in rows:
            try:
                value = json.loads(raw) if isinstance(raw, str) else raw
            except (ValueError, RecursionError):
                value = {}
            clean = sanitize_metadata(value)
            text = json.dumps(clean, allow_nan=False)
            if value != clean or (isinstance(raw, str) and raw != text):
                conn.execute(update, {"m": text, "id": asset_id})
        last = rows[-1][0]


def downgrade() -> None:
    op.drop_table("feature_cache")
    op.create_table(
        "feature_cache",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("processor", sa.String(length=100), nullable=False),
        sa.Column("version", sa.String(length=100), nullable=False),
        sa.Column("output", sa.JSON(), nullable=False),
        sa.Column("created_at", kenning.stores.metadata.tables.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("sha256", "processor", "version"),
    )
    with op.batch_alter_table("derived_blob", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_derived_blob_blob_key"))
    with op.batch_alter_table("asset", schema=None) as batch_op:
        batch_op.drop_index("ix_asset_sha256")
    op.drop_table("blob_ref")
