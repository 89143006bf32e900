"""Issue #2 acceptance, end to end: API -> queue -> processors -> stores -> search.

Real models (USE multilingual, PP-OCR, PDQ), real media (scikit-image photos and a
scanned book page, ABC news articles). Every test runs on both profiles: the embedded
SQLite broker and stores, and the cluster's servers (PostgreSQL with pgvector for
metadata, vectors and keywords; Redis; S3).
"""

from __future__ import annotations

import pytest

from tests.e2e.conftest import PROFILES, Api
from tests.fixtures import media

pytestmark = [pytest.mark.slow, PROFILES]



def _upload(api: Api, name: str, data: bytes, headers: dict[str, str] | None = None,
            **fields: str) -> dict:
    r = api.client.post("/v1/assets", files={"file": (name, data)}, data=fields,
                        headers=headers or api.headers)
    assert r.status_code == 202, r.text
    return r.json()


@pytest.fixture(scope="module")
def corpus(api: Api) -> dict[str, str]:
    """40 real news articles, the scanned page and two photos, fully processed."""
    ids: dict[str, str] = {}
    for article in media.news(40):
        r = api.client.post("/v1/assets", headers=api.headers, json={
            "text": article.text, "title": article.title, "external_id": article.id,
            "metadata": {"source": "abc", "collection": "lee"},
        })
        assert r.status_code == 202, r.text
        ids[article.id] = r.json()["asset_id"]
    for name in ("page.png", "coffee.png", "astronaut.png"):
        ids[name] = _upload(api, name, media.image_bytes(name))["asset_id"]
    api.wait()
    return ids


def test_every_asset_completes_with_provenance(api: Api, corpus: dict[str, str]) -> None:
    for asset_id in corpus.values():
        body = api.client.get(f"/v1/assets/{asset_id}", headers=api.headers).json()
        assert body["status"] == "ready", body
        stages = {s["processor"]: s for s in body["job"]["stages"]}
        assert all(s["state"] == "succeeded" and s["attempts"] >= 1 for s in stages.values())
        if body["kind"] == "image":
            assert {"image.decode", "image.pdq", "image.ocr", "image.thumbnail",
                    "text.chunk", "text.embed"} <= set(stages)
            assert stages["image.ocr"]["model_version"]
        else:
            assert stages["text.embed"]["model_version"] == "use-multilingual-v3"
            assert body["language"] == "en"


def test_printed_words_in_an_image_are_found_by_keyword(
    api: Api, corpus: dict[str, str]
) -> None:
    page = corpus["page.png"]
    segments = api.client.get(f"/v1/assets/{page}/segments", headers=api.headers).json()
    ocr_text = " ".join(s["text"] for s in segments if s["kind"] == "ocr_block").lower()
    assert "region" in ocr_text  # the scanned page speaks of region-based segmentation
    r = api.client.post("/v1/search", headers=api.headers,
                        json={"query": "region", "mode": "keyword"})
    hits = r.json()["hits"]
    assert hits and hits[0]["asset_id"] == page
    assert "<mark>" in hits[0]["highlight"].lower()


def test_german_query_finds_english_article(api: Api, corpus: dict[str, str]) -> None:
    r = api.client.post("/v1/search", headers=api.headers, json={
        "query": "Ein Erdbeben hat Teile von Westaustralien erschüttert", "mode": "semantic",
        "filters": {"kind": ["text"]}, "limit": 3,
    })
    hits = r.json()["hits"]
    assert hits[0]["asset_id"] == corpus["lee-bg-0033"]  # "An earthquake ... Western Australia"
    assert hits[0]["language"] == "en"


