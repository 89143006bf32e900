"""Contract for the metadata store: every test runs on SQLite and on PostgreSQL.

The store is built the way Kenning builds it (``Database(url).upgrade()``, i.e. the
Alembic migrations) and exercised through the real services and pipeline functions.
One database per backend serves the whole module; each test works in tenants of its own.
PostgreSQL is skipped when no server answers, and required when ``CI=true``.
"""

from __future__ import annotations

import hashlib
import stat
import threading
import uuid
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import IntegrityError

from kenning.errors import Conflict, Unauthorized
from kenning.hosts import worker_id
from kenning.media.kinds import MediaKind
from kenning.pipeline import claims, jobs
from kenning.pipeline.claims import Claim, ClaimedRun, claim_batch
from kenning.pipeline.dag import dependents, plan
from kenning.pipeline.processor import Processor
from kenning.pipeline.registry import ProcessorRegistry
from kenning.pipeline.runner import StepRunner
from kenning.processors.text import ChunkText, KeywordIndexText, NormalizeText, normalize_text
from kenning.services.tenants import Principal, TenantService, hash_key
from kenning.settings import Settings
from kenning.stores.blobs import LocalBlobStore
from kenning.stores.bundle import Stores
from kenning.stores.hashes import FaissBinaryHashIndex
from kenning.stores.keyword import SQLiteKeywordIndex
from kenning.stores.metadata import Database
from kenning.stores.metadata.database import alembic_config
from kenning.stores.metadata.tables import (
    ApiKey,
    Asset,
    AuditEvent,
    Feature,
    Job,
    Segment,
    StageRun,
    WebhookDelivery,
    utcnow,
)
from kenning.stores.vectors import FaissVectorIndex


class _Embedder:
    """Declaration-only stand-in: planning reads ``model_id`` and never embeds."""

    model_id = "plan-only"

    def embed(self, texts: Sequence[str], timeout: float | None = None) -> Any:
        raise AssertionError("planning must not embed")


def _text_processors() -> list[Processor]:
    from kenning.processors.text import DetectLanguage, EmbedText

    return [NormalizeText(), ChunkText(), DetectLanguage(), EmbedText(_Embedder()),
            KeywordIndexText()]


TEXT_PLAN = plan(MediaKind.TEXT, _text_processors())
"""normalize -> chunk -> (embed, keyword); normalize -> language."""


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
    Database
]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('metadata') / 'kenning.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    database = Database(url)
    database.upgrade()
    assert database.dialect == request.param
    yield database
    database.dispose()


@pytest.fixture
def tenants(db: Database) -> TenantService:
    return TenantService(db)


@pytest.fixture
def tenant_id(tenants: TenantService) -> str:
    return tenants.create_tenant(f"tenant-{uuid.uuid4().hex}")


def add_asset(
    db: Database,
    tenant_id: str,
    *,
    sha256: str | None = None,
    meta: dict[str, Any] | None = None,
    callback_url: str | None = None,
    kind: str = "text",
) -> str:
    with db.session() as s:
        asset = Asset(
            tenant_id=tenant_id, kind=kind, sha256=sha256 or uuid.uuid4().hex * 2,
            mime="text/plain", bytes=11, source="upload", meta=meta or {},
            callback_url=callback_url, external_id=f"ext-{uuid.uuid4().hex[:6]}",
        )
        s.add(asset)
        s.flush()
        return asset.id


def start_job(db: Database, asset_id: str) -> tuple[str, list[str]]:
    """Create the text job for the asset; return its id and the names of the ready stages."""
    with db.session() as s:
        asset = s.get(Asset, asset_id)
        assert asset is not None
        job, ready = jobs.create_job(s, asset, TEXT_PLAN)
        return job.id, [r.processor for r in ready]


def set_states(db: Database, job_id: str, states: dict[str, str]) -> None:
    """Stand in for the runner: put stages straight into a state."""
    with db.session() as s:
        for name, state in states.items():
            s.execute(
                update(StageRun)
                .where(StageRun.job_id == job_id, StageRun.processor == name)
                .values(state=state, finished_at=utcnow() if state in jobs.TERMINAL else None)
            )


