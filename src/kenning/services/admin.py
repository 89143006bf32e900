"""Operations for a tenant: its queue depths, its dead letters and their redrive (audited).

Everything here is scoped to the caller's tenant and counted from the metadata store,
never from broker-wide totals: one tenant must not learn how much work, or how many
failures, another tenant has. Operators see the broker's global depths on ``/metrics``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import case, func, select

from kenning.pipeline import jobs
from kenning.principal import Principal
from kenning.queue.dispatch import RUN_STAGE, WEBHOOK_QUEUE
from kenning.queue.protocol import DeadLetter, QueueAdmin
from kenning.stores.metadata import Database
from kenning.stores.metadata.audit import record
from kenning.stores.metadata.tables import Asset, StageRun, WebhookDelivery

__all__ = ["AdminService", "DeadLetterView", "QueueStats", "short_reason"]

REASON_CHARS = 300
"""Longest failure reason a tenant is shown (the full traceback stays in the logs)."""
_COLUMNS = ("ready", "delayed", "in_flight", "dead")
_SCAN_LIMIT = 10_000
"""Most dead letters read from one queue per listing (the broker cannot look them up by
stage; see :meth:`AdminService.dead_letters`)."""
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
    def __init__(self, db: Database, queues: QueueAdmin) -> None:
        self.db = db
        self.queues = queues

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
            .join(Asset, Asset.id == StageRun.asset_id)
            .where(Asset.tenant_id == who.tenant_id,
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

        The tenant's failed stages come from one query on the metadata store; a tenant
        with none never touches the broker. Otherwise only the queues those stages run on
        are read, because the :class:`QueueAdmin` protocol cannot look a dead letter up
        by stage. ``reason`` is the stage's recorded error (``Type: message``), never the
        traceback the broker keeps.
        """
        failed = self._failed_stages(who.tenant_id)
        if not failed:
            return []
        out: list[DeadLetterView] = []
        for queue in sorted({run.queue for run in failed.values()}):
            for dl in self.queues.list_dead_letters(queue_name=queue, limit=_SCAN_LIMIT):
                run = failed.get(_stage_id(dl) or "")
                if run is not None:
                    out.append(_view(dl, run))
        out.sort(key=lambda v: (v.failed_at, v.id.zfill(20)))
        return out[:limit]

    def _failed_stages(self, tenant_id: str) -> dict[str, StageRun]:
        query = (
            select(StageRun)
            .join(Asset, Asset.id == StageRun.asset_id)
            .where(Asset.tenant_id == tenant_id, StageRun.state == "failed")
            .order_by(StageRun.finished_at.desc())
            .limit(_SCAN_LIMIT)
        )
        with self.db.session(write=False) as s:
            return {run.id: run for run in s.scalars(query)}

    def redrive(self, who: Principal, ids: Sequence[str] | None = None) -> list[str]:
        """Reset the stages behind the tenant's dead letters and put them back to work."""
        mine = {d.id: d for d in self.dead_letters(who, limit=_SCAN_LIMIT)}
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


def _stage_id(dl: DeadLetter) -> str | None:
    return str(dl.args[0]) if dl.actor_name == RUN_STAGE and dl.args else None


def _view(dl: DeadLetter, run: StageRun) -> DeadLetterView:
    return DeadLetterView(
        id=dl.id, queue=dl.queue_name, actor=dl.actor_name, args=list(dl.args),
        reason=short_reason(run.error) or short_reason(dl.reason), failed_at=dl.failed_at,
        stage=run.processor, asset_id=run.asset_id,
    )
