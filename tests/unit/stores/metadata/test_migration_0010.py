"""Migration 0010: the ``rec_model`` table (versions of each tenant's learned ranker)
matches its ORM class ``RecModel`` column for column, constraint for constraint, and
downgrades cleanly. On SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

from kenning.stores.metadata.database import alembic_config
from kenning.stores.metadata.tables import RecModel
from tests.conftest import migrated_database
from tests.fixtures.migrations import orm_diffs

TABLE = "rec_model"


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_the_migrated_table_equals_the_orm_and_downgrades(kind: str, tmp_path: Path) -> None:
    with migrated_database(kind, tmp_path) as db:
        inspector = sa.inspect(db.engine)
        columns = {c["name"]: c for c in inspector.get_columns(TABLE)}
        assert set(columns) == {c.name for c in RecModel.__table__.columns}
        assert {n for n, c in columns.items() if c["nullable"]} == {
            "finished_at", "artefact", "error"}
        indexes = {i["name"]: list(i["column_names"]) for i in inspector.get_indexes(TABLE)
                   if not i.get("unique")}
        assert indexes["ix_rec_model_tenant_kind_state"] == ["tenant_id", "kind", "state"]
        uniques = [list(u["column_names"]) for u in inspector.get_unique_constraints(TABLE)]
        assert uniques == [["tenant_id", "kind", "version"]]
        fks = inspector.get_foreign_keys(TABLE)
        assert [(f["constrained_columns"], f["referred_table"], f["options"].get("ondelete"))
                for f in fks] == [(["tenant_id"], "tenant", "CASCADE")]
        assert orm_diffs(db.engine, TABLE) == []

        command.downgrade(alembic_config(db.url), "0009")
        assert TABLE not in sa.inspect(db.engine).get_table_names()
        assert "rec_served" in sa.inspect(db.engine).get_table_names()  # 0009's stays
        db.upgrade()
        assert TABLE in sa.inspect(db.engine).get_table_names()
