"""Issue 9 (clusters, verdicts, banks) end to end: API -> pipeline (real PDQ, OCR and
embedding models) -> matcher -> API, with real photos and a signed webhook to a receiver
on loopback."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from kenning.api.app import create_app
from kenning.container import Kenning
from kenning.services.webhooks import verify
from tests.e2e.conftest import Api, e2e_settings
from tests.fixtures import media

pytestmark = pytest.mark.slow


class _Receiver(BaseHTTPRequestHandler):
    calls: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).calls.append({"headers": dict(self.headers), "body": body})
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[str, type[_Receiver]]]:
    handler = type("Receiver", (_Receiver,), {"calls": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hits", handler
    server.shutdown()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    data_dir: Path = tmp_path_factory.mktemp("kenning")
    kenning = Kenning(e2e_settings(data_dir, allow_private_urls=True, matching_interval_s=0.3))
    with TestClient(create_app(kenning)) as client:
        yield Api(client, kenning, (data_dir / "bootstrap_api_key").read_text().strip(),
                  data_dir)


def _resized(name: str, side: int = 256) -> bytes:
    image = Image.open(io.BytesIO(media.image_bytes(name))).convert("RGB").resize((side, side))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=80)
    return out.getvalue()


def _upload(api: Api, name: str, data: bytes, headers: dict[str, str] | None = None) -> str:
    r = api.client.post("/v1/assets", files={"file": (name, data)},
                        headers=headers or api.headers)
    assert r.status_code == 202, r.text
    return str(r.json()["asset_id"])


def _settle(api: Api) -> None:
    """Pipeline idle, then one matching run (the periodic one may have done it already)."""
    api.wait()
    api.kenning.matching.run_once()


def _cluster_of(api: Api, asset_id: str, other: str) -> str | None:
    r = api.client.get(f"/v1/matches/{asset_id}/{other}", headers=api.headers)
    assert r.status_code == 200, r.text
    body = r.json()
    return body["cluster_a"] if body["asset_a"] == asset_id else body["cluster_b"]


def test_clusters_verdicts_banks_and_tenants(
    api: Api, receiver: tuple[str, type[_Receiver]]
) -> None:
    url, handler = receiver
    h = api.headers
    first = _upload(api, "astronaut.png", media.image_bytes("astronaut.png"))
    _settle(api)
    jpeg = _upload(api, "astronaut.jpg", media.jpeg_bytes("astronaut.png", quality=60))
    coffee = _upload(api, "coffee.png", media.image_bytes("coffee.png"))
    _settle(api)

    # Two near-duplicates and an unrelated photo: one cluster of two, founded by the first.
    page = api.client.get("/v1/clusters", headers=h).json()
    assert [(c["size"], c["first_asset_id"]) for c in page["clusters"]] == [(2, first)]
    cluster_id = page["clusters"][0]["id"]
    view = api.client.get(f"/v1/clusters/{cluster_id}", headers=h).json()
    assert [m["asset_id"] for m in view["members"]] == [first, jpeg]
    assert [e["method"] for e in view["edges"]] == ["pdq"]
    assert view["edges"][0]["evidence"]["hamming_distance"] <= 8
    assert _cluster_of(api, coffee, first) not in (None, cluster_id)

    # Another tenant sees none of it.
    other = api.new_tenant("matching-other")
    assert api.client.get("/v1/clusters", headers=other).json()["clusters"] == []
    for method, path, body in (
        ("GET", f"/v1/clusters/{cluster_id}", None),
        ("GET", f"/v1/matches/{first}/{jpeg}", None),
        ("POST", f"/v1/matches/{first}/{jpeg}", {"verdict": "different"}),
        ("GET", "/v1/banks/checked", None),
    ):
        r = api.client.request(method, path, headers=other, json=body)
        assert (r.status_code, r.json()["error"]["code"]) == (404, "not_found"), (path, r.text)

    # A bank of known items: a new copy of one is a hit, delivered signed.
    assert api.client.put("/v1/banks/checked", headers=h,
                          json={"webhook_url": url}).status_code == 200
    r = api.client.post("/v1/banks/checked/items", headers=h,
                        json={"asset_ids": [first], "label": "debunked"})
    assert r.status_code == 200 and r.json()["items"] == 1
    r = api.client.post("/v1/banks/checked/items", headers=other, json={"asset_ids": [first]})
    assert r.status_code == 404
    small = _upload(api, "astronaut-small.jpg", _resized("astronaut.png"))
    _settle(api)
    deadline = time.monotonic() + 30
    while not handler.calls and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(handler.calls) == 1
    call = handler.calls[0]
    tenant_id = api.kenning.tenants.authenticate(api.key).tenant_id
    assert verify(api.kenning.tenants.webhook_secret(tenant_id),
                  call["headers"]["X-Kenning-Timestamp"], call["body"],
                  call["headers"]["X-Kenning-Signature"])
    payload = json.loads(call["body"])
    assert (payload["event"], payload["asset_id"], payload["item_asset_id"]) == (
        "bank.hit", small, first)
    assert payload["method"] == "pdq" and payload["label"] == "debunked"
    hits = api.client.get("/v1/audit", headers=h, params={"action": "bank.hit"}).json()
    assert [e["subject_id"] for e in hits] == [small]

    # A rejection splits the cluster; the first seen keeps the id; it is sticky; and
    # /v1/similar never proposes the pair again, from either side.
    def proposed(a: str) -> set[str]:
        r = api.client.post("/v1/similar", headers=h, json={"asset_id": a})
        assert r.status_code == 200, r.text
        return {m["asset_id"] for m in r.json()["matches"]}

    assert jpeg in proposed(first) and first in proposed(jpeg)
    r = api.client.post(f"/v1/matches/{jpeg}/{first}", headers=h,
                        json={"verdict": "different", "note": "not the same shoot"})
    assert r.status_code == 200, r.text
    assert r.json()["verdict"]["verdict"] == "different"
    assert _cluster_of(api, first, jpeg) == cluster_id
    assert _cluster_of(api, jpeg, first) != cluster_id
    _settle(api)
    assert _cluster_of(api, first, jpeg) != _cluster_of(api, jpeg, first)
    audit = api.client.get("/v1/audit", headers=h, params={"action": "match.verdict"}).json()
    assert audit[0]["after"] == {"verdict": "different", "note": "not the same shoot"}
    assert jpeg not in proposed(first) and first not in proposed(jpeg)
    assert small in proposed(first)  # other matches stay

    # A confirmation holds whatever the thresholds: at 0 bits nothing matches by itself.
    r = api.client.put("/v1/matching", headers=h, json={"pdq": 0})
    assert r.status_code == 200, r.text
    camera = _upload(api, "camera.png", media.image_bytes("camera.png"))
    camera_small = _upload(api, "camera-small.jpg", _resized("camera.png", 200))
    _settle(api)
    assert _cluster_of(api, camera, camera_small) != _cluster_of(api, camera_small, camera)
    r = api.client.post(f"/v1/matches/{camera}/{camera_small}", headers=h,
                        json={"verdict": "same"})
    assert r.status_code == 200 and r.json()["cluster_a"] == r.json()["cluster_b"]
    _settle(api)
    assert _cluster_of(api, camera, camera_small) == _cluster_of(api, camera_small, camera)

    # Clear 4xx for bad input.
    for method, path, body, code in (
        ("POST", f"/v1/matches/{first}/{first}", {"verdict": "same"}, "same_asset"),
        ("POST", f"/v1/matches/{first}/{jpeg}", {"verdict": "maybe"}, None),
        ("PUT", "/v1/banks/-bad-", {}, None),
        ("GET", "/v1/clusters", None, "bad_cursor"),
    ):
        params = {"cursor": "%%%"} if code == "bad_cursor" else None
        r = api.client.request(method, path, headers=h, json=body, params=params)
        assert r.status_code == 422, (path, r.text)
        if code:
            assert r.json()["error"]["code"] == code