def stage_states(db: Database, job_id: str) -> dict[str, str]:
    with db.session(write=False) as s:
        return dict(
            s.execute(select(StageRun.processor, StageRun.state).where(StageRun.job_id == job_id))
            .tuples()
            .all()
        )


def job_and_asset(db: Database, job_id: str) -> tuple[Job, Asset]:
    with db.session(write=False) as s:
        job = s.get(Job, job_id)
        assert job is not None
        asset = s.get(Asset, job.asset_id)
        assert asset is not None
        return job, asset


# --- schema ---------------------------------------------------------------------------
def test_upgrade_reaches_head_and_is_idempotent(db: Database) -> None:
    db.upgrade()  # a second upgrade is a no-op, not an error
    head = ScriptDirectory.from_config(alembic_config(db.url)).get_current_head()
    with db.engine.connect() as conn:
        versions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    assert versions == [head]
    assert db.ping() is True


# --- tenants and keys -------------------------------------------------------------------
def test_tenant_names_are_unique_and_creation_is_audited(tenants: TenantService) -> None:
    name = f"newsroom-{uuid.uuid4().hex}"
    tid = tenants.create_tenant(name)
    assert tenants.tenant_id(name) == tid
    assert tenants.tenant_id(f"absent-{uuid.uuid4().hex}") is None
    secret = tenants.webhook_secret(tid)
    assert len(secret) == 64 and int(secret, 16) >= 0
    with pytest.raises(Conflict) as err:
        tenants.create_tenant(name)
    assert err.value.code == "tenant_exists"
    with tenants.db.session(write=False) as s:
        actions = s.scalars(select(AuditEvent.action).where(AuditEvent.tenant_id == tid)).all()
    assert actions == ["tenant.create"]


def test_keys_authenticate_and_are_stored_only_as_hashes(
    tenants: TenantService, tenant_id: str
) -> None:
    issued = tenants.create_key(tenant_id, "ci")
    assert issued.key.startswith("kn_") and len(issued.key) > 40
    assert tenants.authenticate(issued.key) == Principal(tenant_id, issued.key_id)
    assert tenants.authenticate(issued.key).actor == f"key:{issued.key_id}"
    with tenants.db.session(write=False) as s:
        row = s.get(ApiKey, issued.key_id)
        assert row is not None
        assert row.key_hash == hash_key(issued.key)
        assert row.key_hash == hashlib.sha256(issued.key.encode()).hexdigest()
        assert row.prefix == issued.key[:10]
        assert issued.key not in (row.key_hash, row.name, row.prefix)
        assert row.created_at.tzinfo is UTC and row.revoked_at is None
    with pytest.raises(LookupError):
        tenants.create_key(uuid.uuid4().hex, "nobody")


@pytest.mark.parametrize("presented", [None, "", "kn_not-a-real-key", "Bearer kn_x"])
def test_bad_keys_are_refused(
    tenants: TenantService, tenant_id: str, presented: str | None
) -> None:
    tenants.create_key(tenant_id)
    with pytest.raises(Unauthorized) as err:
        tenants.authenticate(presented)
    assert err.value.status == 401 and err.value.code == "unauthorized"


def test_revoked_key_is_refused_and_others_keep_working(
    tenants: TenantService, tenant_id: str
) -> None:
    revoked = tenants.create_key(tenant_id, "old")
    kept = tenants.create_key(tenant_id, "new")
    with tenants.db.session() as s:
        key = s.get(ApiKey, revoked.key_id)
        assert key is not None
        key.revoked_at = utcnow()
    with pytest.raises(Unauthorized, match="invalid API key"):
        tenants.authenticate(revoked.key)
    assert tenants.authenticate(kept.key).key_id == kept.key_id


def test_a_verified_key_is_remembered_for_auth_cache_s_only(
    tenants: TenantService, tenant_id: str
) -> None:
    """``remembered`` answers a key verified less than ``remember_s`` ago from memory; a
    key revoked meanwhile works until then, never after; unknown keys are never kept."""
    now = [1000.0]
    cached = TenantService(tenants.db, remember_s=2.0, clock=lambda: now[0])
    issued = cached.create_key(tenant_id, "cached")
    assert cached.remembered(issued.key) is None  # not verified yet
    who = cached.authenticate(issued.key)
    assert cached.remembered(issued.key) == who
    with cached.db.session() as s:
        key = s.get(ApiKey, issued.key_id)
        assert key is not None
        key.revoked_at = utcnow()
    now[0] += 1.9
    assert cached.remembered(issued.key) == who  # within the bound it promised
    now[0] += 0.2
    assert cached.remembered(issued.key) is None
    with pytest.raises(Unauthorized):
        cached.authenticate(issued.key)
    assert cached.remembered(issued.key) is None
    with pytest.raises(Unauthorized):
        cached.authenticate("kn_not-a-real-key")
    assert cached.remembered("kn_not-a-real-key") is None
    assert TenantService(tenants.db).remembered(issued.key) is None  # 0: never from memory


