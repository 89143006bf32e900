"""Migration 0009: the ``rec_served`` table (the recommendations' served log) matches its
ORM class ``RecServed`` column for column, index for index, and downgrades cleanly.
On SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

from kenning.stores.metadata.database import alembic_config
from kenning.stores.metadata.tables import RecServed
from tests.conftest import migrated_database
from tests.fixtures.migrations import orm_diffs

TABLE = "rec_served"


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_the_migrated_table_equals_the_orm_and_downgrades(kind: str, tmp_path: Path) -> None:
    with migrated_database(kind, tmp_path) as db:
        inspector = sa.inspect(db.engine)
        columns = {c["name"]: c for c in inspector.get_columns(TABLE)}
        assert set(columns) == {c.name for c in RecServed.__table__.columns}
        assert all(not c["nullable"] for c in columns.values())
        indexes = {i["name"]: list(i["column_names"]) for i in inspector.get_indexes(TABLE)}
        assert indexes == {
            "ix_rec_served_tenant_request": ["tenant_id", "request_id"],
            "ix_rec_served_tenant_reader_at": ["tenant_id", "reader_id", "at"],
            "ix_rec_served_tenant_at": ["tenant_id", "at"],
        }
        fks = inspector.get_foreign_keys(TABLE)
        assert [(f["constrained_columns"], f["referred_table"], f["options"].get("ondelete"))
                for f in fks] == [(["asset_id"], "asset", "CASCADE")]
        assert orm_diffs(db.engine, TABLE) == []

        command.downgrade(alembic_config(db.url), "0008")
        assert TABLE not in sa.inspect(db.engine).get_table_names()
        assert "event" in sa.inspect(db.engine).get_table_names()  # 0007's stays
        db.upgrade()
        assert TABLE in sa.inspect(db.engine).get_table_names()
