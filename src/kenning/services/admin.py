"""Operations for a tenant: its queue depths, its dead letters and their redrive (audited).

Everything here is scoped to the caller's tenant and counted from the metadata store,
never from broker-wide totals: one tenant must not learn how much work, or how many
failures, another tenant has. Operators see the broker's global depths on ``/metrics``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import case, func, select

from kenning.pipeline import jobs
from kenning.principal import Principal
from kenning.queue.dispatch import RUN_STEP, WEBHOOK_QUEUE
from kenning.queue.protocol import QueueAdmin
from kenning.stores.metadata import Database
from kenning.stores.metadata.audit import record
from kenning.stores.metadata.tables import StageRun, WebhookDelivery, utcnow

__all__ = ["AdminService", "DeadLetterView", "QueueStats", "short_reason"]

REASON_CHARS = 300
"""Longest failure reason a tenant is shown (the full traceback stays in the logs)."""
_COLUMNS = ("ready", "delayed", "in_flight", "dead")
_SCAN_LIMIT = 10_000
"""Most dead letters one redrive puts back to work."""
# Absolute POSIX paths ("/srv/kenning/blobs/ab/...") and Windows ones ("C:\\..."), but not
# the path part of a URL ("https://host/a/b"): a tenant must not learn the server's layout.
_PATH = re.compile(r"(?<![\w/:.~-])/(?:[\w.@+-]+/)+[\w.@+-]*|\b[A-Za-z]:\\[^\s'\"]+")


class QueueStats(BaseModel):
    """One queue as the calling tenant sees it: counts of its own work only."""

    queue: str
    ready: int = Field(description="Work waiting for its first attempt (or redriven).")
    delayed: int = Field(
        description="Work queued again after a failed attempt; the broker holds it back "
        "for the retry backoff."
    )
    in_flight: int = Field(description="Work a worker is running now.")
    dead: int = Field(
        description="Work that failed for good: dead-lettered stages (see "
        "/v1/admin/dead-letters) and webhook deliveries that gave up."
    )


class DeadLetterView(BaseModel):
    id: str
    queue: str
    actor: str
    args: list[Any]
    reason: str | None = Field(
        description="Why it failed: the exception type and message, one line, shortened."
    )
    failed_at: datetime
    stage: str | None = None
    asset_id: str | None = None


def short_reason(text: str | None, limit: int = REASON_CHARS) -> str | None:
    """A failure reason fit for a tenant: ``"Type: message"``, one line, no server paths.

    From a traceback only its last line (which Python writes as ``Type: message``) is
    kept. Absolute file paths become ``<path>``; the result is cut to ``limit`` characters.
    """
    if not text:
        return None
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return None
    line = lines[-1] if lines[0].startswith("Traceback (most recent call last)") else lines[0]
    line = _PATH.sub("<path>", line)
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


class AdminService:
    def __init__(
        self, db: Database, queues: QueueAdmin, ring: Callable[[set[str]], None]
    ) -> None:
        self.db = db
        self.queues = queues
        self.ring = ring  # doorbells for the steps a redrive put back to work

    def queue_stats(self, who: Principal) -> list[QueueStats]:
        """Per queue, the caller's stages (and webhook deliveries) in each state.

        ``ready``: queued, never attempted (or redriven); ``delayed``: queued again after a
        failed attempt; ``in_flight``: running; ``dead``: failed for good. Stages that wait
        for an upstream stage are not on any queue yet and are not counted. Every queue
        the broker knows is listed, with zeros where the tenant has nothing.
        """
        # Only the broker's queue names are used here, never its (global) counts.
        counts = {name: dict.fromkeys(_COLUMNS, 0) for name in self.queues.queue_depths()}

        def add(queue: str, column: str, n: int) -> None:
            counts.setdefault(queue, dict.fromkeys(_COLUMNS, 0))[column] += n

        retried = case((StageRun.attempts > 0, 1), else_=0)
        stages = (
            select(StageRun.queue, StageRun.state, retried, func.count())
            .where(StageRun.tenant_id == who.tenant_id,
                   StageRun.state.in_(("queued", "running", "failed")))
            .group_by(StageRun.queue, StageRun.state, retried)
        )
        hook_retried = case((WebhookDelivery.attempts > 0, 1), else_=0)
        hooks = (
            select(WebhookDelivery.state, hook_retried, func.count())
            .where(WebhookDelivery.tenant_id == who.tenant_id,
                   WebhookDelivery.state.in_(("pending", "failed")))
            .group_by(WebhookDelivery.state, hook_retried)
        )
        with self.db.session(write=False) as s:
            for queue, state, again, n in s.execute(stages):
                if state == "queued":
                    add(queue, "delayed" if again else "ready", n)
                else:
                    add(queue, "in_flight" if state == "running" else "dead", n)
            for state, again, n in s.execute(hooks):
                column = "dead" if state == "failed" else ("delayed" if again else "ready")
                add(WEBHOOK_QUEUE, column, n)
        return [QueueStats(queue=name, **c) for name, c in sorted(counts.items())]

    def dead_letters(self, who: Principal, limit: int = 100) -> list[DeadLetterView]:
        """Dead letters of the caller's stages, oldest first.

        A dead letter is a stage run that failed for good: one indexed query on
        ``stage_run`` (tenant, state), never a scan of the broker. ``reason`` is the
        stage's recorded error (``Type: message``), shortened for a tenant.
        """
        query = (
            select(StageRun)
            .where(StageRun.tenant_id == who.tenant_id, StageRun.state == "failed")
            .order_by(StageRun.finished_at, StageRun.id)
            .limit(limit)
        )
        with self.db.session(write=False) as s:
            return [_view(run) for run in s.scalars(query)]

    def redrive(self, who: Principal, ids: Sequence[str] | None = None) -> list[str]:
        """Reset the tenant's dead stages (all, or those ``ids``) and put them back to work."""
        query = select(StageRun.id).where(
            StageRun.tenant_id == who.tenant_id, StageRun.state == "failed"
        )
        if ids is not None:
            query = query.where(StageRun.id.in_(list(ids)))
        redriven: list[str] = []
        steps: set[str] = set()
        with self.db.session() as s:
            for run_id in s.scalars(query.order_by(StageRun.finished_at, StageRun.id)
                                    .limit(_SCAN_LIMIT)).all():
                run = jobs.reset_for_redrive(s, run_id)
                if run is None:
                    continue
                steps |= {r.step for r in jobs.job_runs(s, run.job_id) if r.state == "queued"}
                record(s, tenant_id=who.tenant_id, actor=who.actor, action="deadletter.redrive",
                       subject_type="stage_run", subject_id=run.id,
                       after={"dead_letter": run.id, "stage": run.processor,
                              "asset_id": run.asset_id})
                redriven.append(run.id)
        self.ring(steps)
        return redriven


def _view(run: StageRun) -> DeadLetterView:
    return DeadLetterView(
        id=run.id, queue=run.queue, actor=RUN_STEP, args=[run.step],
        reason=short_reason(run.error), failed_at=run.finished_at or run.started_at or utcnow(),
        stage=run.processor, asset_id=run.asset_id,
    )
