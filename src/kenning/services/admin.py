"""Operations: queue depths, dead letters and redrive (each redrive is audited)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from kenning.pipeline import jobs
from kenning.queue.dispatch import RUN_STAGE
from kenning.queue.protocol import QueueAdmin
from kenning.services.audit import record
from kenning.services.tenants import Principal
from kenning.stores.metadata import Database
from kenning.stores.metadata.tables import Job, StageRun


class QueueStats(BaseModel):
    queue: str
    ready: int
    delayed: int
    in_flight: int
    dead: int


class DeadLetterView(BaseModel):
    id: str
    queue: str
    actor: str
    args: list[Any]
    reason: str | None
    failed_at: datetime
    stage: str | None = None
    asset_id: str | None = None


class AdminService:
    def __init__(self, db: Database, queues: QueueAdmin) -> None:
        self.db = db
        self.queues = queues

    def queue_stats(self) -> list[QueueStats]:
        return [
            QueueStats(queue=name, ready=d.ready, delayed=d.delayed, in_flight=d.in_flight,
                       dead=d.dead)
            for name, d in sorted(self.queues.queue_depths().items())
        ]

    def _stage_of(self, actor: str, args: Sequence[Any]) -> StageRun | None:
        if actor != RUN_STAGE or not args:
            return None
        with self.db.session(write=False) as s:
            return s.get(StageRun, str(args[0]))

    def _tenant_of(self, run: StageRun | None) -> str | None:
        if run is None:
            return None
        with self.db.session(write=False) as s:
            job = s.get(Job, run.job_id)
            return job.tenant_id if job else None

    def dead_letters(self, who: Principal, limit: int = 100) -> list[DeadLetterView]:
        """Dead letters of the caller's tenant (stages of its assets)."""
        out = []
        for dl in self.queues.list_dead_letters(limit=10_000):
            run = self._stage_of(dl.actor_name, dl.args)
            if self._tenant_of(run) != who.tenant_id:
                continue
            out.append(
                DeadLetterView(
                    id=dl.id, queue=dl.queue_name, actor=dl.actor_name, args=list(dl.args),
                    reason=(dl.reason or "")[-2000:] or None, failed_at=dl.failed_at,
                    stage=run.processor if run else None, asset_id=run.asset_id if run else None,
                )
            )
            if len(out) >= limit:
                break
        return out

    def redrive(self, who: Principal, ids: Sequence[str] | None = None) -> list[str]:
        """Reset the stages behind the tenant's dead letters and put them back to work."""
        mine = {d.id: d for d in self.dead_letters(who, limit=10_000)}
        chosen = [i for i in (ids if ids is not None else list(mine)) if i in mine]
        if not chosen:
            return []
        with self.db.session() as s:
            for dl_id in chosen:
                dl = mine[dl_id]
                if dl.actor == RUN_STAGE:
                    jobs.reset_for_redrive(s, str(dl.args[0]))
                record(s, tenant_id=who.tenant_id, actor=who.actor, action="deadletter.redrive",
                       subject_type="stage_run", subject_id=str(dl.args[0]) if dl.args else dl_id,
                       after={"dead_letter": dl_id, "stage": dl.stage, "asset_id": dl.asset_id})
        redriven = self.queues.redrive(chosen)
        return [d.id for d in redriven]
