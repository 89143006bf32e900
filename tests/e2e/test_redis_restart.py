"""Work on Redis, and Redis killed and started again empty (it keeps nothing on disk)
while 250 assets are in flight: ingest keeps answering 202 (the database is the outbox:
a doorbell the broker did not take is rung again), the doorbells Redis lost are found
and rung again, and every accepted asset ends ready, exactly once."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from kenning.cli.client import wait_ready
from kenning.stores.metadata import Database
from kenning.stores.metadata.tables import Job
from tests.fixtures import media
from tests.fixtures.outcomes import assert_each_asset_done_once, send_texts
from tests.fixtures.queues import RedisServer
from tests.fixtures.servers import free_port, serve, wait_jobs_done

pytestmark = pytest.mark.slow

BEFORE = 250
"""Texts sent before the broker goes (50 more go while it is down)."""


def test_redis_restarted_empty_mid_flight_loses_and_doubles_nothing(tmp_path: Path) -> None:
    broker = RedisServer()
    broker.start()
    articles = list(dict.fromkeys(a.text for a in media.news()))
    texts = [f"{articles[i % len(articles)]}\n\nCopy {i}." for i in range(BEFORE + 50)]
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = serve(data_dir, port, "--worker-processes", "1",
                   env={"KENNING_BROKER_URL": broker.url, "KENNING_MAX_QUEUED_STAGES": "100000",
                        "KENNING_MAX_QUEUED_STAGES_PER_TENANT": "100000"})
    try:
        wait_ready(url, alive=lambda: server.poll() is None, timeout_s=180)
        key = (data_dir / "bootstrap_api_key").read_text().strip()
        http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"},
                            timeout=120)

        accepted = [i for at in range(0, BEFORE, 50) for i in send_texts(http, texts[at:at + 50])]
        database = Database(f"sqlite:///{data_dir / 'kenning.db'}")
        with database.session(write=False) as s:  # the pipeline is busy with them
            open_jobs = s.scalar(select(func.count()).select_from(Job).where(
                Job.state.in_(("queued", "running"))))
        assert open_jobs and open_jobs > 100
        broker.kill()  # every doorbell waiting in Redis is gone with it
        accepted += send_texts(http, texts[BEFORE:])  # committed; doorbells unsent
        time.sleep(3)
        broker.start()  # empty
        restarted = time.monotonic()

        assert wait_jobs_done(database, 240) == 0
        # Not by waiting out the reconciler's staleness bound (120 s): what Redis lost, or
        # never took, was found at once and rung again.
        assert time.monotonic() - restarted < 60
        assert_each_asset_done_once(database, accepted)
        database.dispose()
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            server.wait(60)
        broker.close()
