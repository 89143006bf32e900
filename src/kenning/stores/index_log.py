"""The index log: the write-ahead log that the vector, hash and keyword indexes follow.

Writers never touch an index. In the transaction that changes embedding, fingerprint or
segment rows they :func:`append` one ``index_log`` entry per index change: ``add`` of a
row id, or ``remove`` of a row id with its namespace. Whatever commits is logged, and a
rollback takes both away. Each process that searches applies the log to its own indexes
(:class:`~kenning.stores.follower.IndexFollower`), from its own high-water mark.

What followers rely on:

- An ``add`` names a row, which the follower reads when it applies the entry. A missing
  row (or one that now belongs to another namespace: SQLite reuses the highest row id
  after a delete) is skipped, because the delete that removed it logged a ``remove``.
- Applying is idempotent: an add upserts the row as it is now, a remove removes. Applying
  entries again from an older mark ends in the same indexes, so a mark may always lag.
- A keyword document is the text of its segment: a keyword ``add`` names a segment.
- Truncation (:func:`truncate`) deletes entries only at or below marks that every index
  of the truncating process has persisted, only once they are older than a retention
  period, and never the newest entry (SQLite would hand its number out again). Before
  deleting it appends a marker entry (kind ``log``, op ``truncate``, ``item_id`` = the
  highest seq deleted). A follower reading a marker whose cut-off lies above its own
  mark has lost entries: it rebuilds from the tables instead of trusting the log.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import Connection, bindparam, delete, func, insert, select, text
from sqlalchemy.orm import Session

from kenning.stores.keyword.protocol import KeywordDoc
from kenning.stores.metadata import Database
from kenning.stores.metadata.tables import IndexLog, utcnow
from kenning.stores.namespaces import hash_namespace, vector_namespace

__all__ = [
    "KINDS",
    "MARKER",
    "IndexChanges",
    "LogEntry",
    "append",
    "horizon",
    "oldest_running",
    "read",
    "top",
    "truncate",
]

KINDS = ("vector", "hash", "keyword")
"""The indexes the log describes: embedding, fingerprint and segment (keyword) ids."""
MARKER = "log"
"""Kind of the entry :func:`truncate` leaves; its ``item_id`` is the highest seq deleted."""
_DELETE_CHUNK = 20_000  # entries deleted per transaction: writers wait at most that long


@dataclass
class IndexChanges:
    """What one transaction changes in the indexes; :func:`append` logs it.

    Removals carry what their namespace is made of, since the row may be gone by the time
    a follower applies them; additions carry their payload for in-process callers, but
    only their ids and namespaces are logged (followers read the rows).
    """

    tenant_id: str
    asset_id: str
    removed_segments: list[int] = field(default_factory=list)
    """Segment ids, i.e. keyword document ids."""
    removed_embeddings: list[tuple[int, str, bool]] = field(default_factory=list)
    """(embedding id, space, asset_level)."""
    removed_fingerprints: list[tuple[int, str]] = field(default_factory=list)
    """(fingerprint id, algorithm)."""
    vectors: list[tuple[int, str, bool, np.ndarray]] = field(default_factory=list)
    """(embedding id, space, asset_level, vector)."""
    codes: list[tuple[int, str, bytes]] = field(default_factory=list)
    """(fingerprint id, algorithm, bits)."""
    keyword_docs: list[KeywordDoc] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.removed_segments or self.removed_embeddings
                    or self.removed_fingerprints or self.vectors or self.codes
                    or self.keyword_docs)

    def entries(self) -> list[dict[str, Any]]:
        """The log rows, removals first (see :func:`append`)."""
        return self._rows(removals=True) + self._rows(removals=False)

    def _rows(self, *, removals: bool) -> list[dict[str, Any]]:
        t = self.tenant_id
        rows: list[tuple[str, str, int, str]] = []
        if removals:
            rows += [("keyword", "remove", seg, t) for seg in self.removed_segments]
            rows += [("vector", "remove", i, vector_namespace(t, space, asset_level=level))
                     for i, space, level in self.removed_embeddings]
            rows += [("hash", "remove", i, hash_namespace(t, algorithm))
                     for i, algorithm in self.removed_fingerprints]
        else:
            rows += [("vector", "add", i, vector_namespace(t, space, asset_level=level))
                     for i, space, level, _ in self.vectors]
            rows += [("hash", "add", i, hash_namespace(t, algorithm))
                     for i, algorithm, _ in self.codes]
            rows += [("keyword", "add", doc.id, t) for doc in self.keyword_docs]
        at = utcnow()
        return [
            {"tenant_id": t, "kind": kind, "op": op, "item_id": int(item), "namespace": ns,
             "at": at}
            for kind, op, item, ns in rows
        ]


@dataclass(frozen=True)
class LogEntry:
    """One ``index_log`` row as a follower reads it."""

    seq: int
    kind: str
    op: str
    item_id: int
    namespace: str


def append(session: Session, changes: IndexChanges | Iterable[IndexChanges]) -> int:
    """Log ``changes`` in the caller's transaction (one bulk insert); return the count.

    Every removal is logged before every addition, also across the changes of a batch:
    SQLite hands the highest deleted row id out again, so within one transaction an id
    removed for one asset may be the id of a row just added for another, and the
    follower applies the last entry of an id.
    """
    batch = [changes] if isinstance(changes, IndexChanges) else list(changes)
    rows = [row for c in batch for row in c._rows(removals=True)]
    rows += [row for c in batch for row in c._rows(removals=False)]
    _insert(session, rows)
    return len(rows)


def _insert(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    if not rows:
        return
    if session.get_bind().dialect.name == "postgresql":
        # Take a transaction id before the sequence numbers: a follower that sees a hole
        # waits for every transaction older than its snapshot (see ``horizon``), which
        # covers this one only if it already has an id when it draws its numbers.
        session.execute(text("SELECT pg_current_xact_id()"))
    session.execute(insert(IndexLog), list(rows))


_READ = (select(IndexLog.seq, IndexLog.kind, IndexLog.op, IndexLog.item_id, IndexLog.namespace)
         .where(IndexLog.seq > bindparam("after")).order_by(IndexLog.seq)
         .limit(bindparam("limit")))
"""Built once: every search starts by reading the log (usually finding nothing new)."""


def read(session: Session | Connection, *, after: int, limit: int,
         upto: int | None = None) -> list[LogEntry]:
    """Entries with ``after < seq (<= upto)``, in seq order, at most ``limit``."""
    query = _READ if upto is None else _READ.where(IndexLog.seq <= upto)
    rows = session.execute(query, {"after": after, "limit": limit})
    return [LogEntry(*row) for row in rows]


def top(session: Session) -> int:
    """The highest seq in the log (0 when it is empty)."""
    return int(session.scalar(select(func.max(IndexLog.seq))) or 0)


def _dialect(session: Session | Connection) -> str:
    bind = session if isinstance(session, Connection) else session.get_bind()
    return bind.dialect.name


def horizon(session: Session | Connection) -> int | None:
    """PostgreSQL: the first transaction id not yet handed out.

    A seq is drawn when its row is inserted but becomes visible at commit, so a reader can
    see seq 12 before seq 11. Whoever holds a number that this reader finds missing has a
    transaction id below the horizon taken now; once :func:`oldest_running` reaches it,
    the number is committed (visible) or lost for good. ``None`` on SQLite, whose one
    writer at a time commits entries in seq order.
    """
    if _dialect(session) != "postgresql":
        return None
    return int(session.scalar(text("SELECT pg_snapshot_xmax(pg_current_snapshot())::text")))


def oldest_running(session: Session) -> int | None:
    """PostgreSQL: the oldest transaction id still running (``None`` on SQLite)."""
    if session.get_bind().dialect.name != "postgresql":
        return None
    return int(session.scalar(text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text")))


def truncate(db: Database, upto: int, *, older_than: datetime) -> int:
    """Delete entries up to the highest seq that is ``<= upto``, older than
    ``older_than`` and not the newest; return that seq (0 when nothing qualifies).

    ``upto`` must be a mark that every index of the calling process has persisted. The
    marker goes in first, in its own transaction: a follower that reads the log while
    the entries are being deleted already finds it, above every deleted seq.
    """
    with db.session() as s:
        newest = top(s)
        cut = int(s.scalar(select(func.max(IndexLog.seq)).where(
            IndexLog.seq <= upto, IndexLog.seq < newest, IndexLog.at < older_than)) or 0)
        if not cut:
            return 0
        _insert(s, [{"tenant_id": "", "kind": MARKER, "op": "truncate", "item_id": cut,
                     "namespace": "", "at": utcnow()}])
    with db.session(write=False) as s:
        low = int(s.scalar(select(func.min(IndexLog.seq))) or 0)
    for start in range(low, cut + 1, _DELETE_CHUNK):
        with db.session() as s:
            s.execute(delete(IndexLog).where(
                IndexLog.seq <= min(cut, start + _DELETE_CHUNK - 1)))
    return cut
