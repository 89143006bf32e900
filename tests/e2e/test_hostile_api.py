"""The adversarial review's findings at the API door, end to end with the real pipeline.

Refused input leaves no trace (asset, job, stage_run and audit_event rows, blob files)
and /healthz still answers; processed assets with hostile-looking metadata keys are
found by filters; rows stored before metadata was validated still read and search; a
real HTTP server stops reading a chunked body at the limit.
"""

from __future__ import annotations

import math
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from sqlalchemy import func, select, update

from kenning.stores.metadata.tables import Asset, AuditEvent, Job, StageRun
from tests.e2e.conftest import PROFILES, Api

pytestmark = [pytest.mark.slow, PROFILES]

KEYS = {"desk name": "space", "desk.name": "dot", "desk:name": "colon", "desk-name": "dash",
        "Ressort": "Straße", "рубрика": "новости"}


def _footprint(api: Api) -> tuple[int, ...]:
    with api.kenning.stores.db.session(write=False) as s:
        counts = [int(s.scalar(select(func.count()).select_from(t)) or 0)
                  for t in (Asset, Job, StageRun, AuditEvent)]
    blobs = sum(1 for p in Path(api.kenning.settings.blob_dir).rglob("*") if p.is_file())
    return (*counts, blobs)


def _refused(api: Api, status: int, code: str, response: Any) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert api.client.get("/healthz").status_code == 200


@pytest.fixture(scope="module")
def assets(api: Api) -> dict[str, str]:
    """Processed texts: one with every kind of metadata key, one to corrupt later."""
    ids = {}
    for name, text, metadata in [
        ("keys", "Zanzibar dhow builders restore a sailing tradition.", KEYS),
        ("old", "Quokka sightings rise on Rottnest island this summer.", {"desk": "old"}),
        ("plain", "Quokka researchers count the island population.", {"desk": "plain"}),
    ]:
        r = api.client.post("/v1/assets", headers=api.headers,
                            json={"text": text, "metadata": metadata})
        assert r.status_code == 202, r.text
        ids[name] = r.json()["asset_id"]
    api.wait()
    return ids


def _search(api: Api, query: str, metadata: dict[str, Any] | None = None) -> Any:
    r = api.client.post("/v1/search", headers=api.headers, json={
        "query": query, "mode": "keyword", "filters": {"metadata": metadata or {}}})
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize("key", sorted(KEYS))
def test_filter_keys_with_spaces_dots_colons_dashes_and_letters_find(
    api: Api, assets: dict[str, str], key: str
) -> None:
    hits = _search(api, "Zanzibar", {key: KEYS[key]})["hits"]
    assert [h["asset_id"] for h in hits] == [assets["keys"]]
    assert {k: hits[0]["metadata"].get(k) for k in KEYS} == KEYS  # the pipeline adds more
    assert _search(api, "Zanzibar", {key: "something else"})["hits"] == []


def test_rows_stored_before_the_fix_still_read_and_search(
    api: Api, assets: dict[str, str]
) -> None:
    if api.kenning.stores.db.dialect != "sqlite":
        pytest.skip("PostgreSQL's json type never held NaN: such rows exist only in SQLite")
    nested: Any = "leaf"
    for _ in range(300):
        nested = {"k": nested}
    # What the old door stored: Python's json writes NaN and escapes lone surrogates.
    with api.kenning.stores.db.session() as s:
        s.execute(update(Asset).where(Asset.id == assets["old"]).values(meta={
            "desk": "old", "score": math.nan, "sur": "x\udc80", "nul": "a\x00b",
            "deep": nested}))
    r = api.client.get(f"/v1/assets/{assets['old']}", headers=api.headers)
    assert r.status_code == 200, r.text
    meta = r.json()["metadata"]
    assert (meta["score"], meta["sur"], meta["nul"]) == (None, "x\ufffd", "ab")
    # A search whose hits include it answers, with the same repair.
    hits = {h["asset_id"]: h for h in _search(api, "Quokka")["hits"]}
    assert set(hits) == {assets["old"], assets["plain"]}
    assert hits[assets["old"]]["metadata"] == meta
    # Every metadata-filtered search of the tenant answers too.
    plain = _search(api, "Quokka", {"desk": "plain"})["hits"]
    assert [h["asset_id"] for h in plain] == [assets["plain"]]


def test_similar_text_thresholds(api: Api, assets: dict[str, str]) -> None:
    r = api.client.post("/v1/similar", headers=api.headers,
                        json={"text": "Quokkas on Rottnest", "threshold": -1})
    assert r.status_code == 200, r.text
    assert r.json()["query"]["threshold"] == -1
    for raw in (b"NaN", b"Infinity", b"2"):
        r = api.client.post("/v1/similar", headers={
            **api.headers, "Content-Type": "application/json"},
            content=b'{"text": "Quokkas", "threshold": ' + raw + b"}")
        assert r.status_code == 422, r.text
        assert r.json()["error"]["code"] in ("invalid_json", "bad_threshold")


