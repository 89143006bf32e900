"""The operator-facing side of a work broker: depths, dead letters, redrive.

Dramatiq's :class:`~dramatiq.broker.Broker` covers producing and consuming. What it does
not cover, and what the API (``/v1/admin/queues``, ``/v1/admin/dead-letters``), the CLI
(``kenning dlq``) and ingest backpressure need, is :class:`QueueAdmin`. The embedded
:class:`~kenning.queue.sqlite_broker.SQLiteBroker` implements it; RabbitMQ and Redis
adapters implement the same protocol and run the same contract tests.
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from dramatiq.broker import MessageProxy

__all__ = ["DeadLetter", "QueueAdmin", "QueueDepth", "failure_reason"]


@dataclass(frozen=True, slots=True)
class QueueDepth:
    """How many messages of one queue are in each state.

    ``ready`` can be delivered now, ``delayed`` waits for its time (retry backoff or an
    explicit delay), ``in_flight`` was delivered and is not acknowledged yet, ``dead``
    sits in the dead-letter store.
    """

    ready: int = 0
    delayed: int = 0
    in_flight: int = 0
    dead: int = 0

    @property
    def pending(self) -> int:
        """Messages that still have work ahead of them (everything but ``dead``)."""
        return self.ready + self.delayed + self.in_flight


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that exhausted its retries (or was rejected) and waits for an operator.

    ``id`` identifies the dead letter in its store (pass it to
    :meth:`QueueAdmin.redrive`); ``message_id`` is dramatiq's id of the message, which
    stays the same across retries and redrives. ``reason`` is the last traceback when
    one was recorded. ``failed_at`` is timezone-aware UTC.
    """

    id: str
    queue_name: str
    message_id: str
    actor_name: str
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    options: Mapping[str, Any]
    reason: str | None
    failed_at: datetime


@runtime_checkable
class QueueAdmin(Protocol):
    """Inspect and repair a broker's queues.

    Every method is safe to call from any thread and from a process that runs no
    worker.
    """

    def queue_depths(self) -> dict[str, QueueDepth]:
        """Depth of every queue this broker knows, including ones declared elsewhere."""
        ...

    def total_pending(self) -> int:
        """Ready + delayed + in-flight messages over all queues (for backpressure)."""
        ...

    def list_dead_letters(
        self, queue_name: str | None = None, limit: int = 100
    ) -> list[DeadLetter]:
        """Dead letters, oldest first, optionally of one queue only."""
        ...

    def redrive(
        self, ids: Sequence[str] | None = None, queue_name: str | None = None
    ) -> list[DeadLetter]:
        """Move dead letters back to their queue with their retry count reset to 0.

        ``ids`` and ``queue_name`` narrow the selection; both ``None`` redrives every
        dead letter. Returns the dead letters that were moved, as they were stored.
        """
        ...

    def purge_dead_letters(
        self, ids: Sequence[str] | None = None, queue_name: str | None = None
    ) -> int:
        """Delete dead letters for good (same selection rules as :meth:`redrive`).

        Returns how many were deleted.
        """
        ...


def failure_reason(message: MessageProxy) -> str | None:
    """The traceback dramatiq's Retries middleware stored, else the stuffed exception."""
    reason = message.options.get("traceback")
    if isinstance(reason, str):
        return reason
    exc = getattr(message, "_exception", None)
    if isinstance(exc, BaseException):
        return "".join(traceback.format_exception_only(exc)).strip()
    return None
