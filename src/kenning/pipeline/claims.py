"""Claiming a batch of one step's ready runs across assets, fairly between tenants.

A claim is one write transaction: it answers the step's doorbell (so the next ring
sends a new message), picks assets whose runs of the step are queued and due, and moves
those runs to ``running`` with a lease, one attempt more and this worker's id. On
PostgreSQL the candidate rows are locked ``FOR UPDATE SKIP LOCKED``, so concurrent
workers take disjoint batches without waiting on each other; SQLite serialises writers,
so the same select-then-update is atomic there.

Candidates are taken oldest first, then dealt round-robin by tenant, so one tenant's
backlog delays another tenant by at most one asset per turn (within the candidate
window, see ``_CANDIDATES_PER_ITEM``). The batch is bounded by
items and by bytes of source media; it always takes at least one asset.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, or_, select, tuple_, update
from sqlalchemy.orm import Session

from kenning.hosts import worker_id
from kenning.stores.metadata.tables import Asset, StageRun, StepBell

_CANDIDATES_PER_ITEM = 32
"""Candidate runs read per asset of a batch: round-robin between tenants is exact among
the oldest ``max_items * 32`` queued runs of the step (a step has a few runs per asset);
behind a deeper backlog of one tenant, a newcomer waits until it is among them."""


@dataclass(frozen=True)
class ClaimedRun:
    id: str
    job_id: str
    asset_id: str
    tenant_id: str
    processor: str
    attempt: int
    """The attempt number this claim holds; completion is fenced on it."""


def due(now: datetime) -> ColumnElement[bool]:
    """Queued runs whose backoff, if any, has passed."""
    return or_(StageRun.not_before.is_(None), StageRun.not_before <= now)


def claim_batch(
    s: Session,
    step: str,
    *,
    now: datetime,
    lease: timedelta,
    max_items: int,
    max_bytes: int,
    answers_bell: bool = True,
) -> list[ClaimedRun]:
    """Claim queued runs of ``step`` for up to ``max_items`` assets (see module doc).

    ``answers_bell=False``: a claim that no doorbell message asked for (a worker claiming
    its next batch ahead) leaves the step's doorbell as it is, so a message still waiting
    for it is not duplicated by the next ring.
    """
    if answers_bell:
        s.execute(
            update(StepBell).where(StepBell.step == step).values(rung=False)
            .execution_options(synchronize_session=False)
        )
    candidates = (
        select(StageRun.job_id, StageRun.tenant_id, Asset.bytes)
        .join(Asset, Asset.id == StageRun.asset_id)
        .where(StageRun.step == step, StageRun.state == "queued", due(now))
        .order_by(StageRun.enqueued_at, StageRun.job_id)
        .limit(max_items * _CANDIDATES_PER_ITEM)
    )
    if s.get_bind().dialect.name == "postgresql":
        candidates = candidates.with_for_update(skip_locked=True, of=StageRun)
    by_tenant: OrderedDict[str, list[tuple[str, int]]] = OrderedDict()
    seen: set[str] = set()
    for job_id, tenant_id, size in s.execute(candidates):
        if job_id not in seen:
            seen.add(job_id)
            by_tenant.setdefault(tenant_id, []).append((job_id, int(size or 0)))
    chosen: list[str] = []
    spent = 0
    queues = list(by_tenant.values())
    while queues and len(chosen) < max_items:
        for queue in list(queues):
            job_id, size = queue.pop(0)
            if chosen and spent + size > max_bytes:
                queues = []
                break
            chosen.append(job_id)
            spent += size
            if not queue:
                queues.remove(queue)
            if len(chosen) >= max_items:
                break
    if not chosen:
        return []
    rows = s.execute(
        update(StageRun)
        .where(StageRun.job_id.in_(chosen), StageRun.step == step,
               StageRun.state == "queued", due(now))
        .values(state="running", attempts=StageRun.attempts + 1, lease_until=now + lease,
                started_at=now, worker=worker_id())
        .returning(StageRun.id, StageRun.job_id, StageRun.asset_id, StageRun.tenant_id,
                   StageRun.processor, StageRun.attempts)
        .execution_options(synchronize_session=False)
    ).all()
    return [ClaimedRun(*row) for row in rows]


def give_back(s: Session, claimed: list[ClaimedRun]) -> int:
    """Put claimed runs that were never started back to ``queued`` in their place, their
    attempt not counted; fenced on the attempt each claim holds. Returns how many."""
    if not claimed:
        return 0
    held = [(c.id, c.attempt) for c in claimed]
    result = s.execute(
        update(StageRun)
        .where(tuple_(StageRun.id, StageRun.attempts).in_(held), StageRun.state == "running")
        .values(state="queued", attempts=StageRun.attempts - 1, lease_until=None,
                started_at=None, worker=None)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
