"""Claiming a batch of one step's ready runs across assets, fairly between tenants.

A claim is one write transaction: it answers the step's doorbell (so the next ring
sends a new message), picks assets whose runs of the step are queued and due, and moves
those runs to ``running`` with a lease, one attempt more and this worker's id. On
PostgreSQL the candidate rows are locked ``FOR UPDATE SKIP LOCKED`` and the update
touches only rows the claim holds, so concurrent workers take disjoint batches without
ever waiting on each other (see ``_whole_jobs``); SQLite serialises writers, so the same
select-then-update is atomic there.

Candidates are taken oldest first, then dealt round-robin by tenant, so one tenant's
backlog delays another tenant by at most one asset per turn. When the oldest runs fill
the candidate window (a backlog), tenants with no run in it are looked up by a loose
index scan starting at a random tenant id and their oldest runs join the deal, so no
backlog, however deep, hides another tenant's work. The batch is bounded by items and
by bytes of source media; it always takes at least one asset.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Row, or_, select, text, tuple_, union_all, update
from sqlalchemy.orm import Session

from kenning.hosts import worker_id
from kenning.stores.metadata.tables import Asset, StageRun, StepBell

_CANDIDATES_PER_ITEM = 32
"""Candidate runs read, oldest first, per asset of a batch (a step has a few runs per
asset); past this window, tenants behind it are read one by one (``_behind_window``)."""

_WAITING_TENANTS = text(
    "WITH RECURSIVE waiting(tenant_id, n) AS ("
    " SELECT MIN(tenant_id), 1 FROM stage_run"
    "  WHERE step = :step AND state = 'queued' AND tenant_id >= :start"
    " UNION ALL"
    " SELECT (SELECT MIN(r.tenant_id) FROM stage_run r WHERE r.step = :step"
    "   AND r.state = 'queued' AND r.tenant_id > waiting.tenant_id), n + 1"
    "  FROM waiting WHERE waiting.tenant_id IS NOT NULL AND n < :cap)"
    " SELECT tenant_id FROM waiting WHERE tenant_id IS NOT NULL"
)
"""Distinct tenants with queued runs of a step from ``start`` on, at most ``cap``: one
index seek each on ``ix_stage_step_tenant`` (PostgreSQL and SQLite have no skip scan)."""


@dataclass(frozen=True)
class ClaimedRun:
    id: str
    job_id: str
    asset_id: str
    tenant_id: str
    processor: str
    attempt: int
    """The attempt number this claim holds; completion is fenced on it."""


@dataclass(frozen=True)
class Claim:
    runs: list[ClaimedRun]
    contended: bool = False
    """A chosen job was left out because another claim held some of its runs (both may
    leave it): the claimer rings the step's doorbell again so it is not left waiting."""


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
) -> Claim:
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
    postgres = s.get_bind().dialect.name == "postgresql"
    limit = max_items * _CANDIDATES_PER_ITEM
    window = (
        select(StageRun.id, StageRun.job_id, StageRun.tenant_id, Asset.bytes)
        .join(Asset, Asset.id == StageRun.asset_id)
        .where(*_ready(step, now))
        .order_by(StageRun.enqueued_at, StageRun.job_id)
        .limit(limit)
    )
    if postgres:
        window = window.with_for_update(skip_locked=True, of=StageRun)
    by_tenant: OrderedDict[str, list[tuple[str, int]]] = OrderedDict()
    seen: set[str] = set()
    rows = list(s.execute(window).all())
    held = {row[0] for row in rows}  # locked on PostgreSQL; what joins them below is not
    if len(rows) >= limit:
        rows += _behind_window(s, step, now, {row[2] for row in rows}, max_items)
    for _, job_id, tenant_id, size in rows:
        if job_id not in seen:
            seen.add(job_id)
            by_tenant.setdefault(tenant_id, []).append((job_id, int(size or 0)))
    chosen = _deal(list(by_tenant.values()), max_items, max_bytes)
    if not chosen:
        return Claim([])
    contended = False
    if postgres or len(rows) >= limit:
        ids, contended = _whole_jobs(s, step, now, chosen, held, lock=postgres)
    else:  # SQLite serialises writers and the window held every ready run
        ids = [run_id for run_id, job_id, _, _ in rows if job_id in set(chosen)]
    if not ids:
        return Claim([], contended)
    claimed = s.execute(
        update(StageRun)
        .where(StageRun.id.in_(ids), StageRun.state == "queued")
        .values(state="running", attempts=StageRun.attempts + 1, lease_until=now + lease,
                started_at=now, worker=worker_id())
        .returning(StageRun.id, StageRun.job_id, StageRun.asset_id, StageRun.tenant_id,
                   StageRun.processor, StageRun.attempts)
        .execution_options(synchronize_session=False)
    ).all()
    return Claim([ClaimedRun(*row) for row in claimed], contended)


def _ready(step: str, now: datetime) -> tuple[ColumnElement[bool], ...]:
    return StageRun.step == step, StageRun.state == "queued", due(now)


def _behind_window(s: Session, step: str, now: datetime, seen: set[str],
                   max_items: int) -> list[Row[str, str, str, int]]:
    """The oldest ready runs of up to ``max_items`` tenants with none in the window,
    unlocked (``_whole_jobs`` locks what is chosen)."""
    start = secrets.token_hex(16)
    cap = len(seen) + max_items
    tenants = list(s.scalars(_WAITING_TENANTS, {"step": step, "start": start, "cap": cap}))
    if len(tenants) < cap:  # wrap around to the lowest ids
        tenants += s.scalars(_WAITING_TENANTS, {"step": step, "start": "", "cap": cap})
    others = list(dict.fromkeys(t for t in tenants if t not in seen))[:max_items]
    if not others:
        return []
    per_tenant = [
        select(StageRun.id, StageRun.job_id, StageRun.tenant_id, Asset.bytes)
        .join(Asset, Asset.id == StageRun.asset_id)
        .where(*_ready(step, now), StageRun.tenant_id == tenant)
        .order_by(StageRun.enqueued_at, StageRun.job_id)
        .limit(_CANDIDATES_PER_ITEM)
        .subquery()
        for tenant in others
    ]
    query = select(*per_tenant[0].c) if len(per_tenant) == 1 else union_all(
        *(select(*q.c) for q in per_tenant))
    return list(s.execute(query).all())


def _deal(queues: list[list[tuple[str, int]]], max_items: int, max_bytes: int) -> list[str]:
    """Jobs dealt round-robin from each tenant's oldest-first queue, within the budget."""
    chosen: list[str] = []
    spent = 0
    while queues and len(chosen) < max_items:
        for queue in list(queues):
            job_id, size = queue.pop(0)
            if chosen and spent + size > max_bytes:
                return chosen
            chosen.append(job_id)
            spent += size
            if not queue:
                queues.remove(queue)
            if len(chosen) >= max_items:
                break
    return chosen


def _whole_jobs(s: Session, step: str, now: datetime, chosen: list[str], held: set[str],
                *, lock: bool) -> tuple[list[str], bool]:
    """The ready runs of the chosen jobs, each job whole or not at all.

    The window may have cut a job's runs short, and on PostgreSQL skipped some that
    another claim holds. Runs not yet held are locked ``SKIP LOCKED`` too; a job with a
    run still out of reach is left for the next claim. So a claim never waits on a row
    lock (two claims locking the same jobs in different orders would deadlock) and the
    runs of a step are never split between two workers.
    """
    ready = s.execute(
        select(StageRun.id, StageRun.job_id).where(StageRun.job_id.in_(chosen),
                                                   *_ready(step, now))
    ).all()
    missing = [run_id for run_id, _ in ready if run_id not in held]
    if missing and lock:
        got = set(s.scalars(
            select(StageRun.id).where(StageRun.id.in_(missing), *_ready(step, now))
            .with_for_update(skip_locked=True)
        ))
        held = held | got
    elif missing:
        held = held | set(missing)
    out_of_reach = {job_id for run_id, job_id in ready if run_id not in held}
    return [run_id for run_id, job_id in ready if job_id not in out_of_reach], bool(out_of_reach)


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
