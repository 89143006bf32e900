"""Hostile metadata, as JSON and as the multipart ``metadata`` field. The property: one
ingest cannot break reads for its tenant. Whatever is accepted, the asset, its segments,
the audit trail and a metadata-filtered search of the tenant still answer 200."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz import strategies as hs
from tests.fuzz.live import (
    SEED_METADATA,
    LiveServer,
    assert_clean,
    assert_healthy,
    describe,
    fuzz_settings,
)

pytestmark = pytest.mark.slow

FUZZ = fuzz_settings(60)

FILTERED_SEARCH = {"query": "hostile metadata", "mode": "keyword",
                   "filters": {"metadata": {"desk": "news"}}}


def _reads_still_work(live: LiveServer, headers: dict[str, str], asset_id: str,
                      sent: str, offset: int) -> None:
    reads = [
        live.request("GET", f"/v1/assets/{asset_id}", headers=headers),
        live.request("GET", f"/v1/assets/{asset_id}/segments", headers=headers),
        live.request("GET", "/v1/audit", headers=headers),
        live.request("POST", "/v1/search", headers=headers, json=FILTERED_SEARCH),
        live.request("POST", "/v1/search", headers=headers,
                     json={**FILTERED_SEARCH, "filters": {"metadata": {"rank": 1}}}),
    ]
    broken = [describe(r) for r in reads if r.status_code != 200]
    assert not broken, (f"metadata {sent[:300]!r} was accepted and broke reads:\n"
                        + "\n".join(broken) + "\nserver log:\n" + live.log_errors_since(offset))
    stored = reads[0].json()["metadata"]
    assert isinstance(stored, dict)


def _check(live: LiveServer, headers: dict[str, str], r: httpx.Response, sent: str,
           offset: int) -> None:
    assert_clean(live, r, offset)
    if r.status_code == 202:  # the worse failure first: an accepted ingest broke reads
        _reads_still_work(live, headers, r.json()["asset_id"], sent, offset)
    if hs.violates_strict_json(sent):
        assert r.status_code == 422, f"lenient JSON metadata was accepted: {describe(r)}"


def test_hostile_metadata_in_json_ingest(live: LiveServer) -> None:
    @FUZZ
    @given(meta=hs.metadata_texts)
    def run(meta: str) -> None:
        headers = live.new_tenant("meta-json")
        # A known-good neighbour: the tenant's reads must keep finding it.
        seeded = live.request("POST", "/v1/assets", headers=headers, json={
            "text": f"neighbour {uuid.uuid4().hex}", "metadata": SEED_METADATA})
        assert seeded.status_code == 202, seeded.text
        body = ('{"text": "hostile metadata ' + uuid.uuid4().hex + '", "metadata": '
                + (meta or '""') + "}")
        offset = live.log_offset()
        r = live.post_raw("/v1/assets", body.encode(), headers)
        _check(live, headers, r, meta, offset)

    run()
    assert_healthy(live)


def test_hostile_metadata_in_multipart_ingest(live: LiveServer) -> None:
    @FUZZ
    @given(meta=hs.metadata_texts)
    def run(meta: str) -> None:
        headers = live.new_tenant("meta-form")
        seeded = live.request("POST", "/v1/assets", headers=headers, json={
            "text": f"neighbour {uuid.uuid4().hex}", "metadata": SEED_METADATA})
        assert seeded.status_code == 202, seeded.text
        text = f"hostile metadata {uuid.uuid4().hex}".encode()
        offset = live.log_offset()
        r = live.request("POST", "/v1/assets", headers=headers,
                         files={"file": ("note.txt", text)}, data={"metadata": meta})
        _check(live, headers, r, meta, offset)

    run()
    assert_healthy(live)


def test_hostile_metadata_in_batch_items(live: LiveServer) -> None:
    @fuzz_settings(20)
    @given(metas=st.lists(hs.metadata_texts, min_size=1, max_size=3))
    def run(metas: list[str]) -> None:
        headers = live.new_tenant("meta-batch")
        items = ",".join('{"text": "hostile batch ' + uuid.uuid4().hex + '", "metadata": '
                         + (m or "null") + "}" for m in metas)
        offset = live.log_offset()
        r = live.post_raw("/v1/assets/batch", ('{"items": [' + items + "]}").encode(), headers)
        assert_clean(live, r, offset)
        if r.status_code != 202:
            return
        for result, meta in zip(r.json()["results"], metas, strict=True):
            if hs.violates_strict_json(meta):
                assert result.get("accepted") is None, f"lenient JSON accepted: {meta[:200]!r}"
            if result.get("error") is not None:
                assert isinstance(result["error"].get("code"), str) and result["error"]["code"]
            if result.get("accepted"):
                _reads_still_work(live, headers, result["accepted"]["asset_id"], meta, offset)

    run()
    assert_healthy(live)


@pytest.mark.parametrize("meta", [
    {"k": "\x00"}, {"\x00": 1}, {"": ""}, {'"': 1}, {"$.a": 1}, {"k" * 5000: 1},
    {"big": 10**30}, {"neg": -907516395684407672832}, {"deep": {"a": {"b": [1, [2, {"c": 3}]]}}},
], ids=["nul-value", "nul-key", "empty-key", "quote-key", "path-key", "long-key", "10e30",
        "huge-negative", "nested"])
def test_odd_but_valid_metadata_keeps_reads_working(live: LiveServer, meta: dict) -> None:
    headers = live.new_tenant("meta-odd")
    sent = json.dumps(meta)
    offset = live.log_offset()
    r = live.post_raw("/v1/assets", ('{"text": "odd metadata ' + uuid.uuid4().hex
                                     + '", "metadata": ' + sent + "}").encode(), headers)
    _check(live, headers, r, sent, offset)