def test_bootstrap_writes_a_private_key_file_once(tenants: TenantService, tmp_path: Path) -> None:
    name = f"default-{uuid.uuid4().hex}"
    path = tmp_path / "state" / "bootstrap_api_key"
    issued = tenants.bootstrap(name, path)
    assert issued is not None
    assert path.read_text() == issued.key + "\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert tenants.authenticate(path.read_text().strip()).tenant_id == tenants.tenant_id(name)

    assert tenants.bootstrap(name, path) is None  # tenant exists: no new key, file untouched
    assert path.read_text() == issued.key + "\n"
    with tenants.db.session(write=False) as s:
        keys = s.scalar(
            select(func.count()).select_from(ApiKey).where(ApiKey.tenant_id == issued.tenant_id)
        )
    assert keys == 1


# --- assets -------------------------------------------------------------------------------
def test_same_bytes_twice_in_one_tenant_violate_uniqueness(
    db: Database, tenants: TenantService
) -> None:
    first = tenants.create_tenant(f"a-{uuid.uuid4().hex}")
    second = tenants.create_tenant(f"b-{uuid.uuid4().hex}")
    sha = hashlib.sha256(uuid.uuid4().bytes).hexdigest()
    add_asset(db, first, sha256=sha)
    add_asset(db, second, sha256=sha)  # another tenant may hold the same bytes
    with pytest.raises(IntegrityError):
        add_asset(db, first, sha256=sha)
    with db.session(write=False) as s:
        owners = sorted(s.scalars(select(Asset.tenant_id).where(Asset.sha256 == sha)))
    assert owners == sorted([first, second])


def test_json_metadata_filters(db: Database, tenant_id: str) -> None:
    a = add_asset(db, tenant_id, meta={"desk": "politics", "words": 800, "by": {"name": "Ana"}})
    b = add_asset(db, tenant_id, meta={"desk": "sport", "words": 300, "by": {"name": "Ben"}})
    add_asset(db, tenant_id, meta={"words": 50})

    def ids(*where: Any) -> list[str]:
        with db.session(write=False) as s:
            return sorted(s.scalars(select(Asset.id).where(Asset.tenant_id == tenant_id, *where)))

    assert ids(Asset.meta["desk"].as_string() == "politics") == [a]
    assert ids(Asset.meta["desk"].as_string() == "weather") == []
    assert ids(Asset.meta["words"].as_integer() >= 300) == sorted([a, b])
    assert ids(Asset.meta[("by", "name")].as_string() == "Ben") == [b]
    with db.session(write=False) as s:
        asset = s.get(Asset, a)
        assert asset is not None
        assert asset.meta == {"desk": "politics", "words": 800, "by": {"name": "Ana"}}


def test_datetimes_round_trip_as_aware_utc(db: Database, tenant_id: str) -> None:
    berlin = timezone(timedelta(hours=2))
    moment = datetime(2024, 6, 1, 14, 30, 15, 123456, tzinfo=berlin)
    asset_id = add_asset(db, tenant_id)
    job_id, _ = start_job(db, asset_id)
    with db.session() as s:
        run = s.scalars(select(StageRun).where(StageRun.job_id == job_id)).first()
        assert run is not None
        run.lease_until = moment
        run_id = run.id
    with db.session(write=False) as s:
        run = s.get(StageRun, run_id)
        assert run is not None
        assert run.lease_until == moment
        assert run.lease_until.tzinfo is UTC
        assert run.lease_until.hour == 12 and run.lease_until.microsecond == 123456
        asset = s.get(Asset, asset_id)
        assert asset is not None
        assert asset.created_at.tzinfo is UTC
        assert abs(utcnow() - asset.created_at) < timedelta(minutes=1)
        # Comparisons in SQL see the same instant, whatever offset the bound value has.
        later = s.scalar(
            select(func.count()).select_from(StageRun).where(
                StageRun.id == run_id, StageRun.lease_until > moment - timedelta(seconds=1)
            )
        )
        assert later == 1


