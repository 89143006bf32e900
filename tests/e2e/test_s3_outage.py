"""Blobs in S3, and the S3 server killed for 10 s in the middle of an ingest: clients get
503 with Retry-After (never a 500, never a half asset), work in flight waits the outage
out, and afterwards every accepted asset is ready with its bytes whole in the bucket."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from kenning.cli.client import wait_ready
from kenning.stores.blobs.s3 import S3BlobStore
from kenning.stores.metadata import Database
from kenning.stores.metadata.tables import Asset, StageRun
from tests.fixtures import media
from tests.fixtures.outcomes import PatientClient
from tests.fixtures.s3 import BUCKET, SeaweedServer
from tests.fixtures.servers import free_port, serve, wait_jobs_done

pytestmark = pytest.mark.slow

OUTAGE_S = 10.0


def test_an_s3_outage_during_ingest_loses_and_doubles_nothing(tmp_path: Path) -> None:
    s3 = SeaweedServer()
    info = s3.start()
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    texts = list(dict.fromkeys(a.text for a in media.news()))[:60]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = serve(data_dir, port, "--worker-processes", "1", env={
        "KENNING_BLOB_URL": f"s3://{BUCKET}/outage", "KENNING_S3_ENDPOINT_URL": info.endpoint_url,
        "KENNING_S3_ACCESS_KEY": info.access_key, "KENNING_S3_SECRET_KEY": info.secret_key,
        "KENNING_STEP_BATCH_ITEMS": "8"})
    try:
        wait_ready(url, alive=lambda: server.poll() is None, timeout_s=180)
        key = (data_dir / "bootstrap_api_key").read_text().strip()
        http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"},
                            timeout=60)
        client = PatientClient(http)
        send, statuses, accepted = client.send, client.statuses, client.accepted

        for i in range(0, 20, 5):
            send(texts[i:i + 5])
        s3.kill()
        down_at = time.monotonic()
        during = threading.Thread(target=lambda: [send(texts[i:i + 5])
                                                  for i in range(20, 40, 5)])
        during.start()
        while time.monotonic() - down_at < OUTAGE_S:
            time.sleep(0.2)
        assert statuses[503] >= 1, "no request met the outage"
        s3.start()
        during.join(150)
        assert not during.is_alive()
        for i in range(40, len(texts), 5):
            send(texts[i:i + 5])

        database = Database(f"sqlite:///{data_dir / 'kenning.db'}")
        assert wait_jobs_done(database, 180) == 0
        assert set(statuses) <= {202, 503}  # never a 500
        # Every text was accepted once, every asset is ready, its bytes whole in S3.
        assert sorted(accepted.values()) == sorted(texts)
        store = S3BlobStore(BUCKET, prefix="outage/", endpoint_url=info.endpoint_url,
                            access_key=info.access_key, secret_key=info.secret_key)
        with database.session(write=False) as s:
            assets = list(s.scalars(select(Asset)))
            assert sorted(a.id for a in assets) == sorted(accepted)
            assert {a.status for a in assets} == {"ready"}
            runs = list(s.scalars(select(StageRun)))
            assert {r.state for r in runs} == {"succeeded"}
            assert all(r.attempts == 1 for r in runs)  # the outage spent no attempt
        for asset in assets:
            assert store.get(asset.sha256) == accepted[asset.id].encode()
        database.dispose()
        hits = http.post("/v1/search", json={"query": texts[30][:200], "mode": "keyword",
                                              "limit": 3}).json()["hits"]
        assert hits and accepted[hits[0]["asset_id"]] == texts[30]
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            server.wait(60)
        s3.close()
