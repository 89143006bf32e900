"""`kenning serve --worker-processes 1`: SIGKILL the worker process in the middle of a
cross-asset batch; every accepted asset still completes, exactly once. On the embedded
embedded profile, and with metadata on PostgreSQL, work on Redis and blobs in S3."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from kenning.cli.client import wait_ready
from kenning.stores.blobs.s3 import S3BlobStore
from kenning.stores.metadata import Database
from kenning.stores.metadata.tables import (
    Asset,
    AuditEvent,
    Embedding,
    Feature,
    Job,
    Segment,
    StageRun,
)
from tests.conftest import fresh_postgres_database
from tests.fixtures import media
from tests.fixtures.queues import REDIS_URL, require_redis
from tests.fixtures.s3 import s3_server
from tests.fixtures.servers import free_port, serve, wait_jobs_done

pytestmark = pytest.mark.slow


def _batch_holder(database: Database, server_pid: int) -> tuple[int, int] | None:
    """(pid, assets) of a worker process holding runs of several assets right now."""
    with database.session(write=False) as s:
        rows = s.execute(
            select(StageRun.worker, func.count(func.distinct(StageRun.job_id)))
            .where(StageRun.state == "running").group_by(StageRun.worker)
        ).all()
    for worker, assets in rows:
        pid = int(str(worker).rsplit(":", 1)[1])
        if pid != server_pid and assets >= 2:
            return pid, assets
    return None


@dataclass
class Profile:
    env: dict[str, str]
    database_url: str | None  # None: SQLite in the data dir
    s3: S3BlobStore | None = None


@pytest.fixture(params=["embedded", "postgres-redis-s3"])
def profile(request: pytest.FixtureRequest) -> Iterator[Profile]:
    """The server's stores: all embedded, or metadata on PostgreSQL, work on Redis (a
    namespace of its own) and blobs in S3 (SeaweedFS; a prefix of its own)."""
    if request.param == "embedded":
        yield Profile({}, None)
        return
    client = require_redis()
    server = s3_server()
    run = uuid.uuid4().hex[:12]
    namespace, prefix = f"kenning-e2e-{run}", f"e2e-{run}"
    with fresh_postgres_database() as database_url:
        yield Profile(
            {"KENNING_DATABASE_URL": database_url, "KENNING_BROKER_URL": REDIS_URL,
             "KENNING_BROKER_NAMESPACE": namespace,
             "KENNING_BLOB_URL": f"s3://{server.bucket}/{prefix}",
             "KENNING_S3_ENDPOINT_URL": server.endpoint_url,
             "KENNING_S3_ACCESS_KEY": server.access_key,
             "KENNING_S3_SECRET_KEY": server.secret_key},
            database_url,
            S3BlobStore(server.bucket, prefix=prefix + "/", endpoint_url=server.endpoint_url,
                        access_key=server.access_key, secret_key=server.secret_key),
        )
    for key in client.scan_iter(match=f"{namespace}:*"):
        client.delete(key)


def test_sigkill_of_a_worker_mid_batch_loses_and_doubles_nothing(
    tmp_path: Path, profile: Profile
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    articles = []
    seen: set[str] = set()
    for article in media.news():
        if article.text not in seen:
            seen.add(article.text)
            articles.append(article)
        if len(articles) == 96:
            break
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = serve(data_dir, port, "--worker-processes", "1",
                   env={"KENNING_STEP_BATCH_ITEMS": "16", **profile.env})
    database = Database(profile.database_url or f"sqlite:///{data_dir / 'kenning.db'}")
    try:
        wait_ready(url, alive=lambda: server.poll() is None, timeout_s=180)
        key = (data_dir / "bootstrap_api_key").read_text().strip()
        headers = {"Authorization": f"Bearer {key}"}

        def send(i: int) -> str:
            a = articles[i]
            r = httpx.post(f"{url}/v1/assets", headers=headers, timeout=60,
                           json={"text": a.text, "title": a.title, "external_id": a.id})
            assert r.status_code == 202, r.text
            return str(r.json()["asset_id"])

        with ThreadPoolExecutor(4) as pool:
            accepted = list(pool.map(send, range(len(articles))))
        killed: tuple[int, int] | None = None
        deadline = time.monotonic() + 60
        while killed is None and time.monotonic() < deadline:
            killed = _batch_holder(database, server.pid)
            if killed is None:
                time.sleep(0.005)
        assert killed is not None, "no worker process was ever seen holding a batch"
        pid, assets_held = killed
        os.kill(pid, signal.SIGKILL)

        assert wait_jobs_done(database, 300) == 0
        assert server.poll() is None  # the server outlived its worker

        with database.session(write=False) as s:
            assets = list(s.scalars(select(Asset)))
            assert sorted(a.id for a in assets) == sorted(accepted)
            if profile.s3 is not None:  # every asset's bytes are in the bucket, whole
                assert all(profile.s3.size(a.sha256) == a.bytes for a in assets)
                assert len(set(profile.s3.scan(time.time() + 60))) == len(assets)
            assert {a.status for a in assets} == {"ready"}
            assert {j.state for j in s.scalars(select(Job))} == {"succeeded"}
            runs = list(s.scalars(select(StageRun)))
            assert {r.state for r in runs} == {"succeeded"}
            # The killed worker's claims counted as attempts; they ran again elsewhere.
            retried = {r.job_id for r in runs if r.attempts == 2}
            assert len(retried) >= 2 and all(r.attempts in (1, 2) for r in runs)
            # Exactly once: no doubled segments, features, embeddings or audit events.
            doubled_segments = s.execute(
                select(Segment.asset_id, Segment.producer, Segment.seq)
                .group_by(Segment.asset_id, Segment.producer, Segment.seq)
                .having(func.count() > 1)).all()
            assert doubled_segments == []
            doubled_features = s.execute(
                select(Feature.asset_id, Feature.name).group_by(Feature.asset_id, Feature.name)
                .having(func.count() > 1)).all()
            assert doubled_features == []
            chunks = s.scalar(select(func.count()).select_from(Segment).where(
                Segment.kind == "chunk"))
            vectors = s.scalar(select(func.count()).select_from(Embedding))
            assert vectors == chunks + len(accepted)  # one per chunk, one per asset
            creates = s.scalar(select(func.count()).select_from(AuditEvent).where(
                AuditEvent.action == "asset.create"))
            assert creates == len(accepted)
        # Search sees every asset once (the indexes followed the database).
        title = articles[0].title
        for mode in ("keyword", "semantic"):
            hits = httpx.post(f"{url}/v1/search", headers=headers, timeout=60,
                              json={"query": title, "mode": mode, "limit": 5}).json()["hits"]
            found = [h["asset_id"] for h in hits if h["title"] == title]
            assert found == [accepted[0]], (mode, hits)
        from kenning.settings import Settings
        from kenning.stores.bundle import make_keyword_index

        # The embedded keyword index the server's processes share (the engine its
        # settings name), opened by this process beside them.
        keyword = make_keyword_index(Settings(data_dir=data_dir, _env_file=None))
        assert keyword.count(assets[0].tenant_id) == chunks
        # The server's /metrics sums its worker processes' metrics (multiprocess mode).
        metrics = httpx.get(f"{url}/metrics").text
        assert 'kenning_step_deliveries_total{result="work",step="embed:text.embed"}' in metrics
        assert "kenning_stage_seconds_bucket" in metrics
        health = httpx.get(f"{url}/readyz").json()
        assert health["checks"]["workers"] == "ok"  # the supervisor restarted it
        assert assets_held >= 2
        with database.session(write=False) as s:
            workers = {int(str(w).rsplit(":", 1)[1])
                       for w in s.scalars(select(StageRun.worker).distinct())}
        # SIGTERM to the server stops every process it started before it exits.
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) is not None
        for worker_pid in workers - {server.pid}:
            try:
                os.kill(worker_pid, 0)
            except ProcessLookupError:
                continue
            raise AssertionError(f"worker {worker_pid} outlived its server")
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
        database.dispose()
