"""A poison asset on the cluster profile: a processor (a plugin, installed as any
third-party processor is) crashes on every attempt for two of the assets. Each of them
lands in the dead letters after exactly ``max_retries + 1`` attempts, with the reason,
listed to its tenant; everything else of those assets and every other asset finishes;
a redrive runs it once more (and it fails again, once). Servers and the worker are
separate processes on PostgreSQL, Redis and S3."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from kenning.cli.client import wait_ready
from kenning.stores.metadata import Database
from kenning.stores.metadata.tables import Asset, StageRun
from tests.conftest import fresh_postgres_database
from tests.fixtures import media, poison
from tests.fixtures.queues import require_redis
from tests.fixtures.s3 import s3_server
from tests.fixtures.servers import cluster_env, free_port, serve, stop_all, wait_jobs_done, worker

pytestmark = pytest.mark.slow

RETRIES = 2


def test_a_poison_asset_is_dead_lettered_while_the_rest_finish(tmp_path: Path) -> None:
    client = require_redis()
    s3 = s3_server()
    run = uuid.uuid4().hex[:12]
    namespace = f"kenning-e2e-{run}"
    plugin = poison.install(tmp_path / "plugin")
    root = Path(__file__).resolve().parents[2]
    texts = [a.text for a in {a.text: a for a in media.news()}.values()][:24]
    poisoned = [f"POISON {texts[0]}", f"POISON {texts[1]}"]
    processes = []
    with fresh_postgres_database() as database_url:
        env = cluster_env(database_url, s3, namespace=namespace,
                          blob_prefix=f"poison-{run}", KENNING_MAX_RETRIES=str(RETRIES),
                          KENNING_RETRY_MIN_BACKOFF_MS="50", KENNING_RETRY_MAX_BACKOFF_MS="200",
                          PYTHONPATH=f"{plugin}:{root}")
        database = Database(database_url)
        try:
            port = free_port()
            (tmp_path / "api").mkdir()
            processes.append(serve(tmp_path / "api", port, "--api-only", env=env))
            url = f"http://127.0.0.1:{port}"
            wait_ready(url, alive=lambda: processes[0].poll() is None, timeout_s=180)
            processes.append(worker(tmp_path / "worker", env))
            headers = {"Authorization": "Bearer "
                       + (tmp_path / "api" / "bootstrap_api_key").read_text().strip()}
            with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
                r = http.post("/v1/assets/batch",
                              json={"items": [{"text": t} for t in [*texts, *poisoned]]})
                assert r.status_code == 202, r.text
                ids = [x["accepted"]["asset_id"] for x in r.json()["results"]]
                good, bad = ids[:len(texts)], ids[len(texts):]
                assert wait_jobs_done(database, 300) == 0

                with database.session(write=False) as s:
                    status = dict(s.execute(select(Asset.id, Asset.status)).tuples().all())
                    checks = {r.asset_id: r for r in s.scalars(
                        select(StageRun).where(StageRun.processor == poison.NAME))}
                    others = s.scalars(select(StageRun).where(
                        StageRun.asset_id.in_(bad), StageRun.processor != poison.NAME)).all()
                assert {status[i] for i in good} == {"ready"}
                assert {checks[i].state for i in good} == {"succeeded"}
                # Each poison run failed on every attempt, and only those; the rest of
                # the poisoned assets was done (the check is a leaf: nothing waits on it).
                assert all(checks[i].state == "failed" and checks[i].attempts == RETRIES + 1
                           for i in bad)
                assert {r.state for r in others} == {"succeeded"}
                assert {status[i] for i in bad} == {"partial"}

                letters = http.get("/v1/admin/dead-letters").json()
                assert sorted(d["asset_id"] for d in letters) == sorted(bad)
                assert all(d["stage"] == poison.NAME and "always crashes" in d["reason"]
                           for d in letters)
                # A redrive runs them again, from a fresh count of attempts.
                assert http.post("/v1/admin/dead-letters", json={}).status_code == 200
                assert wait_jobs_done(database, 120) == 0
                with database.session(write=False) as s:
                    again = s.scalars(select(StageRun).where(
                        StageRun.processor == poison.NAME, StageRun.asset_id.in_(bad))).all()
                assert all(r.state == "failed" and r.attempts == RETRIES + 1 for r in again)
                assert sorted(d["asset_id"] for d in
                              http.get("/v1/admin/dead-letters").json()) == sorted(bad)
        finally:
            stop_all(processes)
            database.dispose()
            for key in client.scan_iter(match=f"{namespace}:*"):
                client.delete(key)
