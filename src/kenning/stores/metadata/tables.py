"""Relational schema of the metadata store (SQLite by default, PostgreSQL by URL).

The database is the source of truth for pipeline state; indexes (vectors, hashes,
keywords) are rebuildable from it. Every tenant-owned row carries ``tenant_id`` so that
every query can, and must, filter on it.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
    true,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets BIGINT identities.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC, returns aware UTC, on every dialect (SQLite drops offsets)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, datetime: UTCDateTime()}


class Tenant(Base):
    __tablename__ = "tenant"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    webhook_secret: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    matching: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, server_default="{}")
    """The tenant's match thresholds by method (``pdq``, ``text_semantic``,
    ``text_near_duplicate``); a method not named uses the server's default."""


class ApiKey(Base):
    __tablename__ = "api_key"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(32))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class Asset(Base):
    __tablename__ = "asset"
    __table_args__ = (
        UniqueConstraint("tenant_id", "sha256", name="uq_asset_tenant_sha256"),
        Index("ix_asset_tenant_created", "tenant_id", "created_at"),
        Index("ix_asset_sha256", "sha256"),
        # Covers the search's candidate lookup: tenant check and language without the row.
        Index("ix_asset_id_tenant_language", "id", "tenant_id", "language"),
        # The matcher's queue: ready assets not matched yet, oldest first, without a scan.
        Index("ix_asset_match_pending", "status", "created_at", "id",
              sqlite_where=text("match_pending = 1"), postgresql_where=text("match_pending")),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    sha256: Mapped[str] = mapped_column(String(64))
    mime: Mapped[str] = mapped_column(String(100))
    bytes: Mapped[int] = mapped_column(BigInteger)
    source: Mapped[str] = mapped_column(String(16))
    source_url: Mapped[str | None] = mapped_column(Text, default=None)
    filename: Mapped[str | None] = mapped_column(String(500), default=None)
    external_id: Mapped[str | None] = mapped_column(String(500), default=None, index=True)
    title: Mapped[str | None] = mapped_column(Text, default=None)
    language: Mapped[str | None] = mapped_column(String(16), default=None)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    callback_url: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    match_pending: Mapped[bool] = mapped_column(Boolean, default=True,
                                                server_default=true())
    """Not in a match cluster: the matcher takes it once ready. Kept by the database
    itself (migration 0012's triggers on ``match_cluster_member``): false when the asset
    joins a cluster, true again when its membership goes (a dissolved cluster)."""


class Job(Base):
    __tablename__ = "job"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"))
    asset_id: Mapped[str] = mapped_column(ForeignKey("asset.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16), default="ingest")
    state: Mapped[str] = mapped_column(String(16), default="queued")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)


class StageRun(Base):
    __tablename__ = "stage_run"
    __table_args__ = (
        UniqueConstraint("job_id", "processor", name="uq_stage_job_processor"),
        Index("ix_stage_state_lease", "state", "lease_until"),
        Index("ix_stage_claim", "step", "state", "not_before"),
        Index("ix_stage_tenant_state", "tenant_id", "state"),
        Index("ix_stage_step_tenant", "step", "state", "tenant_id", "enqueued_at"),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    job_id: Mapped[str] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"), index=True)
    asset_id: Mapped[str] = mapped_column(ForeignKey("asset.id", ondelete="CASCADE"), index=True)
    tenant_id: Mapped[str] = mapped_column(String(32))
    processor: Mapped[str] = mapped_column(String(100))
    version: Mapped[str] = mapped_column(String(100))
    queue: Mapped[str] = mapped_column(String(100))
    step: Mapped[str] = mapped_column(String(300))
    """The step (group of processors run together, see ``pipeline.steps``) it belongs to."""
    not_before: Mapped[datetime | None] = mapped_column(default=None)
    """Backoff: a queued run is not claimed before this time."""
    depends_on: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """``{"stages": [names]}``: upstream stages that must succeed first."""
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_until: Mapped[datetime | None] = mapped_column(default=None)
    worker: Mapped[str | None] = mapped_column(String(200), default=None)
    """``host:pid`` of the worker holding the lease (lets a restart release orphans)."""
    enqueued_at: Mapped[datetime | None] = mapped_column(default=None)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    duration_ms: Mapped[float | None] = mapped_column(Float, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    model_version: Mapped[str | None] = mapped_column(String(200), default=None)
    cached: Mapped[bool] = mapped_column(Boolean, default=False)


class Segment(Base):
    __tablename__ = "segment"
    __table_args__ = (
        UniqueConstraint("asset_id", "producer", "seq", name="uq_segment_producer_seq"),
        # Covers the search's keyword candidate lookup (segment -> asset).
        Index("ix_segment_tenant_id_asset", "tenant_id", "id", "asset_id"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(32))
    asset_id: Mapped[str] = mapped_column(ForeignKey("asset.id", ondelete="CASCADE"), index=True)
    producer: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(32))
    seq: Mapped[int] = mapped_column(Integer)
    start_s: Mapped[float | None] = mapped_column(Float, default=None)
    end_s: Mapped[float | None] = mapped_column(Float, default=None)
    text: Mapped[str | None] = mapped_column(Text, default=None)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Feature(Base):
    """One artifact produced by a stage for an asset (read by later stages)."""

    __tablename__ = "feature"
    __table_args__ = (UniqueConstraint("asset_id", "name", name="uq_feature_asset_name"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    asset_id: Mapped[str] = mapped_column(ForeignKey("asset.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    processor: Mapped[str] = mapped_column(String(100))
    version: Mapped[str] = mapped_column(String(100))
    output: Mapped[dict[str, Any]] = mapped_column(JSON)
    confidence: Mapped[float | None] = mapped_column(Float, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Embedding(Base):
    __tablename__ = "embedding"
    __table_args__ = (
        # Covers the search's candidate lookup (embedding -> segment, asset): a row holds
        # its vector, one row per page, so reading rows cost a page per hit.
        Index("ix_embedding_tenant_id_owner", "tenant_id", "id", "segment_id", "asset_id"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(32))
    asset_id: Mapped[str] = mapped_column(ForeignKey("asset.id", ondelete="CASCADE"), index=True)
    segment_id: Mapped[int | None] = mapped_column(
        ForeignKey("segment.id", ondelete="CASCADE"), default=None
    )
    producer: Mapped[str] = mapped_column(String(100))
    space: Mapped[str] = mapped_column(String(200))
    vector: Mapped[bytes] = mapped_column(LargeBinary)


class Fingerprint(Base):
    __tablename__ = "fingerprint"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(32), index=True)
    asset_id: Mapped[str] = mapped_column(ForeignKey("asset.id", ondelete="CASCADE"), index=True)
    producer: Mapped[str] = mapped_column(String(100))
    algorithm: Mapped[str] = mapped_column(String(32))
    variant: Mapped[str] = mapped_column(String(32), default="original")
    bits: Mapped[bytes] = mapped_column(LargeBinary)
    quality: Mapped[float | None] = mapped_column(Float, default=None)


class DerivedBlob(Base):
    __tablename__ = "derived_blob"
    __table_args__ = (UniqueConstraint("asset_id", "role", name="uq_derived_asset_role"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    asset_id: Mapped[str] = mapped_column(ForeignKey("asset.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(50))
    blob_key: Mapped[str] = mapped_column(String(64), index=True)


class FeatureCache(Base):
    """Stage outputs by (tenant, content hash, processor, version): identical bytes reuse work.

    Scoped to the tenant: a shared cache would tell tenant B (through ``cached`` and the
    stage timings) that tenant A ingested the same file.
    """

    __tablename__ = "feature_cache"
    tenant_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    processor: Mapped[str] = mapped_column(String(100), primary_key=True)
    version: Mapped[str] = mapped_column(String(100), primary_key=True)
    output: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class BlobRef(Base):
    """One row per stored blob: the lock and the clock of its lifetime.

    Rows that reference content (``asset.sha256``, ``derived_blob.blob_key``) are the
    references; this row is what a writer and the collector lock, so that "is it still
    referenced?" and "delete the bytes" happen under one lock
    (see :mod:`kenning.stores.blobs.lifetime`). ``released_at`` is set when a reference
    may have gone (delete, replaced derivative, orphan found on disk) and cleared whenever a
    writer holds the blob again; the collector deletes bytes only past a grace period.
    """

    __tablename__ = "blob_ref"
    __table_args__ = (Index("ix_blob_ref_released", "released_at"),)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    released_at: Mapped[datetime | None] = mapped_column(default=None)


class WebhookDelivery(Base):
    __tablename__ = "webhook_delivery"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(32), index=True)
    asset_id: Mapped[str] = mapped_column(ForeignKey("asset.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(Text)
    event: Mapped[str] = mapped_column(String(50))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_status: Mapped[int | None] = mapped_column(Integer, default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(default=None)


class AuditEvent(Base):
    __tablename__ = "audit_event"
    __table_args__ = (Index("ix_audit_tenant_at", "tenant_id", "at"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(50))
    subject_type: Mapped[str] = mapped_column(String(50))
    subject_id: Mapped[str] = mapped_column(String(100))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class IndexLog(Base):
    """What changed in the derived indexes, in commit order (their write-ahead log).

    Written in the same transaction as the rows it describes; each process's vector,
    hash and keyword indexes follow it from their own high-water mark, so a writer never
    touches an index and a crash between a commit and an index update loses nothing.
    """

    __tablename__ = "index_log"
    seq: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(16))
    """``vector`` (embedding id), ``hash`` (fingerprint id) or ``keyword`` (segment id)."""
    op: Mapped[str] = mapped_column(String(8))
    """``add`` (read the row; skipped if it is gone) or ``remove``."""
    item_id: Mapped[int] = mapped_column(BigInteger)
    namespace: Mapped[str] = mapped_column(String(300), default="")
    """Index namespace, so a removal needs no row that no longer exists."""
    at: Mapped[datetime] = mapped_column(default=utcnow)


class TenantLoad(Base):
    """Kept counters read by backpressure instead of a ``COUNT(*)`` per request."""

    __tablename__ = "tenant_load"
    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenant.id", ondelete="CASCADE"), primary_key=True
    )
    unfinished_stages: Mapped[int] = mapped_column(BigInteger, default=0)


class StepBell(Base):
    """One row per step: whether a doorbell message for it is on the broker, unstarted.

    Ringing is ``UPDATE ... SET rung = true WHERE rung = false``: only the writer that
    flips it sends a message, so a burst of ingests sends one doorbell, not one each.
    """

    __tablename__ = "step_bell"
    step: Mapped[str] = mapped_column(String(300), primary_key=True)
    rung: Mapped[bool] = mapped_column(Boolean, default=False)
    rung_at: Mapped[datetime | None] = mapped_column(default=None)


class MatchCluster(Base):
    """A group of near-duplicates (matching service): its id is stable while the asset
    it was founded on (``first_asset_id``, the first seen) stays in it.

    Every matched asset belongs to exactly one cluster, a singleton at first, so a
    membership row also says "this asset has been matched". A cluster merged into
    another stays as a tombstone (``merged_into``) so that its old id still resolves.
    Deleting the founding asset dissolves the cluster (its members are matched again).
    """

    __tablename__ = "match_cluster"
    __table_args__ = (
        Index("ix_match_cluster_tenant_updated", "tenant_id", "updated_at"),
        Index("ix_match_cluster_stale", "id", sqlite_where=text("stale = 1"),
              postgresql_where=text("stale")),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"))
    first_asset_id: Mapped[str] = mapped_column(
        ForeignKey("asset.id", ondelete="CASCADE"), index=True)
    size: Mapped[int] = mapped_column(Integer, default=1)
    """Members when last written; fewer live members means one was deleted (repair)."""
    merged_into: Mapped[str | None] = mapped_column(String(32), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    stale: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    """A member left (its asset was deleted) since the matcher last looked: set by the
    database (migration 0012's trigger), cleared by the matcher once it has checked the
    cluster's size against its members and repaired it."""


class MatchClusterMember(Base):
    __tablename__ = "match_cluster_member"
    asset_id: Mapped[str] = mapped_column(
        ForeignKey("asset.id", ondelete="CASCADE"), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(32))
    cluster_id: Mapped[str] = mapped_column(
        ForeignKey("match_cluster.id", ondelete="CASCADE"), index=True)
    joined_at: Mapped[datetime] = mapped_column(default=utcnow)


class MatchEdge(Base):
    """Two assets found to be near-duplicates (``asset_a < asset_b``), by one method;
    ``verdict`` edges are a person's confirmation."""

    __tablename__ = "match_edge"
    __table_args__ = (
        UniqueConstraint("asset_a", "asset_b", "method", name="uq_match_edge_pair_method"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(32))
    asset_a: Mapped[str] = mapped_column(ForeignKey("asset.id", ondelete="CASCADE"))
    asset_b: Mapped[str] = mapped_column(ForeignKey("asset.id", ondelete="CASCADE"),
                                         index=True)
    method: Mapped[str] = mapped_column(String(32))
    score: Mapped[float] = mapped_column(Float)
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class MatchVerdict(Base):
    """A person's decision on a pair (``asset_a < asset_b``): ``same`` or ``different``."""

    __tablename__ = "match_verdict"
    asset_a: Mapped[str] = mapped_column(
        ForeignKey("asset.id", ondelete="CASCADE"), primary_key=True)
    asset_b: Mapped[str] = mapped_column(
        ForeignKey("asset.id", ondelete="CASCADE"), primary_key=True, index=True)
    tenant_id: Mapped[str] = mapped_column(String(32), index=True)
    verdict: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(100))
    note: Mapped[str | None] = mapped_column(Text, default=None)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class Bank(Base):
    """A tenant's named set of known items; every newly matched asset is checked
    against it (a hit is a ``bank.hit`` webhook to ``webhook_url`` and an audit event)."""

    __tablename__ = "bank"
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_bank_tenant_name"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    webhook_url: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class BankItem(Base):
    __tablename__ = "bank_item"
    bank_id: Mapped[str] = mapped_column(
        ForeignKey("bank.id", ondelete="CASCADE"), primary_key=True)
    asset_id: Mapped[str] = mapped_column(
        ForeignKey("asset.id", ondelete="CASCADE"), primary_key=True, index=True)
    tenant_id: Mapped[str] = mapped_column(String(32))
    label: Mapped[str | None] = mapped_column(Text, default=None)
    added_at: Mapped[datetime] = mapped_column(default=utcnow)


class Event(Base):
    """A reader's interaction (recommendations' feedback): impression, open, read, like,
    share, follow / unfollow, hide, mute_author or report. See :mod:`kenning.services.events`.

    ``event_id`` is the client's idempotency key, unique per tenant. ``asset_id`` is set
    for item events and goes with its asset (``ON DELETE CASCADE``); author events
    (follow, unfollow, mute_author) keep the story they came from in ``data`` instead, so
    deleting a story does not undo a follow. ``author_id`` is the author the event
    names, or for item events the asset's author as its metadata said on arrival.
    """

    __tablename__ = "event"
    __table_args__ = (
        UniqueConstraint("tenant_id", "event_id", name="uq_event_tenant_event_id"),
        Index("ix_event_tenant_reader_at", "tenant_id", "reader_id", "at"),
        # Asset ids are unique across tenants: (asset_id, at) serves per-asset reads and
        # the cascade of an asset's delete, which a (tenant_id, asset_id) index would not.
        Index("ix_event_asset_at", "asset_id", "at"),
        Index("ix_event_tenant_author_at", "tenant_id", "author_id", "at"),
        # A tenant's events of one type in a time window (the exposure audit, 0008).
        Index("ix_event_tenant_type_at", "tenant_id", "type", "at"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(32))
    event_id: Mapped[str] = mapped_column(String(128))
    type: Mapped[str] = mapped_column(String(16))
    reader_id: Mapped[str] = mapped_column(String(128))
    asset_id: Mapped[str | None] = mapped_column(
        ForeignKey("asset.id", ondelete="CASCADE"), default=None)
    author_id: Mapped[str | None] = mapped_column(String(128), default=None)
    at: Mapped[datetime] = mapped_column()
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """Type-specific fields: surface, position, request_id, dwell_ms, scroll_depth,
    reason; and the story an author event came from (asset_id)."""


class RecServed(Base):
    """One recommended item as served by ``GET /v1/users/{id}/recommendations`` (0009).

    ``request_id`` is what the response carried and clients echo in impression events
    (``data.request_id``); ``propensity`` is the probability, under the serving policy
    (``policy``: ``blend`` or ``ranker:<version>``), that this item was shown at this
    position, in (0, 1]; ``features`` are the online feature values the policy used;
    ``source`` is the item's first reason's source. Rows go with their asset.
    """

    __tablename__ = "rec_served"
    __table_args__ = (
        Index("ix_rec_served_tenant_request", "tenant_id", "request_id"),
        Index("ix_rec_served_tenant_reader_at", "tenant_id", "reader_id", "at"),
        Index("ix_rec_served_tenant_at", "tenant_id", "at"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(32))
    request_id: Mapped[str] = mapped_column(String(32))
    reader_id: Mapped[str] = mapped_column(String(128))
    surface: Mapped[str] = mapped_column(String(32))
    asset_id: Mapped[str] = mapped_column(ForeignKey("asset.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(32))
    score: Mapped[float] = mapped_column(Float)
    propensity: Mapped[float] = mapped_column(Float)
    policy: Mapped[str] = mapped_column(String(64))
    features: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class RecModel(Base):
    """One version of a tenant's learned recommendation model (0010; see
    :mod:`kenning.services.recommend.training`).

    ``version`` counts 1, 2, ... per tenant and ``kind`` (``ranker``); ``state`` moves
    ``training`` -> ``candidate`` -> ``serving`` (the one the tenant's recommendations
    use; the one before it becomes ``retired``) or ``rejected`` (by the offline
    evaluation gate, whose reasons are in ``gate``, or by a failure, in ``error``).
    ``metrics`` holds the offline evaluation and the off-policy estimates; ``artefact``
    the fitted model, written only by the training pipeline (it is unpickled when
    loaded: see :mod:`kenning.services.recommend.ranker`).
    """

    __tablename__ = "rec_model"
    __table_args__ = (
        UniqueConstraint("tenant_id", "kind", "version", name="uq_rec_model_tenant_kind_version"),
        Index("ix_rec_model_tenant_kind_state", "tenant_id", "kind", "state"),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    version: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    gate: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    artefact: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
