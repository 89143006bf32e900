"""Turning "run stage S" and "deliver webhook W" into broker messages, and back.

The broker only carries ids; the database says what they mean. Actors are declared on
the broker instance the process uses (no global broker), so tests and the server can
each build their own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import dramatiq
from dramatiq import Message
from dramatiq.broker import Broker

RUN_STAGE = "run_stage"
DELIVER_WEBHOOK = "deliver_webhook"
WEBHOOK_QUEUE = "webhooks"


class QueuedStage(Protocol):
    id: str
    queue: str
    processor: str


class Dispatcher:
    """Sends stage and webhook messages with the right queue, time limit and retries."""

    def __init__(
        self,
        broker: Broker,
        *,
        time_limit_s: Callable[[str], float],
        max_retries: int,
        webhook_max_attempts: int,
    ) -> None:
        self.broker = broker
        self._time_limit_s = time_limit_s
        self._max_retries = max_retries
        self._webhook_retries = max(webhook_max_attempts - 1, 0)

    def declare_queues(self, queues: Iterable[str]) -> None:
        for name in sorted(set(queues) | {WEBHOOK_QUEUE}):
            self.broker.declare_queue(name)

    def stages(self, runs: Sequence[QueuedStage]) -> None:
        for run in runs:
            self.broker.declare_queue(run.queue)
            self.broker.enqueue(
                Message(
                    queue_name=run.queue,
                    actor_name=RUN_STAGE,
                    args=(run.id,),
                    kwargs={},
                    options={
                        "time_limit": int(self._time_limit_s(run.processor) * 1000),
                        "max_retries": self._max_retries,
                    },
                )
            )

    def webhooks(self, delivery_ids: Sequence[str]) -> None:
        for delivery_id in delivery_ids:
            self.broker.enqueue(
                Message(
                    queue_name=WEBHOOK_QUEUE,
                    actor_name=DELIVER_WEBHOOK,
                    args=(delivery_id,),
                    kwargs={},
                    options={"max_retries": self._webhook_retries},
                )
            )


def _discarding(fn: Callable[[str], Any]) -> Callable[[str], None]:
    """Actors return nothing (results live in the database, not the broker)."""

    def actor_fn(entity_id: str) -> None:
        fn(entity_id)

    actor_fn.__name__ = getattr(fn, "__name__", "actor")
    return actor_fn


def declare_actors(
    broker: Broker,
    *,
    run_stage: Callable[[str], Any],
    deliver_webhook: Callable[[str], Any],
    min_backoff_ms: int,
    max_backoff_ms: int,
) -> None:
    """Bind the two actors to ``broker``. Retries use exponential backoff with jitter."""
    for name, fn, queue in (
        (RUN_STAGE, run_stage, "default"),
        (DELIVER_WEBHOOK, deliver_webhook, WEBHOOK_QUEUE),
    ):
        decorate = dramatiq.actor(
            broker=broker, actor_name=name, queue_name=queue,
            min_backoff=min_backoff_ms, max_backoff=max_backoff_ms,
        )
        decorate(_discarding(fn))
