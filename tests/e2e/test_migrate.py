"""`kenning migrate`: an embedded installation moved to PostgreSQL + S3 answers the same
searches with the same top hits; a run SIGKILLed part way is resumed by the next, a
further run copies nothing, and every run verifies counts, row digests and blobs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from kenning.cli.client import wait_ready
from kenning.stores.blobs.s3 import S3BlobStore
from kenning.stores.metadata import Database
from kenning.stores.metadata.tables import Segment, StageRun
from tests.conftest import fresh_postgres_database
from tests.fixtures import media
from tests.fixtures.pgvector import fresh_pgvector_database, pgvector_server
from tests.fixtures.s3 import s3_server
from tests.fixtures.servers import free_port, serve, wait_jobs_done

__all__ = ["pgvector_server"]  # the fixture the shared-index case starts

pytestmark = pytest.mark.slow

QUERIES = ["bushfires in New South Wales", "Afghanistan Taliban", "cricket match"]


def _searches(url: str, headers: dict[str, str]) -> dict[str, list[str]]:
    out = {}
    for query in QUERIES:
        for mode in ("keyword", "semantic", "hybrid"):
            hits = httpx.post(f"{url}/v1/search", headers=headers, timeout=60, json={
                "query": query, "mode": mode, "limit": 5}).json()["hits"]
            out[f"{mode}: {query}"] = [h["asset_id"] for h in hits]
    return out


def _migrate(data_dir: Path, database_url: str, blobs: str, env: dict[str, str]) -> Any:
    done = subprocess.run(
        [sys.executable, "-m", "kenning.cli.main", "migrate", "--data-dir", str(data_dir),
         "--to-database", database_url, "--to-blobs", blobs],
        capture_output=True, text=True, env={**os.environ, **env}, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads(done.stdout)


@dataclass(frozen=True)
class Embedded:
    """A stopped embedded installation, with what its server answered before."""

    data_dir: Path
    headers: dict[str, str]
    texts: int
    """Text assets; one image besides."""
    image_id: str
    before: dict[str, list[str]]


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Embedded:
    """One embedded installation, filled and stopped, that each case migrates: `kenning
    migrate` only reads its source (its schema is current; rows and blobs are read)."""
    data_dir = tmp_path_factory.mktemp("embedded")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # Pipeline workers as threads of the server (no worker processes to start): how the
    # installation was filled is not what this module is about.
    server = serve(data_dir, port, "--worker-processes", "0")
    try:
        wait_ready(url, alive=lambda: server.poll() is None, timeout_s=180)
        key = (data_dir / "bootstrap_api_key").read_text().strip()
        headers = {"Authorization": f"Bearer {key}"}
        articles = list({a.text: a for a in media.news()}.values())[:40]
        r = httpx.post(f"{url}/v1/assets/batch", headers=headers, timeout=120, json={
            "items": [{"text": a.text, "title": a.title} for a in articles]})
        assert r.status_code == 202, r.text
        image = media.image_names()[0]
        r = httpx.post(f"{url}/v1/assets", headers=headers, timeout=120,
                       files={"file": (image, media.image_bytes(image))})
        assert r.status_code == 202, r.text
        image_id = r.json()["asset_id"]
        assert wait_jobs_done(Database(f"sqlite:///{data_dir / 'kenning.db'}"), 300) == 0
        before = _searches(url, headers)
        assert all(before.values())
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
    return Embedded(data_dir, headers, len(articles), image_id, before)


@pytest.mark.parametrize("indexes", ["local", "shared"])
def test_an_embedded_installation_moves_to_postgresql_and_s3(
    tmp_path: Path, request: pytest.FixtureRequest, indexes: str, embedded: Embedded
) -> None:
    """``local``: the migrated server keeps faiss and SQLite FTS indexes of its own;
    ``shared``: into a PostgreSQL with pgvector, the migrated server's vectors and
    keyword index live there too (rebuilt from the migrated tables at its first start)."""
    s3 = s3_server()
    s3_env = {"KENNING_S3_ENDPOINT_URL": s3.endpoint_url,
              "KENNING_S3_ACCESS_KEY": s3.access_key, "KENNING_S3_SECRET_KEY": s3.secret_key}
    source, headers = embedded.data_dir, embedded.headers
    prefix = f"migrated-{uuid.uuid4().hex[:12]}"
    if indexes == "shared":
        target_database = fresh_pgvector_database(request.getfixturevalue("pgvector_server"))
    else:
        target_database = fresh_postgres_database()
    with target_database as database_url:
        # Interrupted part way (SIGKILL, 5 rows per transaction), then run again.
        killed = subprocess.Popen(
            [sys.executable, "-m", "kenning.cli.main", "migrate", "--data-dir",
             str(source), "--to-database", database_url, "--to-blobs",
             f"s3://{s3.bucket}/{prefix}", "--batch-rows", "5"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **s3_env})
        target = Database(database_url)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and killed.poll() is None:
            try:
                with target.session(write=False) as s:
                    if s.scalar(select(func.count()).select_from(Segment)):
                        break
            except Exception:  # the schema is not there yet
                pass
            time.sleep(0.02)
        assert killed.poll() is None, "the migration ended before it could be stopped"
        killed.send_signal(signal.SIGKILL)
        assert killed.wait(30) == -signal.SIGKILL
        with target.session(write=False) as s:
            part = s.scalar(select(func.count()).select_from(StageRun))  # copied last
        target.dispose()
        first = _migrate(source, database_url, f"s3://{s3.bucket}/{prefix}", s3_env)
        assert first["ok"] is True
        assert first["tables"]["asset"]["rows"] == embedded.texts + 1
        runs = first["tables"]["stage_run"]
        assert part < runs["rows"]  # stopped part way; the rerun copied exactly the rest
        assert runs["copied"] == runs["rows"] - part
        assert first["blobs"]["source"] > embedded.texts
        again = _migrate(source, database_url, f"s3://{s3.bucket}/{prefix}", s3_env)
        assert again["ok"] is True  # resumable: the second run finds everything there
        assert all(t["copied"] == 0 for t in again["tables"].values())
        assert again["blobs"]["copied"] == 0
        bucket = S3BlobStore(s3.bucket, prefix=prefix + "/", endpoint_url=s3.endpoint_url,
                             access_key=s3.access_key, secret_key=s3.secret_key)
        assert len(list(bucket.scan(float("inf")))) == first["blobs"]["source"]

        cluster = tmp_path / "cluster"  # a new server: no local state but its indexes
        cluster.mkdir()
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        shared = ({"KENNING_VECTOR_URL": database_url, "KENNING_KEYWORD_URL": database_url}
                  if indexes == "shared" else {})
        # It answers searches and a thumbnail, with nothing left for a pipeline to do: its
        # workers are threads (no worker processes to start).
        server = serve(cluster, port, "--worker-processes", "0", env={
            "KENNING_DATABASE_URL": database_url,
            "KENNING_BLOB_URL": f"s3://{s3.bucket}/{prefix}", **s3_env, **shared})
        try:
            wait_ready(url, alive=lambda: server.poll() is None, timeout_s=180)
            # The same key works, and the same searches get the same top hits.
            assert _searches(url, headers) == embedded.before
            thumb = httpx.get(f"{url}/v1/assets/{embedded.image_id}/thumbnail", headers=headers,
                              timeout=60)
            assert thumb.status_code == 200 and thumb.content[:3] in (b"\xff\xd8\xff", b"RIF")
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(60)