def test_hybrid_explains_and_keeps_cross_lingual_hits_where_semantic_puts_them(
    api: Api, corpus: dict[str, str]
) -> None:
    """A German query over English articles: the keyword retriever matches names shared
    across languages ("Richter", "Australien" is not "Australia", but "4,1" is "4.1"), and
    must not lift any English article over where the embedding ranks it."""
    query = ("Ein Erdbeben der Stärke 4,1 auf der Richterskala hat über Nacht Teile des "
             "Weizengürtels von Westaustralien erschüttert")
    body = {"query": query, "limit": 10, "filters": {"kind": ["text"]}}
    semantic = api.client.post("/v1/search", headers=api.headers,
                               json={**body, "mode": "semantic"}).json()["hits"]
    r = api.client.post("/v1/search", headers=api.headers,
                        json={**body, "mode": "hybrid", "explain": True})
    assert r.status_code == 200, r.text
    hybrid = r.json()
    assert hybrid["query_language"] == "de"
    assert hybrid["hits"][0]["asset_id"] == corpus["lee-bg-0033"]
    assert [h["asset_id"] for h in hybrid["hits"]] == [h["asset_id"] for h in semantic]
    for rank, hit in enumerate(hybrid["hits"], start=1):
        parts = hit["explain"]
        assert parts["semantic"]["rank"] == rank and parts["semantic"]["weight"] == 1.0
        if "keyword" in parts:  # found by a shared word, weighted 0 across languages
            assert parts["keyword"]["weight"] == 0.0 and parts["keyword"]["contribution"] == 0
        assert hit["score"] == pytest.approx(
            sum(p["contribution"] for p in parts.values()), abs=1e-5)
    assert any("keyword" in h["explain"] for h in hybrid["hits"])  # the rule was needed
    # Without explain, neither the parts nor the query language are sent.
    plain = api.client.post("/v1/search", headers=api.headers, json={**body}).json()
    assert plain["query_language"] is None and plain["hits"][0]["explain"] is None


def test_hybrid_search_fuses_and_filters(api: Api, corpus: dict[str, str]) -> None:
    r = api.client.post("/v1/search", headers=api.headers, json={
        "query": "firefighters bushfires Blue Mountains", "mode": "hybrid", "limit": 5,
        "filters": {"metadata": {"collection": "lee"}, "language": ["en"]},
    })
    hits = r.json()["hits"]
    assert len(hits) == 5
    assert all("rrf" in h["scores"] and h["kind"] == "text" for h in hits)
    assert any("fire" in (h["text"] or "").lower() for h in hits[:2])
    none = api.client.post("/v1/search", headers=api.headers, json={
        "query": "firefighters", "filters": {"metadata": {"collection": "other"}}})
    assert none.json()["hits"] == []
    images_only = api.client.post("/v1/search", headers=api.headers, json={
        "query": "firefighters", "mode": "keyword", "filters": {"kind": ["image"]}})
    assert all(h["kind"] == "image" for h in images_only.json()["hits"])


def test_jpeg_quality_30_is_found_by_pdq(api: Api, corpus: dict[str, str]) -> None:
    r = api.client.post("/v1/similar", headers=api.headers,
                        files={"file": ("coffee-q30.jpg", media.jpeg_bytes("coffee.png", 30))})
    assert r.status_code == 200, r.text
    matches = r.json()["matches"]
    assert matches[0]["asset_id"] == corpus["coffee.png"]
    assert matches[0]["method"] == "pdq"
    assert matches[0]["evidence"]["hamming_distance"] <= 31
    assert corpus["astronaut.png"] not in {m["asset_id"] for m in matches}


def test_similar_text_by_asset(api: Api, corpus: dict[str, str]) -> None:
    r = api.client.post("/v1/similar", headers=api.headers,
                        json={"asset_id": corpus["lee-bg-0020"], "threshold": 0.3})
    matches = r.json()["matches"]
    assert matches and all(m["method"] == "text_semantic" for m in matches)
    assert corpus["lee-bg-0020"] not in {m["asset_id"] for m in matches}


def test_same_bytes_twice_return_the_first_asset(api: Api, corpus: dict[str, str]) -> None:
    again = _upload(api, "renamed.png", media.image_bytes("coffee.png"))
    assert again["duplicate_of"] == corpus["coffee.png"]
    assert again["asset_id"] == corpus["coffee.png"]


def test_thumbnail_and_exif_metadata(api: Api, corpus: dict[str, str]) -> None:
    body = api.client.get(f"/v1/assets/{corpus['astronaut.png']}", headers=api.headers).json()
    assert body["metadata"]["width"] == 512 and body["metadata"]["height"] == 512
    thumb = api.client.get(f"/v1/assets/{corpus['astronaut.png']}/thumbnail",
                           headers=api.headers)
    assert thumb.status_code == 200 and thumb.content[:3] == b"\xff\xd8\xff"


