"""The cluster profile (metadata on PostgreSQL, work on RabbitMQ in a vhost of its own)
with RabbitMQ stopped and started again (``rabbitmqctl stop_app`` / ``start_app``) while
250 assets are in flight: ingest keeps answering 202 while it is down (the database is
the outbox: a doorbell the broker did not take is rung again), workers reconnect, the
messages RabbitMQ held (durable queues, persistent messages; unacknowledged ones go back
to their queue) are delivered again, and every accepted asset ends ready, exactly once."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from kenning.cli.client import wait_ready
from kenning.stores.metadata import Database
from kenning.stores.metadata.tables import Job
from tests.conftest import fresh_postgres_database
from tests.fixtures import media
from tests.fixtures.outcomes import assert_each_asset_done_once, send_texts
from tests.fixtures.queues import rabbitmq_vhost, rabbitmqctl, require_rabbitmq
from tests.fixtures.servers import free_port, serve, wait_jobs_done

pytestmark = pytest.mark.slow

BEFORE = 250
"""Texts sent before the broker goes (50 more go while it is down)."""

DOWN_S = 3.0


@contextmanager
def rabbitmq_stopped() -> Iterator[None]:
    """RabbitMQ's application stopped (the node stays up); started again on the way
    out, whatever happened meanwhile: other tests share this server."""
    try:
        rabbitmqctl("stop_app")
        yield
    finally:
        rabbitmqctl("start_app")  # a no-op when it runs


def test_rabbitmq_restarted_mid_flight_loses_and_doubles_nothing(tmp_path: Path) -> None:
    require_rabbitmq()
    firsts = list(dict.fromkeys(a.text.split(". ")[0] for a in media.news()))
    texts = [f"{firsts[i % len(firsts)]}. Copy {i}." for i in range(BEFORE + 50)]
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    vhost = f"kenning-e2e-{uuid.uuid4().hex[:12]}"
    with fresh_postgres_database() as database_url, rabbitmq_vhost(vhost) as broker_url:
        server = serve(data_dir, port, "--worker-processes", "1", env={
            "KENNING_DATABASE_URL": database_url, "KENNING_BROKER_URL": broker_url,
            "KENNING_MAX_QUEUED_STAGES": "100000",
            "KENNING_MAX_QUEUED_STAGES_PER_TENANT": "100000"})
        database = Database(database_url)
        try:
            wait_ready(url, alive=lambda: server.poll() is None, timeout_s=180)
            key = (data_dir / "bootstrap_api_key").read_text().strip()
            http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"},
                                timeout=120)

            accepted = [i for at in range(0, BEFORE, 50)
                        for i in send_texts(http, texts[at:at + 50])]
            with database.session(write=False) as s:  # the pipeline is busy with them
                open_jobs = s.scalar(select(func.count()).select_from(Job).where(
                    Job.state.in_(("queued", "running"))))
            assert open_jobs and open_jobs > 100
            with rabbitmq_stopped():  # consumers and publishers lose their connections
                accepted += send_texts(http, texts[BEFORE:])  # committed; doorbells unsent
                time.sleep(DOWN_S)
            restarted = time.monotonic()

            assert wait_jobs_done(database, 240) == 0
            # Not by waiting out the reconciler's staleness bound (120 s): doorbells never
            # sent were found missing at once and rung again.
            assert time.monotonic() - restarted < 60
            assert_each_asset_done_once(database, accepted)
        finally:
            if server.poll() is None:
                server.send_signal(signal.SIGTERM)
                server.wait(60)
            database.dispose()