# --- jobs and stages ----------------------------------------------------------------------
def test_create_job_queues_roots_and_records_dependencies(db: Database, tenant_id: str) -> None:
    asset_id = add_asset(db, tenant_id)
    job_id, ready = start_job(db, asset_id)
    # The text step (one queue, connected) starts queued as a whole; embed waits.
    assert sorted(ready) == ["text.chunk", "text.keyword", "text.language", "text.normalize"]
    with db.session(write=False) as s:
        rows = s.scalars(select(StageRun).where(StageRun.job_id == job_id))
        runs = {r.processor: r for r in rows}
        job = s.get(Job, job_id)
    assert job is not None and job.state == "queued" and job.tenant_id == tenant_id
    assert {n: r.state for n, r in runs.items()} == {
        "text.normalize": "queued", "text.chunk": "queued", "text.language": "queued",
        "text.embed": "pending", "text.keyword": "queued",
    }
    assert {r.tenant_id for r in runs.values()} == {tenant_id}
    assert {r.step for n, r in runs.items() if n != "text.embed"} == {TEXT_STEP}
    assert runs["text.embed"].step == "embed:text.embed"
    assert runs["text.embed"].depends_on == {"stages": ["text.chunk"]}
    assert runs["text.normalize"].depends_on == {"stages": []}
    assert runs["text.normalize"].enqueued_at is not None
    assert runs["text.embed"].enqueued_at is None
    assert runs["text.embed"].version == "1+plan-only" and runs["text.embed"].queue == "embed"


def test_release_ready_follows_the_dag(db: Database, tenant_id: str) -> None:
    job_id, _ = start_job(db, add_asset(db, tenant_id))
    with db.session() as s:
        assert jobs.release_ready(s, job_id) == []  # chunk has not succeeded yet
    set_states(db, job_id, {"text.normalize": "succeeded", "text.chunk": "succeeded"})
    with db.session() as s:
        runs = jobs.release_ready(s, job_id)
        assert all(r.state == "queued" and r.enqueued_at is not None for r in runs)
        released = sorted(r.processor for r in runs)
    assert released == ["text.embed"]
    with db.session() as s:
        assert jobs.release_ready(s, job_id) == []  # already queued: released once
    assert stage_states(db, job_id)["text.embed"] == "queued"
    # A step whose runs went back to pending (a redrive reopening them) is released as a
    # whole once its upstream outside the step succeeded: step-mates may wait on queued.
    set_states(db, job_id, {"text.chunk": "pending", "text.keyword": "pending",
                            "text.embed": "pending"})
    with db.session() as s:
        released = sorted(r.processor for r in jobs.release_ready(s, job_id))
    assert released == ["text.chunk", "text.keyword"]


def test_finalize_succeeded_job_creates_one_webhook_delivery(db: Database, tenant_id: str) -> None:
    asset_id = add_asset(db, tenant_id, callback_url="https://hooks.example.org/kenning")
    job_id, _ = start_job(db, asset_id)
    with db.session() as s:
        assert jobs.finalize_if_done(s, job_id) == []
    job, asset = job_and_asset(db, job_id)
    assert (job.state, asset.status) == ("running", "processing")

    set_states(db, job_id, {stage.name: "succeeded" for stage in TEXT_PLAN})
    with db.session() as s:
        deliveries = jobs.finalize_if_done(s, job_id)
    assert len(deliveries) == 1
    job, asset = job_and_asset(db, job_id)
    assert (job.state, asset.status) == ("succeeded", "ready")
    assert job.finished_at is not None and job.finished_at.tzinfo is UTC
    with db.session(write=False) as s:
        delivery = s.get(WebhookDelivery, deliveries[0])
        assert delivery is not None
        assert (delivery.url, delivery.event, delivery.state) == (
            "https://hooks.example.org/kenning", "asset.ready", "pending"
        )
        assert delivery.tenant_id == tenant_id and delivery.attempts == 0
        assert delivery.payload == {
            "event": "asset.ready", "asset_id": asset_id, "job_id": job_id, "status": "ready",
            "kind": "text", "external_id": asset.external_id,
            "stages": {stage.name: "succeeded" for stage in TEXT_PLAN},
        }
    with db.session() as s:  # a later completion of the same job finalises nothing
        assert jobs.finalize_if_done(s, job_id) == []
        count = s.scalar(
            select(func.count()).select_from(WebhookDelivery).where(
                WebhookDelivery.asset_id == asset_id
            )
        )
    assert count == 1


