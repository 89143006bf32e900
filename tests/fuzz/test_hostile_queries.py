"""Hostile search filters and query parameters: never a 5xx, always the error envelope,
and limits outside what can be honoured are refused (422), not passed to SQL."""

from __future__ import annotations

import pytest
from hypothesis import given

from tests.fuzz import strategies as hs
from tests.fuzz.live import (
    LiveServer,
    Seeded,
    assert_clean,
    assert_healthy,
    describe,
    fuzz_settings,
)

pytestmark = pytest.mark.slow

FUZZ = fuzz_settings(60)


@pytest.fixture(scope="module")
def tenant(live: LiveServer) -> tuple[dict[str, str], Seeded]:
    """A tenant with assets carrying metadata, so filters are evaluated against rows."""
    headers = live.new_tenant("queries")
    return headers, live.seed(headers)


def test_hostile_search_filters(live: LiveServer, tenant: tuple[dict[str, str], Seeded]) -> None:
    headers, _ = tenant

    @FUZZ
    @given(body=hs.search_bodies)
    def run(body: str) -> None:
        offset = live.log_offset()
        r = live.post_raw("/v1/search", body.encode(), headers)
        assert_clean(live, r, offset)
        if hs.violates_strict_json(body):
            assert r.status_code == 422, f"lenient JSON accepted: {describe(r)}"

    run()
    assert_healthy(live)


@pytest.mark.parametrize("key", ['"', "a\"b", "$", "$.desk", "a.b", "[0]", "*", "\\", "",
                                 "\x00", "'", "desk\"]", "k" * 5000])
def test_odd_filter_keys_are_answered_or_refused(
    live: LiveServer, tenant: tuple[dict[str, str], Seeded], key: str
) -> None:
    headers, _ = tenant
    offset = live.log_offset()
    r = live.request("POST", "/v1/search", headers=headers, json={
        "query": "fires", "mode": "keyword", "filters": {"metadata": {key: "news"}}})
    assert_clean(live, r, offset)
    assert r.status_code in (200, 422), describe(r)


QUERY_ROUTES = [
    ("/v1/audit", "limit"), ("/v1/admin/dead-letters", "limit"), ("/v1/audit", "action"),
    ("/v1/audit", "subject_id"), ("/v1/assets/{asset}/segments", "kind"),
]


@pytest.mark.parametrize(("path", "param"), QUERY_ROUTES,
                         ids=[f"{p}?{q}" for p, q in QUERY_ROUTES])
def test_hostile_query_parameters(
    live: LiveServer, tenant: tuple[dict[str, str], Seeded], path: str, param: str
) -> None:
    headers, seeded = tenant
    url = path.replace("{asset}", seeded.text_asset)

    @FUZZ
    @given(value=hs.query_values)
    def run(value: int | str) -> None:
        offset = live.log_offset()
        r = live.request("GET", url, headers=headers, params={param: value})
        assert_clean(live, r, offset)
        if param != "limit":
            return
        number = _as_int(value)
        if number is not None and (number < 1 or number >= 2**63):
            assert r.status_code == 422, f"limit {value!r} must be refused: {describe(r)}"
        elif number is not None and number <= 100:
            assert r.status_code == 200, describe(r)

    run()
    assert_healthy(live)


def _as_int(value: int | str) -> int | None:
    if isinstance(value, int):
        return value
    try:
        return int(value.strip()) if value.strip().lstrip("-").isascii() else None
    except ValueError:
        return None


@pytest.mark.parametrize("threshold", ["nan", "NaN", "inf", "-inf", "Infinity", "1e309"])
def test_non_finite_multipart_threshold_is_refused(
    live: LiveServer, tenant: tuple[dict[str, str], Seeded], threshold: str
) -> None:
    headers, _ = tenant
    offset = live.log_offset()
    r = live.request("POST", "/v1/similar", headers=headers,
                     files={"file": ("q.txt", b"bushfires near Sydney")},
                     data={"threshold": threshold})
    assert_clean(live, r, offset)
    assert r.status_code == 422, describe(r)
