"""Backpressure on the cluster profile, under a bounded load: producers much faster than
the (absent, then single) worker. The unfinished work in PostgreSQL stays at the bound,
the broker holds a doorbell per step rather than a message per item, the API server's
memory stays flat, refused requests get 429 with Retry-After and store nothing, and
once a worker drains the backlog every accepted asset is done and ingest is admitted
again."""

from __future__ import annotations

import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from kenning.cli.client import wait_ready
from kenning.queue.redis_broker import RedisQueueBroker
from kenning.stores.metadata import Database
from kenning.stores.metadata.tables import Asset, StageRun
from tests.conftest import fresh_postgres_database
from tests.fixtures.queues import REDIS_URL, require_redis
from tests.fixtures.s3 import s3_server
from tests.fixtures.servers import cluster_env, free_port, serve, stop_all, wait_jobs_done, worker

pytestmark = pytest.mark.slow

BOUND = 120
PRODUCERS = 4
REQUESTS = 400


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def unfinished(database: Database) -> int:
    with database.session(write=False) as s:
        return int(s.scalar(select(func.count()).select_from(StageRun).where(
            StageRun.state.in_(("pending", "queued", "running")))) or 0)


def test_producers_faster_than_workers_meet_a_bounded_queue(tmp_path: Path) -> None:
    client = require_redis()
    s3 = s3_server()
    run = uuid.uuid4().hex[:12]
    namespace = f"kenning-e2e-{run}"
    processes: list[subprocess.Popen[bytes]] = []
    with fresh_postgres_database() as database_url:
        env = cluster_env(database_url, s3, namespace=namespace,
                          blob_prefix=f"backpressure-{run}",
                          KENNING_MAX_QUEUED_STAGES=str(BOUND), KENNING_RETRY_AFTER_S="2")
        database = Database(database_url)
        broker = RedisQueueBroker(REDIS_URL, namespace=namespace)
        try:
            api_dir = tmp_path / "api"
            api_dir.mkdir()
            port = free_port()
            processes.append(serve(api_dir, port, "--api-only", env=env))
            url = f"http://127.0.0.1:{port}"
            wait_ready(url, alive=lambda: processes[0].poll() is None, timeout_s=180)
            headers = {"Authorization": "Bearer "
                       + (api_dir / "bootstrap_api_key").read_text().strip()}
            rss_before = rss_bytes(processes[0].pid)

            def produce(worker: int) -> list[httpx.Response]:
                with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
                    return [http.post("/v1/assets", json={
                        "text": f"Bulletin {worker}-{i}: the river rose overnight and the "
                                f"lower town was moved to the school gym ({uuid.uuid4()}).",
                        "title": f"bulletin {worker}-{i}"})
                        for i in range(REQUESTS // PRODUCERS)]

            with ThreadPoolExecutor(PRODUCERS) as pool:
                answers = [r for batch in pool.map(produce, range(PRODUCERS)) for r in batch]
            codes = [r.status_code for r in answers]
            accepted = {r.json()["asset_id"] for r in answers if r.status_code == 202}
            refused = [r for r in answers if r.status_code == 429]
            assert set(codes) == {202, 429}, codes
            assert all(r.headers["Retry-After"] == "2"
                       and r.json()["error"]["code"] == "backpressure" for r in refused)
            # Bounded: the work admitted stops at the bound (each request is admitted by
            # the count before it, so requests admitted together, at most one per
            # producer, may pass it by their stages), refused ones stored nothing, the
            # broker holds doorbells (one per step), not items.
            per_asset = unfinished(database) / len(accepted)
            assert BOUND <= unfinished(database) < BOUND + PRODUCERS * per_asset
            with database.session(write=False) as s:
                assert s.scalar(select(func.count()).select_from(Asset)) == len(accepted)
            depths = broker.queue_depths()
            assert sum(d.pending for d in depths.values()) <= len(depths)
            assert rss_bytes(processes[0].pid) - rss_before < 64 << 20

            processes.append(worker(tmp_path / "worker", env))
            assert wait_jobs_done(database, 300) == 0
            with database.session(write=False) as s:
                statuses = dict(s.execute(select(Asset.id, Asset.status)).tuples().all())
            assert statuses == dict.fromkeys(accepted, "ready")
            assert unfinished(database) == 0
            deadline = time.monotonic() + 10
            again = httpx.post(f"{url}/v1/assets", headers=headers, timeout=60,
                               json={"text": "After the flood, the town reopened its gym."})
            while again.status_code == 429 and time.monotonic() < deadline:
                time.sleep(0.5)
                again = httpx.post(f"{url}/v1/assets", headers=headers, timeout=60,
                                   json={"text": "After the flood, the town reopened."})
            assert again.status_code == 202, again.text
        finally:
            stop_all(processes)
            broker.close()
            database.dispose()
            for key_name in client.scan_iter(match=f"{namespace}:*"):
                client.delete(key_name)
