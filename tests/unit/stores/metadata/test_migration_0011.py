"""Migration 0011: covering indexes for the search's candidate lookup. The migrated
indexes match the ORM, SQLite's planner answers the lookup from them (no embedding row,
whose vector fills a page, is read), and the migration downgrades cleanly. On SQLite and
PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy import Select
from sqlalchemy.dialects import sqlite

from kenning.services.search import _BY_EMBEDDING_PLAIN, _BY_SEGMENT
from kenning.stores.metadata import Database
from kenning.stores.metadata.database import alembic_config
from tests.conftest import migrated_database
from tests.fixtures.migrations import orm_diffs


def indexes(engine: sa.Engine, table: str) -> dict[str, list[str | None]]:
    return {i["name"]: list(i["column_names"]) for i in sa.inspect(engine).get_indexes(table)
            if i["name"] is not None}


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_the_covering_indexes_equal_the_orm_and_downgrade(kind: str, tmp_path: Path) -> None:
    with migrated_database(kind, tmp_path) as db:
        assert indexes(db.engine, "embedding")["ix_embedding_tenant_id_owner"] == [
            "tenant_id", "id", "segment_id", "asset_id"]
        assert "ix_embedding_tenant_id" not in indexes(db.engine, "embedding")
        assert indexes(db.engine, "segment")["ix_segment_tenant_id_asset"] == [
            "tenant_id", "id", "asset_id"]
        assert "ix_segment_tenant_id" not in indexes(db.engine, "segment")
        assert indexes(db.engine, "asset")["ix_asset_id_tenant_language"] == [
            "id", "tenant_id", "language"]
        assert orm_diffs(db.engine, "embedding") == []
        assert orm_diffs(db.engine, "segment") == []
        assert orm_diffs(db.engine, "asset") == []

        command.downgrade(alembic_config(db.url), "0010")
        assert indexes(db.engine, "embedding")["ix_embedding_tenant_id"] == ["tenant_id"]
        assert "ix_embedding_tenant_id_owner" not in indexes(db.engine, "embedding")
        assert "ix_asset_id_tenant_language" not in indexes(db.engine, "asset")
        assert indexes(db.engine, "segment")["ix_segment_tenant_id"] == ["tenant_id"]
        db.upgrade()
        assert "ix_embedding_tenant_id_owner" in indexes(db.engine, "embedding")


def plan(db: Database, statement: Select[Any]) -> list[str]:
    sql = str(statement.params(ids=[1, 2, 3], tenant="t").compile(
        dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))
    with db.engine.connect() as conn:
        return [row[3] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}")]


def test_sqlite_answers_the_candidate_lookups_from_the_indexes(tmp_path: Path) -> None:
    with migrated_database("sqlite", tmp_path) as db:
        by_vector, by_segment = plan(db, _BY_EMBEDDING_PLAIN), plan(db, _BY_SEGMENT)
    assert any("embedding USING COVERING INDEX ix_embedding_tenant_id_owner" in step
               for step in by_vector), by_vector
    assert [step.split()[1] for step in by_vector] == ["embedding", "asset"]  # no segment
    assert any("segment USING COVERING INDEX ix_segment_tenant_id_asset" in step
               for step in by_segment), by_segment
    for steps in (by_vector, by_segment):
        assert any("asset USING COVERING INDEX ix_asset_id_tenant_language" in step
                   for step in steps), steps
