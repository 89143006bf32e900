"""The cluster profile's shape: two `kenning serve --api-only` servers and two
`kenning worker` processes, sharing metadata on PostgreSQL, work on Redis and blobs in
S3. Ingest through either server; both workers do the work; both servers answer the
same search (each server's indexes follow the shared index log). With pgvector, the
metadata, the one shared vector index and the one keyword index live in a PostgreSQL
with pgvector, and both servers' followers apply the log to them without doubling."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select, text

from kenning.cli.client import wait_ready
from kenning.stores.metadata import Database
from kenning.stores.metadata.tables import Asset, Embedding, Segment, StageRun
from tests.conftest import fresh_postgres_database
from tests.fixtures import media
from tests.fixtures.pgvector import fresh_pgvector_database, pgvector_server
from tests.fixtures.queues import require_redis
from tests.fixtures.s3 import s3_server
from tests.fixtures.servers import cluster_env, free_port, serve, stop_all, wait_jobs_done, worker

__all__ = ["pgvector_server"]  # the fixture the pgvector case starts

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("vectors", ["faiss", "pgvector"])
def test_two_api_servers_and_two_workers_share_one_cluster(
    tmp_path: Path, request: pytest.FixtureRequest, vectors: str
) -> None:
    client = require_redis()
    s3 = s3_server()
    run = uuid.uuid4().hex[:12]
    namespace = f"kenning-e2e-{run}"
    articles = list({a.text: a for a in media.news()}.values())[:60]
    processes: list[subprocess.Popen[bytes]] = []
    if vectors == "pgvector":
        database = fresh_pgvector_database(request.getfixturevalue("pgvector_server"))
    else:
        database = fresh_postgres_database()
    with database as database_url:
        env = cluster_env(database_url, s3, namespace=namespace,
                          blob_prefix=f"cluster-{run}", KENNING_STEP_BATCH_ITEMS="8")
        if vectors == "pgvector":
            env["KENNING_VECTOR_URL"] = env["KENNING_KEYWORD_URL"] = database_url
        try:
            urls = []
            for name in ("api-a", "api-b"):
                folder = tmp_path / name
                folder.mkdir()
                port = free_port()
                processes.append(serve(folder, port, "--api-only", env=env))
                urls.append(f"http://127.0.0.1:{port}")
                if name == "api-a":  # the first migrates the database and makes the tenant
                    wait_ready(urls[0], alive=lambda: processes[0].poll() is None,
                               timeout_s=180)
            for name in ("worker-1", "worker-2"):  # they start while api-b does
                processes.append(worker(tmp_path / name, env, threads=2))
            wait_ready(urls[1], alive=lambda: processes[1].poll() is None, timeout_s=180)
            key = (tmp_path / "api-a" / "bootstrap_api_key").read_text().strip()
            assert not (tmp_path / "api-b" / "bootstrap_api_key").exists()  # one tenant
            headers = {"Authorization": f"Bearer {key}"}
            accepted: dict[str, str] = {}
            for i in range(0, len(articles), 10):
                url = urls[(i // 10) % 2]  # alternate between the servers
                items = [{"text": a.text, "title": a.title} for a in articles[i:i + 10]]
                r = httpx.post(f"{url}/v1/assets/batch", headers=headers, timeout=60,
                               json={"items": items})
                assert r.status_code == 202, r.text
                for a, result in zip(articles[i:i + 10], r.json()["results"], strict=True):
                    accepted[result["accepted"]["asset_id"]] = a.title

            database = Database(database_url)
            assert wait_jobs_done(database, 300) == 0
            with database.session(write=False) as s:
                assert {a.status for a in s.scalars(select(Asset))} == {"ready"}
                assert s.scalar(select(func.count()).select_from(Asset)) == len(accepted)
                pids = {int(str(w).rsplit(":", 1)[1])
                        for w in s.scalars(select(StageRun.worker).distinct())}
            assert pids == {p.pid for p in processes[2:]}  # both workers, and only they

            # Either server finds what was ingested through the other.
            title = articles[0].title
            for url in urls:
                for mode in ("hybrid", "semantic"):
                    hits = httpx.post(f"{url}/v1/search", headers=headers, timeout=60, json={
                        "query": title, "mode": mode, "limit": 5}).json()["hits"]
                    assert hits and accepted[hits[0]["asset_id"]] == title, (url, mode, hits)
            if vectors == "pgvector":  # one vector, one keyword document per row, none twice
                with database.session(write=False) as s:
                    embeddings = s.scalar(select(func.count()).select_from(Embedding))
                    stored = s.scalar(text("SELECT count(*) FROM kenning_vector"))
                    assert stored == embeddings > 0
                    chunks = s.scalar(select(func.count()).select_from(Segment).where(
                        Segment.text.is_not(None)))
                    documents = s.scalar(text("SELECT count(*) FROM kenning_keyword"))
                    assert documents == chunks > 0
            database.dispose()
        finally:
            stop_all(processes)
            for key_name in client.scan_iter(match=f"{namespace}:*"):
                client.delete(key_name)
