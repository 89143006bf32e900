"""Shared fixtures: real outside services, skipped locally when absent, required in CI."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from kenning.stores.metadata import Database

POSTGRES_SERVER = os.environ.get("KENNING_TEST_POSTGRES", "postgres@127.0.0.1:5432")
"""``user@host:port`` of a PostgreSQL server that trusts the test user."""


def require_service(name: str, reachable: bool) -> None:
    """Skip the test when ``name`` is not reachable; fail instead when ``CI=true``."""
    if reachable:
        return
    message = f"{name} is not reachable"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message} (required when CI=true)", pytrace=False)
    pytest.skip(message)


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """Create an empty PostgreSQL database, yield its SQLAlchemy URL, drop it after."""
    try:
        import psycopg
    except ImportError:
        require_service("PostgreSQL (psycopg is not installed)", False)
        raise  # unreachable: require_service skipped or failed
    admin = f"postgresql://{POSTGRES_SERVER}/postgres"
    try:
        conn = psycopg.connect(admin, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError:
        conn = None
    require_service(f"PostgreSQL at {POSTGRES_SERVER}", conn is not None)
    assert conn is not None
    name = f"kenning_test_{uuid.uuid4().hex[:12]}"
    with conn:
        conn.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"postgresql+psycopg://{POSTGRES_SERVER}/{name}"
        finally:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database shared by this session's contract tests."""
    with fresh_postgres_database() as url:
        yield url


@contextmanager
def migrated_database(kind: str, folder: Path) -> Iterator[Database]:
    """A migrated, empty metadata store: SQLite in ``folder``, or a fresh PostgreSQL
    database (skipped locally, required in CI, when no server answers)."""
    if kind == "sqlite":
        database = Database(f"sqlite:///{folder / 'kenning.db'}")
        database.upgrade()
        try:
            yield database
        finally:
            database.dispose()
        return
    with fresh_postgres_database() as url:
        database = Database(url)
        database.upgrade()
        try:
            yield database
        finally:
            database.dispose()
