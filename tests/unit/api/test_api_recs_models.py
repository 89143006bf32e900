"""/v1/recommendations/models over HTTP, without workers (the run stays queued): a POST
answers 202 with the new version, a second one 409 while it trains; a tenant lists and
reads only its own versions (another tenant's id is 404); every bad parameter is a 4xx
with a stable code."""

from __future__ import annotations

import uuid

import pytest

from kenning.services.tenants import TenantService
from tests.unit.api.conftest import Door


@pytest.fixture(scope="module")
def other(door: Door) -> dict[str, str]:
    tenants = TenantService(door.kenning.stores.db)
    key = tenants.create_key(tenants.create_tenant(f"models-{uuid.uuid4().hex[:6]}")).key
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def queued(door: Door) -> dict[str, object]:
    answer = door.client.post("/v1/recommendations/models", headers=door.headers)
    assert answer.status_code == 202, answer.text
    return answer.json()  # type: ignore[no-any-return]


def test_a_post_queues_a_version_and_a_second_one_waits_for_it(
        door: Door, queued: dict[str, object]) -> None:
    assert queued["state"] == "training" and queued["version"] == 1
    assert queued["kind"] == "ranker" and queued["finished_at"] is None
    again = door.client.post("/v1/recommendations/models", headers=door.headers)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "training_in_progress"
    assert again.json()["error"]["details"]["model_id"] == queued["id"]
    depths = door.kenning.queue_admin.queue_depths()
    assert depths["recs"].ready == 1  # one message on the recs queue, for a worker


def test_versions_are_listed_and_read_by_their_tenant_only(
        door: Door, queued: dict[str, object], other: dict[str, str]) -> None:
    listed = door.client.get("/v1/recommendations/models", headers=door.headers).json()
    assert [m["id"] for m in listed["models"]] == [queued["id"]]
    one = door.client.get(f"/v1/recommendations/models/{queued['id']}", headers=door.headers)
    assert one.status_code == 200 and one.json()["state"] == "training"
    assert door.client.get("/v1/recommendations/models", params={"state": "serving"},
                           headers=door.headers).json() == {"models": []}
    assert door.client.get("/v1/recommendations/models", headers=other).json() == {
        "models": []}
    theirs = door.client.get(f"/v1/recommendations/models/{queued['id']}", headers=other)
    assert theirs.status_code == 404 and theirs.json()["error"]["code"] == "unknown_model"
    own = door.client.post("/v1/recommendations/models", headers=other)
    assert own.status_code == 202 and own.json()["version"] == 1  # numbered per tenant
    listed = door.client.get("/v1/recommendations/models", headers=door.headers).json()
    assert [m["id"] for m in listed["models"]] == [queued["id"]]


@pytest.mark.parametrize(("method", "url", "status", "code"), [
    ("get", "/v1/recommendations/models?limit=0", 422, "invalid_request"),
    ("get", "/v1/recommendations/models?limit=101", 422, "invalid_request"),
    ("get", "/v1/recommendations/models?limit=many", 422, "invalid_request"),
    ("get", "/v1/recommendations/models?state=deployed", 422, "invalid_request"),
    ("get", "/v1/recommendations/models/not-hex!", 422, "invalid_request"),
    ("get", f"/v1/recommendations/models/{'a' * 33}", 422, "invalid_request"),
    ("get", f"/v1/recommendations/models/{'b' * 32}", 404, "unknown_model"),
])
def test_bad_requests_are_4xx_with_codes(door: Door, method: str, url: str, status: int,
                                         code: str) -> None:
    answer = door.client.request(method, url, headers=door.headers)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["code"] == code


@pytest.mark.parametrize(("method", "url"), [("post", "/v1/recommendations/models"),
                                             ("get", "/v1/recommendations/models"),
                                             ("get", f"/v1/recommendations/models/{'c' * 32}")])
def test_without_a_key_is_401(door: Door, method: str, url: str) -> None:
    answer = door.client.request(method, url)
    assert answer.status_code == 401 and answer.json()["error"]["code"] == "unauthorized"