def test_failed_stage_skips_dependents_and_job_is_partial(db: Database, tenant_id: str) -> None:
    asset_id = add_asset(db, tenant_id)  # no callback_url: no delivery
    job_id, _ = start_job(db, asset_id)
    set_states(db, job_id, {"text.normalize": "succeeded", "text.language": "running",
                            "text.chunk": "failed"})
    with db.session() as s:
        jobs.skip_stages(s, job_id, dependents(TEXT_PLAN, "text.chunk"))
        jobs.skip_stages(s, job_id, ["text.language"])  # running: not skippable
        jobs.skip_stages(s, job_id, [])
    assert stage_states(db, job_id) == {
        "text.normalize": "succeeded", "text.chunk": "failed", "text.language": "running",
        "text.embed": "skipped", "text.keyword": "skipped",
    }
    with db.session(write=False) as s:
        skipped = s.scalars(
            select(StageRun).where(StageRun.job_id == job_id, StageRun.state == "skipped")
        ).all()
        assert {r.error for r in skipped} == {"an upstream stage failed"}
        assert all(r.finished_at is not None for r in skipped)

    with db.session() as s:
        assert jobs.finalize_if_done(s, job_id) == []  # language still running
    set_states(db, job_id, {"text.language": "succeeded"})
    with db.session() as s:
        assert jobs.finalize_if_done(s, job_id) == []  # done, but nobody to call back
    job, asset = job_and_asset(db, job_id)
    assert (job.state, asset.status) == ("partial", "partial")
    with db.session(write=False) as s:
        hooks = select(WebhookDelivery).where(WebhookDelivery.asset_id == asset_id)
        assert s.scalars(hooks).all() == []


def test_all_failed_job_is_failed_and_reported(db: Database, tenant_id: str) -> None:
    asset_id = add_asset(db, tenant_id, callback_url="https://hooks.example.org/x")
    job_id, _ = start_job(db, asset_id)
    set_states(db, job_id, {"text.normalize": "failed"})
    with db.session() as s:
        jobs.skip_stages(s, job_id, dependents(TEXT_PLAN, "text.normalize"))
        deliveries = jobs.finalize_if_done(s, job_id)
    job, asset = job_and_asset(db, job_id)
    assert (job.state, asset.status) == ("failed", "failed")
    with db.session(write=False) as s:
        delivery = s.get(WebhookDelivery, deliveries[0])
        assert delivery is not None and delivery.event == "asset.failed"
        assert delivery.payload["stages"]["text.embed"] == "skipped"


