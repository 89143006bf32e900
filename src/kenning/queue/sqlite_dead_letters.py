"""Dead-letter table of the embedded broker: list, redrive, purge."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from dramatiq.errors import DecodeError
from dramatiq.message import Message

from kenning.queue.protocol import DeadLetter
from kenning.queue.sqlite_db import SQLiteDatabase, chunks, marks
from kenning.queue.sqlite_store import INSERT_MESSAGE, NewMessage, insert_params

__all__ = ["DeadLetterStore", "DeadRow"]


@dataclass(frozen=True, slots=True)
class DeadRow:
    """A row of the dead-letter table; ``failed_at`` in UNIX milliseconds."""

    id: int
    queue_name: str
    message_id: str
    actor_name: str
    body: bytes
    reason: str | None
    failed_at: int

    def to_dead_letter(self) -> DeadLetter:
        """The protocol's view, with the message body decoded (empty if undecodable)."""
        try:
            message = Message.decode(self.body)
            args: tuple[Any, ...] = message.args
            kwargs: dict[str, Any] = message.kwargs
            options: dict[str, Any] = message.options
        except DecodeError:
            args, kwargs, options = (), {}, {}
        return DeadLetter(
            id=str(self.id),
            queue_name=self.queue_name,
            message_id=self.message_id,
            actor_name=self.actor_name,
            args=args,
            kwargs=kwargs,
            options=options,
            reason=self.reason,
            failed_at=datetime.fromtimestamp(self.failed_at / 1000, tz=UTC),
        )


_COLUMNS = "id, queue_name, message_id, actor_name, body, reason, failed_at"


def _where(ids: Sequence[int] | None, queue_name: str | None) -> tuple[str, list[object]]:
    clauses: list[str] = []
    params: list[object] = []
    if queue_name is not None:
        clauses.append("queue_name = ?")
        params.append(queue_name)
    if ids is not None:
        clauses.append(f"id IN ({marks(len(ids))})")
        params.extend(ids)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def _id_chunks(ids: Sequence[int] | None) -> list[Sequence[int] | None]:
    return [None] if ids is None else list(chunks(ids))


class DeadLetterStore:
    """Messages that failed for good, kept until an operator redrives or purges them.

    Selections take ``ids`` and ``queue_name``; both narrow, None means "any".
    """

    def __init__(self, db: SQLiteDatabase) -> None:
        self.db = db

    def select(
        self,
        *,
        ids: Sequence[int] | None = None,
        queue_name: str | None = None,
        limit: int | None = None,
    ) -> list[DeadRow]:
        """Dead letters matching the selection, oldest first."""
        out: list[DeadRow] = []
        conn = self.db.connection()
        for chunk in _id_chunks(ids):
            where, params = _where(chunk, queue_name)
            sql = f"SELECT {_COLUMNS} FROM dead_letters{where} ORDER BY id"
            if limit is not None:
                sql += f" LIMIT {int(limit)}"
            out.extend(
                DeadRow(int(i), str(q), str(m), str(a), bytes(b), r, int(t))
                for i, q, m, a, b, r, t in conn.execute(sql, params)
            )
        out.sort(key=lambda r: r.id)
        return out if limit is None else out[:limit]

    def move_to_ready(self, moves: Sequence[tuple[int, NewMessage]]) -> list[int]:
        """In one transaction, delete each dead letter and insert its replacement.

        Dead letters already gone (a concurrent redrive or purge) are skipped; returns
        the ids that were moved.
        """
        moved: list[int] = []
        with self.db.write() as conn:
            for dead_id, message in moves:
                sql = "DELETE FROM dead_letters WHERE id = ? RETURNING id"
                if conn.execute(sql, (dead_id,)).fetchone() is None:
                    continue
                conn.execute(INSERT_MESSAGE, insert_params(message))
                moved.append(dead_id)
        return moved

    def delete(self, *, ids: Sequence[int] | None, queue_name: str | None) -> int:
        """Delete the selected dead letters; returns how many."""
        deleted = 0
        with self.db.write() as conn:
            for chunk in _id_chunks(ids):
                where, params = _where(chunk, queue_name)
                deleted += conn.execute(f"DELETE FROM dead_letters{where}", params).rowcount
        return deleted
