"""Ingest: validate, content-address, store the blob, write asset + job in one transaction.

Validation runs entirely before anything is stored, so refused input leaves no trace.
The blob is written before the transaction (content-addressed, so a retry or a
concurrent duplicate writes the same file); the asset row, its job, its stage runs and
the audit event commit together; only then are the first stages enqueued (the
reconciler re-sends them if the process dies in between).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from kenning.errors import Backpressure, BadInput, KenningError
from kenning.ingest.urlfetch import check_url_allowed, fetch_url
from kenning.ingest.validate import validate_upload
from kenning.observability.metrics import INGESTED, REJECTED
from kenning.pipeline import jobs
from kenning.pipeline.processor import MediaKind
from kenning.pipeline.registry import ProcessorRegistry
from kenning.queue.dispatch import Dispatcher
from kenning.services.audit import record
from kenning.services.tenants import Principal
from kenning.settings import Settings
from kenning.stores.bundle import Stores
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
        name = req.filename or fetched.final_url.rstrip("/").rsplit("/", 1)[-1] or None
        req = IngestRequest(name, req.title, req.external_id, req.metadata, req.callback_url)
        return self.ingest_bytes(who, fetched.data, req, source="url", source_url=url)

    # --- internals ---------------------------------------------------------------------
    def _ingest(
        self, who: Principal, data: bytes, req: IngestRequest, source: str,
        source_url: str | None, force_text: bool,
    ) -> IngestResult:
        if req.callback_url:
            check_url_allowed(req.callback_url, self.settings)
        checked = validate_upload(data, self.settings)
        if force_text and checked.kind != MediaKind.TEXT:
            raise BadInput("the text field must hold text", code="invalid_text")
        sha = hashlib.sha256(data).hexdigest()
        existing = self._find(who.tenant_id, sha)
        if existing is not None:
            INGESTED.labels(checked.kind.value, "duplicate").inc()
            return existing
        self._check_backpressure()
        self.stores.blobs.put(data)
        meta = dict(req.metadata or {})
        if checked.width is not None:
            meta.update(width=checked.width, height=checked.height)
        asset = Asset(
            tenant_id=who.tenant_id, kind=checked.kind.value, sha256=sha, mime=checked.mime,
            bytes=len(data), source=source, source_url=source_url, filename=req.filename,
            external_id=req.external_id, title=req.title, meta=meta, status="queued",
            callback_url=req.callback_url,
        )
        try:
            with self.stores.db.session() as s:
                s.add(asset)
                s.flush()
                job, ready = jobs.create_job(s, asset, self.registry.plan(checked.kind))
                record(s, tenant_id=who.tenant_id, actor=who.actor, action="asset.create",
                       subject_type="asset", subject_id=asset.id,
                       after={"sha256": sha, "kind": asset.kind, "bytes": asset.bytes,
                              "source": source, "job_id": job.id})
        except IntegrityError:
            # A concurrent request with the same bytes won the race: answer like it.
            again = self._find(who.tenant_id, sha)
            if again is None:
                raise
            INGESTED.labels(checked.kind.value, "duplicate").inc()
            return again
        INGESTED.labels(checked.kind.value, "new").inc()
        self.dispatcher.stages(ready)
        return IngestResult(asset.id, job.id, asset.status)

    def _find(self, tenant_id: str, sha: str) -> IngestResult | None:
        with self.stores.db.session(write=False) as s:
            asset = s.scalar(
                select(Asset).where(Asset.tenant_id == tenant_id, Asset.sha256 == sha)
            )
            if asset is None:
                return None
            job_id = s.scalar(
                select(Job.id).where(Job.asset_id == asset.id).order_by(Job.created_at.desc())
            )
            return IngestResult(asset.id, job_id, asset.status, duplicate_of=asset.id)

    def pending_stages(self, states: tuple[str, ...] = ("queued", "running")) -> int:
        """Stages waiting for or holding a worker (the backpressure measure)."""
        with self.stores.db.session(write=False) as s:
            return int(
                s.scalar(
                    select(func.count()).select_from(StageRun).where(StageRun.state.in_(states))
                )
                or 0
            )

    def unfinished_stages(self) -> int:
        return self.pending_stages(("pending", "queued", "running"))

    def _check_backpressure(self) -> None:
        pending = self.pending_stages()
        if pending >= self.settings.max_queued_stages:
            raise Backpressure(
                f"{pending} stages are waiting (bound {self.settings.max_queued_stages}); "
                "retry later",
                retry_after=self.settings.retry_after_s,
            )


@contextmanager
def _counting_rejections() -> Iterator[None]:
    try:
        yield
    except KenningError as exc:
        REJECTED.labels(exc.code).inc()
        raise
