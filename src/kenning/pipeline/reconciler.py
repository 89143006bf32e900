"""Finds work that fell between the cracks and puts it back on the broker.

The database is the source of truth: a stage that is ``queued`` but whose message was
lost (crash between commit and enqueue), or ``running`` on a lease that expired (the
worker died), is re-enqueued. Duplicated messages are harmless: claims are atomic.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import and_, or_, select, update

from kenning.hosts import holder_is_dead
from kenning.periodic import Periodic
from kenning.queue.dispatch import Dispatcher
from kenning.stores.metadata import Database
from kenning.stores.metadata.tables import StageRun, WebhookDelivery, utcnow

log = logging.getLogger(__name__)


class Reconciler:
    def __init__(self, db: Database, dispatcher: Dispatcher, *, stale_after_s: float) -> None:
        self.db = db
        self.dispatcher = dispatcher
        self.stale_after = timedelta(seconds=stale_after_s)
        self._loop: Periodic | None = None

    def release_orphans(self) -> int:
        """Stages leased by a dead process on this host go back to ``queued`` at once."""
        released = 0
        with self.db.session() as s:
            runs = s.scalars(select(StageRun).where(StageRun.state == "running"))
            for run in runs:
                if holder_is_dead(run.worker):
                    run.state, run.lease_until, run.enqueued_at = "queued", None, None
                    released += 1
        if released:
            log.warning("released stages of dead workers", extra={"count": released})
        return released

    def sweep(self, *, everything: bool = False) -> int:
        """Re-enqueue lost or expired stages and pending webhooks; returns how many."""
        now = utcnow()
        cutoff = now if everything else now - self.stale_after
        with self.db.session() as s:
            runs = list(
                s.scalars(
                    select(StageRun).where(
                        or_(
                            and_(StageRun.state == "queued",
                                 or_(StageRun.enqueued_at.is_(None),
                                     StageRun.enqueued_at <= cutoff)),
                            and_(StageRun.state == "running", StageRun.lease_until < now),
                        )
                    )
                )
            )
            if runs:
                s.execute(
                    update(StageRun)
                    .where(StageRun.id.in_([r.id for r in runs]), StageRun.state == "queued")
                    .values(enqueued_at=now)
                    .execution_options(synchronize_session=False)
                )
            hooks = list(
                s.scalars(
                    select(WebhookDelivery.id).where(
                        WebhookDelivery.state == "pending", WebhookDelivery.created_at <= cutoff
                    )
                )
            )
        self.dispatcher.stages(runs)
        self.dispatcher.webhooks(hooks)
        if runs or hooks:
            log.info("reconciled", extra={"stages": len(runs), "webhooks": len(hooks)})
        return len(runs) + len(hooks)

    def start(self, interval_s: float) -> None:
        self._loop = Periodic("reconciler", interval_s, self.sweep)
        self._loop.start()

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.stop()
