"""the matcher's queue and stale clusters without a scan

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01 05:00:00

The matcher (every ``matching_interval_s`` in the serving process) asked for ready
assets without a cluster membership by an anti-join over every asset, and for clusters
whose size disagrees with their members by counting the members of every cluster: at
100k matched text assets about 0.1 s of the serving process's CPU each time, growing
with the archive.

- ``asset.match_pending`` (true at insert), with the partial index
  ``ix_asset_match_pending (status, created_at, id) WHERE match_pending``: the matcher
  seeks the ready ones, oldest first. (On SQLite the condition is written
  ``match_pending = 1``, as SQLAlchemy writes the query's: SQLite uses a partial index
  only for a query that repeats its condition.)
- ``match_cluster.stale`` (false at insert), with ``ix_match_cluster_stale (id) WHERE
  stale``.
- Triggers on ``match_cluster_member`` keep both, in the transaction that changes a
  membership, whoever changes it: a member inserted clears its asset's flag; a member
  deleted (directly or by a cascade: a deleted asset, a dissolved cluster) sets its
  asset's flag and marks its cluster stale. The database owns the facts, so no code path
  can forget them.

Existing rows: assets with a membership are not pending; clusters whose size disagrees
with their members are stale.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_SQLITE = [
    """CREATE TRIGGER tr_match_member_joined AFTER INSERT ON match_cluster_member
       BEGIN UPDATE asset SET match_pending = 0 WHERE id = NEW.asset_id; END""",
    """CREATE TRIGGER tr_match_member_left AFTER DELETE ON match_cluster_member
       BEGIN
         UPDATE asset SET match_pending = 1 WHERE id = OLD.asset_id;
         UPDATE match_cluster SET stale = 1 WHERE id = OLD.cluster_id;
       END""",
]
_POSTGRESQL = [
    """CREATE FUNCTION kenning_match_member_joined() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN UPDATE asset SET match_pending = false WHERE id = NEW.asset_id; RETURN NULL; END
       $$""",
    """CREATE FUNCTION kenning_match_member_left() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         UPDATE asset SET match_pending = true WHERE id = OLD.asset_id;
         UPDATE match_cluster SET stale = true WHERE id = OLD.cluster_id;
         RETURN NULL;
       END $$""",
    """CREATE TRIGGER tr_match_member_joined AFTER INSERT ON match_cluster_member
       FOR EACH ROW EXECUTE FUNCTION kenning_match_member_joined()""",
    """CREATE TRIGGER tr_match_member_left AFTER DELETE ON match_cluster_member
       FOR EACH ROW EXECUTE FUNCTION kenning_match_member_left()""",
]


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.add_column("asset", sa.Column("match_pending", sa.Boolean(), nullable=False,
                                     server_default=sa.true()))
    op.add_column("match_cluster", sa.Column("stale", sa.Boolean(), nullable=False,
                                             server_default=sa.false()))
    # Booleans bound, so each driver writes its own (0/1 on SQLite, false/true here).
    op.execute(sa.text("UPDATE asset SET match_pending = :no WHERE id IN "
                       "(SELECT asset_id FROM match_cluster_member)").bindparams(no=False))
    op.execute(sa.text(
        "UPDATE match_cluster SET stale = :yes WHERE merged_into IS NULL AND size >= 2 "
        "AND size != (SELECT count(*) FROM match_cluster_member m "
        "WHERE m.cluster_id = match_cluster.id)").bindparams(yes=True))
    op.create_index("ix_asset_match_pending", "asset", ["status", "created_at", "id"],
                    sqlite_where=sa.text("match_pending = 1"),
                    postgresql_where=sa.text("match_pending"))
    op.create_index("ix_match_cluster_stale", "match_cluster", ["id"],
                    sqlite_where=sa.text("stale = 1"), postgresql_where=sa.text("stale"))
    for statement in _POSTGRESQL if postgres else _SQLITE:
        op.execute(statement)


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.execute("DROP TRIGGER tr_match_member_left ON match_cluster_member" if postgres
               else "DROP TRIGGER tr_match_member_left")
    op.execute("DROP TRIGGER tr_match_member_joined ON match_cluster_member" if postgres
               else "DROP TRIGGER tr_match_member_joined")
    if postgres:
        op.execute("DROP FUNCTION kenning_match_member_left()")
        op.execute("DROP FUNCTION kenning_match_member_joined()")
    op.drop_index("ix_match_cluster_stale", table_name="match_cluster")
    op.drop_index("ix_asset_match_pending", table_name="asset")
    # Plain DROP COLUMN (SQLite 3.35+), never a batch copy: with foreign keys on,
    # dropping the old asset table would cascade to every row that refers to it.
    op.execute("ALTER TABLE match_cluster DROP COLUMN stale")
    op.execute("ALTER TABLE asset DROP COLUMN match_pending")
