"""Ingest: validate, content-address, store the blob, write asset + job in one transaction.

Validation runs entirely before anything is stored, so refused input leaves no trace.
Duplicates and backpressure are answered before any decode. The blob is written before
the transaction (content-addressed, so a retry or a concurrent duplicate writes the same
file) and held inside it (:mod:`kenning.stores.blobs.lifetime`); the asset row, its
job, its stage runs and the audit event commit together; only then are the first stages
enqueued (the reconciler re-sends them if the process dies in between).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from kenning.errors import Backpressure, BadInput, KenningError
from kenning.ingest.metadata import validate_metadata
from kenning.ingest.urlfetch import check_url_allowed, fetch_url
from kenning.ingest.validate import validate_upload
from kenning.media.kinds import MediaKind
from kenning.media.sniff import sniff
from kenning.observability.metrics import INGESTED, REJECTED
from kenning.pipeline import jobs
from kenning.pipeline.registry import ProcessorRegistry
from kenning.principal import Principal
from kenning.queue.dispatch import Dispatcher
from kenning.settings import Settings
from kenning.stores.blobs import lifetime
from kenning.stores.bundle import Stores
from kenning.stores.metadata.audit import record
from kenning.stores.metadata.tables import Asset, Job, StageRun


@dataclass(frozen=True)
class IngestRequest:
    """What a client may say about an item besides its bytes."""

    filename: str | None = None
    title: str | None = None
    external_id: str | None = None
    metadata: dict[str, Any] | None = None
    callback_url: str | None = None


@dataclass(frozen=True)
class IngestResult:
    asset_id: str
    job_id: str | None
    status: str
    duplicate_of: str | None = None


class IngestService:
    def __init__(
        self,
        stores: Stores,
        registry: ProcessorRegistry,
        dispatcher: Dispatcher,
        settings: Settings,
    ) -> None:
        self.stores = stores
        self.registry = registry
        self.dispatcher = dispatcher
        self.settings = settings

    def ingest_bytes(
        self,
        who: Principal,
        data: bytes,
        req: IngestRequest,
        *,
        source: str = "upload",
        source_url: str | None = None,
        force_text: bool = False,
    ) -> IngestResult:
        """Accept one item; the same bytes twice in a tenant return the first asset."""
        with _counting_rejections():
            return self._ingest(who, data, req, source, source_url, force_text)

    def ingest_text(self, who: Principal, text: str, req: IngestRequest) -> IngestResult:
        """Accept text given inline; the same limits as an uploaded text file apply."""
        return self.ingest_bytes(who, text.encode("utf-8"), req, source="text", force_text=True)

    def ingest_url(self, who: Principal, url: str, req: IngestRequest) -> IngestResult:
        with _counting_rejections():
            fetched = fetch_url(url, self.settings)
        name = req.filename or fetched.final_url.rstrip("/").rsplit("/", 1)[-1][:500] or None
        req = IngestRequest(name, req.title, req.external_id, req.metadata, req.callback_url)
        return self.ingest_bytes(who, fetched.data, req, source="url", source_url=url)

    # --- internals ---------------------------------------------------------------------
    def _ingest(
        self, who: Principal, data: bytes, req: IngestRequest, source: str,
        source_url: str | None, force_text: bool,
    ) -> IngestResult:
        metadata = validate_metadata(req.metadata, self.settings)
        if req.callback_url:
            check_url_allowed(req.callback_url, self.settings)
        # Cheap answers first: a duplicate needs no decode, and a refused tenant should
        # not make the server decode a large image for nothing.
        sha = hashlib.sha256(data).hexdigest()
        existing = self._find_duplicate(who.tenant_id, sha)
        if existing is not None:
            INGESTED.labels(sniff(data).kind.value, "duplicate").inc()
            return existing
        self._check_backpressure(who.tenant_id)
        checked = validate_upload(data, self.settings)
        if force_text and checked.kind != MediaKind.TEXT:
            raise BadInput("the text field must hold text", code="invalid_text")
        # Bytes go in before the transaction (the write lock stays short); hold() pins
        # them under the blob's row lock inside it, so a concurrent delete of the same
        # bytes in any tenant cannot collect them from under this asset.
        self.stores.blobs.put(data)
        meta = dict(metadata)
        if checked.width is not None:
            meta.update(width=checked.width, height=checked.height)
        try:
            with self.stores.db.session() as s:
                again = self._find(s, who.tenant_id, sha)
                if again is not None:
                    INGESTED.labels(checked.kind.value, "duplicate").inc()
                    return again
                lifetime.hold(s, self.stores.blobs, sha, data)
                asset = Asset(
                    tenant_id=who.tenant_id, kind=checked.kind.value, sha256=sha,
                    mime=checked.mime, bytes=len(data), source=source, source_url=source_url,
                    filename=req.filename, external_id=req.external_id, title=req.title,
                    meta=meta, status="queued", callback_url=req.callback_url,
                )
                s.add(asset)
                s.flush()
                job, ready = jobs.create_job(s, asset, self.registry.plan(checked.kind))
                record(s, tenant_id=who.tenant_id, actor=who.actor, action="asset.create",
                       subject_type="asset", subject_id=asset.id,
                       after={"sha256": sha, "kind": asset.kind, "bytes": asset.bytes,
                              "source": source, "job_id": job.id})
        except IntegrityError:
            # A concurrent request with the same bytes won the race: answer like it.
            with self.stores.db.session() as s:
                winner = self._find(s, who.tenant_id, sha)
            if winner is None:
                raise
            INGESTED.labels(checked.kind.value, "duplicate").inc()
            return winner
        INGESTED.labels(checked.kind.value, "new").inc()
        self.dispatcher.stages(ready)
        return IngestResult(asset.id, job.id, asset.status)

    def _find_duplicate(self, tenant_id: str, sha: str) -> IngestResult | None:
        """The fast path: a plain read; only a hit is confirmed under the write lock (new
        bytes, the common case, cost no extra write transaction)."""
        with self.stores.db.session(write=False) as s:
            seen = s.scalar(select(Asset.id).where(Asset.tenant_id == tenant_id,
                                                   Asset.sha256 == sha))
        if seen is None:
            return None
        with self.stores.db.session() as s:
            return self._find(s, tenant_id, sha)

    @staticmethod
    def _find(s: Session, tenant_id: str, sha: str) -> IngestResult | None:
        """The tenant's asset with these bytes, read under the write lock.

        Inside a write transaction (and ``FOR UPDATE`` on PostgreSQL) the answer waits for
        a delete in progress, so a duplicate never points at an asset being deleted.
        """
        asset = s.scalar(
            select(Asset).where(Asset.tenant_id == tenant_id, Asset.sha256 == sha)
            .with_for_update()
        )
        if asset is None:
            return None
        job_id = s.scalar(
            select(Job.id).where(Job.asset_id == asset.id).order_by(Job.created_at.desc())
        )
        return IngestResult(asset.id, job_id, asset.status, duplicate_of=asset.id)

    def queued_by_tenant(self, states: tuple[str, ...] = ("queued", "running")) -> (
        dict[str, int]
    ):
        """Stages waiting for or holding a worker, per tenant (the backpressure measure)."""
        with self.stores.db.session(write=False) as s:
            rows = s.execute(
                select(Asset.tenant_id, func.count())
                .select_from(StageRun).join(Asset, Asset.id == StageRun.asset_id)
                .where(StageRun.state.in_(states))
                .group_by(Asset.tenant_id)
            )
            return {tenant: int(n) for tenant, n in rows}

    def pending_stages(self, states: tuple[str, ...] = ("queued", "running")) -> int:
        """Stages waiting for or holding a worker, all tenants together."""
        with self.stores.db.session(write=False) as s:
            return int(
                s.scalar(
                    select(func.count()).select_from(StageRun).where(StageRun.state.in_(states))
                )
                or 0
            )

    def unfinished_stages(self) -> int:
        return self.pending_stages(("pending", "queued", "running"))

    def _check_backpressure(self, tenant_id: str) -> None:
        """Admit unless the tenant is over its own bound or over its fair share.

        Each tenant may hold up to ``max_queued_stages_per_tenant`` queued or running
        stages. Once all tenants together hold ``max_queued_stages``, a tenant is admitted
        only while it holds less than a fair share: the bound divided by the number of
        tenants with queued work (the asker included). One tenant's flood therefore
        answers 429 to that tenant, never to the others.
        """
        queued = self.queued_by_tenant()
        mine, total = queued.get(tenant_id, 0), sum(queued.values())
        own_bound = self.settings.max_queued_stages_per_tenant or self.settings.max_queued_stages
        if mine >= own_bound:
            raise self._refuse(f"your tenant has {mine} stages waiting (bound {own_bound})")
        if total >= self.settings.max_queued_stages:
            share = self.settings.max_queued_stages / len(queued.keys() | {tenant_id})
            if mine >= share:
                raise self._refuse(
                    f"{total} stages are waiting in all (bound "
                    f"{self.settings.max_queued_stages}) and your tenant holds {mine}, "
                    f"its fair share is {share:.0f}"
                )

    def _refuse(self, why: str) -> Backpressure:
        return Backpressure(f"{why}; retry later", retry_after=self.settings.retry_after_s)


@contextmanager
def _counting_rejections() -> Iterator[None]:
    try:
        yield
    except KenningError as exc:
        REJECTED.labels(exc.code).inc()
        raise
