"""Reading and deleting assets, scoped to the caller's tenant.

An asset of another tenant is indistinguishable from one that does not exist: both are
``not_found``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import delete, func, select

from kenning.errors import NotFound
from kenning.pipeline.jobs import adjust_load
from kenning.principal import Principal
from kenning.services.scope import owned_asset
from kenning.stores import index_log
from kenning.stores.blobs import lifetime
from kenning.stores.bundle import Stores
from kenning.stores.index_log import IndexChanges
from kenning.stores.metadata.audit import record
from kenning.stores.metadata.repair import sanitize_metadata
from kenning.stores.metadata.tables import (
    Asset,
    DerivedBlob,
    Embedding,
    Feature,
    FeatureCache,
    Fingerprint,
    Job,
    Segment,
    StageRun,
    WebhookDelivery,
)


class StageView(BaseModel):
    processor: str
    version: str
    state: str
    attempts: int
    error: str | None
    model_version: str | None
    cached: bool
    duration_ms: float | None
    started_at: datetime | None
    finished_at: datetime | None


class JobView(BaseModel):
    id: str
    asset_id: str
    kind: str
    state: str
    created_at: datetime
    finished_at: datetime | None
    stages: list[StageView]


class DeliveryView(BaseModel):
    id: str
    url: str
    event: str
    state: str
    attempts: int
    last_status: int | None
    last_error: str | None
    delivered_at: datetime | None


class AssetView(BaseModel):
    id: str
    kind: str
    status: str
    sha256: str
    mime: str
    bytes: int
    source: str
    source_url: str | None
    filename: str | None
    external_id: str | None
    title: str | None
    language: str | None
    metadata: dict[str, Any]
    created_at: datetime
    features: dict[str, Any]
    """Artifacts by name: language, image metadata, PDQ hash, text (truncated)..."""
    derived: dict[str, str]
    """Derived blobs (thumbnail...) by role -> content key."""
    job: JobView | None
    webhook_deliveries: list[DeliveryView]


class SegmentView(BaseModel):
    id: int
    kind: str
    producer: str
    seq: int
    start_s: float | None
    end_s: float | None
    text: str | None
    data: dict[str, Any]


def _stage_view(r: StageRun) -> StageView:
    return StageView(
        processor=r.processor, version=r.version, state=r.state, attempts=r.attempts,
        error=r.error, model_version=r.model_version, cached=r.cached,
        duration_ms=r.duration_ms, started_at=r.started_at, finished_at=r.finished_at,
    )


def _short(value: Any, limit: int = 2000) -> Any:
    if isinstance(value, dict):
        return {k: _short(v, limit) for k, v in value.items()}
    if isinstance(value, list) and len(value) > 50:
        return [*value[:50], f"... {len(value) - 50} more"]
    if isinstance(value, str) and len(value) > limit:
        return value[:limit] + "..."
    return value


class AssetService:
    def __init__(self, stores: Stores) -> None:
        self.stores = stores

    def get(self, who: Principal, asset_id: str) -> AssetView:
        with self.stores.db.session(write=False) as s:
            a = owned_asset(s, who, asset_id)
            job = s.scalar(
                select(Job).where(Job.asset_id == a.id).order_by(Job.created_at.desc()).limit(1)
            )
            features = {
                f.name: _short(f.output)
                for f in s.scalars(select(Feature).where(Feature.asset_id == a.id))
                if f.name != "chunks"
            }
            derived = {
                d.role: d.blob_key
                for d in s.scalars(select(DerivedBlob).where(DerivedBlob.asset_id == a.id))
            }
            deliveries = [
                DeliveryView(
                    id=d.id, url=d.url, event=d.event, state=d.state, attempts=d.attempts,
                    last_status=d.last_status, last_error=d.last_error,
                    delivered_at=d.delivered_at,
                )
                for d in s.scalars(
                    select(WebhookDelivery).where(WebhookDelivery.asset_id == a.id)
                    .order_by(WebhookDelivery.created_at)
                )
            ]
            return AssetView(
                id=a.id, kind=a.kind, status=a.status, sha256=a.sha256, mime=a.mime,
                bytes=a.bytes, source=a.source, source_url=a.source_url, filename=a.filename,
                external_id=a.external_id, title=a.title, language=a.language,
                metadata=sanitize_metadata(a.meta), created_at=a.created_at,
                features=features,
                derived=derived, job=self._job_view(s, job) if job else None,
                webhook_deliveries=deliveries,
            )

    def _job_view(self, s: Any, job: Job) -> JobView:
        runs = s.scalars(select(StageRun).where(StageRun.job_id == job.id))
        return JobView(
            id=job.id, asset_id=job.asset_id, kind=job.kind, state=job.state,
            created_at=job.created_at, finished_at=job.finished_at,
            stages=sorted((_stage_view(r) for r in runs), key=lambda v: v.processor),
        )

    def job(self, who: Principal, job_id: str) -> JobView:
        with self.stores.db.session(write=False) as s:
            job = s.get(Job, job_id)
            if job is None or job.tenant_id != who.tenant_id:
                raise NotFound(f"no job {job_id}")
            return self._job_view(s, job)

    def segments(self, who: Principal, asset_id: str, kind: str | None = None) -> (
        list[SegmentView]
    ):
        with self.stores.db.session(write=False) as s:
            owned_asset(s, who, asset_id)
            query = select(Segment).where(Segment.asset_id == asset_id)
            if kind:
                query = query.where(Segment.kind == kind)
            return [
                SegmentView(id=g.id, kind=g.kind, producer=g.producer, seq=g.seq,
                            start_s=g.start_s, end_s=g.end_s, text=g.text, data=g.data)
                for g in s.scalars(query.order_by(Segment.producer, Segment.seq))
            ]

    def thumbnail(self, who: Principal, asset_id: str) -> bytes:
        return self._derived(who, asset_id, "thumbnail", "thumbnail")

    def keyframe(self, who: Principal, asset_id: str, n: int) -> bytes:
        """The JPEG of keyframe ``n`` of a video (``av.shots``; numbered from 0)."""
        return self._derived(who, asset_id, f"keyframe:{n}", f"keyframe {n}")

    def _derived(self, who: Principal, asset_id: str, role: str, what: str) -> bytes:
        with self.stores.db.session(write=False) as s:
            owned_asset(s, who, asset_id)
            key = s.scalar(
                select(DerivedBlob.blob_key).where(
                    DerivedBlob.asset_id == asset_id, DerivedBlob.role == role
                )
            )
        if key is None:
            raise NotFound(f"asset {asset_id} has no {what}")
        return self.stores.blobs.get(key)

    def delete(self, who: Principal, asset_id: str) -> None:
        """Remove the asset from the database and every index; release its blobs.

        The bytes themselves go with the blob collector, after its grace period and only
        if no asset of any tenant references them by then (one owner of blob lifetime:
        :mod:`kenning.stores.blobs.lifetime`).
        """
        with self.stores.db.session() as s:
            a = owned_asset(s, who, asset_id)
            # PostgreSQL: a pipeline write for this asset waits on this lock (its foreign
            # keys) and then fails, so every row deleted below is one logged below.
            s.execute(select(Asset.id).where(Asset.id == a.id).with_for_update())
            derived = list(
                s.scalars(select(DerivedBlob.blob_key).where(DerivedBlob.asset_id == a.id))
            )
            before = {"sha256": a.sha256, "kind": a.kind, "bytes": a.bytes, "title": a.title}
            sha, tenant = a.sha256, a.tenant_id
            # Its unfinished runs go with it (cascade): take them off the tenant's load.
            unfinished = s.scalar(
                select(func.count()).select_from(StageRun).where(
                    StageRun.asset_id == a.id,
                    StageRun.state.in_(("pending", "queued", "running")))
            )
            adjust_load(s, {tenant: -int(unfinished or 0)})
            # The indexes follow the index log: the removals go in with the deletes.
            changes = IndexChanges(tenant, asset_id)
            changes.removed_embeddings = [
                (i, space, segment_id is None) for i, space, segment_id in s.execute(
                    delete(Embedding).where(Embedding.asset_id == a.id)
                    .returning(Embedding.id, Embedding.space, Embedding.segment_id))]
            changes.removed_fingerprints = [
                (i, algorithm) for i, algorithm in s.execute(
                    delete(Fingerprint).where(Fingerprint.asset_id == a.id)
                    .returning(Fingerprint.id, Fingerprint.algorithm))]
            changes.removed_segments = list(s.scalars(
                delete(Segment).where(Segment.asset_id == a.id).returning(Segment.id)))
            index_log.append(s, changes)
            for table in (Feature, DerivedBlob):
                s.execute(delete(table).where(table.asset_id == a.id))
            s.delete(a)
            # (tenant, sha256) is unique: no other asset of this tenant has these bytes.
            s.execute(delete(FeatureCache).where(FeatureCache.tenant_id == tenant,
                                                 FeatureCache.sha256 == sha))
            lifetime.release(s, [sha, *derived])
            record(s, tenant_id=tenant, actor=who.actor, action="asset.delete",
                   subject_type="asset", subject_id=asset_id, before=before)
        # Read-your-writes for the caller: this process's indexes drop it now.
        self.stores.follower.catch_up(load=False)