def test_redrive_reopens_the_failed_stage_and_what_it_skipped(db: Database, tenant_id: str) -> None:
    asset_id = add_asset(db, tenant_id, callback_url="https://hooks.example.org/r")
    job_id, _ = start_job(db, asset_id)
    set_states(db, job_id, {"text.normalize": "succeeded", "text.language": "succeeded",
                            "text.chunk": "failed"})
    with db.session() as s:
        jobs.skip_stages(s, job_id, dependents(TEXT_PLAN, "text.chunk"))
        s.execute(update(StageRun).where(StageRun.job_id == job_id,
                                         StageRun.processor == "text.chunk").values(attempts=4))
        first = jobs.finalize_if_done(s, job_id)
    assert len(first) == 1
    with db.session(write=False) as s:
        chunk_id = s.scalar(select(StageRun.id).where(StageRun.job_id == job_id,
                                                      StageRun.processor == "text.chunk"))
    assert chunk_id is not None

    with db.session() as s:
        run = jobs.reset_for_redrive(s, chunk_id)
        assert run is not None and run.id == chunk_id
        assert jobs.reset_for_redrive(s, uuid.uuid4().hex) is None
    with db.session(write=False) as s:
        run = s.get(StageRun, chunk_id)
        assert run is not None
        assert (run.state, run.attempts, run.finished_at) == ("queued", 0, None)
        assert run.enqueued_at is not None
        reopened = {r.processor: (r.state, r.error, r.finished_at) for r in s.scalars(
            select(StageRun).where(StageRun.job_id == job_id,
                                   StageRun.processor.in_(["text.embed", "text.keyword"])))}
        # keyword runs in chunk's step, so it is queued with it; embed waits for chunk.
        assert reopened == {"text.keyword": ("queued", None, None),
                            "text.embed": ("pending", None, None)}
    job, asset = job_and_asset(db, job_id)
    assert (job.state, job.finished_at, asset.status) == ("running", None, "processing")

    set_states(db, job_id, {"text.chunk": "succeeded"})
    with db.session() as s:
        assert sorted(r.processor for r in jobs.release_ready(s, job_id)) == ["text.embed"]
    set_states(db, job_id, {"text.embed": "succeeded", "text.keyword": "succeeded"})
    with db.session() as s:
        second = jobs.finalize_if_done(s, job_id)
    assert len(second) == 1 and second != first
    job, asset = job_and_asset(db, job_id)
    assert (job.state, asset.status) == ("succeeded", "ready")


def test_redrive_leaves_stages_skipped_by_another_failure(db: Database, tenant_id: str) -> None:
    """Redriving one failure must not reopen stages that wait on a different one."""
    job_id, _ = start_job(db, add_asset(db, tenant_id))
    set_states(db, job_id, {"text.normalize": "succeeded", "text.chunk": "failed",
                            "text.language": "failed"})
    with db.session() as s:
        jobs.skip_stages(s, job_id, dependents(TEXT_PLAN, "text.chunk"))
        language_id = s.scalar(select(StageRun.id).where(StageRun.job_id == job_id,
                                                         StageRun.processor == "text.language"))
        assert language_id is not None
        jobs.reset_for_redrive(s, language_id)
    assert stage_states(db, job_id) == {
        "text.normalize": "succeeded", "text.chunk": "failed", "text.language": "queued",
        "text.embed": "skipped", "text.keyword": "skipped",
    }
    set_states(db, job_id, {"text.language": "succeeded"})
    with db.session() as s:
        assert jobs.release_ready(s, job_id) == []
        jobs.finalize_if_done(s, job_id)
    job, asset = job_and_asset(db, job_id)
    assert (job.state, asset.status) == ("partial", "partial")  # finished, not stuck


# --- the stage runner on this store -------------------------------------------------------
@pytest.fixture
def stores(db: Database, tmp_path: Path) -> Iterator[Stores]:
    keyword = SQLiteKeywordIndex(tmp_path / "keyword.db")
    yield Stores(db=db, blobs=LocalBlobStore(tmp_path / "blobs"), vectors=FaissVectorIndex(None),
                 hashes=FaissBinaryHashIndex(None), keyword=keyword)
    keyword.close()


class Outbox:
    """What the runner hands to the broker, kept for the test to drive."""

    def __init__(self) -> None:
        self.steps: list[str] = []
        self.delayed: list[tuple[str, int]] = []
        self.webhooks: list[str] = []

    def ring(self, steps: Iterable[str], *, force: bool = False, delay_ms: int = 0) -> None:
        for step in sorted(set(steps)):
            if delay_ms:
                self.delayed.append((step, delay_ms))
            elif force or step not in self.steps:
                self.steps.append(step)

    def notify(self, deliveries: Sequence[str]) -> None:
        self.webhooks.extend(deliveries)


def make_runner(stores: Stores, tmp_path: Path, outbox: Outbox, **settings: Any) -> StepRunner:
    registry = ProcessorRegistry([NormalizeText(), ChunkText(60, 15), KeywordIndexText()])
    return StepRunner(stores, registry, Settings(data_dir=tmp_path, **settings),
                      ring=outbox.ring, notify=outbox.notify)


TEXT_STEP = TEXT_PLAN[0].step


