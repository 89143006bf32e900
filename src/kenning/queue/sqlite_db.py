"""The SQLite file behind :class:`~kenning.queue.sqlite_broker.SQLiteBroker`.

One file in WAL mode holds three tables: ``queues`` (names declared by any process),
``messages`` (ready, delayed and delivered messages; a delivered row stays until it is
acknowledged) and ``dead_letters``. Every thread gets its own connection, and every
write is one short ``BEGIN IMMEDIATE`` transaction: that is what makes claims atomic
across threads and processes.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

__all__ = ["SCHEMA_VERSION", "SQLiteDatabase", "chunks", "marks", "now_ms"]

SCHEMA_VERSION = 1

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS queues (name TEXT PRIMARY KEY) WITHOUT ROWID",
    # AUTOINCREMENT: row ids are never reused, so a late ack of an old delivery can
    # never delete a newer message that happened to get the same id.
    """CREATE TABLE IF NOT EXISTS messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        queue_name TEXT NOT NULL,
        message_id TEXT NOT NULL,
        actor_name TEXT NOT NULL,
        body BLOB NOT NULL,
        visible_at INTEGER NOT NULL,
        state TEXT NOT NULL DEFAULT 'ready' CHECK (state IN ('ready', 'delivered')),
        owner TEXT,
        owner_pid INTEGER,
        owner_host TEXT,
        lease_until INTEGER,
        lost INTEGER NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX IF NOT EXISTS messages_ready ON messages (queue_name, visible_at, id) "
    "WHERE state = 'ready'",
    "CREATE INDEX IF NOT EXISTS messages_delivered ON messages (owner) WHERE state = 'delivered'",
    """CREATE TABLE IF NOT EXISTS dead_letters (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        queue_name TEXT NOT NULL,
        message_id TEXT NOT NULL,
        actor_name TEXT NOT NULL,
        body BLOB NOT NULL,
        reason TEXT,
        failed_at INTEGER NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS dead_letters_queue ON dead_letters (queue_name, id)",
    f"PRAGMA user_version = {SCHEMA_VERSION}",
)

# Stay well below SQLite's limit on bound variables per statement.
_CHUNK = 500

# Connections inherited across fork() are kept referenced here so that the garbage
# collector never closes them in the child (see SQLiteDatabase.forget_connections).
_ABANDONED: list[sqlite3.Connection] = []


def now_ms() -> int:
    """Wall-clock UNIX time in milliseconds: comparable across processes."""
    return int(time.time() * 1000)


def chunks(ids: Sequence[int]) -> Iterator[Sequence[int]]:
    """Slices of ``ids`` small enough to bind as ``IN (?, ...)`` parameters."""
    for start in range(0, len(ids), _CHUNK):
        yield ids[start : start + _CHUNK]


def marks(n: int) -> str:
    """``n`` comma-separated ``?`` placeholders."""
    return ",".join("?" * n)


class SQLiteDatabase:
    """Per-thread connections to one queue database file, plus transaction helpers.

    Parameters:
      path: The database file; its folder is created when missing.
      busy_timeout_s: How long a statement waits for another writer before failing.
    """

    def __init__(self, path: Path, *, busy_timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._closed = False
        self._use_wal()
        with self.write() as conn:
            for statement in _SCHEMA:
                conn.execute(statement)

    def _use_wal(self) -> None:
        """WAL lets readers (depth queries, other processes) run beside the writer; it is
        a property of the file, so setting it once here is enough.

        Processes that open a new file at the same moment (``kenning worker`` started
        twice on a fresh data directory) race for the switch, and SQLite answers the
        losers "database is locked" at once, without its busy handler: measured, 3 of 40
        processes in 10 rounds of 4. They try again until the busy timeout."""
        deadline = time.monotonic() + self._busy_timeout_s
        while True:
            try:
                self.connection().execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def connection(self) -> sqlite3.Connection:
        """This thread's connection, outside any transaction (autocommit mode)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._open()
        elif conn.in_transaction:
            # An asynchronous exception (dramatiq's TimeLimit or Shutdown interrupt) may
            # have landed between BEGIN and COMMIT on this thread earlier; without this
            # rollback the next autocommit statement would join that dead transaction.
            conn.rollback()
        return conn

    def _open(self) -> sqlite3.Connection:
        if self._closed:
            raise RuntimeError(f"the queue database {self.path} is closed")
        # isolation_level=None: we issue BEGIN/COMMIT ourselves so that every write
        # takes the write lock up front (BEGIN IMMEDIATE) instead of upgrading later.
        # check_same_thread=False only so close() may close it from another thread.
        conn = sqlite3.connect(
            self.path,
            timeout=self._busy_timeout_s,
            isolation_level=None,
            check_same_thread=False,
        )
        conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_s * 1000)}")
        # In WAL mode NORMAL is still crash-safe for the database; a power loss may drop
        # the last commits, which at-least-once delivery tolerates (a lost ack means a
        # redelivery), and it saves an fsync per commit.
        conn.execute("PRAGMA synchronous = NORMAL")
        self._local.conn = conn
        with self._conns_lock:
            self._conns.append(conn)
        return conn

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that holds the database's write lock from its start."""
        conn = self.connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.rollback()
            raise
        conn.execute("COMMIT")

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: one consistent snapshot for several queries."""
        conn = self.connection()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.rollback()

    def forget_connections(self) -> None:
        """Drop (without closing) every connection: for a child right after fork().

        SQLite connections must not cross fork(), and closing an inherited one could
        checkpoint or unlock the parent's file, so they are abandoned instead.
        """
        _ABANDONED.extend(self._conns)
        self._local = threading.local()
        self._conns = []
        self._conns_lock = threading.Lock()

    def close(self) -> None:
        """Close all connections; using the database afterwards raises RuntimeError."""
        self._closed = True
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        self._local = threading.local()
