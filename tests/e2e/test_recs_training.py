"""Ranker training end to end: a real server (uvicorn) with its worker threads, the
embedded SQLite broker, the CLI over HTTP. ``kenning recs train --wait`` queues a run
that a worker takes from the ``recs`` queue; the version it trains on the tenant's served
log (real news stories, a simulated log) is promoted and then serves the tenant's
recommendations (policy ``ranker:1``), while another tenant, with no engagement, gets a
rejected version of its own, keeps the blend, and never sees tenant A's versions."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn
from typer.testing import CliRunner, Result

from kenning.api.app import create_app
from kenning.cli.client import wait_ready
from kenning.cli.main import app as cli
from kenning.container import Kenning
from kenning.services.tenants import TenantService
from tests.e2e.conftest import e2e_settings
from tests.fixtures import media
from tests.unit.services.recommend.served_log import add_stories, impress, serve, simulate

pytestmark = pytest.mark.slow
NOW = datetime.now(UTC)


@dataclass
class Server:
    url: str
    kenning: Kenning
    keys: dict[str, str]

    def http(self, tenant: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60,
                            headers={"Authorization": f"Bearer {self.keys[tenant]}"})

    def cli(self, tenant: str, *args: str) -> Result:
        return CliRunner().invoke(cli, ["recs", *args, "--api-url", self.url],
                                  env={"KENNING_API_KEY": self.keys[tenant], "COLUMNS": "200"})


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir: Path = tmp_path_factory.mktemp("recs-training")
    kenning = Kenning(e2e_settings(data_dir))
    tenants = TenantService(kenning.stores.db)
    keys = {}
    for name in ("a", "b"):
        tenant_id = tenants.create_tenant(f"recs-{name}-{uuid.uuid4().hex[:6]}")
        keys[name] = tenants.create_key(tenant_id).key
        with kenning.stores.db.session() as s:
            if name == "a":
                stories = add_stories(s, tenant_id, media.news(40), NOW - timedelta(days=30),
                                      authors=8)
                simulate(s, tenant_id, stories, np.random.default_rng(5), requests=700,
                         start=NOW - timedelta(days=20), end=NOW - timedelta(days=1, hours=1))
            else:
                stories = add_stories(s, tenant_id, media.news(5), NOW - timedelta(days=30))
                for q in range(30):  # shown, never engaged with
                    at = NOW - timedelta(days=10) + q * timedelta(hours=4)
                    impress(s, tenant_id, "bob", serve(s, tenant_id, "bob", at, stories),
                            stories, at)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    uv = uvicorn.Server(uvicorn.Config(create_app(kenning), log_config=None, access_log=False))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_ready(url, alive=thread.is_alive, timeout_s=120, poll_s=0.1)
        yield Server(url, kenning, keys)
    finally:
        uv.should_exit = True
        thread.join(60)
        sock.close()


def _finished(server: Server, tenant: str, model_id: str, timeout_s: float = 240
              ) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    with server.http(tenant) as http:
        while time.monotonic() < deadline:
            model: dict[str, Any] = http.get(f"/v1/recommendations/models/{model_id}").json()
            if model["state"] in ("serving", "rejected"):
                return model
            time.sleep(0.2)
    raise AssertionError(f"version {model_id} still training after {timeout_s} s")


def test_the_cli_trains_on_a_worker_and_the_version_serves(server: Server) -> None:
    result = server.cli("a", "train", "--wait", "--timeout", "240")
    assert result.exit_code == 0, result.output
    model = json.loads(result.stdout)
    assert model["state"] == "serving" and model["version"] == 1, model["gate"]
    offline = model["metrics"]["offline"]
    assert offline["candidate"]["ndcg_debiased"] > offline["logged"]["ndcg_debiased"]
    assert set(offline["candidate"]) >= {"ndcg", "recall", "coverage", "intra_list_diversity",
                                         "author_diversity", "novelty"}
    assert model["metrics"]["offpolicy"]["candidate"]["snips"] is not None
    listed = server.cli("a", "models")
    assert listed.exit_code == 0, listed.output
    assert [m["state"] for m in json.loads(listed.stdout)["models"]] == ["serving"]
    with server.http("a") as http:
        answer = http.get("/v1/users/reader-1/recommendations", params={"limit": 5})
    assert answer.status_code == 200, answer.text
    assert answer.json()["policy"] == "ranker:1"


def test_another_tenant_trains_its_own_and_keeps_the_blend(server: Server) -> None:
    with server.http("b") as http:
        assert http.get("/v1/recommendations/models").json() == {"models": []}
        queued = http.post("/v1/recommendations/models")
        assert queued.status_code == 202 and queued.json()["version"] == 1
    model = _finished(server, "b", queued.json()["id"])
    assert model["state"] == "rejected" and model["gate"]["reasons"][0].startswith(
        "cannot fit")
    with server.http("b") as http:
        assert [m["id"] for m in http.get("/v1/recommendations/models").json()["models"]] == [
            model["id"]]
        answer = http.get("/v1/users/bob/recommendations", params={"limit": 3})
        assert answer.status_code == 200 and answer.json()["policy"] == "blend"
    with server.http("a") as http:
        mine = http.get("/v1/recommendations/models").json()["models"]
        assert model["id"] not in {m["id"] for m in mine}
        assert http.get(f"/v1/recommendations/models/{model['id']}").status_code == 404
    rejected = server.cli("b", "train", "--wait", "--timeout", "240")
    assert rejected.exit_code == 1 and json.loads(rejected.stdout)["state"] == "rejected"
