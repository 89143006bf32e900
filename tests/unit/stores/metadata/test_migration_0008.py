"""Migration 0008: the (tenant_id, type, at) index on events, which the exposure audit's
query uses, and its downgrade. On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

from kenning.stores.metadata.database import alembic_config
from tests.conftest import migrated_database

INDEX = "ix_event_tenant_type_at"


def _indexes(engine: sa.Engine) -> dict[str, list[str | None]]:
    return {i["name"]: list(i["column_names"]) for i in sa.inspect(engine).get_indexes("event")
            if i["name"] is not None}


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_upgrade_adds_the_index_and_downgrade_drops_it(kind: str, tmp_path: Path) -> None:
    with migrated_database(kind, tmp_path) as db:
        assert _indexes(db.engine)[INDEX] == ["tenant_id", "type", "at"]
        if kind == "sqlite":
            with db.engine.connect() as conn:
                plan = " ".join(str(row[-1]) for row in conn.execute(sa.text(
                    "EXPLAIN QUERY PLAN SELECT asset_id, author_id, count(*) FROM event "
                    "WHERE tenant_id = 't' AND type = 'impression' AND at >= :a AND at < :b "
                    "GROUP BY asset_id, author_id"),
                    {"a": datetime(2026, 1, 1, tzinfo=UTC), "b": datetime(2026, 2, 1)}))
            assert INDEX in plan
        config = alembic_config(db.url)
        command.downgrade(config, "0008-1")
        assert INDEX not in _indexes(db.engine)
        assert "ix_event_tenant_author_at" in _indexes(db.engine)  # 0007's stay
        db.upgrade()
        assert INDEX in _indexes(db.engine)
