"""Hostile input at the API door: a 4xx with a stable code, nothing stored, never a 500.

One regression test per class the adversarial review found (metadata, strict JSON, body
limits, NUL), through the real app and store; no models are needed (see conftest).
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.types import Message

from kenning.api.errors import ErrorResponse
from kenning.errors import Backpressure
from kenning.settings import Settings
from kenning.stores.metadata.tables import Asset
from tests.unit.api.conftest import Door


def refused(door: Door, response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = ErrorResponse.model_validate(response.json())
    assert body.error.code == code, response.text
    assert body.error.message
    assert door.client.get("/healthz").status_code == 200
    return response.json()  # type: ignore[no-any-return]


def post_raw(door: Door, path: str, raw: bytes) -> httpx.Response:
    response: httpx.Response = door.client.post(path, headers=door.json_headers, content=raw)
    return response


def deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


# --- 1. metadata -------------------------------------------------------------------------
BAD_JSON_METADATA = [
    (b'{"a": NaN}', 422, "invalid_json"),
    (b'{"a": [Infinity]}', 422, "invalid_json"),
    (b'{"a": "\\ud800"}', 422, "invalid_json"),
    (b'{"a": "x\\u0000"}', 422, "invalid_json"),
    (b'{"a": ' + deep(300) + b"}", 422, "invalid_json"),  # past the body's own bound
    (b'{"a": ' + deep(8) + b"}", 422, "invalid_metadata"),
    (b'{"a\\"b": 1}', 422, "invalid_metadata"),
    (b'{"": 1}', 422, "invalid_metadata"),
    (b'{"a\\nb": 1}', 422, "invalid_metadata"),
    (b'{"k": "' + b"v" * 70_000 + b'"}', 413, "metadata_too_large"),
]
IDS = ["nan", "infinity", "surrogate", "nul", "nested-300", "nested-9", "quote-key",
       "empty-key", "newline-key", "too-large"]


@pytest.mark.parametrize(("metadata", "status", "code"), BAD_JSON_METADATA, ids=IDS)
def test_bad_metadata_in_json_is_refused_without_trace(
    door: Door, metadata: bytes, status: int, code: str
) -> None:
    before = door.footprint()
    raw = b'{"text": "A story about metadata at the door.", "metadata": ' + metadata + b"}"
    refused(door, post_raw(door, "/v1/assets", raw), status, code)
    assert door.footprint() == before


MULTIPART_CODES = {"invalid_json": "invalid_metadata"}
"""In a form, the metadata field is JSON of its own: any flaw is ``invalid_metadata``."""


@pytest.mark.parametrize(("metadata", "status", "code"), BAD_JSON_METADATA, ids=IDS)
def test_bad_metadata_in_a_form_is_refused_without_trace(
    door: Door, metadata: bytes, status: int, code: str
) -> None:
    before = door.footprint()
    r = door.client.post("/v1/assets", headers=door.headers,
                         files={"file": ("note.txt", b"A note about forms at the door.")},
                         data={"metadata": metadata.decode()})
    refused(door, r, status, MULTIPART_CODES.get(code, code))
    assert door.footprint() == before


def test_good_metadata_round_trips(door: Door) -> None:
    metadata = {"a b": 1, "a.b": 2.5, "a:b": True, "a-b": None, "Straße": ["x", {"y": "z"}]}
    r = door.client.post("/v1/assets", headers=door.headers, json={
        "text": "Metadata that follows every rule.", "metadata": metadata})
    assert r.status_code == 202, r.text
    got = door.client.get(f"/v1/assets/{r.json()['asset_id']}", headers=door.headers)
    assert got.json()["metadata"] == metadata


def _stored_before_the_fix(door: Door, meta: dict[str, Any]) -> str:
    """An asset row written the way the old door let metadata through (Python's json)."""
    tenant = door.kenning.tenants.authenticate(door.key).tenant_id
    with door.kenning.stores.db.session() as s:
        asset = Asset(tenant_id=tenant, kind="text", sha256=uuid.uuid4().hex * 2,
                      mime="text/plain", bytes=1, source="text", meta=meta)
        s.add(asset)
        s.flush()
        return asset.id


def test_reads_repair_rows_stored_before_the_fix(door: Door) -> None:
    nested: Any = "leaf"
    for _ in range(300):
        nested = [nested]
    asset_id = _stored_before_the_fix(door, {
        "nan": math.nan, "inf": -math.inf, "sur": "a\ud800", "nul": "a\x00b", "deep": nested,
        "desk": "old",
    })
    r = door.client.get(f"/v1/assets/{asset_id}", headers=door.headers)
    assert r.status_code == 200, r.text
    meta = r.json()["metadata"]
    assert (meta["nan"], meta["inf"], meta["sur"], meta["nul"]) == (None, None, "a\ufffd", "ab")
    assert json.dumps(meta["deep"]).count("[") < 8
    # Every metadata-filtered search of the tenant still answers.
    r = door.client.post("/v1/search", headers=door.headers, json={
        "query": "anything", "mode": "keyword", "filters": {"metadata": {"desk": "old"}}})
    assert r.status_code == 200, r.text


# --- 2. strict JSON everywhere, and the other 500s -----------------------------------------
@pytest.mark.parametrize("path", ["/v1/assets", "/v1/assets/batch", "/v1/similar",
                                  "/v1/search"])
@pytest.mark.parametrize("depth", [65, 1000, 10_000])
def test_deep_nesting_is_invalid_json(door: Door, path: str, depth: int) -> None:
    before = door.footprint()
    refused(door, post_raw(door, path, deep(depth)), 422, "invalid_json")
    assert door.footprint() == before


@pytest.mark.parametrize("raw", [
    b'{"text": "caf\\udce9 culture"}',
    b'{"text": "\\ud83d alone"}',
    b'{"text": "ok", "title": "\\udfff"}',
], ids=["low", "high", "title"])
def test_a_lone_surrogate_is_invalid_json(door: Door, raw: bytes) -> None:
    before = door.footprint()
    refused(door, post_raw(door, "/v1/assets", raw), 422, "invalid_json")
    assert door.footprint() == before


@pytest.mark.parametrize("threshold", [b"NaN", b"Infinity", b"-Infinity", b"1e999"])
def test_a_non_finite_threshold_in_json_is_invalid_json(door: Door, threshold: bytes) -> None:
    raw = b'{"text": "a claim to check", "threshold": ' + threshold + b"}"
    refused(door, post_raw(door, "/v1/similar", raw), 422, "invalid_json")


@pytest.mark.parametrize("threshold", ["NaN", "nan", "Infinity", "-inf", "1e999"])
def test_a_non_finite_threshold_in_a_form_is_invalid_request(
    door: Door, threshold: str
) -> None:
    r = door.client.post("/v1/similar", headers=door.headers,
                         files={"file": ("claim.txt", b"a claim to check")},
                         data={"threshold": threshold})
    refused(door, r, 422, "invalid_request")


@pytest.mark.parametrize("threshold", [1.01, -1.5, 31])
def test_a_text_threshold_is_a_cosine(door: Door, threshold: float) -> None:
    r = door.client.post("/v1/similar", headers=door.headers,
                         json={"text": "a claim to check", "threshold": threshold})
    refused(door, r, 422, "bad_threshold")


@pytest.mark.parametrize(("raw", "code"), [
    (b'{"query": "x", "filters": {"metadata": {"a\\"b": 1}}}', "invalid_filter"),
    (b'{"query": "x", "filters": {"metadata": {"a\\\\b": 1}}}', "invalid_filter"),
    (b'{"query": "x", "filters": {"metadata": {"a\\tb": 1}}}', "invalid_filter"),
    (b'{"query": "x", "filters": {"metadata": {"a\\u0000b": 1}}}', "invalid_json"),
    (b'{"query": "x", "filters": {"metadata": {"a\\ud800": 1}}}', "invalid_json"),
    (b'{"query": "x", "filters": {"metadata": {"a": NaN}}}', "invalid_json"),
    (b'{"query": "x", "filters": {"metadata": {"a": "\\u0000"}}}', "invalid_json"),
], ids=["quote", "backslash", "tab", "nul", "surrogate", "nan-value", "nul-value"])
def test_bad_filter_keys_and_values_are_refused(door: Door, raw: bytes, code: str) -> None:
    refused(door, post_raw(door, "/v1/search", raw), 422, code)


# --- batch: validated as a whole, then one result per item -----------------------------------
@pytest.mark.parametrize(("second", "status", "code"), [
    (b'{"text": "second", "metadata": {"a": NaN}}', 422, "invalid_json"),
    (b'{"text": "second \\ud800"}', 422, "invalid_json"),
    (b'{"text": "second", "metadata": {"a\\"": 1}}', 422, "invalid_metadata"),
    (b'{"text": "second", "metadata": {"k": "' + b"v" * 70_000 + b'"}}', 413,
     "metadata_too_large"),
    (b'{"text": "second", "url": "http://example.org"}', 422, "invalid_request"),
    (b'{"text": "second", "title": "' + b"t" * 1001 + b'"}', 422, "invalid_request"),
], ids=["nan", "surrogate", "bad-key", "metadata-size", "two-sources", "long-title"])
def test_a_bad_second_item_refuses_the_whole_batch(
    door: Door, second: bytes, status: int, code: str
) -> None:
    before = door.footprint()
    raw = b'{"items": [{"text": "The first item of a batch that must not be stored."}, ' + (
        second + b"]}")
    body = refused(door, post_raw(door, "/v1/assets/batch", raw), status, code)
    if code in ("invalid_metadata", "metadata_too_large"):
        assert body["error"]["details"]["index"] == 1
    assert door.footprint() == before


def test_an_unexpected_failure_is_that_items_error(
    door: Door, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kenning.ingest import service

    real = service.validate_upload

    def flaky(data: bytes, settings: Settings) -> Any:
        if data.startswith(b"explode"):
            raise RuntimeError("a bug, not bad input")
        if data.startswith(b"busy"):
            raise Backpressure("busy", retry_after=1)  # the decode budget, for this item
        return real(data, settings)

    monkeypatch.setattr(service, "validate_upload", flaky)
    r = door.client.post("/v1/assets/batch", headers=door.headers, json={"items": [
        {"text": "A first item that is stored."}, {"text": "explode"}, {"text": "busy"},
        {"text": "A fourth item that is stored too."}]})
    assert r.status_code == 202, r.text
    body = r.json()
    assert (body["accepted"], body["rejected"]) == (2, 2)
    assert body["results"][1]["error"] == {
        "code": "internal_error", "message": "unexpected server error", "status": 500}
    assert body["results"][2]["error"]["code"] == "backpressure"
    assert body["results"][3]["accepted"]["asset_id"]


def test_too_many_items_are_refused_before_validation(door: Door) -> None:
    items = [{"text": f"item {i}"} for i in range(door.kenning.settings.max_batch_items + 1)]
    refused(door, door.client.post("/v1/assets/batch", headers=door.headers,
                                   json={"items": items}), 413, "batch_too_large")


# --- 3. limits -----------------------------------------------------------------------------
def test_form_fields_have_the_json_caps(door: Door) -> None:
    for field, size in (("title", 1001), ("external_id", 501), ("callback_url", 4097)):
        before = door.footprint()
        r = door.client.post("/v1/assets", headers=door.headers,
                             files={"file": ("a.txt", b"Caps apply to forms too.")},
                             data={field: "x" * size})
        body = refused(door, r, 422, "invalid_request")
        assert body["error"]["details"]["errors"][0]["loc"] == [field]
        assert door.footprint() == before


def test_a_form_field_past_a_mebibyte_is_too_large(door: Door) -> None:
    before = door.footprint()
    r = door.client.post("/v1/assets", headers=door.headers,
                         files={"file": ("a.txt", b"Fields are bounded.")},
                         data={"title": "t" * (1024 * 1024 + 1)})
    refused(door, r, 413, "field_too_large")
    assert door.footprint() == before


def test_a_long_filename_is_refused(door: Door) -> None:
    r = door.client.post("/v1/assets", headers=door.headers,
                         files={"file": ("n" * 501 + ".txt", b"Long names are refused.")})
    refused(door, r, 422, "invalid_request")


def test_the_json_limit_admits_a_text_at_max_text_chars() -> None:
    defaults = Settings()
    # Every character \\u-escaped as a surrogate pair is 12 bytes; metadata comes on top.
    assert defaults.max_json_bytes >= 12 * defaults.max_text_chars + defaults.max_metadata_bytes
    assert defaults.max_json_bytes < defaults.max_upload_bytes


def test_an_escaped_text_at_max_text_chars_is_accepted(door: Door) -> None:
    text = "\u00e9" * door.kenning.settings.max_text_chars
    raw = json.dumps({"text": text}, ensure_ascii=True).encode()
    assert len(raw) > 6 * door.kenning.settings.max_text_chars
    r = door.client.post("/v1/assets", headers=door.json_headers, content=raw)
    assert r.status_code == 202, r.text


def _chunked(total: int) -> Iterator[bytes]:
    for _ in range(total // 65536):
        yield b" " * 65536


def test_a_chunked_json_body_past_the_limit_is_refused(
    door: Door, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(door.kenning.settings, "max_json_bytes", 256 * 1024)
    before = door.footprint()

    def body() -> Iterator[bytes]:
        yield b'{"text": "chunked", "metadata": {"pad": "'
        yield from _chunked(1024 * 1024)
        yield b'"}}'

    r = door.client.post("/v1/assets", headers=door.json_headers, content=body())
    refused(door, r, 413, "body_too_large")
    assert door.footprint() == before


MULTIPART_HEAD = (b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.bin"\r\n'
                  b"Content-Type: application/octet-stream\r\n\r\n")


@pytest.mark.parametrize(("path", "kind", "code"), [
    ("/v1/assets", "application/json", "body_too_large"),
    ("/v1/search", "application/json", "body_too_large"),  # a body FastAPI reads
    ("/v1/similar", "application/json", "body_too_large"),
    ("/v1/assets/batch", "application/json", "body_too_large"),
    ("/v1/assets", "multipart/form-data; boundary=B", "file_too_large"),
    ("/v1/similar", "multipart/form-data; boundary=B", "file_too_large"),
    ("/v1/assets/batch", "multipart/form-data; boundary=B", "file_too_large"),
])
def test_the_app_stops_reading_an_endless_body_at_the_limit(
    door: Door, monkeypatch: pytest.MonkeyPatch, path: str, kind: str, code: str
) -> None:
    monkeypatch.setattr(door.kenning.settings, "max_json_bytes", 256 * 1024)
    monkeypatch.setattr(door.kenning.settings, "max_upload_bytes", 512 * 1024)
    head = MULTIPART_HEAD if kind.startswith("multipart") else b'{"text": "'
    before = door.footprint()
    status, body, pulled = _endless(door, path, kind, head)
    assert (status, body["error"]["code"]) == (413, code)
    limit = 256 * 1024 if code == "body_too_large" else 512 * 1024 + 64 * 1024
    assert limit < pulled <= limit + 65536
    assert door.footprint() == before


def _endless(door: Door, path: str, kind: str, head: bytes) -> tuple[int, Any, int]:
    """Call the app as an ASGI server would, with a chunked body that never ends."""
    pulled = 0
    sent: list[Message] = []

    async def receive() -> Message:
        nonlocal pulled
        piece = head if pulled == 0 else b"x" * 65536
        pulled += len(piece)
        return {"type": "http.request", "body": piece, "more_body": True}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "raw_path": path.encode(),
             "query_string": b"", "root_path": "", "scheme": "http", "http_version": "1.1",
             "server": ("testserver", 80), "client": ("127.0.0.1", 1),
             "headers": [(b"content-type", kind.encode()), (b"transfer-encoding", b"chunked"),
                         (b"authorization", f"Bearer {door.key}".encode())],
             "app": door.client.app}
    assert door.client.portal is not None
    door.client.portal.call(door.client.app, scope, receive, send)
    body = json.loads(b"".join(m.get("body", b"") for m in sent[1:]))
    return int(sent[0]["status"]), body, pulled


# --- 5. no U+0000 reaches a query ------------------------------------------------------------
@pytest.mark.parametrize("raw", [
    b'{"text": "nul in text \\u0000"}',
    b'{"text": "ok", "title": "a\\u0000"}',
    b'{"text": "ok", "external_id": "\\u0000"}',
    b'{"text": "ok", "callback_url": "https://example.org/\\u0000"}',
    b'{"url": "https://example.org/\\u0000"}',
], ids=["text", "title", "external-id", "callback", "url"])
def test_nul_in_a_json_string_is_refused(door: Door, raw: bytes) -> None:
    before = door.footprint()
    refused(door, post_raw(door, "/v1/assets", raw), 422, "invalid_json")
    assert door.footprint() == before


@pytest.mark.parametrize("field", ["title", "external_id", "callback_url", "metadata"])
def test_nul_in_a_form_field_is_refused(door: Door, field: str) -> None:
    before = door.footprint()
    r = door.client.post("/v1/assets", headers=door.headers,
                         files={"file": ("a.txt", b"NUL in a form field.")},
                         data={field: '{"a": "\x00"}' if field == "metadata" else "a\x00b"})
    refused(door, r, 422, "invalid_request")
    assert door.footprint() == before


def test_nul_in_a_filename_is_refused(door: Door) -> None:
    # Written by hand: HTTP clients percent-encode control characters in filenames.
    raw = (b'--B\r\nContent-Disposition: form-data; name="file"; filename="a\x00.txt"\r\n'
           b"Content-Type: text/plain\r\n\r\nNUL in a filename.\r\n--B--\r\n")
    before = door.footprint()
    r = door.client.post("/v1/assets", content=raw, headers={
        **door.headers, "Content-Type": "multipart/form-data; boundary=B"})
    refused(door, r, 422, "invalid_request")
    assert door.footprint() == before


@pytest.mark.parametrize(("url", "status", "code"), [
    ("/v1/assets/%00", 404, "not_found"),
    ("/v1/jobs/a%00b", 404, "not_found"),
    ("/v1/assets/abc/segments?kind=%00", 422, "invalid_request"),
    ("/v1/audit?action=%00", 422, "invalid_request"),
    ("/v1/admin/dead-letters?limit=%00", 422, "invalid_request"),
])
def test_nul_in_the_url_is_refused(door: Door, url: str, status: int, code: str) -> None:
    refused(door, door.client.get(url, headers=door.headers), status, code)


# --- content types -------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/v1/assets", "/v1/assets/batch", "/v1/similar"])
def test_a_body_that_is_neither_json_nor_a_form_is_415(door: Door, path: str) -> None:
    r = door.client.post(path, headers={**door.headers, "Content-Type": "text/xml"},
                         content=b"<a/>")
    refused(door, r, 415, "unsupported_content_type")


def test_a_malformed_form_is_invalid_multipart(door: Door) -> None:
    r = door.client.post("/v1/assets", headers={
        **door.headers, "Content-Type": "multipart/form-data"}, content=b"--x\r\n")
    refused(door, r, 422, "invalid_multipart")
