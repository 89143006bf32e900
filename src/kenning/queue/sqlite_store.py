"""Messages table of the embedded broker: enqueue, claim, settle, recover.

This module knows nothing about dramatiq: it stores opaque message bodies, so the
broker stays thin glue and the SQL can be tested on its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from kenning.queue.sqlite_db import SQLiteDatabase, chunks, marks

__all__ = ["INSERT_MESSAGE", "ClaimedRow", "MessageStore", "NewMessage", "Owner", "insert_params"]


@dataclass(frozen=True, slots=True)
class ClaimedRow:
    """A message row that was just delivered to a consumer."""

    id: int
    body: bytes
    visible_at: int


@dataclass(frozen=True, slots=True)
class Owner:
    """Who holds a delivered message: a unique token plus the process that has it."""

    token: str
    pid: int
    host: str


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message to insert; ``body`` is the encoded dramatiq message."""

    queue_name: str
    message_id: str
    actor_name: str
    body: bytes
    visible_at: int


INSERT_MESSAGE = (
    "INSERT INTO messages (queue_name, message_id, actor_name, body, visible_at) "
    "VALUES (?, ?, ?, ?, ?)"
)
_TO_READY = (
    "UPDATE messages SET state = 'ready', owner = NULL, owner_pid = NULL, "
    "owner_host = NULL, lease_until = NULL"
)
_TO_DEAD = "INSERT INTO dead_letters (queue_name, message_id, actor_name, body, reason, failed_at) "


def insert_params(message: NewMessage) -> tuple[str, str, str, bytes, int]:
    """Parameters for the messages INSERT statement."""
    m = message
    return (m.queue_name, m.message_id, m.actor_name, m.body, m.visible_at)


