"""Hostile multipart: odd text fields beside a good file, broken framing, lying content
types. Never a 5xx, always the error envelope; what is accepted stays readable."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz import strategies as hs
from tests.fuzz.live import (
    LiveServer,
    Seeded,
    assert_clean,
    assert_healthy,
    assert_stored_asset_reads,
    fuzz_settings,
)

pytestmark = pytest.mark.slow

FUZZ = fuzz_settings(50)

FORM_FIELDS = {
    "/v1/assets": ["title", "external_id", "callback_url", "metadata", "file"],
    "/v1/similar": ["threshold", "limit", "modality", "asset_id", "text", "file"],
    "/v1/assets/batch": ["items", "file"],
}
field_values = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", " ", "\x00", "a\x00b", "NaN", "-1", "0", "1e309", "10" * 20,
                     "x" * 2_000_000, "http://127.0.0.1:1/", "file:///etc/passwd",
                     '{"k": 1}', "[]", "\u202e", "\ufeff", "[{}]", "[null]",
                     '[{"metadata": {"a\\"b": 1}}]', '[{"title": NaN}]',
                     '[{"callback_url": "http://127.0.0.1:1/"}]', '[{"filename": ""}]']),
    hs.query_values.map(str),
)


@pytest.fixture(scope="module")
def tenant(live: LiveServer) -> tuple[dict[str, str], Seeded]:
    headers = live.new_tenant("forms")
    return headers, live.seed(headers)


@pytest.mark.parametrize("route", list(FORM_FIELDS))
def test_hostile_form_fields(
    live: LiveServer, tenant: tuple[dict[str, str], Seeded], route: str
) -> None:
    headers, _ = tenant

    @FUZZ
    @given(fields=st.dictionaries(st.sampled_from(FORM_FIELDS[route]) | st.text(max_size=8),
                                  field_values, max_size=4),
           file_name=st.text(max_size=20) | st.sampled_from(["", "../../etc/passwd", "\x00"]))
    def run(fields: dict[str, str], file_name: str) -> None:
        text = f"form fuzz {uuid.uuid4().hex}".encode()
        offset = live.log_offset()
        try:
            files = {"file": (file_name, text)}
            r = live.request("POST", route, headers=headers, files=files, data=fields)
        except UnicodeEncodeError:
            return  # the client cannot encode the name; nothing was sent
        assert_clean(live, r, offset)
        assert_stored_asset_reads(live, route, r, headers)

    run()
    assert_healthy(live)


CONTENT_TYPES = [
    "multipart/form-data", "multipart/form-data; boundary=", "multipart/form-data; boundary=x",
    "multipart/form-data; boundary=" + "b" * 5000, "multipart/mixed; boundary=x",
    "application/json; charset=latin-1", "application/x-www-form-urlencoded", "text/plain",
    "application/problem+json", "", "*/*",
]


@pytest.mark.parametrize("route", ["/v1/assets", "/v1/similar", "/v1/assets/batch",
                                   "/v1/search"])
def test_broken_framing_and_content_types(
    live: LiveServer, tenant: tuple[dict[str, str], Seeded], route: str
) -> None:
    headers, _ = tenant
    bodies = st.one_of(
        st.binary(max_size=256),
        st.builds(lambda b, rest: b"--x\r\n" + b + b"\r\n" + rest, st.sampled_from([
            b'Content-Disposition: form-data; name="file"; filename="a.txt"',
            b'Content-Disposition: form-data; name="metadata"',
            b"Content-Disposition: form-data", b"Content-Type: text/plain", b"",
        ]), st.binary(max_size=128)),
        st.just(b'{"text": "framing"}'),
    )

    @FUZZ
    @given(content_type=st.sampled_from(CONTENT_TYPES), body=bodies)
    def run(content_type: str, body: bytes) -> None:
        offset = live.log_offset()
        try:
            r = live.post_raw(route, body, headers, content_type=content_type)
        except UnicodeEncodeError:
            return
        assert_clean(live, r, offset)

    run()
    assert_healthy(live)
