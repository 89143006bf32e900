"""Consumer side of :class:`~kenning.queue.sqlite_broker.SQLiteBroker`.

dramatiq calls ``__next__`` from the consumer thread and ``ack``/``nack`` from worker
threads, so the little state kept here (prefetched rows, rows handed out) is guarded by
a lock even though dramatiq's base class says consumers need not be thread-safe.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from dramatiq.broker import Consumer, MessageProxy
from dramatiq.errors import ConnectionClosed, DecodeError
from dramatiq.message import Message

from kenning.queue.protocol import failure_reason
from kenning.queue.sqlite_db import now_ms
from kenning.queue.sqlite_store import ClaimedRow

if TYPE_CHECKING:
    from kenning.queue.sqlite_broker import SQLiteBroker

__all__ = ["ChangeSignal", "SQLiteConsumer", "SQLiteMessageProxy"]

_IDLE_RECHECK_S = 1.0
"""Longest an idle consumer sleeps without being woken (lease upkeep runs then)."""


class ChangeSignal:
    """Wakes waiters in this process when a queue changed.

    Other processes' changes are not signalled; waiters poll for those, so waits are
    always bounded by the poll interval. The generation counter closes the gap between
    "looked, found nothing" and "started waiting".
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._generation = 0

    @property
    def generation(self) -> int:
        """Changes counted so far; pass it to :meth:`wait`."""
        return self._generation

    def notify(self) -> None:
        """Record a change and wake every waiter."""
        with self._cond:
            self._generation += 1
            self._cond.notify_all()

    def wait(self, seen: int, timeout: float) -> None:
        """Sleep up to ``timeout`` seconds unless a change happened after ``seen``."""
        with self._cond:
            if self._generation == seen and timeout > 0:
                self._cond.wait(timeout)


class SQLiteMessageProxy(MessageProxy):
    """A delivered message that remembers the database row it came from."""

    def __init__(self, message: Message[Any], row_id: int) -> None:
        super().__init__(message)
        self.row_id = row_id


def _row_id(message: MessageProxy) -> int:
    if not isinstance(message, SQLiteMessageProxy):
        raise TypeError(f"{message!r} was not delivered by an SQLiteBroker consumer")
    return message.row_id


class SQLiteConsumer(Consumer):
    """Delivers one queue's messages, claiming up to ``prefetch`` rows at a time.

    Parameters:
      broker: The broker whose database and owner identity to use.
      queue_name: The queue to consume.
      prefetch: Most messages held (claimed and not yet settled) at once.
      timeout: Idle timeout of ``__next__`` in milliseconds.
    """

    def __init__(self, broker: SQLiteBroker, queue_name: str, prefetch: int, timeout: int) -> None:
        self.broker = broker
        self.queue_name = queue_name
        self.prefetch = max(1, prefetch)
        self.timeout = timeout
        self._lock = threading.Lock()
        self._cache: deque[ClaimedRow] = deque()
        self._handed: set[int] = set()

    def __next__(self) -> MessageProxy | None:
        """Next message, or None after ``timeout`` ms without one."""
        deadline = time.monotonic() + self.timeout / 1000
        broker = self.broker
        while True:
            with self._lock:
                row = self._cache.popleft() if self._cache else None
                if row is not None:
                    self._handed.add(row.id)
                outstanding = len(self._handed) + len(self._cache)
            if row is not None:
                proxy = self._decode(row)
                if proxy is not None:
                    return proxy
                continue
            seen = broker.changes.generation
            broker.leases.maintain_if_due()
            free = self.prefetch - outstanding
            if free > 0:
                rows = broker.leases.claim(self.queue_name, free)
                if rows:
                    with self._lock:
                        self._cache.extend(rows)
                    continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            # A full prefetch waits for an ack; an empty queue for an enqueue. Both
            # notify in-process, and the broker's watcher notifies commits of other
            # processes; a delayed message is waited for until it is due. The wait is
            # bounded anyway, for lease upkeep and as a safety net.
            broker.watch_other_processes()
            wait = min(remaining, _IDLE_RECHECK_S)
            if free > 0:
                due = broker.message_store.next_visible(self.queue_name)
                if due is not None:
                    wait = min(wait, max(0.0, (due - now_ms()) / 1000))
            broker.changes.wait(seen, wait)

    def _decode(self, row: ClaimedRow) -> SQLiteMessageProxy | None:
        try:
            return SQLiteMessageProxy(Message.decode(row.body), row.id)
        except DecodeError as e:
            # Left delivered, an undecodable row would be re-leased by this process
            # forever; dead-letter it so an operator can look at the bytes.
            broker = self.broker
            broker.logger.error("Dead-lettering undecodable message row %d: %s", row.id, e)
            broker.message_store.dead_letter(row.id, row.body, f"undecodable: {e}", now_ms())
            self._settled([row.id])
            return None

    @contextmanager
    def _db_errors_as_connection_errors(self) -> Iterator[None]:
        # dramatiq's Worker retries an ack or nack that fails with a broker connection
        # error (every few seconds, until it works) but gives up on any other error,
        # which would leave the row delivered and leased to this live process for good.
        try:
            yield
        except sqlite3.OperationalError as e:
            raise ConnectionClosed(e) from e  # type: ignore[no-untyped-call]

    def _settled(self, row_ids: Iterable[int]) -> None:
        with self._lock:
            self._handed.difference_update(row_ids)
        self.broker.changes.notify()

    def ack(self, message: MessageProxy) -> None:
        """Processing succeeded: delete the message."""
        row_id = _row_id(message)
        with self._db_errors_as_connection_errors():
            self.broker.message_store.delete(row_id)
        self._settled([row_id])

    def nack(self, message: MessageProxy) -> None:
        """Processing failed for good: move the message to the dead-letter table."""
        row_id = _row_id(message)
        options = dict(message.options)
        reason = failure_reason(message)
        # The reason column already holds the traceback; don't store it twice.
        options.pop("traceback", None)
        final: Message[Any] = dataclasses.replace(message._message, options=options)
        with self._db_errors_as_connection_errors():
            self.broker.message_store.dead_letter(row_id, final.encode(), reason, now_ms())
        self._settled([row_id])

    def requeue(self, messages: Iterable[MessageProxy]) -> None:
        """Return delivered, unprocessed messages to ready (worker shutdown)."""
        row_ids = [_row_id(m) for m in messages]
        if row_ids:
            with self._db_errors_as_connection_errors():
                self.broker.message_store.release(row_ids)
            self._settled(row_ids)

    def close(self) -> None:
        """Give back prefetched messages that were never handed to a worker."""
        with self._lock:
            row_ids = [row.id for row in self._cache]
            self._cache.clear()
        if row_ids:
            self.broker.message_store.release(row_ids)
            self.broker.changes.notify()
