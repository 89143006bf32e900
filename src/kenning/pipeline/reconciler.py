"""Finds work that fell between the cracks and rings for it again.

The database is the source of truth. A stage that is ``queued`` and due but whose
doorbell was lost (a crash between a commit and the ring) gets a new doorbell; one
``running`` on a lease that expired (its worker died or overran its time limit) counts
that attempt: it goes back to ``queued`` with backoff, or to ``failed`` (its dead letter)
once its attempts are spent. Duplicated doorbells are harmless: claims are atomic.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from kenning.hosts import holder_is_dead
from kenning.media.kinds import MediaKind
from kenning.periodic import Periodic
from kenning.pipeline import jobs
from kenning.pipeline.claims import due
from kenning.pipeline.dag import dependents
from kenning.pipeline.registry import ProcessorRegistry
from kenning.queue.dispatch import Dispatcher, step_queue
from kenning.queue.protocol import QueueAdmin, QueueDepth
from kenning.settings import Settings
from kenning.stores.metadata import Database
from kenning.stores.metadata.tables import (
    Asset,
    StageRun,
    WebhookDelivery,
    utcnow,
)

log = logging.getLogger(__name__)

_LOST_AFTER = timedelta(seconds=5)
"""Due work waiting this long with no doorbell ready on its queue: ring again."""


class Reconciler:
    def __init__(
        self,
        db: Database,
        dispatcher: Dispatcher,
        registry: ProcessorRegistry,
        settings: Settings,
        *,
        stale_after_s: float,
    ) -> None:
        self.db = db
        self.dispatcher = dispatcher
        self.registry = registry
        self.settings = settings
        self.stale_after = timedelta(seconds=stale_after_s)
        self._loop: Periodic | None = None

    def release_orphans(self) -> int:
        """Stages leased by a dead process on this host go back to ``queued`` at once
        (their attempt counts, as if their lease had expired)."""
        with self.db.session() as s:
            runs = [r for r in s.scalars(select(StageRun).where(StageRun.state == "running"))
                    if holder_is_dead(r.worker)]
            steps, deliveries = self._expire(s, runs)
        self.dispatcher.ring(steps, force=True)
        self.dispatcher.webhooks(deliveries)
        if runs:
            log.warning("released stages of dead workers", extra={"count": len(runs)})
        return len(runs)

    def sweep(self, *, everything: bool = False) -> int:
        """Expire lapsed leases, re-ring steps with stale due work, re-send pending
        webhooks; returns how many runs and webhooks were acted on."""
        now = utcnow()
        cutoff = now if everything else now - self.stale_after
        with self.db.session() as s:
            expired = list(s.scalars(
                select(StageRun).where(StageRun.state == "running", StageRun.lease_until < now)
            ))
            steps, deliveries = self._expire(s, expired)
            # Steps with due queued work, and how long the oldest has waited.
            waiting = {step: oldest for step, oldest in s.execute(
                select(StageRun.step, func.min(func.coalesce(StageRun.enqueued_at, now)))
                .where(StageRun.state == "queued", due(now)).group_by(StageRun.step)
            )}
            hooks = list(s.scalars(
                select(WebhookDelivery.id).where(
                    WebhookDelivery.state == "pending", WebhookDelivery.created_at <= cutoff
                )
            ))
        stale = {step for step, oldest in waiting.items()
                 if everything or _aware(oldest) <= cutoff}
        lost = self._lost_doorbells(
            {step for step, oldest in waiting.items() if _aware(oldest) <= now - _LOST_AFTER}
            - stale)
        self.dispatcher.ring(steps | stale | lost, force=True)
        self.dispatcher.webhooks(deliveries + hooks)
        if expired or stale or hooks or lost:
            log.info("reconciled", extra={"expired": len(expired), "steps": len(stale),
                                          "webhooks": len(hooks), "lost_doorbells": len(lost)})
        return len(expired) + len(stale) + len(hooks) + len(lost)

    def _lost_doorbells(self, waiting: set[str]) -> set[str]:
        """Of the steps whose work has waited a while, those with no message ready on
        their queue: their doorbell was lost (a broker restarted without its messages),
        never sent (the broker was down when it was rung), or is held by a worker that
        does not answer it (busy with another step while it prefetched this one, or cut
        off from the database by a network partition: then every worker would wait for
        it). Rung again at once rather than after ``stale_after``; a doorbell too many
        costs one delivery that finds nothing to claim."""
        broker = self.dispatcher.broker
        if not waiting or not isinstance(broker, QueueAdmin):
            return set()
        try:
            depths = broker.queue_depths()
        except Exception:  # the broker is still down: the next sweep looks again
            log.warning("broker depths unavailable", exc_info=True)
            return set()
        return {step for step in waiting
                if depths.get(step_queue(step), QueueDepth()).ready == 0}


    def _expire(self, s: Session, runs: list[StageRun]) -> tuple[set[str], list[str]]:
        """Count the lost attempt of each run: back to queued, or failed for good.

        Returns the steps to ring and the webhook deliveries to send after commit.
        """
        now = utcnow()
        steps: set[str] = set()
        load: dict[str, int] = defaultdict(int)
        for job_id in sorted({run.job_id for run in runs}):
            jobs.lock_job(s, job_id)
        failed = []
        for run in runs:
            run.lease_until = None
            run.error = "the worker died or overran its time limit (lease expired)"
            if run.attempts > self.settings.max_retries:
                run.state, run.finished_at = "failed", now
                load[run.tenant_id] -= 1
                failed.append(run)
            else:
                run.state, run.enqueued_at, run.not_before = "queued", now, None
                steps.add(run.step)
        s.flush()
        for run in failed:  # after every state is set, so step-mates are skipped too
            asset = s.get(Asset, run.asset_id)
            if asset is not None:
                plan = self.registry.plan(MediaKind(asset.kind))
                load[run.tenant_id] -= jobs.skip_stages(
                    s, run.job_id, dependents(plan, run.processor))
        deliveries: list[str] = []
        for job_id in sorted({run.job_id for run in runs}):
            job_runs = jobs.job_runs(s, job_id)
            steps |= {r.step for r in jobs.release_ready(s, job_id, job_runs)}
            deliveries += jobs.finalize_if_done(s, job_id, job_runs)
        jobs.adjust_load(s, load)
        return steps, deliveries

    def start(self, interval_s: float) -> None:
        self._loop = Periodic("reconciler", interval_s, self.sweep)
        self._loop.start()

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.stop()


def _aware(value: datetime) -> datetime:
    """Aggregates come back without the column's type (naive UTC on SQLite)."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