def test_batch_claims_are_disjoint_under_concurrency(
    db: Database, stores: Stores, tenant_id: str
) -> None:
    """Eight workers claim batches of one step at once: every queued run is claimed
    exactly once, each with its first attempt, and live leases are never taken."""
    job_ids = {start_job(db, add_asset(db, tenant_id))[0] for _ in range(24)}
    threads = 8
    barrier = threading.Barrier(threads)

    def claim(_: int) -> list[ClaimedRun]:
        barrier.wait()
        with db.session() as s:
            return claim_batch(s, TEXT_STEP, now=utcnow(), lease=timedelta(minutes=5),
                               max_items=4, max_bytes=10**9).runs

    with ThreadPoolExecutor(threads) as pool:
        batches = list(pool.map(claim, range(threads)))
    claimed = [c for batch in batches for c in batch if c.job_id in job_ids]
    assert len({c.id for c in claimed}) == len(claimed)  # nobody claimed a run twice
    assert all(len({c.job_id for c in batch}) <= 4 for batch in batches)
    with db.session(write=False) as s:
        runs = s.scalars(select(StageRun).where(StageRun.job_id.in_(job_ids),
                                                StageRun.step == TEXT_STEP)).all()
    running = {r.id for r in runs if r.state == "running"}
    assert running == {c.id for c in claimed}
    assert all(r.attempts == 1 and r.worker == worker_id() for r in runs if r.state == "running")
    assert {c.attempt for c in claimed} == {1}
    # Whatever is left is still queued, and claimed by the next workers, never twice.
    with db.session() as s:
        again = claim_batch(s, TEXT_STEP, now=utcnow(), lease=timedelta(minutes=5),
                            max_items=100, max_bytes=10**9).runs
    assert not {c.id for c in again} & running
    assert {c.job_id for c in again if c.job_id in job_ids} == job_ids - {
        c.job_id for c in claimed}


def own_step(db: Database, tenant_jobs: Iterable[tuple[str, int]]) -> tuple[str, list[str]]:
    """Start ``count`` text jobs per tenant, oldest first in the order given, on a step
    of their own (so runs other tests of the module left queued never join the claim).
    Returns the step and the job ids in order."""
    step = f"{TEXT_STEP}#{uuid.uuid4().hex[:8]}"
    job_ids = [start_job(db, add_asset(db, tenant))[0]
               for tenant, count in tenant_jobs for _ in range(count)]
    with db.session() as s:
        s.execute(update(StageRun).where(StageRun.job_id.in_(job_ids)).values(step=step))
    return step, job_ids


def ready_runs(db: Database, job_id: str) -> set[str]:
    with db.session(write=False) as s:
        return set(s.scalars(select(StageRun.id).where(StageRun.job_id == job_id,
                                                       StageRun.state == "queued")))


def claim(db: Database, step: str, max_items: int) -> Claim:
    with db.session() as s:
        return claim_batch(s, step, now=utcnow(), lease=timedelta(minutes=5),
                           max_items=max_items, max_bytes=10**9)


def test_claims_deal_round_robin_between_tenants(
    db: Database, stores: Stores, tenants: TenantService
) -> None:
    """A tenant with a backlog does not crowd out one that ingests later."""
    flood, late = (tenants.create_tenant(f"t-{uuid.uuid4().hex}") for _ in range(2))
    step, _ = own_step(db, [(flood, 20), (late, 1)])
    batch = claim(db, step, max_items=4).runs
    owners = [c.tenant_id for c in batch]
    assert late in owners and len({c.job_id for c in batch}) == 4


