"""An embedded, durable dramatiq broker on one SQLite file.

Run a stock :class:`dramatiq.Worker` on it, in the API process or in several worker
processes sharing the file. Delivery is at least once: a delivered message stays in the
database (``delivered``, with an owner and a lease) until it is acknowledged. Messages
whose lease expired, or whose owner process died on this host, become ready again;
this is checked when a broker opens and every second or so while it consumes, so
after a ``kill -9`` a restart redelivers in-flight work at once.

Delays are native (a ``visible_at`` column), so dramatiq's Worker never holds delayed
messages in memory and no ``.DQ`` queues exist. Retries with backoff and time limits
are dramatiq's own ``Retries`` and ``TimeLimit`` middleware.

Workers inside a server process::

    broker = SQLiteBroker(settings.queue_path)
    ...  # declare actors with dramatiq.actor(broker=broker, ...)
    broker.emit_after("process_boot")  # what the dramatiq CLI does; starts TimeLimit
    worker = dramatiq.Worker(broker, worker_threads=settings.workers)
    worker.start()
    ...
    worker.stop(timeout=30_000)  # finishes running actors, requeues prefetched messages
    broker.close()
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dramatiq.broker import Broker, Consumer, MessageProxy
from dramatiq.common import q_name
from dramatiq.errors import DecodeError, QueueJoinTimeout, QueueNotFound
from dramatiq.message import Message
from dramatiq.middleware import Middleware

from kenning.queue.protocol import DeadLetter, QueueDepth
from kenning.queue.sqlite_consumer import ChangeSignal, SQLiteConsumer
from kenning.queue.sqlite_db import SQLiteDatabase, now_ms
from kenning.queue.sqlite_dead_letters import DeadLetterStore
from kenning.queue.sqlite_leases import LeaseKeeper
from kenning.queue.sqlite_store import MessageStore, NewMessage

__all__ = ["SQLiteBroker"]

_BROKERS: weakref.WeakSet[SQLiteBroker] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for broker in list(_BROKERS):
        broker._reset_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


class SQLiteBroker(Broker):
    """A durable dramatiq broker on a SQLite file; also a :class:`QueueAdmin`.

    Parameters:
      path: The database file, shared by every process that works on these queues.
      middleware: As for :class:`dramatiq.Broker`; None means dramatiq's defaults.
      visibility_timeout_s: Lease of a delivered message. Live consumers renew it, so
        it only bounds how long a message held by a stalled or unreachable process
        waits before another consumer gets it.
      poll_interval_s: The longest an enqueue by another process waits to be noticed:
        one watcher thread per process checks the file's change counter (``PRAGMA
        data_version``, no query of the queues) twice per interval and wakes this
        process's idle consumers when another connection committed; in-process enqueues
        wake them at once.
      max_lost_deliveries: Dead-letter a message after it was delivered this many
        times without ever being acknowledged (its worker died each time); None
        redelivers forever.
    """

    def __init__(
        self,
        path: Path,
        *,
        middleware: list[Middleware] | None = None,
        visibility_timeout_s: float = 60.0,
        poll_interval_s: float = 0.05,
        max_lost_deliveries: int | None = 5,
    ) -> None:
        super().__init__(middleware=middleware)
        self.path = Path(path)
        self.visibility_timeout_s = visibility_timeout_s
        self.poll_interval_s = poll_interval_s
        self.max_lost_deliveries = max_lost_deliveries
        self._declared: set[str] = set()
        self.queues = self._declared
        self.db = SQLiteDatabase(self.path)
        self.message_store = MessageStore(self.db)
        self.dead_letter_store = DeadLetterStore(self.db)
        self.changes = ChangeSignal()
        self.leases = LeaseKeeper(
            self.message_store,
            visibility_timeout_s=visibility_timeout_s,
            max_lost_deliveries=max_lost_deliveries,
            on_release=self.changes.notify,
        )
        self._closed = False
        self._watcher: threading.Thread | None = None
        self._watcher_lock = threading.Lock()
        _BROKERS.add(self)
        # Recover at open, so a restart after a crash redelivers before anything else.
        self.leases.maintain()

    def _reset_after_fork(self) -> None:
        # SQLite connections and held locks must not cross fork(); the child also needs
        # its own owner identity, since the parent still holds its deliveries.
        self.db.forget_connections()
        self._watcher = None  # threads do not cross fork(): the child starts its own
        self._watcher_lock = threading.Lock()
        self.changes = ChangeSignal()
        self.leases.reset_after_fork()
        self.leases.on_release = self.changes.notify

    def watch_other_processes(self) -> None:
        """Start this process's watcher thread (once; consumers call this)."""
        with self._watcher_lock:
            if self._watcher is not None and self._watcher.is_alive():
                return
            self._watcher = threading.Thread(
                target=self._watch, name="queue-watcher", daemon=True)
            self._watcher.start()

    def _watch(self) -> None:
        """Wake consumers when another connection committed to the file: the change
        counter is read on a connection of its own (cheap, nothing is queried)."""
        conn = sqlite3.connect(self.path, check_same_thread=False)
        try:
            last = conn.execute("PRAGMA data_version").fetchone()[0]
            while not self._closed:
                time.sleep(self.poll_interval_s / 2)
                version = conn.execute("PRAGMA data_version").fetchone()[0]
                if version != last:
                    last = version
                    self.changes.notify()
        except sqlite3.Error:  # the file went away (closing): consumers fall back to polling
            return
        finally:
            conn.close()

    # --- dramatiq Broker API ------------------------------------------------------

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 30000) -> Consumer:
        """A consumer of a declared queue; ``timeout`` is the idle timeout in ms.

        Raises:
          QueueNotFound: If the queue was not declared on this broker.
        """
        if queue_name not in self._declared:
            raise QueueNotFound(queue_name)  # type: ignore[no-untyped-call]
        return SQLiteConsumer(self, queue_name, prefetch, timeout)

    def declare_queue(self, queue_name: str) -> None:
        """Declare a queue (idempotent). No delay queue is declared: delays are native."""
        if queue_name in self._declared:
            return
        self.emit_before("declare_queue", queue_name)
        self.message_store.declare_queue(queue_name)
        self._declared.add(queue_name)
        self.emit_after("declare_queue", queue_name)

    def enqueue(self, message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        """Store a message, deliverable after ``delay`` milliseconds when given.

        Raises:
          QueueNotFound: If the message's queue was not declared on this broker.
        """
        # Retries re-enqueues the MessageProxy it was handed; store the plain message.
        base: Message[Any] = message._message if isinstance(message, MessageProxy) else message
        queue_name = q_name(base.queue_name)
        if queue_name not in self._declared:
            raise QueueNotFound(queue_name)  # type: ignore[no-untyped-call]
        now = now_ms()
        options = dict(base.options)
        # An "eta" option makes dramatiq's Worker hold the message in memory until then;
        # turn one set by other code into our visible_at instead.
        eta = options.pop("eta", None)
        visible_at = now
        if delay is not None:
            visible_at = now + int(delay)
        elif isinstance(eta, int | float):
            visible_at = max(now, int(eta))
        stored = dataclasses.replace(base, queue_name=queue_name, options=options)
        self.emit_before("enqueue", stored, delay)
        self.message_store.insert(
            NewMessage(
                queue_name, stored.message_id, stored.actor_name, stored.encode(), visible_at
            )
        )
        self.changes.notify()
        self.emit_after("enqueue", stored, delay)
        return stored

    def get_declared_queues(self) -> set[str]:
        """Names of the queues declared on this broker."""
        return set(self.queues)

    def get_declared_delay_queues(self) -> set[str]:
        """Always empty: delayed messages wait in their own queue."""
        return set()

    def flush(self, queue_name: str) -> None:
        """Drop every message of a queue (ready, delayed and in flight)."""
        self.message_store.flush([queue_name])
        self.changes.notify()

    def flush_all(self) -> None:
        """Drop every message and dead letter of the queues declared on this broker."""
        self.message_store.flush(sorted(self._declared), dead_letters=True)
        self.changes.notify()

    def join(self, queue_name: str, *, timeout: int | None = None) -> None:
        """Wait until a queue has no ready, delayed or in-flight message.

        Parameters:
          queue_name: The queue to wait on.
          timeout: The most milliseconds to wait; None waits forever.

        Raises:
          QueueJoinTimeout: When the timeout elapses first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout / 1000
        while True:
            seen = self.changes.generation
            if self.message_store.count(queue_name) == 0:
                return
            wait = self.poll_interval_s
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise QueueJoinTimeout(queue_name)  # type: ignore[no-untyped-call]
                wait = min(wait, remaining)
            self.changes.wait(seen, wait)

    def close(self) -> None:
        """Give back messages this broker still holds and close the database."""
        if self._closed:
            return
        self._closed = True
        try:
            self.leases.retire()
            _BROKERS.discard(self)
        finally:
            self.db.close()

    # --- QueueAdmin ---------------------------------------------------------------

    def queue_depths(self) -> dict[str, QueueDepth]:
        """Depth of every queue declared here or known to the database file."""
        depths = {name: QueueDepth() for name in self._declared}
        for name, counts in self.message_store.depths(now_ms()).items():
            depths[name] = QueueDepth(*counts)
        return depths

    def total_pending(self) -> int:
        """Ready + delayed + in-flight messages over all queues."""
        return self.message_store.total_pending()

    def list_dead_letters(
        self, queue_name: str | None = None, limit: int = 100
    ) -> list[DeadLetter]:
        """Dead letters, oldest first."""
        return [
            row.to_dead_letter()
            for row in self.dead_letter_store.select(queue_name=queue_name, limit=limit)
        ]

    def redrive(
        self, ids: Sequence[str] | None = None, queue_name: str | None = None
    ) -> list[DeadLetter]:
        """Move dead letters back to ready with ``retries`` reset to 0 (atomically)."""
        rows = self.dead_letter_store.select(ids=_parse_ids(ids), queue_name=queue_name)
        now = now_ms()
        letters: dict[int, DeadLetter] = {}
        messages: dict[int, Message[Any]] = {}
        moves: list[tuple[int, NewMessage]] = []
        for row in rows:
            try:
                old = Message.decode(row.body)
            except DecodeError:
                self.logger.error("Cannot redrive undecodable dead letter %d.", row.id)
                continue
            options = {k: v for k, v in old.options.items() if k not in ("traceback", "eta")}
            options["retries"] = 0
            new = dataclasses.replace(old, queue_name=row.queue_name, options=options)
            self.emit_before("enqueue", new, None)
            letters[row.id] = row.to_dead_letter()
            messages[row.id] = new
            moves.append(
                (
                    row.id,
                    NewMessage(row.queue_name, new.message_id, new.actor_name, new.encode(), now),
                )
            )
        moved = self.dead_letter_store.move_to_ready(moves)
        if moved:
            self.changes.notify()
        for dead_id in moved:
            self.emit_after("enqueue", messages[dead_id], None)
        return [letters[dead_id] for dead_id in moved]

    def purge_dead_letters(
        self, ids: Sequence[str] | None = None, queue_name: str | None = None
    ) -> int:
        """Delete dead letters for good; returns how many."""
        return self.dead_letter_store.delete(ids=_parse_ids(ids), queue_name=queue_name)


def _parse_ids(ids: Sequence[str] | None) -> list[int] | None:
    if ids is None:
        return None
    return [int(i) for i in ids if str(i).isdigit()]
