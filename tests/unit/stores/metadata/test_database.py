"""The metadata store's start-up: processes that migrate the same database at the same
moment (two workers on a fresh data directory, a server and its workers after an
upgrade) take turns, so every one of them starts, on SQLite and on PostgreSQL."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory

from kenning.stores.metadata.database import alembic_config
from tests.conftest import fresh_postgres_database

PROCESSES, ROUNDS = 3, 3


def _migrate(url: str, barrier: Any, out: Any) -> None:
    from kenning.stores.metadata import Database

    db = Database(url)
    barrier.wait()
    try:
        db.upgrade()
        out.put("ok")
    except Exception as exc:  # reported to the test, which names it
        out.put(f"{type(exc).__name__}: {str(exc)[:200]}")
    finally:
        db.dispose()


def _together(url: str) -> list[str]:
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(PROCESSES), ctx.Queue()
    procs = [ctx.Process(target=_migrate, args=(url, barrier, out)) for _ in range(PROCESSES)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    return results


def script_head(url: str) -> str | None:
    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


def _head(url: str) -> str | None:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.scalar(sa.text("SELECT version_num FROM alembic_version"))
    finally:
        engine.dispose()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_processes_migrating_together_all_start(kind: str, tmp_path: Path) -> None:
    for i in range(ROUNDS if kind == "sqlite" else 1):  # before: 9 of 15 failed
        if kind == "sqlite":
            url = f"sqlite:///{tmp_path / f'kenning-{i}.db'}"
            assert _together(url) == ["ok"] * PROCESSES
            assert _head(url) == script_head(url)
        else:
            with fresh_postgres_database() as url:
                assert _together(url) == ["ok"] * PROCESSES
                assert _head(url) == script_head(url)