class MessageStore:
    """Ready, delayed and delivered messages; safe across threads and processes."""

    def __init__(self, db: SQLiteDatabase) -> None:
        self.db = db

    def declare_queue(self, name: str) -> None:
        """Record a queue name so that other processes see it in depth listings."""
        self.db.connection().execute("INSERT OR IGNORE INTO queues (name) VALUES (?)", (name,))

    # --- producing and consuming --------------------------------------------------

    def insert(self, message: NewMessage) -> int:
        """Store a message; it becomes deliverable at ``visible_at``. Returns its row id."""
        cur = self.db.connection().execute(INSERT_MESSAGE, insert_params(message))
        return int(cur.lastrowid or 0)

    def has_ready(self, queue_name: str, now: int) -> bool:
        """Cheap read-only check, so idle polling never takes the write lock."""
        row = (
            self.db.connection()
            .execute(
                "SELECT 1 FROM messages WHERE queue_name = ? AND state = 'ready' "
                "AND visible_at <= ? LIMIT 1",
                (queue_name, now),
            )
            .fetchone()
        )
        return row is not None

    def next_visible(self, queue_name: str) -> int | None:
        """When the queue's earliest ready message becomes visible (ms), if any."""
        row = self.db.connection().execute(
            "SELECT MIN(visible_at) FROM messages WHERE queue_name = ? AND state = 'ready'",
            (queue_name,),
        ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def claim(
        self, queue_name: str, limit: int, owner: Owner, *, now: int, lease_until: int
    ) -> list[ClaimedRow]:
        """Atomically deliver up to ``limit`` visible messages to ``owner``.

        Messages come in order of ``visible_at``, then insertion.
        """
        if limit <= 0 or not self.has_ready(queue_name, now):
            return []
        with self.db.write() as conn:
            rows = conn.execute(
                "UPDATE messages SET state = 'delivered', owner = ?, owner_pid = ?, "
                "owner_host = ?, lease_until = ? "
                "WHERE id IN (SELECT id FROM messages WHERE queue_name = ? "
                "AND state = 'ready' AND visible_at <= ? ORDER BY visible_at, id LIMIT ?) "
                "RETURNING id, body, visible_at",
                (owner.token, owner.pid, owner.host, lease_until, queue_name, now, limit),
            ).fetchall()
        # RETURNING gives no order guarantee; restore the delivery order.
        claimed = [ClaimedRow(int(i), bytes(b), int(v)) for i, b, v in rows]
        claimed.sort(key=lambda r: (r.visible_at, r.id))
        return claimed

    def delete(self, row_id: int) -> bool:
        """Acknowledge: forget the message. False when it was already gone."""
        cur = self.db.connection().execute("DELETE FROM messages WHERE id = ?", (row_id,))
        return cur.rowcount > 0

    def dead_letter(self, row_id: int, body: bytes, reason: str | None, now: int) -> bool:
        """Move a message to the dead-letter table, storing ``body`` as its final form.

        False (and nothing stored) when the row was already gone, e.g. acknowledged by
        another consumer after a redelivery.
        """
        with self.db.write() as conn:
            row = conn.execute(
                "DELETE FROM messages WHERE id = ? RETURNING queue_name, message_id, actor_name",
                (row_id,),
            ).fetchone()
            if row is None:
                return False
            conn.execute(
                _TO_DEAD + "VALUES (?, ?, ?, ?, ?, ?)", (row[0], row[1], row[2], body, reason, now)
            )
        return True

    def release(self, row_ids: Iterable[int]) -> int:
        """Return delivered messages to ready, keeping their place in the queue."""
        ids = list(row_ids)
        released = 0
        if ids:
            with self.db.write() as conn:
                for chunk in chunks(ids):
                    sql = f"{_TO_READY} WHERE state = 'delivered' AND id IN ({marks(len(chunk))})"
                    released += conn.execute(sql, tuple(chunk)).rowcount
        return released

    def release_owner(self, owner: str) -> int:
        """Return everything ``owner`` holds to ready (its broker is closing)."""
        sql = f"{_TO_READY} WHERE state = 'delivered' AND owner = ?"
        return self.db.connection().execute(sql, (owner,)).rowcount

    def renew(self, owner: str, lease_until: int) -> int:
        """Extend the lease of everything ``owner`` holds."""
        cur = self.db.connection().execute(
            "UPDATE messages SET lease_until = ? WHERE state = 'delivered' AND owner = ?",
            (lease_until, owner),
        )
        return cur.rowcount

    # --- recovery -----------------------------------------------------------------

    def delivered_owners(self) -> list[tuple[Owner, int]]:
        """Every owner holding delivered messages, with the earliest of its leases."""
        rows = self.db.connection().execute(
            "SELECT owner, MAX(owner_pid), MAX(owner_host), MIN(lease_until) FROM messages "
            "WHERE state = 'delivered' GROUP BY owner"
        )
        return [(Owner(str(o), int(p or 0), str(h or "")), int(u or 0)) for o, p, h, u in rows]

    def recover(
        self, *, dead_owners: Sequence[str], keep_owner: str, now: int, max_lost: int | None
    ) -> tuple[int, int]:
        """Release messages of ``dead_owners`` and expired leases (except ``keep_owner``'s).

        A message lost ``max_lost`` times (each time its holder crashed or stalled) is
        dead-lettered instead, so that a message that kills its worker cannot crash-loop
        the service forever. Returns (released, dead-lettered).
        """
        where = "state = 'delivered' AND owner != ? AND (lease_until < ?"
        params: list[object] = [keep_owner, now]
        if dead_owners:
            where += f" OR owner IN ({marks(len(dead_owners))})"
            params.extend(dead_owners)
        where += ")"
        with self.db.write() as conn:
            rows = conn.execute(f"SELECT id, lost FROM messages WHERE {where}", params).fetchall()
            give_up: list[int] = []
            retry: list[int] = []
            for row_id, lost in rows:
                exhausted = max_lost is not None and int(lost) + 1 >= max_lost
                (give_up if exhausted else retry).append(int(row_id))
            for chunk in chunks(give_up):
                in_ids = f"id IN ({marks(len(chunk))})"
                conn.execute(
                    _TO_DEAD + "SELECT queue_name, message_id, actor_name, body, "
                    "'delivered ' || (lost + 1) || ' times and never acknowledged: its worker "
                    f"died or stalled each time', ? FROM messages WHERE {in_ids} ORDER BY id",
                    (now, *chunk),
                )
                conn.execute(f"DELETE FROM messages WHERE {in_ids}", tuple(chunk))
            for chunk in chunks(retry):
                sql = f"{_TO_READY}, lost = lost + 1 WHERE id IN ({marks(len(chunk))})"
                conn.execute(sql, tuple(chunk))
        return len(retry), len(give_up)

    # --- inspection and cleanup ---------------------------------------------------

    def count(self, queue_name: str) -> int:
        """Messages of a queue in any state except dead."""
        sql = "SELECT COUNT(*) FROM messages WHERE queue_name = ?"
        return int(self.db.connection().execute(sql, (queue_name,)).fetchone()[0])

    def total_pending(self) -> int:
        """Messages of all queues in any state except dead."""
        return int(self.db.connection().execute("SELECT COUNT(*) FROM messages").fetchone()[0])

    def depths(self, now: int) -> dict[str, tuple[int, int, int, int]]:
        """(ready, delayed, in_flight, dead) per known queue, from one snapshot."""
        with self.db.read() as conn:
            out = {str(n): (0, 0, 0, 0) for (n,) in conn.execute("SELECT name FROM queues")}
            for name, ready, delayed, in_flight in conn.execute(
                "SELECT queue_name, SUM(state = 'ready' AND visible_at <= :now), "
                "SUM(state = 'ready' AND visible_at > :now), SUM(state = 'delivered') "
                "FROM messages GROUP BY queue_name",
                {"now": now},
            ):
                out[str(name)] = (int(ready), int(delayed), int(in_flight), 0)
            for name, dead in conn.execute(
                "SELECT queue_name, COUNT(*) FROM dead_letters GROUP BY queue_name"
            ):
                r, d, f, _ = out.get(str(name), (0, 0, 0, 0))
                out[str(name)] = (r, d, f, int(dead))
        return out

    def flush(self, queue_names: Iterable[str], *, dead_letters: bool = False) -> None:
        """Drop messages (every state) of the given queues, and their dead letters too."""
        with self.db.write() as conn:
            for name in queue_names:
                conn.execute("DELETE FROM messages WHERE queue_name = ?", (name,))
                if dead_letters:
                    conn.execute("DELETE FROM dead_letters WHERE queue_name = ?", (name,))