def test_tenant_b_never_sees_tenant_a(api: Api, corpus: dict[str, str]) -> None:
    other = api.new_tenant("tenant-b")
    asset = corpus["coffee.png"]
    assert api.client.get(f"/v1/assets/{asset}", headers=other).status_code == 404
    assert api.client.get(f"/v1/assets/{asset}/segments", headers=other).status_code == 404
    assert api.client.delete(f"/v1/assets/{asset}", headers=other).status_code == 404
    for mode in ("keyword", "semantic", "hybrid"):
        r = api.client.post("/v1/search", headers=other, json={"query": "fire", "mode": mode})
        assert r.status_code == 200 and r.json()["hits"] == []
    sim = api.client.post("/v1/similar", headers=other,
                          files={"file": ("c.jpg", media.jpeg_bytes("coffee.png", 30))})
    assert sim.json()["matches"] == []
    assert api.client.post("/v1/similar", headers=other,
                           json={"asset_id": asset}).status_code == 404
    # The same bytes in tenant B are a new asset, not a duplicate of A's.
    own = _upload(api, "coffee.png", media.image_bytes("coffee.png"), headers=other)
    assert own["duplicate_of"] is None and own["asset_id"] != asset


def test_metrics_and_health(api: Api, corpus: dict[str, str]) -> None:
    assert api.client.get("/healthz").json() == {"status": "ok"}
    ready = api.client.get("/readyz").json()
    assert ready["ready"] is True
    text = api.client.get("/metrics").text
    for name in ("kenning_http_request_seconds_bucket", "kenning_queue_depth",
                 "kenning_stage_seconds_bucket", "kenning_inference_batch_size_bucket"):
        assert name in text
    assert 'route="/v1/search"' in text
    assert 'processor="text.embed"' in text


def test_audit_trail_records_creates(api: Api, corpus: dict[str, str]) -> None:
    events = api.client.get("/v1/audit", headers=api.headers,
                            params={"action": "asset.create", "limit": 500}).json()
    subjects = {e["subject_id"] for e in events}
    assert set(corpus.values()) <= subjects
    assert all(e["actor"].startswith("key:") for e in events)


def test_identical_bytes_in_another_tenant_reveal_nothing_about_the_first(
    api: Api, corpus: dict[str, str]
) -> None:
    other = api.new_tenant("tenant-cache")
    asset = _upload(api, "page-copy.png", media.image_bytes("page.png"), headers=other)
    assert asset["duplicate_of"] is None
    api.wait()
    body = api.client.get(f"/v1/assets/{asset['asset_id']}", headers=other).json()
    stages = {s["processor"]: s for s in body["job"]["stages"]}
    assert body["status"] == "ready"
    # The processing cache is per tenant: nothing says another tenant had these bytes.
    assert not any(s["cached"] for s in stages.values())
    hits = api.client.post("/v1/search", headers=other,
                           json={"query": "region", "mode": "keyword"}).json()["hits"]
    assert [h["asset_id"] for h in hits] == [asset["asset_id"]]
    # A delete drops the tenant's cache entries with the asset: nothing derived survives.
    assert api.client.delete(f"/v1/assets/{asset['asset_id']}", headers=other).status_code == 204
    again = _upload(api, "page-copy.png", media.image_bytes("page.png"), headers=other)
    api.wait()
    body = api.client.get(f"/v1/assets/{again['asset_id']}", headers=other).json()
    stages = {s["processor"]: s for s in body["job"]["stages"]}
    assert stages["image.ocr"]["cached"] is False


def test_time_range_filter(api: Api, corpus: dict[str, str]) -> None:
    created = api.client.get(f"/v1/assets/{corpus['lee-bg-0033']}",
                             headers=api.headers).json()["created_at"]
    query = {"query": "earthquake Western Australia", "mode": "keyword"}
    before = api.client.post("/v1/search", headers=api.headers, json={
        **query, "filters": {"created_before": created}}).json()["hits"]
    after = api.client.post("/v1/search", headers=api.headers, json={
        **query, "filters": {"created_after": created}}).json()["hits"]
    assert corpus["lee-bg-0033"] not in {h["asset_id"] for h in before}
    assert after[0]["asset_id"] == corpus["lee-bg-0033"]
