"""Lifecycle: delete from every index, signed webhooks, dead letters and redrive,
backpressure."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from kenning.api.app import create_app
from kenning.container import Kenning
from kenning.media.kinds import MediaKind
from kenning.services.webhooks import verify
from kenning.stores.blobs.lifetime import BlobCollector
from kenning.stores.bundle import hash_namespace, vector_namespace
from kenning.stores.metadata.tables import Asset
from tests.e2e.conftest import Api, cluster_kenning, e2e_settings
from tests.fixtures import media

pytestmark = pytest.mark.slow


@pytest.fixture(params=["embedded", "cluster"])
def private_api(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Api]:
    """An app that may call loopback webhooks (the receiver runs on 127.0.0.1), on each
    profile."""
    options: dict[str, object] = {"allow_private_urls": True, "webhook_max_attempts": 3}
    if request.param == "embedded":
        context: AbstractContextManager[Kenning] = nullcontext(
            Kenning(e2e_settings(tmp_path, **options)))
    else:
        context = cluster_kenning(tmp_path, request.getfixturevalue("pgvector_server"),
                                  **options)
    with context as kenning, TestClient(create_app(kenning)) as client:
        yield Api(client, kenning, (tmp_path / "bootstrap_api_key").read_text().strip(), tmp_path)


class _Receiver(BaseHTTPRequestHandler):
    calls: list[dict[str, Any]] = []
    fail_first = 0

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).calls.append({"headers": dict(self.headers), "body": body})
        failing = len(type(self).calls) <= type(self).fail_first
        self.send_response(500 if failing else 204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def receiver() -> Iterator[tuple[str, type[_Receiver]]]:
    handler = type("Receiver", (_Receiver,), {"calls": [], "fail_first": 1})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", handler
    server.shutdown()


def test_webhook_is_signed_retried_and_visible(
    private_api: Api, receiver: tuple[str, type[_Receiver]]
) -> None:
    url, handler = receiver
    r = private_api.client.post("/v1/assets", headers=private_api.headers, json={
        "text": "Rowing crews raced on the Yarra river at dawn.", "callback_url": url})
    asset_id = r.json()["asset_id"]
    private_api.wait()
    deadline_body: dict[str, Any] = {}
    for _ in range(200):
        deadline_body = private_api.client.get(
            f"/v1/assets/{asset_id}", headers=private_api.headers).json()
        if deadline_body["webhook_deliveries"] and (
            deadline_body["webhook_deliveries"][0]["state"] == "delivered"
        ):
            break
        threading.Event().wait(0.05)
    delivery = deadline_body["webhook_deliveries"][0]
    assert delivery["state"] == "delivered" and delivery["attempts"] == 2
    assert delivery["last_status"] == 204
    assert len(handler.calls) == 2  # the first answered 500, the retry succeeded
    call = handler.calls[-1]
    tenant_id = private_api.kenning.tenants.authenticate(private_api.key).tenant_id
    secret = private_api.kenning.tenants.webhook_secret(tenant_id)
    assert verify(secret, call["headers"]["X-Kenning-Timestamp"], call["body"],
                  call["headers"]["X-Kenning-Signature"])
    assert not verify("wrong-secret", call["headers"]["X-Kenning-Timestamp"], call["body"],
                      call["headers"]["X-Kenning-Signature"])
    payload = json.loads(call["body"])
    assert payload["asset_id"] == asset_id and payload["event"] == "asset.ready"


def test_delete_removes_asset_from_every_index(private_api: Api) -> None:
    k = private_api.kenning
    h = private_api.headers
    text_id = private_api.client.post("/v1/assets", headers=h, json={
        "text": "Quokkas on Rottnest Island are photographed by tourists every day."}
    ).json()["asset_id"]
    image_id = private_api.client.post("/v1/assets", headers=h, files={
        "file": ("page.png", media.image_bytes("page.png"))}).json()["asset_id"]
    private_api.wait()
    tenant = k.tenants.authenticate(private_api.key).tenant_id
    space = k.resources.embedder.model_id
    before = (k.stores.keyword.count(tenant), k.stores.vectors.count(vector_namespace(
        tenant, space)), k.stores.hashes.count(hash_namespace(tenant, "pdq")))
    assert all(before)
    sha = private_api.client.get(f"/v1/assets/{image_id}", headers=h).json()["sha256"]
    assert k.stores.blobs.exists(sha)

    for asset_id in (text_id, image_id):
        assert private_api.client.delete(f"/v1/assets/{asset_id}", headers=h).status_code == 204
        assert private_api.client.get(f"/v1/assets/{asset_id}", headers=h).status_code == 404
    assert k.stores.keyword.count(tenant) == 0
    assert k.stores.vectors.count(vector_namespace(tenant, space)) == 0
    assert k.stores.vectors.count(vector_namespace(tenant, space, asset_level=True)) == 0
    assert k.stores.hashes.count(hash_namespace(tenant, "pdq")) == 0
    # The bytes are released, not destroyed: the collector takes them after its grace.
    assert k.stores.blobs.exists(sha)
    assert k.blob_collector.collect().deleted == 0
    assert k.stores.blobs.exists(sha)
    now = BlobCollector(k.stores.db, k.stores.blobs, grace_s=0).collect()
    assert now.deleted >= 2  # the image, the text and the thumbnail
    assert not k.stores.blobs.exists(sha)
    assert not any(p.is_file() for p in k.settings.blob_dir.rglob("*"))
    for mode in ("keyword", "semantic"):
        hits = private_api.client.post("/v1/search", headers=h,
                                       json={"query": "Quokkas Rottnest", "mode": mode})
        assert hits.json()["hits"] == []
    audit = private_api.client.get("/v1/audit", headers=h,
                                   params={"action": "asset.delete"}).json()
    assert {e["subject_id"] for e in audit} == {text_id, image_id}
    assert all(e["before"]["sha256"] for e in audit)


def test_failing_stage_dead_letters_without_blocking_others_then_redrives(
    private_api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    k, h = private_api.kenning, private_api.headers
    language = k.registry.get("text.language")

    def broken(batch: Any) -> Any:
        raise RuntimeError("language model unavailable")

    monkeypatch.setattr(language, "process", broken)  # test double: a failing processor
    asset_id = private_api.client.post("/v1/assets", headers=h, json={
        "text": "Sailors crossed Bass Strait in the Sydney to Hobart yacht race."}
    ).json()["asset_id"]
    private_api.wait()
    body = private_api.client.get(f"/v1/assets/{asset_id}", headers=h).json()
    stages = {s["processor"]: s for s in body["job"]["stages"]}
    assert body["status"] == "partial"
    assert stages["text.language"]["state"] == "failed"
    assert "language model unavailable" in stages["text.language"]["error"]
    assert stages["text.language"]["attempts"] == k.settings.max_retries + 1
    for unrelated in ("text.chunk", "text.embed", "text.keyword"):
        assert stages[unrelated]["state"] == "succeeded"
    hits = private_api.client.post("/v1/search", headers=h,
                                   json={"query": "yacht race", "mode": "keyword"}).json()
    assert hits["hits"][0]["asset_id"] == asset_id  # searchable despite the failure

    dead: list[dict[str, Any]] = []
    for _ in range(100):
        dead = private_api.client.get("/v1/admin/dead-letters", headers=h).json()
        if dead:
            break
        threading.Event().wait(0.05)
    assert [d["stage"] for d in dead] == ["text.language"]
    assert dead[0]["asset_id"] == asset_id
    other = private_api.new_tenant("nosy")
    assert private_api.client.get("/v1/admin/dead-letters", headers=other).json() == []

    monkeypatch.undo()
    redriven = private_api.client.post("/v1/admin/dead-letters", headers=h, json={}).json()
    assert redriven["redriven"] == [dead[0]["id"]]
    private_api.wait()
    body = private_api.client.get(f"/v1/assets/{asset_id}", headers=h).json()
    assert body["status"] == "ready" and body["language"] == "en"
    assert private_api.client.get("/v1/admin/dead-letters", headers=h).json() == []
    audit = private_api.client.get("/v1/audit", headers=h,
                                   params={"action": "deadletter.redrive"}).json()
    assert len(audit) == 1 and audit[0]["after"]["stage"] == "text.language"


def test_backpressure_answers_429_with_retry_after(tmp_path: Path) -> None:
    kenning = Kenning(e2e_settings(tmp_path, workers=0, max_queued_stages=3, retry_after_s=7))
    with TestClient(create_app(kenning)) as client:
        headers = {"Authorization": "Bearer "
                   + (tmp_path / "bootstrap_api_key").read_text().strip()}
        first = client.post("/v1/assets", headers=headers, json={"text": "one item of news"})
        assert first.status_code == 202  # a text asset creates its stages (3 or more)
        statuses = [
            client.post("/v1/assets", headers=headers, json={"text": f"news item {i}"})
            for i in range(5)
        ]
        refused = [r for r in statuses if r.status_code == 429]
        assert refused, [r.status_code for r in statuses]
        assert refused[0].headers["Retry-After"] == "7"
        assert refused[0].json()["error"]["code"] == "backpressure"
        # The kept counter is what backpressure read; refused requests stored nothing.
        assert sum(kenning.ingest.load_by_tenant().values()) == (
            kenning.ingest.unfinished_stages())
        with kenning.stores.db.session(write=False) as s:
            assets = s.scalar(select(func.count()).select_from(Asset))
        assert assets == 1 + sum(r.status_code == 202 for r in statuses)


def test_one_tenants_flood_is_refused_while_another_tenant_is_admitted(
    tmp_path: Path,
) -> None:
    kenning = Kenning(e2e_settings(tmp_path, workers=0))
    # Bounds in text assets' worth of unfinished stages: each tenant may hold 3 assets'
    # work, all together 4.
    per_asset = len(kenning.registry.plan(MediaKind.TEXT))
    kenning.settings.max_queued_stages_per_tenant = 3 * per_asset
    kenning.settings.max_queued_stages = 4 * per_asset
    with TestClient(create_app(kenning)) as client:
        flood = {"Authorization": "Bearer "
                 + (tmp_path / "bootstrap_api_key").read_text().strip()}
        quiet = Api(client, kenning, "", tmp_path).new_tenant("quiet")
        answers = [client.post("/v1/assets", headers=flood, json={"text": f"flood item {i}"})
                   for i in range(6)]
        assert [a.status_code for a in answers] == [202] * 3 + [429] * 3
        assert "your tenant" in answers[-1].json()["error"]["message"]
        # The flooding tenant is at its own bound; the quiet one still gets in, and keeps
        # getting in up to its fair share once the global bound is reached.
        first = client.post("/v1/assets", headers=quiet, json={"text": "a quiet report"})
        assert first.status_code == 202, first.text
        load = kenning.ingest.load_by_tenant()
        assert sum(load.values()) >= kenning.settings.max_queued_stages
        second = client.post("/v1/assets", headers=quiet, json={"text": "another report"})
        assert second.status_code == 202, second.text
        third = client.post("/v1/assets", headers=quiet, json={"text": "one report more"})
        assert third.status_code == 429
        assert "fair share" in third.json()["error"]["message"]
