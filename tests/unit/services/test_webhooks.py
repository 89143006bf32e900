"""Webhook delivery: signed, and pinned to the vetted address like URL ingest.

Receivers are real local HTTP servers; public names come from the stub network of
:mod:`tests.fixtures.net` (fake DNS for ``*.test``, the public address NATed to
loopback), so vetting, pinning and the HTTP exchange are the production code path.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from kenning.services.tenants import TenantService
from kenning.services.webhooks import WebhookService, verify
from kenning.settings import Settings
from kenning.stores.metadata import Database
from kenning.stores.metadata.tables import Asset, WebhookDelivery
from tests.conftest import migrated_database
from tests.fixtures.net import PUBLIC_IP, Net, fake_network, serve_http

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                   "all_proxy")


@dataclass
class Receiver:
    port: int
    status: int = 204
    location: str | None = None
    calls: list[dict[str, Any]] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    server: Any

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self) -> None:
        state: Receiver = self.server.state
        length = int(self.headers.get("Content-Length") or 0)
        state.calls.append({"method": self.command, "path": self.path,
                            "headers": dict(self.headers), "body": self.rfile.read(length)})
        self.send_response(state.status)
        if state.location:
            self.send_header("Location", state.location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = _answer
    do_GET = _answer
    do_CONNECT = _answer


def _serve() -> Iterator[Receiver]:
    yield from serve_http(_Handler, lambda port: Receiver(port=port))


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from _serve()


@pytest.fixture
def proxy() -> Iterator[Receiver]:
    """A server that would record any request sent to it as a proxy."""
    yield from _serve()


@pytest.fixture
def net(monkeypatch: pytest.MonkeyPatch) -> Net:
    return fake_network(monkeypatch)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    with migrated_database("sqlite", tmp_path) as database:
        yield database


@pytest.fixture
def tenant_id(db: Database) -> str:
    return TenantService(db).create_tenant("hooks")


def _delivery(db: Database, tenant_id: str, url: str) -> str:
    with db.session() as s:
        asset = Asset(tenant_id=tenant_id, kind="text", sha256=uuid.uuid4().hex * 2,
                      mime="text/plain", bytes=5, source="text", callback_url=url,
                      status="ready")
        s.add(asset)
        s.flush()
        delivery = WebhookDelivery(tenant_id=tenant_id, asset_id=asset.id, url=url,
                                   event="asset.ready",
                                   payload={"event": "asset.ready", "asset_id": asset.id})
        s.add(delivery)
        s.flush()
        return delivery.id


def _row(db: Database, delivery_id: str) -> WebhookDelivery:
    with db.session(write=False) as s:
        row = s.get(WebhookDelivery, delivery_id)
        assert row is not None
        return row


def _service(db: Database, **overrides: Any) -> WebhookService:
    return WebhookService(db, Settings(webhook_max_attempts=1, **overrides))


def test_dns_rebinding_cannot_turn_a_delivery_to_loopback(
    db: Database, tenant_id: str, receiver: Receiver, net: Net
) -> None:
    # The first answer is public (it passes the check); every later one is loopback.
    net.answers["rebind.test"] = [[PUBLIC_IP], ["127.0.0.1"]]
    delivery_id = _delivery(db, tenant_id, f"http://rebind.test:{receiver.port}/hook")
    assert _service(db).deliver(delivery_id) == "delivered"
    assert net.lookups == ["rebind.test"]  # resolved once, then pinned to that answer
    assert net.connects == [(PUBLIC_IP, receiver.port)]  # never to 127.0.0.1
    assert [c["headers"]["Host"] for c in receiver.calls] == [f"rebind.test:{receiver.port}"]


def test_private_target_is_refused_without_a_connection(
    db: Database, tenant_id: str, receiver: Receiver, net: Net
) -> None:
    net.answers["internal.test"] = [["10.1.2.3"]]
    for url in (f"http://127.0.0.1:{receiver.port}/hook", "http://internal.test/hook"):
        delivery_id = _delivery(db, tenant_id, url)
        assert _service(db).deliver(delivery_id) == "failed"
        row = _row(db, delivery_id)
        assert row.last_status is None
        assert row.last_error is not None and row.last_error.startswith("UrlNotAllowed")
    assert receiver.calls == [] and net.connects == []


def test_proxy_variables_from_the_environment_are_ignored(
    db: Database, tenant_id: str, receiver: Receiver, proxy: Receiver, net: Net,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.setenv(name, f"http://127.0.0.1:{proxy.port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    net.answers["public.test"] = [[PUBLIC_IP]]
    delivery_id = _delivery(db, tenant_id, f"http://public.test:{receiver.port}/hook")
    assert _service(db).deliver(delivery_id) == "delivered"
    assert proxy.calls == []
    assert len(receiver.calls) == 1
    assert net.connects == [(PUBLIC_IP, receiver.port)]


def test_redirects_are_not_followed(
    db: Database, tenant_id: str, receiver: Receiver, net: Net
) -> None:
    receiver.status, receiver.location = 307, f"http://127.0.0.1:{receiver.port}/internal"
    net.answers["public.test"] = [[PUBLIC_IP]]
    delivery_id = _delivery(db, tenant_id, f"http://public.test:{receiver.port}/hook")
    assert _service(db).deliver(delivery_id) == "failed"
    row = _row(db, delivery_id)
    assert (row.last_status, row.last_error) == (307, "HTTP 307")
    assert [c["path"] for c in receiver.calls] == ["/hook"]


def test_loopback_receiver_works_when_private_urls_are_allowed(
    db: Database, tenant_id: str, receiver: Receiver
) -> None:
    delivery_id = _delivery(db, tenant_id, f"http://127.0.0.1:{receiver.port}/hook")
    assert _service(db, allow_private_urls=True).deliver(delivery_id) == "delivered"
    row = _row(db, delivery_id)
    assert (row.state, row.attempts, row.last_status, row.last_error) == (
        "delivered", 1, 204, None)
    (call,) = receiver.calls
    secret = TenantService(db).webhook_secret(tenant_id)
    headers = call["headers"]
    assert verify(secret, headers["X-Kenning-Timestamp"], call["body"],
                  headers["X-Kenning-Signature"])
    assert headers["X-Kenning-Delivery"] == delivery_id
    assert json.loads(call["body"])["delivery_id"] == delivery_id


def test_a_failed_attempt_asks_for_a_retry_until_the_last(
    db: Database, tenant_id: str, receiver: Receiver
) -> None:
    receiver.status = 500
    delivery_id = _delivery(db, tenant_id, f"http://127.0.0.1:{receiver.port}/hook")
    service = WebhookService(db, Settings(allow_private_urls=True, webhook_max_attempts=2))
    with pytest.raises(Exception, match="attempt 1: HTTP 500"):
        service.deliver(delivery_id)
    assert service.deliver(delivery_id) == "failed"
    assert (_row(db, delivery_id).attempts, len(receiver.calls)) == (2, 2)
