"""Metadata on PostgreSQL, and PostgreSQL SIGKILLed and started again (crash recovery)
while assets are in flight: clients get 503 with Retry-After (never a 500), settles and
doorbells lost meanwhile are retried, and every accepted asset ends ready, exactly once."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from kenning.cli.client import wait_ready
from kenning.stores.metadata import Database
from kenning.stores.metadata.tables import Asset
from tests.fixtures import media
from tests.fixtures.outcomes import PatientClient, assert_each_asset_done_once
from tests.fixtures.postgres import PostgresServer
from tests.fixtures.servers import free_port, serve, wait_jobs_done

pytestmark = pytest.mark.slow

DOWN_S = 3.0
"""Long enough that requests and settles meet the outage (asserted below); short enough
that, with crash recovery, the database is back within a settle's first 7.5 s of retries
(pauses of 0.5, 1, 2 and 4 s), not idling through the next pause of 8 s."""
TEXTS = 120
"""Half sent before the crash, half while the database is down."""


def test_a_postgres_crash_mid_flight_loses_and_doubles_nothing(tmp_path: Path) -> None:
    pg = PostgresServer()
    pg.start()
    articles = list(dict.fromkeys(a.text for a in media.news()))
    texts = [f"{articles[i % len(articles)]}\n\nCopy {i}." for i in range(TEXTS)]
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = serve(data_dir, port, "--worker-processes", "1",
                   env={"KENNING_DATABASE_URL": pg.url, "KENNING_STEP_BATCH_ITEMS": "8"})
    try:
        wait_ready(url, alive=lambda: server.poll() is None, timeout_s=180)
        key = (data_dir / "bootstrap_api_key").read_text().strip()
        client = PatientClient(httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60))
        send = client.send

        for i in range(0, TEXTS // 2, 20):
            send(texts[i:i + 20])
        database = Database(pg.url)
        deadline = time.monotonic() + 120
        ready = 0
        while time.monotonic() < deadline and ready < 10:  # the worker is at work
            with database.session(write=False) as s:
                ready = s.scalar(select(func.count()).select_from(Asset).where(
                    Asset.status == "ready")) or 0
            time.sleep(0.05)
        assert 10 <= ready < TEXTS // 2, ready  # killed mid-flight, not before or after
        database.dispose()
        pg.kill()
        down_at = time.monotonic()
        during = threading.Thread(target=lambda: [send(texts[i:i + 20])
                                                  for i in range(TEXTS // 2, TEXTS, 20)])
        during.start()
        while time.monotonic() - down_at < DOWN_S:
            time.sleep(0.1)
        assert client.statuses[503] >= 1, "no request met the outage"
        pg.start()
        during.join(150)
        assert not during.is_alive()

        assert wait_jobs_done(database, 240) == 0
        assert set(client.statuses) <= {202, 503}  # never a 500
        assert sorted(client.accepted.values()) == sorted(texts)  # every text accepted once
        assert_each_asset_done_once(database, client.accepted)
        database.dispose()
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            server.wait(60)
        pg.close()
