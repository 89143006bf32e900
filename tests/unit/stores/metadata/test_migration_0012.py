"""Migration 0012: the matcher's queue and stale clusters come from partial indexes kept
by triggers. The flags follow memberships whoever changes them (inserts, deletes,
cascades from a deleted asset or a dissolved cluster); existing rows are backfilled; the
schema matches the ORM; SQLite's planner seeks the partial indexes; the migration
downgrades without losing a row. On SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy import delete, insert, select, update
from sqlalchemy.dialects import sqlite

from kenning.services import match_clusters
from kenning.stores.metadata import Database
from kenning.stores.metadata.database import alembic_config
from kenning.stores.metadata.tables import (
    Asset,
    MatchCluster,
    MatchClusterMember,
    Tenant,
)
from tests.conftest import migrated_database
from tests.fixtures.migrations import orm_diffs


def _assets(db: Database, n: int) -> list[str]:
    with db.session() as s:
        s.add(Tenant(id="t", name="t", webhook_secret="s"))
        s.flush()
        rows = [Asset(tenant_id="t", kind="text", sha256=f"{i:064x}", mime="text/plain",
                      bytes=1, source="upload", status="ready") for i in range(n)]
        s.add_all(rows)
        s.flush()
        return [a.id for a in rows]


def _cluster(db: Database, cluster: str, members: list[str]) -> None:
    with db.session() as s:
        s.execute(insert(MatchCluster).values(id=cluster, tenant_id="t",
                                              first_asset_id=members[0], size=len(members)))
        s.execute(insert(MatchClusterMember), [
            {"asset_id": a, "tenant_id": "t", "cluster_id": cluster} for a in members])


def _pending(db: Database) -> set[str]:
    with db.session(write=False) as s:
        return set(s.scalars(select(Asset.id).where(Asset.match_pending)))


def _stale(db: Database) -> set[str]:
    with db.session(write=False) as s:
        return set(s.scalars(select(MatchCluster.id).where(MatchCluster.stale)))


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_triggers_keep_the_flags_whoever_changes_a_membership(kind: str,
                                                               tmp_path: Path) -> None:
    with migrated_database(kind, tmp_path) as db:
        a, b, c, d, e = _assets(db, 5)
        assert _pending(db) == {a, b, c, d, e}  # true at insert
        _cluster(db, "c1", [a, b, c])
        _cluster(db, "c2", [d])
        assert _pending(db) == {e} and _stale(db) == set()
        with db.session() as s:  # a member's asset is deleted: its cluster is stale
            s.execute(delete(Asset).where(Asset.id == c))
        assert _stale(db) == {"c1"} and _pending(db) == {e}
        with db.session() as s:  # the founding asset goes: the cluster dissolves
            s.execute(update(MatchCluster).where(MatchCluster.id == "c1").values(stale=False))
            s.execute(delete(Asset).where(Asset.id == a))
        assert _pending(db) == {b, e}  # b is matched again on the next run
        with db.session() as s:  # a move between clusters keeps the asset matched
            s.execute(update(MatchClusterMember).where(MatchClusterMember.asset_id == d)
                      .values(cluster_id="c2"))
        assert _pending(db) == {b, e}
        assert orm_diffs(db.engine, "asset") == []
        assert orm_diffs(db.engine, "match_cluster") == []


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_existing_rows_are_backfilled_and_the_downgrade_keeps_them(kind: str,
                                                                   tmp_path: Path) -> None:
    with migrated_database(kind, tmp_path) as db:
        command.downgrade(alembic_config(db.url), "0011")
        with db.engine.begin() as conn:
            conn.execute(sa.text(
                "INSERT INTO tenant (id, name, webhook_secret, created_at, matching) "
                "VALUES ('t', 't', 's', CURRENT_TIMESTAMP, '{}')"))
            for i in range(4):
                conn.execute(sa.text(
                    "INSERT INTO asset (id, tenant_id, kind, sha256, mime, bytes, source, "
                    "status, metadata, created_at, updated_at) VALUES (:id, 't', 'text', "
                    ":sha, 'text/plain', 1, 'upload', 'ready', '{}', CURRENT_TIMESTAMP, "
                    "CURRENT_TIMESTAMP)"), {"id": f"a{i}", "sha": f"{i:064x}"})
            for cluster, size, members in [("c1", 3, ["a0", "a1"]), ("c2", 1, ["a2"])]:
                conn.execute(sa.text(
                    "INSERT INTO match_cluster (id, tenant_id, first_asset_id, size, "
                    "created_at, updated_at) VALUES (:id, 't', :first, :size, "
                    "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"),
                    {"id": cluster, "first": members[0], "size": size})
                for member in members:
                    conn.execute(sa.text(
                        "INSERT INTO match_cluster_member (asset_id, tenant_id, cluster_id, "
                        "joined_at) VALUES (:a, 't', :c, CURRENT_TIMESTAMP)"),
                        {"a": member, "c": cluster})
        db.upgrade()
        assert _pending(db) == {"a3"}
        assert _stale(db) == {"c1"}  # size 3, two members: a member was deleted
        command.downgrade(alembic_config(db.url), "0011")
        with db.engine.connect() as conn:
            assert conn.scalar(sa.text("SELECT count(*) FROM asset")) == 4
            assert conn.scalar(sa.text("SELECT count(*) FROM match_cluster_member")) == 3
            conn.execute(sa.text("DELETE FROM match_cluster_member"))  # no trigger left
            assert "match_pending" not in {c["name"] for c in
                                           sa.inspect(conn).get_columns("asset")}
        db.upgrade()


def test_sqlite_seeks_the_partial_indexes(tmp_path: Path) -> None:
    with migrated_database("sqlite", tmp_path) as db, db.engine.connect() as conn:
        for statement, index in [(match_clusters.unmatched(100), "ix_asset_match_pending"),
                                 (match_clusters.stale(100), "ix_match_cluster_stale")]:
            sql = str(statement.compile(dialect=sqlite.dialect(),
                                        compile_kwargs={"literal_binds": True}))
            steps = [row[3] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}")]
            assert any(f"INDEX {index}" in step for step in steps), steps
            assert not any(step.startswith("SCAN") and "INDEX" not in step
                           for step in steps), steps
