"""Bad input gets a 4xx with a stable code, the server stays healthy, nothing is stored."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from kenning.stores.metadata.tables import Asset, AuditEvent, Job, StageRun
from tests.e2e.conftest import PROFILES, Api
from tests.fixtures import media

pytestmark = PROFILES


def _footprint(api: Api) -> tuple[int, int, int, int, int]:
    with api.kenning.stores.db.session(write=False) as s:
        counts = tuple(
            int(s.scalar(select(func.count()).select_from(t)) or 0)
            for t in (Asset, Job, StageRun, AuditEvent)
        )
    blobs = sum(1 for p in Path(api.kenning.settings.blob_dir).rglob("*") if p.is_file())
    return (*counts, blobs)  # type: ignore[return-value]


CASES = [
    ("truncated.jpg", lambda: media.truncated_jpeg(), 422, "corrupt_media"),
    ("bomb.png", lambda: media.png_bomb_header(50_000, 50_000), 413, "image_too_large"),
    ("photo.jpg", lambda: media.zip_bytes(), 415, "unsupported_media_type"),
    ("empty.txt", lambda: b"", 422, "empty_content"),
    # Audio and video are accepted now; what does not even have a readable header is not.
    ("clip.mp4", lambda: media.truncated_copy(media.video_bytes("bikes.mp4")), 422,
     "corrupt_media"),
    ("song.ogg", lambda: b"OggS\x00\x02" + bytes(200), 422, "corrupt_media"),
    ("movie.flv", lambda: b"FLV\x01\x05" + bytes(200), 415, "unsupported_media_type"),
]


@pytest.mark.parametrize(("name", "make", "status", "code"), CASES,
                         ids=[c[0] for c in CASES])
def test_bad_files_are_refused_without_trace(
    api: Api, name: str, make: object, status: int, code: str
) -> None:
    before = _footprint(api)
    r = api.client.post("/v1/assets", headers=api.headers,
                        files={"file": (name, make())})  # type: ignore[operator]
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code
    assert r.json()["error"]["message"]
    assert _footprint(api) == before
    assert api.client.get("/healthz").status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"text": "x" * 200_001}, 413, "text_too_long"),
        ({"text": ""}, 422, "empty_content"),
        ({"url": "http://127.0.0.1:8000/secret"}, 422, "url_not_allowed"),
        ({"url": "http://169.254.169.254/latest/meta-data/"}, 422, "url_not_allowed"),
        ({"url": "file:///etc/passwd"}, 422, "url_not_allowed"),
        ({"text": "hello", "callback_url": "http://localhost:9/hook"}, 422, "url_not_allowed"),
        ({"text": "a", "url": "http://example.com"}, 422, "invalid_request"),
        ({}, 422, "invalid_request"),
    ],
    ids=["text-over-limit", "empty-text", "loopback-url", "metadata-url", "file-url",
         "loopback-callback", "two-sources", "no-source"],
)
def test_bad_json_is_refused_without_trace(api: Api, body: dict, status: int, code: str) -> None:
    before = _footprint(api)
    r = api.client.post("/v1/assets", headers=api.headers, json=body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code
    assert _footprint(api) == before


def test_empty_and_malformed_bodies(api: Api) -> None:
    r = api.client.post("/v1/assets", headers={**api.headers, "Content-Type": "application/json"},
                        content=b"")
    assert (r.status_code, r.json()["error"]["code"]) == (422, "empty_content")
    r = api.client.post("/v1/assets", headers={**api.headers, "Content-Type": "application/json"},
                        content=b"{not json")
    assert (r.status_code, r.json()["error"]["code"]) == (422, "invalid_json")
    r = api.client.post("/v1/assets", headers={**api.headers, "Content-Type": "text/xml"},
                        content=b"<a/>")
    assert (r.status_code, r.json()["error"]["code"]) == (415, "unsupported_content_type")


def test_auth_is_required_and_checked(api: Api) -> None:
    r = api.client.post("/v1/search", json={"query": "x"})
    assert (r.status_code, r.json()["error"]["code"]) == (401, "unauthorized")
    r = api.client.post("/v1/search", json={"query": "x"},
                        headers={"Authorization": "Bearer kn_not-a-key"})
    assert (r.status_code, r.json()["error"]["code"]) == (401, "unauthorized")


def test_unknown_asset_and_route(api: Api) -> None:
    r = api.client.get("/v1/assets/doesnotexist", headers=api.headers)
    assert (r.status_code, r.json()["error"]["code"]) == (404, "not_found")
    assert api.client.get("/v1/nothing-here").json()["error"]["code"] == "not_found"


def test_oversized_body_is_refused_before_reading(api: Api) -> None:
    limit = api.kenning.settings.max_upload_bytes
    r = api.client.post("/v1/assets", headers={**api.headers, "Content-Length": str(limit * 2)},
                        content=b"x" * 10)
    assert (r.status_code, r.json()["error"]["code"]) == (413, "file_too_large")


def test_batch_reports_each_item(api: Api) -> None:
    r = api.client.post("/v1/assets/batch", headers=api.headers, json={"items": [
        {"text": "The first batch item talks about rowing regattas on the river."},
        {"url": "http://10.0.0.1/private"},
        {"text": "The third batch item talks about cricket in Adelaide."},
    ]})
    assert r.status_code == 202
    body = r.json()
    assert (body["accepted"], body["rejected"]) == (2, 1)
    assert body["results"][1]["error"]["code"] == "url_not_allowed"
    assert body["results"][0]["accepted"]["asset_id"]
