"""Stage runs as plain rows for a batch settle: read with Core, written back with Core.

A settle changes the state of every run of a batch of jobs (a few hundred rows). Loading
them as ORM objects and flushing them back was a third of the settle's CPU (object
construction, attribute events, the unit of work), CPU that a worker process takes from
its model thread (they share one GIL). :class:`RunRow` has the attributes of
:class:`~kenning.stores.metadata.tables.StageRun`, so the job logic
(:func:`kenning.pipeline.jobs.release_ready`, ``finalize_if_done``) works on either, and
remembers which columns were assigned; :func:`write_runs` sends one ``executemany``
``UPDATE`` per set of assigned columns.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from kenning.stores.metadata.tables import StageRun

_TABLE = StageRun.__table__


class RunRow:
    """One ``stage_run`` row; assignments are recorded for :func:`write_runs`."""

    id: str
    job_id: str
    asset_id: str
    tenant_id: str
    processor: str
    version: str
    queue: str
    step: str
    not_before: datetime | None
    depends_on: dict[str, Any]
    state: str
    attempts: int
    lease_until: datetime | None
    worker: str | None
    enqueued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    duration_ms: float | None
    error: str | None
    model_version: str | None
    cached: bool

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)
        self.__dict__["_changed"] = set()

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in self.__dict__ or self.__dict__[name] != value:
            self.__dict__["_changed"].add(name)
        self.__dict__[name] = value

    @property
    def assigned(self) -> frozenset[str]:
        """Columns assigned a new value since the row was read."""
        return frozenset(self.__dict__["_changed"])


def load_runs(s: Session, job_ids: Iterable[str]) -> list[RunRow]:
    """Every run of these jobs, as this transaction sees them."""
    chosen = sorted(set(job_ids))
    if not chosen:
        return []
    rows = s.connection().execute(select(_TABLE).where(_TABLE.c.job_id.in_(chosen)))
    return [RunRow(dict(row._mapping)) for row in rows]


def write_runs(s: Session, runs: Sequence[RunRow]) -> int:
    """Write back the assigned columns of these runs; returns the rows written."""
    groups: dict[frozenset[str], list[RunRow]] = defaultdict(list)
    for run in runs:
        if run.assigned:
            groups[run.assigned].append(run)
    for columns, group in groups.items():
        names = sorted(columns)
        statement = (
            update(StageRun)
            .where(StageRun.id == bindparam("run_id"))
            .values({name: bindparam(name, type_=_TABLE.c[name].type) for name in names})
        )
        s.connection().execute(statement, [
            {"run_id": run.id, **{name: getattr(run, name) for name in names}}
            for run in group
        ])
    return sum(len(group) for group in groups.values())


__all__ = ["RunRow", "load_runs", "write_runs"]