def test_a_backlog_deeper_than_the_window_hides_no_tenant(
    db: Database, stores: Stores, tenants: TenantService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The window of oldest runs holds only the flood's first jobs; the tenants behind
    it are found by the loose index scan and dealt in, each of them, batch by batch."""
    monkeypatch.setattr(claims, "_CANDIDATES_PER_ITEM", 1)
    flood = tenants.create_tenant(f"t-{uuid.uuid4().hex}")
    late = [tenants.create_tenant(f"t-{uuid.uuid4().hex}") for _ in range(5)]
    step, _ = own_step(db, [(flood, 30), *((t, 1) for t in late)])
    first = claim(db, step, max_items=4).runs
    assert flood in {c.tenant_id for c in first}
    assert len({c.tenant_id for c in first}) == 4  # the flood and three tenants behind it
    served = {c.tenant_id for c in first}
    served |= {c.tenant_id for c in claim(db, step, max_items=4).runs}
    assert set(late) <= served  # two batches reach all five tenants behind the backlog


def test_a_claim_takes_a_job_whole_when_the_window_cuts_it(
    db: Database, stores: Stores, tenant_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(claims, "_CANDIDATES_PER_ITEM", 1)  # a window of one run
    step, job_ids = own_step(db, [(tenant_id, 3)])
    whole = ready_runs(db, job_ids[0])
    assert len(whole) > 1
    got = claim(db, step, max_items=1)
    assert {c.id for c in got.runs} == whole and not got.contended


def test_a_claim_never_waits_on_runs_another_claim_holds(
    db: Database, stores: Stores, tenant_id: str
) -> None:
    """Another transaction holds one run of the oldest job (as a concurrent claim
    would): the claim neither waits for it (two claims waiting on each other was a
    deadlock on PostgreSQL) nor splits that job; it takes the next job, reports the
    contention (so the step is rung again) and the held job is claimed whole later."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite serialises writers: a claim cannot meet a held row")
    step, job_ids = own_step(db, [(tenant_id, 2)])
    held_job, free_job = job_ids
    held_runs, free_runs = ready_runs(db, held_job), ready_runs(db, free_job)
    one = sorted(held_runs)[0]
    with db.engine.connect() as other:
        other.execute(select(StageRun.id).where(StageRun.id == one).with_for_update())
        with db.session() as s:
            s.execute(text("SET LOCAL lock_timeout = '3s'"))
            got = claim_batch(s, step, now=utcnow(), lease=timedelta(minutes=5),
                              max_items=2, max_bytes=10**9)
        other.rollback()
    assert {c.id for c in got.runs} == free_runs and got.contended
    again = claim(db, step, max_items=2)
    assert {c.id for c in again.runs} == held_runs and not again.contended


def test_runner_drives_a_text_job_to_done(
    db: Database, stores: Stores, tenant_id: str, tmp_path: Path
) -> None:
    outbox = Outbox()
    runner = make_runner(stores, tmp_path, outbox)
    body = ("Flood warning\n\nThe river rose two metres overnight. Residents of the lower "
            "town were moved to the school gym. More rain is expected on Friday.")
    sha = stores.blobs.put(body.encode())
    asset_id = add_asset(db, tenant_id, sha256=sha, callback_url="https://hooks.example.org/d")
    with db.session() as s:
        asset = s.get(Asset, asset_id)
        assert asset is not None
        job, ready = jobs.create_job(s, asset, runner.registry.plan(MediaKind.TEXT))
        job_id = job.id
    # The whole job is one step (one queue, connected): every run starts queued.
    assert {r.processor for r in ready} == {"text.normalize", "text.chunk", "text.keyword"}
    outbox.ring(r.step for r in ready)
    claimed = 0
    while outbox.steps:
        step = outbox.steps.pop(0)
        claimed += runner.run_step(step)
        assert runner.run_step(step) == 0  # a duplicated doorbell is a no-op
    assert claimed >= 3

    job_row, asset_row = job_and_asset(db, job_id)
    assert (job_row.state, asset_row.status) == ("succeeded", "ready")
    assert asset_row.meta == {"chars": len(normalize_text(body))}
    assert len(outbox.webhooks) == 1
    with db.session(write=False) as s:
        text_feature = s.scalar(select(Feature).where(Feature.asset_id == asset_id,
                                                      Feature.name == "text"))
        assert text_feature is not None
        assert text_feature.output["title"] == "Flood warning"
        chunks = s.scalars(select(Segment).where(Segment.asset_id == asset_id)
                           .order_by(Segment.seq)).all()
        assert [c.seq for c in chunks] == list(range(len(chunks)))
        assert len(chunks) >= 3 and {c.kind for c in chunks} == {"chunk"}
        assert "two metres" in " ".join(c.text or "" for c in chunks)
        runs = s.scalars(select(StageRun).where(StageRun.job_id == job_id)).all()
        assert {(r.state, r.attempts, r.lease_until) for r in runs} == {("succeeded", 1, None)}
    stores.follower.catch_up()  # the indexes follow the log the step wrote
    hits = stores.keyword.search(tenant_id, "river metres", 5)
    assert hits and {h.asset_id for h in hits} == {asset_id}
