"""Tenant isolation: another tenant's key gets 404 for every id-taking route, and its
calls change nothing for the owner."""

from __future__ import annotations

import pytest

from tests.fuzz.live import LiveServer, Seeded, assert_clean, describe, error_code

pytestmark = pytest.mark.slow

ASSET_ROUTES = [
    ("GET", "/v1/assets/{id}", None),
    ("GET", "/v1/assets/{id}/segments", None),
    ("GET", "/v1/assets/{id}/thumbnail", None),
    ("DELETE", "/v1/assets/{id}", None),
    ("POST", "/v1/similar", {"asset_id": "{id}"}),
    ("POST", "/v1/search", {"asset_id": "{id}"}),
    ("POST", "/v1/search", {"asset_id": "{id}", "query": "fires"}),
]


def _fill(value: object, asset_id: str) -> object:
    if isinstance(value, dict):
        return {k: _fill(v, asset_id) for k, v in value.items()}
    return value.replace("{id}", asset_id) if isinstance(value, str) else value


@pytest.mark.parametrize("which", ["text_asset", "image_asset"])
@pytest.mark.parametrize(("method", "path", "body"), ASSET_ROUTES,
                         ids=[f"{m} {p}{' ' + str(sorted(b)) if b else ''}"
                              for m, p, b in ASSET_ROUTES])
def test_other_tenant_gets_404_for_asset_ids(
    live: LiveServer, seeded: Seeded, which: str, method: str, path: str, body: dict | None
) -> None:
    asset_id = getattr(seeded, which)
    offset = live.log_offset()
    r = live.request(method, path.replace("{id}", asset_id), headers=live.other_headers,
                     json=_fill(body, asset_id) if body else None)
    assert_clean(live, r, offset)
    assert (r.status_code, error_code(r)) == (404, "not_found"), describe(r)
    # The owner still sees it: nothing was deleted or changed across the boundary.
    owner = live.request("GET", f"/v1/assets/{asset_id}", headers=live.headers)
    assert owner.status_code == 200, describe(owner)


@pytest.mark.parametrize("which", ["text_job", "image_job"])
def test_other_tenant_gets_404_for_job_ids(live: LiveServer, seeded: Seeded, which: str) -> None:
    offset = live.log_offset()
    r = live.request("GET", f"/v1/jobs/{getattr(seeded, which)}", headers=live.other_headers)
    assert_clean(live, r, offset)
    assert (r.status_code, error_code(r)) == (404, "not_found"), describe(r)


def test_other_tenant_audit_does_not_show_foreign_subjects(
    live: LiveServer, seeded: Seeded
) -> None:
    for asset_id in seeded.asset_ids:
        r = live.request("GET", "/v1/audit", headers=live.other_headers,
                         params={"subject_id": asset_id})
        assert r.status_code == 200, describe(r)
        assert r.json() == [], describe(r)


def test_other_tenant_search_and_similar_do_not_return_foreign_assets(
    live: LiveServer, seeded: Seeded
) -> None:
    r = live.request("POST", "/v1/search", headers=live.other_headers,
                     json={"query": "Bushfires threaten homes west of Sydney", "mode": "keyword"})
    assert r.status_code == 200, describe(r)
    assert {h["asset_id"] for h in r.json()["hits"]}.isdisjoint(seeded.asset_ids)
    r = live.request("POST", "/v1/similar", headers=live.other_headers,
                     json={"text": "Bushfires threaten homes west of Sydney"})
    assert r.status_code in (200, 422), describe(r)
    if r.status_code == 200:
        assert {m["asset_id"] for m in r.json()["matches"]}.isdisjoint(seeded.asset_ids)
