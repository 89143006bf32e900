"""A pipeline worker on a host of its own (a network namespace), cut off from every server
for 12 s while it holds work: the worker on the servers' host goes on finishing jobs
meanwhile, the cut-off worker finishes nothing, and after the partition heals every
accepted asset ends ready, exactly once. The leases it held (a step's time limit plus
30 s) outlast the cut: it settles its own batch when the network comes back, and no run
is claimed twice.

The cut-off worker also holds doorbells: a step's one message on the broker, taken
(prefetched, or being answered) just before the cut. With default settings the
reconciler rings such a step again once its work has waited 5 s with no doorbell ready
on the queue (this test found that it used to count a held doorbell as pending, and so
waited max(lease_s, retry_max_backoff), 120 s by default, with the step stalled for
every worker)."""

from __future__ import annotations

import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from kenning.cli.client import wait_ready
from kenning.stores.metadata import Database
from kenning.stores.metadata.tables import Job, StageRun
from tests.fixtures import media, netns
from tests.fixtures.outcomes import PatientClient, assert_each_asset_done_once
from tests.fixtures.postgres import PostgresServer
from tests.fixtures.queues import RedisServer
from tests.fixtures.s3 import BUCKET, SeaweedServer
from tests.fixtures.servers import free_port, serve, stop_all, wait_jobs_done, worker

pytestmark = pytest.mark.slow

CUT_S = 12.0
ASSETS = 240


def _runs(database: Database, worker: str, state: str) -> set[tuple[str, int]]:
    """(id, attempt) of the runs in ``state`` that ``worker`` (host:pid) claimed last."""
    with database.session(write=False) as s:
        return set(s.execute(select(StageRun.id, StageRun.attempts).where(
            StageRun.worker == worker, StageRun.state == state)).tuples())


def _jobs_finished(database: Database) -> int:
    with database.session(write=False) as s:
        return int(s.scalar(select(func.count()).select_from(Job).where(
            Job.state.not_in(("queued", "running")))) or 0)


def test_a_worker_cut_off_mid_batch_loses_and_doubles_nothing(tmp_path: Path) -> None:
    articles = list(dict.fromkeys(a.text for a in media.news()))
    texts = [f"{articles[i % len(articles)]}\n\nCopy {i}." for i in range(ASSETS)]
    with netns.test_host() as host, ExitStack() as stack:
        s3 = SeaweedServer(ip=host.host_ip)
        stack.callback(s3.close)
        with ThreadPoolExecutor(1) as pool:  # S3 comes up (seconds) while the rest does
            s3_up = pool.submit(s3.start)
            pg = PostgresServer(listen=f"127.0.0.1,{host.host_ip}")
            stack.callback(pg.close)
            pg.start()
            broker = RedisServer(bind=f"127.0.0.1 {host.host_ip}")
            stack.callback(broker.close)
            broker.start()
            info = s3_up.result()
        processes: list[subprocess.Popen[bytes]] = []
        stack.callback(stop_all, processes)  # unwound first: before the servers close

        # Processes on this host use loopback; the other host reaches only host_ip.
        env = {"KENNING_DATABASE_URL": pg.url, "KENNING_BROKER_URL": broker.url,
               "KENNING_BLOB_URL": f"s3://{BUCKET}/partition",
               "KENNING_S3_ENDPOINT_URL": info.endpoint_url,
               "KENNING_S3_ACCESS_KEY": info.access_key,
               "KENNING_S3_SECRET_KEY": info.secret_key, "KENNING_STEP_BATCH_ITEMS": "8"}
        remote = {**env, "KENNING_BROKER_URL": f"redis://{host.host_ip}:{broker.port}/0",
                  "KENNING_DATABASE_URL":
                      f"postgresql+psycopg://postgres@{host.host_ip}:{pg.port}/postgres"}
        (tmp_path / "api").mkdir()
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        api = serve(tmp_path / "api", port, "--api-only", env=env)
        processes.append(api)
        wait_ready(url, alive=lambda: api.poll() is None, timeout_s=180)
        local = worker(tmp_path / "local-worker", env)
        processes.append(local)
        away = worker(tmp_path / "remote-worker", remote, start=host.run)
        processes.append(away)
        local_id, away_id = (f"{socket.gethostname()}:{p.pid}" for p in (local, away))

        key = (tmp_path / "api" / "bootstrap_api_key").read_text().strip()
        client = PatientClient(httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60))
        for i in range(0, ASSETS, 20):
            client.send(texts[i:i + 20])
        database = Database(pg.url)
        stack.callback(database.dispose)

        # Cut the other host off once it has done real work, while it holds a batch. A
        # settle already on its way when the cut falls may land: then heal, cut again.
        deadline = time.monotonic() + 120
        held: set[tuple[str, int]] = set()
        for _ in range(5):
            while not (len(_runs(database, away_id, "succeeded")) >= 16
                       and _runs(database, away_id, "running")):
                assert time.monotonic() < deadline, "the remote worker never got to work"
                assert away.poll() is None and local.poll() is None
                time.sleep(0.05)
            assert host.can_reach(pg.port)
            host.cut()
            cut_at = time.monotonic()
            time.sleep(1.0)  # a commit already on its way has landed by now, or never will
            held = _runs(database, away_id, "running")
            if held:
                break
            host.heal()
        away_done = _runs(database, away_id, "succeeded")
        local_done = len(_runs(database, local_id, "succeeded"))
        finished = _jobs_finished(database)
        assert held, "the remote worker never held a batch when it was cut off"
        assert finished < ASSETS, "nothing was left in flight"
        assert not host.can_reach(pg.port)  # packets dropped: no refusal, no reset
        while time.monotonic() - cut_at < CUT_S:
            time.sleep(0.1)
        # This host's worker went on; the cut-off one finished nothing.
        assert len(_runs(database, local_id, "succeeded")) > local_done
        assert _jobs_finished(database) > finished
        assert _runs(database, away_id, "succeeded") == away_done
        host.heal()
        assert host.can_reach(pg.port)

        assert wait_jobs_done(database, 120) == 0, "work left unfinished after the heal"
        assert away.poll() is None and local.poll() is None  # neither worker died
        assert set(client.statuses) == {202}
        assert_each_asset_done_once(database, client.accepted)
        # What it held through the cut it settled itself afterwards, on the attempt it
        # had claimed: no lease lapsed, nothing was claimed twice.
        assert held <= _runs(database, away_id, "succeeded")
