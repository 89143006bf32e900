"""Body limits hold on the byte stream itself, with or without Content-Length."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send

from kenning.api.middleware import MULTIPART_SLACK, BodyLimit, Observe, UrlGuard
from kenning.settings import Settings

CHUNK = 64 * 1024
SETTINGS = Settings(max_json_bytes=1024 * 1024, max_upload_bytes=4 * 1024 * 1024)


@dataclass
class Exchange:
    """One request through an ASGI app, with a client that never runs out of body."""

    pulled: int = 0
    messages: list[Message] = field(default_factory=list)

    @property
    def status(self) -> int:
        return int(self.messages[0]["status"])

    @property
    def body(self) -> Any:
        return json.loads(b"".join(m.get("body", b"") for m in self.messages[1:]))

    @property
    def headers(self) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.messages[0]["headers"]}


def run(app: Any, *, path: str = "/v1/assets", method: str = "POST", query: bytes = b"",
        headers: dict[str, str] | None = None, total: int | None = None) -> Exchange:
    """Send a body of ``total`` bytes (endless when None) in CHUNK pieces."""
    exchange = Exchange()
    chunks = _chunks(total)

    async def receive() -> Message:
        piece = next(chunks, None)
        if piece is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        exchange.pulled += len(piece)
        return {"type": "http.request", "body": piece, "more_body": True}

    async def send(message: Message) -> None:
        exchange.messages.append(message)

    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(),
             "query_string": query, "root_path": "", "scheme": "http", "http_version": "1.1",
             "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]}
    asyncio.run(app(scope, receive, send))
    return exchange


def _chunks(total: int | None) -> Iterator[bytes]:
    sent = 0
    while total is None or sent < total:
        size = CHUNK if total is None else min(CHUNK, total - sent)
        sent += size
        yield b"x" * size


async def reads_everything(scope: Scope, receive: Receive, send: Send) -> None:
    """A route that reads the whole body, like request.body() or request.form()."""
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    await _answer(send, 200, {"read": size})


async def swallows_errors(scope: Scope, receive: Receive, send: Send) -> None:
    """A framework that turns a failed body read into its own 400 (as FastAPI does)."""
    try:
        await reads_everything(scope, receive, send)
    except Exception:
        await _answer(send, 400, {"detail": "There was an error parsing the body"})


async def reads_nothing(scope: Scope, receive: Receive, send: Send) -> None:
    await _answer(send, 200, {"ok": True})


async def _answer(send: Send, status: int, body: Any) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": json.dumps(body).encode()})


JSON = {"Content-Type": "application/json"}
MULTIPART = {"Content-Type": "multipart/form-data; boundary=x"}


@pytest.mark.parametrize("inner", [reads_everything, swallows_errors],
                         ids=["error-propagates", "framework-answers-400"])
def test_chunked_json_stops_at_the_json_limit(inner: Any) -> None:
    exchange = run(BodyLimit(inner, SETTINGS), headers=JSON)
    assert exchange.status == 413
    assert exchange.body["error"]["code"] == "body_too_large"
    assert exchange.body["error"]["details"]["limit"] == SETTINGS.max_json_bytes
    assert SETTINGS.max_json_bytes < exchange.pulled <= SETTINGS.max_json_bytes + CHUNK
    assert len(exchange.messages) == 2  # only our answer: the app's 400 never went out


def test_a_body_without_content_type_is_bounded_as_json() -> None:
    exchange = run(BodyLimit(reads_everything, SETTINGS))
    assert (exchange.status, exchange.body["error"]["code"]) == (413, "body_too_large")
    assert exchange.pulled <= SETTINGS.max_json_bytes + CHUNK


def test_chunked_multipart_stops_at_the_upload_limit() -> None:
    exchange = run(BodyLimit(reads_everything, SETTINGS), headers=MULTIPART)
    limit = SETTINGS.max_upload_bytes + MULTIPART_SLACK
    assert (exchange.status, exchange.body["error"]["code"]) == (413, "file_too_large")
    assert limit < exchange.pulled <= limit + CHUNK


@pytest.mark.parametrize(("headers", "declared", "code"), [
    (JSON, 1024 * 1024 + 1, "body_too_large"),
    (MULTIPART, 4 * 1024 * 1024 + MULTIPART_SLACK + 1, "file_too_large"),
    (JSON, 10**12, "file_too_large"),  # past anything the server accepts
])
def test_a_declared_length_past_the_limit_is_refused_before_any_read(
    headers: dict[str, str], declared: int, code: str
) -> None:
    exchange = run(BodyLimit(reads_everything, SETTINGS),
                   headers={**headers, "Content-Length": str(declared)})
    assert (exchange.status, exchange.body["error"]["code"]) == (413, code)
    assert exchange.pulled == 0


@pytest.mark.parametrize(("headers", "size"), [
    (JSON, 1024 * 1024), (MULTIPART, 4 * 1024 * 1024 + MULTIPART_SLACK),
])
def test_a_body_at_the_limit_passes(headers: dict[str, str], size: int) -> None:
    exchange = run(BodyLimit(reads_everything, SETTINGS), headers=headers, total=size)
    assert (exchange.status, exchange.body) == (200, {"read": size})


def test_a_route_that_reads_no_body_is_not_refused() -> None:
    exchange = run(BodyLimit(reads_nothing, SETTINGS), method="GET", path="/healthz",
                   headers={"Content-Length": str(10**12)})
    assert (exchange.status, exchange.pulled) == (200, 0)


def test_limits_are_read_from_the_settings_on_every_request() -> None:
    settings = Settings(max_json_bytes=10 * CHUNK)
    app = BodyLimit(reads_everything, settings)
    assert run(app, headers=JSON, total=8 * CHUNK).status == 200
    settings.max_json_bytes = 4 * CHUNK
    assert run(app, headers=JSON, total=8 * CHUNK).status == 413


@pytest.mark.parametrize(("path", "query", "status"), [
    ("/v1/assets/a\x00b", b"", 404),
    ("/v1/assets/abc/segments", b"kind=%00", 422),
    ("/v1/audit", b"action=a\x00", 422),
    ("/v1/assets/abc", b"kind=%2500", 200),  # the text "%00", not a NUL
    ("/healthz", b"x=%00", 200),  # no parameters outside /v1
])
def test_no_nul_reaches_a_query(path: str, query: bytes, status: int) -> None:
    exchange = run(UrlGuard(reads_nothing), method="GET", path=path, query=query)
    assert exchange.status == status
    if status != 200:
        assert exchange.body["error"]["code"] in ("not_found", "invalid_request")


@pytest.mark.parametrize(("offered", "echoed"), [
    ("req-123", True), ("x" * 129, False), ("a b", False), ("", False),
])
def test_request_ids(offered: str, echoed: bool) -> None:
    headers = {"X-Request-ID": offered} if offered else {}
    exchange = run(Observe(reads_nothing), method="GET", path="/healthz", headers=headers)
    request_id = exchange.headers["x-request-id"]
    assert (request_id == offered) is echoed
    assert 1 <= len(request_id) <= 128
