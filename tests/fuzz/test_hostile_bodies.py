"""Hostile JSON bodies on every JSON route: never a 5xx, always the error envelope, and
the lenient-JSON extensions (NaN, Infinity, lone surrogates, runaway nesting) are refused
as ``invalid_json``. An accepted ingest stays readable."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from hypothesis import given

from tests.fuzz import strategies as hs
from tests.fuzz.live import (
    LIMITS,
    LiveServer,
    Seeded,
    assert_clean,
    assert_healthy,
    describe,
    error_code,
    fuzz_settings,
)

pytestmark = pytest.mark.slow

FUZZ = fuzz_settings(80)

INGEST_ROUTES = ("/v1/assets", "/v1/assets/batch")


@pytest.fixture(scope="module")
def reader(live: LiveServer) -> tuple[dict[str, str], Seeded]:
    """A tenant with seeded assets, for the routes that only read (search, similar)."""
    headers = live.new_tenant("reader")
    return headers, live.seed(headers)


def _accepted_ids(route: str, response: httpx.Response) -> Iterator[str]:
    body = response.json()
    if route == "/v1/assets":
        yield body["asset_id"]
    else:
        for item in body["results"]:
            if item.get("accepted"):
                yield item["accepted"]["asset_id"]


@pytest.mark.parametrize("route", list(hs.ENDPOINT_TEMPLATES))
def test_hostile_json_bodies(
    live: LiveServer, reader: tuple[dict[str, str], Seeded], route: str
) -> None:
    @FUZZ
    @given(body=hs.hostile_bodies(hs.ENDPOINT_TEMPLATES[route]))
    def run(body: bytes) -> None:
        # Ingest gets a fresh tenant per example so a poisoned row cannot blame the next one.
        headers = live.new_tenant("body") if route in INGEST_ROUTES else reader[0]
        offset = live.log_offset()
        r = live.post_raw(route, body, headers)
        assert_clean(live, r, offset)
        if r.status_code in (200, 202) and route in INGEST_ROUTES:
            for asset_id in _accepted_ids(route, r):
                got = live.request("GET", f"/v1/assets/{asset_id}", headers=headers)
                assert got.status_code == 200, (body[:300], got.status_code, got.text[:300],
                                                live.log_errors_since(offset))

    run()
    assert_healthy(live)


FIELD_TEMPLATES = [(route, template) for route, templates in hs.ENDPOINT_TEMPLATES.items()
                   for template in templates]


@pytest.mark.parametrize("depth", [60, 65, 900, 1000, 1023])
@pytest.mark.parametrize(("route", "template"), FIELD_TEMPLATES,
                         ids=[f"{route} {template.replace('§', 'DEEP')}"
                              for route, template in FIELD_TEMPLATES])
def test_nesting_just_under_the_parser_limit(
    live: LiveServer, reader: tuple[dict[str, str], Seeded], route: str, template: str,
    depth: int,
) -> None:
    """Deep enough to exhaust Python's recursion in whatever walks the value after parsing
    (validation, error messages, reprs), yet within orjson's own 1024 bound: the API's
    depth bound must answer 4xx before any of that runs."""
    headers = live.new_tenant("deep") if route in INGEST_ROUTES else reader[0]
    offset = live.log_offset()
    r = live.post_raw(route, hs.fill(template, hs.nested_array(depth)), headers)
    assert_clean(live, r, offset)
    assert 400 <= r.status_code < 500, describe(r)


STRICT_CASES = {
    "nan": "NaN", "infinity": "Infinity", "minus-infinity": "-Infinity",
    "lone-high-surrogate": '"\\ud800"', "lone-low-surrogate": '"\\udfff"',
    "nesting-10000": hs.nested_array(10_000),
    "object-nesting-10000": hs.nested_object(10_000),
}
STRICT_TEMPLATES = {
    "/v1/assets": '{"text": "strict json probe", "metadata": {"k": §}}',
    "/v1/assets/batch": '{"items": [{"text": "strict json probe", "metadata": {"k": §}}]}',
    "/v1/similar": '{"text": "strict json probe", "threshold": §}',
    "/v1/search": '{"query": "strict json probe", "filters": {"metadata": {"k": §}}}',
}


@pytest.mark.parametrize("value", list(STRICT_CASES.values()), ids=list(STRICT_CASES))
@pytest.mark.parametrize("route", list(STRICT_TEMPLATES))
def test_lenient_json_is_refused_as_invalid_json(
    live: LiveServer, reader: tuple[dict[str, str], Seeded], route: str, value: str
) -> None:
    headers = live.new_tenant("strict") if route in INGEST_ROUTES else reader[0]
    offset = live.log_offset()
    r = live.post_raw(route, hs.fill(STRICT_TEMPLATES[route], value), headers)
    assert_clean(live, r, offset)
    assert (r.status_code, error_code(r)) == (422, "invalid_json"), r.text[:300]


@pytest.mark.parametrize("route", list(STRICT_TEMPLATES))
def test_lone_surrogate_text_is_refused(
    live: LiveServer, reader: tuple[dict[str, str], Seeded], route: str
) -> None:
    field = {"/v1/search": "query"}.get(route, "text")
    body = {"/v1/assets/batch": '{"items": [{"text": "a\\ud83d b"}]}'}.get(
        route, '{"' + field + '": "a\\ud83d b"}')
    headers = live.new_tenant("strict") if route in INGEST_ROUTES else reader[0]
    offset = live.log_offset()
    r = live.post_raw(route, body.encode(), headers)
    assert_clean(live, r, offset)
    assert (r.status_code, error_code(r)) == (422, "invalid_json"), r.text[:300]


@pytest.mark.parametrize("route", list(STRICT_TEMPLATES))
def test_streamed_body_over_the_limit_is_refused(
    live: LiveServer, reader: tuple[dict[str, str], Seeded], route: str
) -> None:
    """Chunked transfer has no Content-Length: the limit must hold while reading."""
    limit = LIMITS["KENNING_MAX_UPLOAD_BYTES"]

    def chunks() -> Iterator[bytes]:
        yield b'{"text": "'
        for _ in range(3 * limit // 65_536 + 1):
            yield b"x" * 65_536
        yield b'"}'

    headers = live.new_tenant("stream") if route in INGEST_ROUTES else reader[0]
    offset = live.log_offset()
    r = live.http.post(route, content=chunks(),
                       headers={**headers, "Content-Type": "application/json"})
    assert "content-length" not in {k.lower() for k in r.request.headers}
    assert_clean(live, r, offset)
    assert r.status_code == 413, r.text[:300]
    assert_healthy(live)
