"""Engine, sessions and migrations for the metadata store.

One code path for SQLite (embedded, WAL) and PostgreSQL (by URL). Schema changes go
through Alembic migrations shipped inside the package (``kenning db upgrade``).
"""

from __future__ import annotations

import fcntl
import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def json_dumps(value: Any) -> str:
    """JSON columns are written with orjson (UTF-8 kept, several times faster than the
    standard library, which a settle of a batch spends much of its time in); a value
    orjson refuses (an int past 64 bits, a lone surrogate) falls back to ``json``."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # orjson.JSONEncodeError is one
        return json.dumps(value)


def json_loads(raw: str | bytes) -> Any:
    """Read JSON columns with orjson; rows it refuses (``NaN`` written by older
    versions) are read by ``json``."""
    try:
        return orjson.loads(raw)
    except ValueError:  # orjson.JSONDecodeError is one
        return json.loads(raw)


MMAP_BYTES = 1 << 30
"""How much of a SQLite file its connections read through a memory map: pages come
from the page cache without a read() and a copy into each connection's own small cache.
Measured at 100k assets: the search's candidate lookup (50 random embeddings with their
segments and assets) 2.2 ms -> 0.73 ms. Address space only; the pages are the OS's."""


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event below decide how transactions start.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute(f"PRAGMA mmap_size={MMAP_BYTES}")
    cur.close()


def make_engine(url: str) -> Engine:
    """Create an engine with the right settings for the dialect."""
    if url.startswith("sqlite"):
        # Pooled connections: opening one costs a file open plus the pragmas below,
        # which dominated short pipeline transactions when done per session.
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=8,
            max_overflow=32,
            json_serializer=json_dumps,
            json_deserializer=json_loads,
        )
        event.listen(engine, "connect", _sqlite_pragmas)

        # Writers take the write lock up front (BEGIN IMMEDIATE) so that concurrent
        # writers queue on busy_timeout instead of failing to upgrade a read lock;
        # readers stay deferred and never block anyone under WAL.
        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            immediate = conn.get_execution_options().get("kenning_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20,
                         connect_args=POSTGRES_TCP, json_serializer=json_dumps,
                         json_deserializer=json_loads)


POSTGRES_TCP: dict[str, Any] = {
    "connect_timeout": 10,
    "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
}
"""libpq settings so a connection to a server that vanished without a reset (a network
partition, a lost host) fails within about 30 s instead of the kernel's ~15 minutes of
retransmissions: a thread blocked in a query cannot be interrupted otherwise (measured:
a worker cut off for 75 s stayed stuck in the pool's ping for minutes after the network
came back). A healthy server acknowledges at once however long its query runs."""


class Database:
    """The metadata store: an engine plus a session factory."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._reads = sessionmaker(self.engine, expire_on_commit=False)
        self._writes = sessionmaker(
            self.engine.execution_options(kenning_write=True), expire_on_commit=False
        )
        self._watch: sqlite3.Connection | None = None
        self._watch_lock = threading.Lock()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def session(self, *, write: bool = True) -> Iterator[Session]:
        """A unit of work: commits on success, rolls back on any exception.

        ``write=False`` marks a read-only unit (no write lock on SQLite).
        """
        session = (self._writes if write else self._reads)()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A read-only Core connection, one snapshot for its statements: for hot read
        paths (a search's candidate and row lookups) that want rows, not ORM objects, and
        none of a session's bookkeeping."""
        with self.engine.connect() as conn, conn.begin():
            yield conn

    def upgrade(self, revision: str = "head") -> None:
        """Apply Alembic migrations up to ``revision``, one process at a time.

        Every process migrates at start, and processes start together (``kenning worker``
        twice on a fresh data directory, a server and its workers after an upgrade).
        Unserialised, they raced: measured on SQLite, 9 of 15 processes in 5 rounds of 3
        failed with "database is locked" part-way through the migrations. Under the lock
        the latecomers find the schema at ``revision`` and do nothing."""
        from alembic import command

        with self._migration_lock():
            command.upgrade(alembic_config(self.url), revision)

    @contextmanager
    def _migration_lock(self) -> Iterator[None]:
        """An exclusive lock across processes: a file lock beside a SQLite database, a
        session advisory lock on PostgreSQL."""
        if self.dialect == "postgresql":
            with self.engine.connect() as conn:
                conn.execute(text("SELECT pg_advisory_lock(hashtext('kenning.migrate'))"))
                try:
                    yield
                finally:
                    conn.execute(text("SELECT pg_advisory_unlock(hashtext('kenning.migrate'))"))
                    conn.commit()
            return
        database = self.engine.url.database
        if self.dialect != "sqlite" or not database or database == ":memory:":
            yield
            return
        with open(f"{database}.migrate-lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def ping(self) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(text("SELECT 1")).scalar() == 1

    def commit_counter(self) -> int | None:
        """SQLite: a number that changes whenever any other connection (this process's
        pool included) commits to the file (``PRAGMA data_version`` on a connection of
        its own, no SQL parsing or pool checkout); ``None`` elsewhere. A reader that saw
        the same number before its last read knows nothing was committed since."""
        database = self.engine.url.database if self.dialect == "sqlite" else None
        if not database or database == ":memory:" or "mode=memory" in self.url:
            return None
        with self._watch_lock:
            if self._watch is None:
                self._watch = sqlite3.connect(database, check_same_thread=False)
            return int(self._watch.execute("PRAGMA data_version").fetchone()[0])

    def dispose(self) -> None:
        with self._watch_lock:
            if self._watch is not None:
                self._watch.close()
                self._watch = None
        self.engine.dispose()


def _insert(session: Session, table: Any) -> Any:
    """The dialect's ``INSERT`` (both have ``ON CONFLICT``)."""
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    return insert(table)


def insert_ignore(
    session: Session, table: Any, rows: list[dict[str, Any]], *,
    update: dict[str, Any] | None = None, on: list[str] | None = None,
) -> None:
    """``INSERT ... ON CONFLICT DO NOTHING`` (or ``DO UPDATE SET update`` on ``on``).

    One statement for SQLite and PostgreSQL (an ``executemany``, compiled once and cached:
    rows are parameters, not part of the statement); on PostgreSQL the conflicting row is
    locked until the caller's transaction ends, which is what lock-then-check protocols
    rely on. Every row must have the same keys.
    """
    if not rows:
        return
    statement = _insert(session, table)
    if update is not None:
        statement = statement.on_conflict_do_update(index_elements=on, set_=update)
    else:
        statement = statement.on_conflict_do_nothing()
    session.connection().execute(statement, rows)  # Core: no ORM bulk-insert machinery


def upsert_add(
    session: Session, table: Any, key: str, column: str, rows: list[dict[str, Any]],
) -> None:
    """For each row, insert it, or add its ``column`` to the stored one when ``key``
    exists: one ``INSERT ... ON CONFLICT DO UPDATE`` statement for all rows."""
    if not rows:
        return
    statement = _insert(session, table)
    statement = statement.on_conflict_do_update(
        index_elements=[key],
        set_={column: getattr(table, column) + getattr(statement.excluded, column)},
    )
    session.connection().execute(statement, rows)


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg
