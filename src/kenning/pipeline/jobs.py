"""Job and stage-run state transitions, all inside the caller's transaction.

States of a stage run: ``pending`` (waits for upstream) -> ``queued`` (a message is or
will be on the broker) -> ``running`` (leased) -> ``succeeded`` | ``failed`` |
``skipped`` (an upstream stage failed). A job is done when every stage is terminal.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from kenning.pipeline.dag import PlannedStage
from kenning.stores.metadata.database import upsert_add
from kenning.stores.metadata.tables import (
    Asset,
    Job,
    StageRun,
    Tenant,
    TenantLoad,
    WebhookDelivery,
    new_id,
    utcnow,
)

TERMINAL = frozenset({"succeeded", "failed", "skipped"})


def adjust_load(s: Session, deltas: Mapping[str, int]) -> None:
    """Add ``deltas`` (tenant -> change) to the kept count of unfinished stage runs.

    Whoever moves a run into or out of ``pending``/``queued``/``running`` calls this in
    the same transaction, so backpressure reads one row instead of counting runs.
    """
    upsert_add(s, TenantLoad, "tenant_id", "unfinished_stages", [
        {"tenant_id": tenant_id, "unfinished_stages": delta}
        for tenant_id, delta in sorted(deltas.items()) if delta
    ])


def lock_job(s: Session, job_id: str) -> Job | None:
    """Serialise completions of one job (row lock on PostgreSQL; SQLite is serial anyway)."""
    return s.scalar(select(Job).where(Job.id == job_id).with_for_update())


def create_job(
    s: Session, asset: Asset, plan: Iterable[PlannedStage], *, kind: str = "ingest"
) -> tuple[Job, list[StageRun]]:
    """A job with one stage run per planned stage; returns the runs ready to enqueue.

    Added to the session, not flushed: a batch of assets is written by one flush
    (``asset.id`` must be set; ids are given here, not by the database)."""
    assert asset.id, "the asset's id is set before its job is created"
    job = Job(id=new_id(), tenant_id=asset.tenant_id, asset_id=asset.id, kind=kind,
              state="queued")
    s.add(job)
    ready = []
    now = utcnow()
    plan = list(plan)
    step_of = {stage.name: stage.step for stage in plan}
    queued: set[str] = set()
    for stage in plan:  # topological: upstream first
        # Stages whose upstream is all in their own step start queued with it.
        starts = all(step_of.get(d) == stage.step and d in queued for d in stage.depends_on)
        run = StageRun(
            job_id=job.id, asset_id=asset.id, tenant_id=asset.tenant_id, processor=stage.name,
            version=stage.version, queue=stage.queue, step=stage.step,
            depends_on={"stages": list(stage.depends_on)},
            state="queued" if starts else "pending",
            enqueued_at=now if starts else None,
        )
        s.add(run)
        if starts:
            queued.add(stage.name)
            ready.append(run)
    return job, ready


def skip_stages(s: Session, job_id: str, names: Iterable[str]) -> int:
    """Mark these stages of a job skipped (an upstream one failed); returns how many."""
    names = list(names)
    if not names:
        return 0
    result = s.execute(
        update(StageRun)
        .where(StageRun.job_id == job_id, StageRun.processor.in_(names),
               StageRun.state.in_(("pending", "queued")))
        .values(state="skipped", finished_at=utcnow(), error="an upstream stage failed")
        .execution_options(synchronize_session="evaluate")
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def job_runs(s: Session, job_id: str) -> list[StageRun]:
    """Every stage run of a job, as this transaction sees them."""
    return list(s.scalars(select(StageRun).where(StageRun.job_id == job_id)))


class RunState(Protocol):
    """What the job logic reads and sets of a run: a ``StageRun`` or a
    :class:`~kenning.pipeline.runrows.RunRow`."""

    processor: str
    step: str
    state: str
    depends_on: dict[str, Any]
    enqueued_at: datetime | None
    not_before: datetime | None


R = TypeVar("R", bound=RunState)


def release_ready(s: Session, job_id: str, runs: Sequence[R] | None = None) -> list[R]:
    """Pending stages whose upstream is done become queued; returns them.

    Upstream is done when it succeeded, or when it is in the same step and queued too
    (the step runs them together, in order). ``runs``: the job's runs loaded in this
    transaction after its last state change (:func:`job_runs`), to save a query; loaded
    here when not given.
    """
    if runs is None:
        runs = job_runs(s, job_id)  # type: ignore[assignment]
        assert runs is not None
    by_name = {r.processor: r for r in runs}
    ready: list[R] = []
    now = utcnow()
    changed = True
    while changed:
        changed = False
        for run in runs:
            if run.state != "pending":
                continue
            upstream = [by_name[d] for d in run.depends_on.get("stages", []) if d in by_name]
            if all(u.state == "succeeded" or (u.step == run.step and u.state == "queued")
                   for u in upstream):
                run.state, run.enqueued_at, run.not_before = "queued", now, None
                ready.append(run)
                changed = True
    return ready


def finalize_if_done(
    s: Session, job_id: str, runs: Sequence[RunState] | None = None
) -> list[str]:
    """Close the job and set the asset status when every stage is terminal.

    ``runs`` as for :func:`release_ready` (pass the same list after it). Returns ids
    of webhook deliveries created (the caller enqueues them after commit).
    """
    job = s.get(Job, job_id)
    if job is None:
        return []
    runs = job_runs(s, job_id) if runs is None else runs
    if not all(run.state in TERMINAL for run in runs):
        if job.state == "queued":
            asset = s.get(Asset, job.asset_id)
            if asset is None:
                return []
            job.state = "running"
            asset.status = "processing"
        return []  # the asset is only read when its status changes
    if job.state in TERMINAL | {"partial"}:
        return []  # already finalised by an earlier completion
    asset = s.get(Asset, job.asset_id)
    if asset is None:
        return []
    ok = sum(run.state == "succeeded" for run in runs)
    job.state = "succeeded" if ok == len(runs) else ("partial" if ok else "failed")
    job.finished_at = utcnow()
    asset.status = {"succeeded": "ready", "partial": "partial", "failed": "failed"}[job.state]
    if not asset.callback_url:
        return []
    tenant = s.get(Tenant, asset.tenant_id)
    assert tenant is not None
    delivery = WebhookDelivery(
        tenant_id=asset.tenant_id, asset_id=asset.id, url=asset.callback_url,
        event=f"asset.{asset.status}",
        payload={
            "event": f"asset.{asset.status}", "asset_id": asset.id, "job_id": job.id,
            "status": asset.status, "kind": asset.kind, "external_id": asset.external_id,
            "stages": {run.processor: run.state for run in runs},
        },
    )
    s.add(delivery)
    s.flush()
    return [delivery.id]


def reset_for_redrive(s: Session, stage_run_id: str) -> StageRun | None:
    """Give a failed stage a fresh start and reopen what its failure closed."""
    run = s.get(StageRun, stage_run_id)
    if run is None or run.state != "failed":
        return None
    lock_job(s, run.job_id)
    run.state = "queued"
    run.attempts = 0
    run.enqueued_at = utcnow()
    run.not_before = None
    run.finished_at = None
    reopened_count = 1
    # Reopen a skipped stage only once none of its upstream is failed or skipped: one
    # that still waits on another failure stays skipped, or the job would never finish.
    siblings = list(s.scalars(select(StageRun).where(StageRun.job_id == run.job_id)))
    runs = {r.processor: r for r in siblings}
    dead = ("failed", "skipped")
    reopened = True
    while reopened:
        reopened = False
        for other in runs.values():
            upstream = [runs[d] for d in other.depends_on.get("stages", []) if d in runs]
            if other.state == "skipped" and not any(u.state in dead for u in upstream):
                other.state, other.finished_at, other.error = "pending", None, None
                reopened = True
                reopened_count += 1
    release_ready(s, run.job_id, siblings)
    adjust_load(s, {run.tenant_id: reopened_count})
    job = s.get(Job, run.job_id)
    asset = s.get(Asset, run.asset_id)
    if job is not None and asset is not None:
        job.state, job.finished_at, asset.status = "running", None, "processing"
    s.flush()
    return run
