"""/v1/authors/{author_id}/discovery and /v1/recommendations/exposure over HTTP: the key's
tenant decides what is seen (another tenant's author is 404, its impressions are not
counted), and every bad parameter is a 4xx with a stable code, never a 500."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from kenning.services.tenants import TenantService
from kenning.stores.metadata.tables import Asset
from tests.unit.api.conftest import Door

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(scope="module")
def seeded(door: Door) -> dict[str, str]:
    """A story by "ada" in the bootstrap tenant with 3 impressions and a read, and the
    headers of a key of another tenant."""
    kenning = door.kenning
    who = kenning.tenants.authenticate(door.key)
    asset = Asset(tenant_id=who.tenant_id, kind="text", mime="text/plain", bytes=1,
                  sha256=hashlib.sha256(uuid.uuid4().bytes).hexdigest(), source="text",
                  meta={"author": "ada", "author_region": "eu"},
                  created_at=NOW - timedelta(days=2))
    with kenning.stores.db.session() as s:
        s.add(asset)
        s.flush()
        story = asset.id
    at = (NOW - timedelta(hours=1)).isoformat()
    events = [{"event_id": f"a{i}", "type": "impression", "reader_id": f"r{i}",
               "asset_id": story, "surface": "home", "position": i, "request_id": "q",
               "at": at} for i in range(3)]
    events.append({"event_id": "a9", "type": "read", "reader_id": "r0", "asset_id": story,
                   "dwell_ms": 5000, "at": (NOW - timedelta(minutes=30)).isoformat()})
    answer = door.client.post("/v1/events", json={"events": events}, headers=door.headers)
    assert answer.status_code == 200, answer.text
    tenants = TenantService(kenning.stores.db)
    other = tenants.create_key(tenants.create_tenant(f"other-{uuid.uuid4().hex[:6]}")).key
    return {"story": story, "other": other}


def test_the_author_sees_how_the_stories_were_found(door: Door,
                                                    seeded: dict[str, str]) -> None:
    answer = door.client.get("/v1/authors/ada/discovery", params={"bucket": "week"},
                             headers=door.headers)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["totals"] == {"impressions": 3, "opens": 0, "reads": 1, "likes": 0,
                              "shares": 0}
    assert body["by_source"] == [{"source": "recommendations", "impressions": 3, "opens": 0,
                                  "reads": 1, "likes": 0, "shares": 0}]
    assert [s["surface"] for s in body["by_surface"]] == ["home"]
    assert sum(b["impressions"] for b in body["buckets"]) == 3


def test_exposure_over_http(door: Door, seeded: dict[str, str]) -> None:
    answer = door.client.get("/v1/recommendations/exposure",
                             params={"attribute": "author_region", "surface": "home"},
                             headers=door.headers)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["impressions"] == 3 and body["writers_shown"] == 1
    assert body["groups"][0]["value"] == "eu" and body["groups"][0]["impression_share"] == 1


def test_another_tenants_key_sees_no_author_and_no_impressions(
        door: Door, seeded: dict[str, str]) -> None:
    other = {"Authorization": f"Bearer {seeded['other']}"}
    answer = door.client.get("/v1/authors/ada/discovery", headers=other)
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "unknown_author"
    exposure = door.client.get("/v1/recommendations/exposure", headers=other).json()
    assert (exposure["impressions"], exposure["writers"], exposure["stories"]) == (0, 0, 0)
    assert door.client.get("/v1/authors/ada/discovery").status_code == 401
    assert door.client.get("/v1/recommendations/exposure").status_code == 401


@pytest.mark.parametrize(("path", "params", "code"), [
    ("/v1/authors/ada/discovery", {"bucket": "year"}, "invalid_bucket"),
    ("/v1/authors/ada/discovery", {"since": "2026-02-01", "until": "2026-01-01"},
     "invalid_range"),
    ("/v1/authors/ada/discovery", {"since": "not a date"}, "invalid_time"),
    ("/v1/authors/ada/discovery", {"until": "2026-01-01T25:00"}, "invalid_time"),
    ("/v1/authors/ada/discovery", {"since": "1900-01-01"}, "invalid_time"),
    ("/v1/authors/ada/discovery", {"until": "9999-12-31T23:00:00-05:00"}, "invalid_time"),
    ("/v1/authors/ada/discovery", {"since": "0001-01-01T00:00:00+05:00"}, "invalid_time"),
    ("/v1/authors/ada/discovery", {"since": "2000-01-01", "until": "2026-01-01"},
     "range_too_long"),
    ("/v1/authors/ada/discovery", {"since": "x" * 65}, "invalid_request"),
    ("/v1/recommendations/exposure", {"since": "soon"}, "invalid_time"),
    ("/v1/recommendations/exposure", {"until": "2026-01-01", "since": "2026-01-02"},
     "invalid_range"),
    ("/v1/recommendations/exposure", {"attribute": "a\\b"}, "invalid_attribute"),
    ("/v1/recommendations/exposure", {"new_writer_days": "0"}, "invalid_request"),
    ("/v1/recommendations/exposure", {"new_writer_days": "many"}, "invalid_request"),
    ("/v1/recommendations/exposure", {"surface": "a\x00b"}, "invalid_request"),
])
def test_bad_parameters_are_422_with_a_code(door: Door, seeded: dict[str, str], path: str,
                                            params: dict[str, str], code: str) -> None:
    answer = door.client.get(path, params=params, headers=door.headers)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] == code


@pytest.mark.parametrize("author", ["a%00b", "a%01b", "%20", "a" * 129])
def test_an_author_id_no_author_can_have_is_a_4xx(door: Door, seeded: dict[str, str],
                                                  author: str) -> None:
    answer = door.client.get(f"/v1/authors/{author}/discovery", headers=door.headers)
    assert 400 <= answer.status_code < 500, answer.text
    assert answer.json()["error"]["code"] in ("invalid_request", "not_found", "unknown_author")


def test_both_routes_are_in_the_openapi_document(door: Door) -> None:
    paths = door.client.get("/openapi.json").json()["paths"]
    discovery = paths["/v1/authors/{author_id}/discovery"]["get"]
    assert {"200", "401", "404", "422"} <= set(discovery["responses"])
    bucket = next(p for p in discovery["parameters"] if p["name"] == "bucket")
    assert bucket["schema"]["enum"] == ["day", "week"]
    assert "/v1/recommendations/exposure" in paths
