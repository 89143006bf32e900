"""Turning "step S has work" and "deliver webhook W" into broker messages, and back.

The broker only carries names and ids; the database says what they mean. A stage
message is a doorbell: it names a step, never a stage run, and the worker that takes it
claims a batch of that step's ready runs from the database. ``step_bell`` keeps at most
one unstarted doorbell per step on the broker, so a burst of ingests rings once.
Actors are declared on the broker instance the process uses (no global broker), so
tests and the server can each build their own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import dramatiq
from dramatiq import Message
from dramatiq.broker import Broker
from sqlalchemy import update

from kenning.observability.metrics import DOORBELLS_UNSENT
from kenning.stores.metadata import Database
from kenning.stores.metadata.database import insert_ignore
from kenning.stores.metadata.tables import StepBell, utcnow

RUN_STEP = "run_step"
DELIVER_WEBHOOK = "deliver_webhook"
WEBHOOK_QUEUE = "webhooks"

log = logging.getLogger(__name__)


class QueuedStage(Protocol):
    step: str


def step_queue(step: str) -> str:
    """The broker queue a step's doorbells go to (its name starts with ``queue:``)."""
    return step.split(":", 1)[0]


class Dispatcher:
    """Rings step doorbells and sends webhook messages with the right options."""

    def __init__(
        self,
        broker: Broker,
        db: Database,
        *,
        time_limit_s: Callable[[str], float],
        webhook_max_attempts: int,
    ) -> None:
        self.broker = broker
        self.db = db
        self._time_limit_s = time_limit_s
        self._webhook_retries = max(webhook_max_attempts - 1, 0)
        self.rung = 0
        """Doorbell messages sent by this process (the bench counts them)."""

    def declare_queues(self, queues: Iterable[str]) -> None:
        for name in sorted(set(queues) | {WEBHOOK_QUEUE}):
            self.broker.declare_queue(name)

    def stages(self, runs: Sequence[QueuedStage]) -> None:
        """Ring the doorbell of every step these newly queued runs belong to."""
        self.ring({run.step for run in runs})

    def ring(self, steps: Iterable[str], *, force: bool = False, delay_ms: int = 0) -> None:
        """Send a doorbell for each step that has none waiting (``force``: send anyway,
        for the reconciler, which cannot tell a lost message from a slow one; ``delay_ms``:
        a retry's backoff, always sent)."""
        steps = sorted(set(steps))
        if not steps:
            return
        send = steps
        if not (force or delay_ms):
            with self.db.session() as s:
                insert_ignore(s, StepBell, [{"step": st, "rung": False} for st in steps])
                send = list(s.scalars(
                    update(StepBell)
                    .where(StepBell.step.in_(steps), StepBell.rung.is_(False))
                    .values(rung=True, rung_at=utcnow())
                    .returning(StepBell.step)
                ))
        unsent: list[str] = []
        error: Exception | None = None
        for step in send:
            try:
                self.broker.declare_queue(step_queue(step))
                self.broker.enqueue(
                    Message(
                        queue_name=step_queue(step),
                        actor_name=RUN_STEP,
                        args=(step,),
                        kwargs={},
                        options={"time_limit": int(self._time_limit_s(step) * 1000),
                                 "max_retries": 0},
                    ),
                    delay=delay_ms or None,
                )
                self.rung += 1
            except Exception as exc:  # the broker is down: the work is committed all the same
                unsent.append(step)
                error = exc
        if unsent:
            # The database is the outbox: the runs stay queued, the next ring sends again
            # (the bell no longer claims a message is waiting), and the reconciler
            # re-rings steps whose work waits too long.
            DOORBELLS_UNSENT.inc(len(unsent))
            log.warning("doorbells not sent: broker unavailable", extra={
                "steps": unsent, "error": f"{type(error).__name__}: {error}"[:300]})
            with self.db.session() as s:
                s.execute(update(StepBell).where(StepBell.step.in_(unsent)).values(rung=False)
                          .execution_options(synchronize_session=False))

    def answered(self, step: str) -> None:
        """A worker took the doorbell of ``step``: the next ring sends a new one."""
        with self.db.session() as s:
            s.execute(
                update(StepBell).where(StepBell.step == step).values(rung=False)
                .execution_options(synchronize_session=False)
            )

    def webhooks(self, delivery_ids: Sequence[str]) -> None:
        """Send webhook deliveries (their rows are committed: one the broker does not take
        stays pending and the reconciler sends it again)."""
        for delivery_id in delivery_ids:
            try:
                self.broker.enqueue(
                    Message(
                        queue_name=WEBHOOK_QUEUE,
                        actor_name=DELIVER_WEBHOOK,
                        args=(delivery_id,),
                        kwargs={},
                        options={"max_retries": self._webhook_retries},
                    )
                )
            except Exception as exc:
                log.warning("webhook delivery not sent: broker unavailable", extra={
                    "delivery": delivery_id, "error": f"{type(exc).__name__}: {exc}"[:300]})
                return


def _discarding(fn: Callable[[str], Any]) -> Callable[[str], None]:
    """Actors return nothing (results live in the database, not the broker)."""

    def actor_fn(entity_id: str) -> None:
        fn(entity_id)

    actor_fn.__name__ = getattr(fn, "__name__", "actor")
    return actor_fn


def declare_actors(
    broker: Broker,
    *,
    run_step: Callable[[str], Any],
    deliver_webhook: Callable[[str], Any],
    min_backoff_ms: int,
    max_backoff_ms: int,
) -> None:
    """Bind the two actors to ``broker``.

    Doorbells are never retried by the broker (``max_retries`` 0 on each message): a
    stage run's attempts, backoff and dead-lettering live in its ``stage_run`` row. The
    broker's redelivery of an unacknowledged message stays as crash safety. Webhook
    retries use the broker's exponential backoff with jitter.
    """
    for name, fn, queue in (
        (RUN_STEP, run_step, "default"),
        (DELIVER_WEBHOOK, deliver_webhook, WEBHOOK_QUEUE),
    ):
        decorate = dramatiq.actor(
            broker=broker, actor_name=name, queue_name=queue,
            min_backoff=min_backoff_ms, max_backoff=max_backoff_ms,
        )
        decorate(_discarding(fn))