@pytest.mark.parametrize(("raw", "status", "code"), [
    (b'{"text": "Lone \\udc80 surrogate"}', 422, "invalid_json"),
    (b'{"text": "NUL \\u0000 here"}', 422, "invalid_json"),
    (b'{"text": "Deep", "metadata": ' + b"[" * 10_000 + b"]" * 10_000 + b"}", 422,
     "invalid_json"),
    (b'{"text": "NaN", "metadata": {"a": NaN}}', 422, "invalid_json"),
    (b'{"text": "Deep 300", "metadata": {"a": ' + b"[" * 300 + b"]" * 300 + b"}}", 422,
     "invalid_json"),
    (b'{"text": "Deep 20", "metadata": {"a": ' + b"[" * 20 + b"]" * 20 + b"}}", 422,
     "invalid_metadata"),
    (b'{"items": [{"text": "First batch item, never stored."}, {"text": "x\\ud800"}]}', 422,
     "invalid_json"),
], ids=["surrogate", "nul", "deep-10000", "nan", "deep-300", "deep-20", "batch"])
def test_hostile_json_leaves_no_trace(api: Api, raw: bytes, status: int, code: str) -> None:
    before = _footprint(api)
    path = "/v1/assets/batch" if raw.startswith(b'{"items"') else "/v1/assets"
    r = api.client.post(path, headers={**api.headers, "Content-Type": "application/json"},
                        content=raw)
    _refused(api, status, code, r)
    assert _footprint(api) == before


# --- a real server, a chunked body ----------------------------------------------------------
@pytest.fixture(scope="module")
def server(api: Api) -> Iterator[int]:
    """The same app behind uvicorn on a loopback port (its lifespan already runs)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    config = uvicorn.Config(api.client.app, host="127.0.0.1", port=port, lifespan="off",
                            log_level="warning")
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not instance.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield port
    instance.should_exit = True
    thread.join(10)


def _post_chunked(port: int, path: str, headers: dict[str, str], head: bytes,
                  total: int) -> tuple[int, bytes, int]:
    """POST with Transfer-Encoding: chunked and no Content-Length; stop sending as soon as
    an answer arrives. Returns (status, body, bytes of body sent)."""
    chunk = b"x" * 65536
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Transfer-Encoding: chunked",
             *(f"{k}: {v}" for k, v in headers.items())]
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        sent = 0
        while sent < total:
            piece = head if sent == 0 else chunk
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            except OSError:  # the server answered and closed: read what it said
                break
            sent += len(piece)
            if _readable(sock):
                break
        if sent >= total:
            sock.sendall(b"0\r\n\r\n")
        answer = _read_answer(sock)
    head_part, _, body = answer.partition(b"\r\n\r\n")
    return int(head_part.split()[1]), body, sent


def _readable(sock: socket.socket) -> bool:
    import select

    return bool(select.select([sock], [], [], 0)[0])


def _read_answer(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
        try:
            piece = sock.recv(65536)
        except OSError:
            break
        if not piece:
            break
        data += piece
    return data


@pytest.mark.parametrize(("content_type", "head", "limit_name", "code"), [
    ("application/json", b'{"text": "', "max_json_bytes", "body_too_large"),
    ("multipart/form-data; boundary=B",
     b'--B\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n'
     b"Content-Type: application/octet-stream\r\n\r\n", "max_upload_bytes", "file_too_large"),
], ids=["json", "multipart"])
def test_a_chunked_body_past_the_limit_is_refused_while_streaming(
    api: Api, server: int, monkeypatch: pytest.MonkeyPatch,
    content_type: str, head: bytes, limit_name: str, code: str,
) -> None:
    monkeypatch.setattr(api.kenning.settings, limit_name, 1024 * 1024)
    before = _footprint(api)
    total = 64 * 1024 * 1024
    status, body, sent = _post_chunked(server, "/v1/assets", {
        "Authorization": f"Bearer {api.key}", "Content-Type": content_type}, head, total)
    assert status == 413, body
    assert f'"code":"{code}"'.encode() in body
    assert sent < total // 4  # the server answered long before the body ended
    assert _footprint(api) == before
    assert api.client.get("/healthz").status_code == 200


def test_another_tenants_asset_id_is_not_found_on_search_even_beside_a_query(
    api: Api, assets: dict[str, str]
) -> None:
    other = api.new_tenant("search-nosy")
    for body in ({"asset_id": assets["plain"]},
                 {"asset_id": assets["plain"], "query": "quokka", "mode": "keyword"}):
        r = api.client.post("/v1/search", headers=other, json=body)
        assert r.status_code == 404, (body, r.text)
        assert r.json()["error"]["code"] == "not_found"
    mine = api.client.post("/v1/search", headers=api.headers, json={
        "asset_id": assets["plain"], "query": "quokka", "mode": "keyword"}).json()["hits"]
    assert assets["old"] in {h["asset_id"] for h in mine}
    assert assets["plain"] not in {h["asset_id"] for h in mine}  # the query asset is excluded
