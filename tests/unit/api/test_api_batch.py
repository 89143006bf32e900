"""POST /v1/assets/batch: multipart file parts with an ``items`` field, or JSON items.

A malformed batch is refused whole with a stable code and leaves nothing stored; a
well-formed one answers 202 with one result per item, in input order.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest

from tests.fixtures import media
from tests.unit.api.conftest import Door
from tests.unit.api.test_api_door import refused


def story(tag: str) -> bytes:
    return f"A batch story {tag} {uuid.uuid4().hex} about the lighthouse keepers.".encode()


def post_files(door: Door, files: list[tuple[str, bytes]], items: Any = None,
               headers: dict[str, str] | None = None,
               data: dict[str, str] | None = None) -> httpx.Response:
    fields = dict(data or {})
    if items is not None:
        fields["items"] = items if isinstance(items, str) else json.dumps(items)
    response: httpx.Response = door.client.post(
        "/v1/assets/batch", headers=door.headers if headers is None else headers,
        files=[("file", f) for f in files], data=fields)
    return response


def asset(door: Door, asset_id: str, headers: dict[str, str] | None = None) -> httpx.Response:
    response: httpx.Response = door.client.get(f"/v1/assets/{asset_id}",
                                               headers=headers or door.headers)
    return response


def other_tenant(door: Door) -> dict[str, str]:
    tenant = door.kenning.tenants.create_tenant(f"other-{uuid.uuid4().hex[:8]}")
    return {"Authorization": f"Bearer {door.kenning.tenants.create_key(tenant).key}"}


# --- multipart -----------------------------------------------------------------------------------
def test_files_with_their_fields_get_one_result_each_in_order(door: Door) -> None:
    first, second = story("one"), story("two")
    r = post_files(door, [("one.txt", first), ("holiday.jpg", media.zip_bytes()),
                          ("again.txt", first), ("two.txt", second)],
                   items=[{"title": "One", "metadata": {"desk": "coast"}, "external_id": "c-1"},
                          {}, {"title": "ignored: a copy"},
                          {"filename": "renamed.txt", "callback_url": None}])
    assert r.status_code == 202, r.text
    body = r.json()
    assert (body["accepted"], body["rejected"]) == (3, 1)
    assert [x["index"] for x in body["results"]] == [0, 1, 2, 3]
    one = body["results"][0]["accepted"]
    assert one["duplicate_of"] is None and one["job_id"] and one["status"] == "queued"
    assert body["results"][1]["error"] == {
        "code": "unsupported_media_type", "status": 415,
        "message": body["results"][1]["error"]["message"]}
    assert body["results"][2]["accepted"]["duplicate_of"] == one["asset_id"]
    got = asset(door, one["asset_id"]).json()
    assert (got["title"], got["external_id"], got["filename"], got["metadata"]) == (
        "One", "c-1", "one.txt", {"desk": "coast"})
    two = asset(door, body["results"][3]["accepted"]["asset_id"]).json()
    assert two["filename"] == "renamed.txt" and two["source"] == "upload"


def test_without_an_items_field_each_file_is_its_own_item(door: Door) -> None:
    r = post_files(door, [("a.txt", story("a")), ("b.png", media.image_bytes("coffee.png"))])
    assert r.status_code == 202, r.text
    kinds = [asset(door, x["accepted"]["asset_id"]).json()["kind"] for x in r.json()["results"]]
    assert kinds == ["text", "image"]


def test_the_same_bytes_again_are_duplicates_of_the_first_batch(door: Door) -> None:
    files = [("a.txt", story("a")), ("b.txt", story("b"))]
    first = post_files(door, files).json()["results"]
    again = post_files(door, files).json()["results"]
    assert [x["accepted"]["duplicate_of"] for x in again] == [
        x["accepted"]["asset_id"] for x in first]


BAD_FORMS: list[tuple[Any, dict[str, str], int, str]] = [
    ("not json", {}, 422, "invalid_json"),
    ('[{"title": NaN}, {}]', {}, 422, "invalid_json"),
    ('[{"title": "a\\u0000"}, {}]', {}, 422, "invalid_json"),
    ({"title": "an object, not an array"}, {}, 422, "invalid_request"),
    ([{}], {}, 422, "invalid_request"),  # one entry for two files
    ([{}, {}, {}], {}, 422, "invalid_request"),
    ([{}, "title"], {}, 422, "invalid_request"),
    ([{}, {"text": "not a form key"}], {}, 422, "invalid_request"),
    ([{}, {"title": "t" * 1001}], {}, 422, "invalid_request"),
    ([{}, {"title": 7}], {}, 422, "invalid_request"),
    ([{}, {"filename": "n" * 501}], {}, 422, "invalid_request"),
    ([{}, {"metadata": {"a\"b": 1}}], {}, 422, "invalid_metadata"),
    ([{}, {"metadata": [1]}], {}, 422, "invalid_request"),
    ([{}, {"metadata": {"k": "v" * 70_000}}], {}, 413, "metadata_too_large"),
    (None, {"title": "a top-level field"}, 422, "invalid_request"),
    (None, {"file": "a text part named file"}, 422, "missing_file"),
]


@pytest.mark.parametrize(("items", "data", "status", "code"), BAD_FORMS,
                         ids=[f"{i}-{c}" for i, (_, _, _, c) in enumerate(BAD_FORMS)])
def test_a_malformed_form_refuses_the_whole_batch(
    door: Door, items: Any, data: dict[str, str], status: int, code: str
) -> None:
    before = door.footprint()
    r = post_files(door, [("a.txt", story("a")), ("b.txt", story("b"))], items, data=data)
    body = refused(door, r, status, code)
    if code in ("invalid_metadata", "metadata_too_large"):
        assert body["error"]["details"]["index"] == 1
    assert door.footprint() == before


def test_a_form_without_files_is_missing_its_files(door: Door) -> None:
    r = door.client.post("/v1/assets/batch", headers=door.headers, data={"items": "[]"},
                         files={"other": ("x.txt", b"x")})
    refused(door, r, 422, "invalid_request")  # a file part under another name
    only_items = (b'--B\r\nContent-Disposition: form-data; name="items"\r\n\r\n[]\r\n'
                  b"--B--\r\n")
    r = door.client.post("/v1/assets/batch", content=only_items, headers={
        **door.headers, "Content-Type": "multipart/form-data; boundary=B"})
    refused(door, r, 422, "missing_file")


def test_more_files_than_max_batch_items_are_refused(
    door: Door, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(door.kenning.settings, "max_batch_items", 3)
    before = door.footprint()
    files = [(f"{i}.txt", story(str(i))) for i in range(4)]
    body = refused(door, post_files(door, files), 413, "batch_too_large")
    assert body["error"]["details"]["limit"] == 3
    assert door.footprint() == before
    assert post_files(door, files[:3]).status_code == 202


def test_all_files_together_stay_within_the_upload_limit(
    door: Door, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(door.kenning.settings, "max_upload_bytes", 4096)
    before = door.footprint()
    files = [(f"{i}.txt", story(str(i)) * 300) for i in range(4)]  # ~25 KB each
    refused(door, post_files(door, files), 413, "file_too_large")
    assert door.footprint() == before


# --- JSON ----------------------------------------------------------------------------------------
def test_json_items_are_ingested_together(door: Door) -> None:
    text = story("json").decode()
    r = door.client.post("/v1/assets/batch", headers=door.headers, json={"items": [
        {"text": text, "title": "T", "metadata": {"k": 1}},
        {"text": "\u200b"},
        {"text": text},
        {"url": "http://127.0.0.1:1/feed.txt"},
    ]})
    assert r.status_code == 202, r.text
    results = r.json()["results"]
    first = results[0]["accepted"]
    assert results[1]["error"]["code"] == "empty_content"
    assert results[2]["accepted"]["duplicate_of"] == first["asset_id"]
    assert results[3]["error"]["code"] == "url_not_allowed"
    got = asset(door, first["asset_id"]).json()
    assert (got["title"], got["metadata"], got["source"]) == ("T", {"k": 1}, "text")


def test_an_unsupported_content_type_is_refused(door: Door) -> None:
    r = door.client.post("/v1/assets/batch", headers={**door.headers,
                                                      "Content-Type": "text/plain"},
                         content=b"items")
    refused(door, r, 415, "unsupported_content_type")


# --- tenancy, auth, backpressure -----------------------------------------------------------------
def test_a_batch_needs_a_key(door: Door) -> None:
    before = door.footprint()
    r = post_files(door, [("a.txt", story("a"))], headers={})
    refused(door, r, 401, "unauthorized")
    r = door.client.post("/v1/assets/batch", json={"items": [{"text": "no key"}]},
                         headers={"Authorization": "Bearer kn_wrong"})
    refused(door, r, 401, "unauthorized")
    assert door.footprint() == before


def test_tenants_do_not_share_assets_or_duplicates(door: Door) -> None:
    content = story("shared")
    mine = post_files(door, [("a.txt", content)]).json()["results"][0]["accepted"]
    theirs_headers = other_tenant(door)
    theirs = post_files(door, [("a.txt", content)], headers=theirs_headers).json()
    got = theirs["results"][0]["accepted"]
    assert got["duplicate_of"] is None and got["asset_id"] != mine["asset_id"]
    assert asset(door, mine["asset_id"], theirs_headers).status_code == 404
    assert asset(door, got["asset_id"], theirs_headers).status_code == 200


def test_backpressure_refuses_the_batch_whole(
    door: Door, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = other_tenant(door)
    first = post_files(door, [("a.txt", story("a"))], headers=headers)
    assert first.status_code == 202
    monkeypatch.setattr(door.kenning.settings, "max_queued_stages_per_tenant", 1)
    monkeypatch.setattr(door.kenning.settings, "retry_after_s", 3)
    before = door.footprint()
    r = post_files(door, [("b.txt", story("b")), ("c.txt", story("c"))], headers=headers)
    refused(door, r, 429, "backpressure")
    assert r.headers["Retry-After"] == "3"
    assert door.footprint() == before
    r = door.client.post("/v1/assets/batch", headers=headers,
                         json={"items": [{"text": story("d").decode()}]})
    refused(door, r, 429, "backpressure")
    assert door.footprint() == before


def test_an_items_field_sent_as_a_file_is_refused(door: Door) -> None:
    before = door.footprint()
    r = door.client.post("/v1/assets/batch", headers=door.headers, files=[
        ("file", ("a.txt", story("a"))), ("items", ("items.json", b"[{}]"))])
    refused(door, r, 422, "invalid_request")
    assert door.footprint() == before
