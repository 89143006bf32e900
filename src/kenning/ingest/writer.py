"""The write of a batch: assets, jobs, stage runs, audit, blob holds and load in ONE
transaction, with a fallback to one transaction per item when it loses a race.

The bytes are already stored (``put_many``) when this runs; the write lock is held only
for rows, never for I/O on content or a decode.
"""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from kenning.errors import KenningError
from kenning.ingest.items import IngestResult, ItemOutcome, Staged, attempt
from kenning.pipeline import jobs
from kenning.pipeline.registry import ProcessorRegistry
from kenning.principal import Principal
from kenning.stores.blobs import lifetime
from kenning.stores.bundle import Stores
from kenning.stores.metadata.audit import record
from kenning.stores.metadata.tables import Asset, Job, StageRun, new_id

log = logging.getLogger(__name__)

Written = tuple[dict[str, ItemOutcome], list[StageRun]]
"""Outcomes by sha256, and the stage runs ready to enqueue once committed."""


def find_assets(s: Session, tenant_id: str, shas: set[str]) -> dict[str, IngestResult]:
    """The tenant's assets with these bytes, read under the write lock, by sha256.

    Inside a write transaction (and ``FOR UPDATE`` on PostgreSQL) the answer waits for a
    delete in progress, so a duplicate never points at an asset being deleted.
    """
    assets = list(s.scalars(
        select(Asset).where(Asset.tenant_id == tenant_id, Asset.sha256.in_(sorted(shas)))
        .with_for_update()
    ))
    if not assets:
        return {}
    latest: dict[str, str] = {}
    for asset_id, job_id in s.execute(
        select(Job.asset_id, Job.id).where(Job.asset_id.in_([a.id for a in assets]))
        .order_by(Job.created_at)
    ):
        latest[asset_id] = job_id  # the newest job comes last
    return {a.sha256: IngestResult(a.id, latest.get(a.id), a.status, duplicate_of=a.id)
            for a in assets}


class BatchWriter:
    """Commits accepted items (validated, bytes stored) as assets with their jobs."""

    def __init__(self, stores: Stores, registry: ProcessorRegistry) -> None:
        self.stores = stores
        self.registry = registry

    def commit(self, who: Principal, accepted: list[Staged]) -> Written:
        """Write ``accepted`` (distinct sha256s) in one transaction; item by item if it
        loses a race, so the items nobody raced still go in."""
        try:
            with self.stores.db.session() as s:
                return self._write(s, who, accepted)
        except IntegrityError:
            if len(accepted) == 1:
                # A concurrent request with the same bytes won the race: answer like it.
                sha = accepted[0].sha
                with self.stores.db.session() as s:
                    winner = find_assets(s, who.tenant_id, {sha}).get(sha)
                if winner is None:
                    raise
                return {sha: winner}, []
        log.info("a batch lost a race; writing its items one by one",
                 extra={"items": len(accepted)})
        results: dict[str, ItemOutcome] = {}
        ready: list[StageRun] = []
        for staged in accepted:
            got = attempt(self.commit, who, [staged])
            if isinstance(got, KenningError):
                results[staged.sha] = got
            else:
                results.update(got[0])
                ready.extend(got[1])
        return results, ready

    def _write(self, s: Session, who: Principal, accepted: list[Staged]) -> Written:
        tenant = who.tenant_id
        results: dict[str, ItemOutcome] = dict(
            find_assets(s, tenant, {a.sha for a in accepted}))
        ready: list[StageRun] = []
        created = 0
        # Bytes committed meanwhile are duplicates after all.
        new = [staged for staged in accepted if staged.sha not in results]
        # hold() pins the bytes under the blob's row lock, so a concurrent delete of the
        # same bytes in any tenant cannot collect them from under these assets.
        lifetime.hold_many(s, self.stores.blobs, [(st.sha, st.item.data) for st in new])
        for staged in new:
            item, checked = staged.item, staged.checked
            assert checked is not None, "only validated items are written"
            meta = dict(staged.meta)
            if checked.width is not None:
                meta.update(width=checked.width, height=checked.height)
            if checked.duration_s is not None:
                meta.update(duration_s=checked.duration_s)
            asset = Asset(
                id=new_id(), tenant_id=tenant, kind=checked.kind.value, sha256=staged.sha,
                mime=checked.mime, bytes=len(item.data), source=item.source,
                source_url=item.source_url, filename=item.req.filename,
                external_id=item.req.external_id, title=item.req.title, meta=meta,
                status="queued", callback_url=item.req.callback_url,
            )
            s.add(asset)
            plan = self.registry.plan(checked.kind)
            job, first = jobs.create_job(s, asset, plan)
            created += len(plan)
            record(s, tenant_id=tenant, actor=who.actor, action="asset.create",
                   subject_type="asset", subject_id=asset.id,
                   after={"sha256": staged.sha, "kind": asset.kind, "bytes": asset.bytes,
                          "source": item.source, "job_id": job.id})
            results[staged.sha] = IngestResult(asset.id, job.id, asset.status)
            ready.extend(first)
        s.flush()  # one flush writes the batch: assets, jobs, runs, audit events
        # Backpressure reads this counter; the pipeline takes finished runs off it.
        jobs.adjust_load(s, {tenant: created})
        return results, ready
