"""Have we seen this text before? Re-posts of real news articles with small edits are
near-duplicates (method, 0-1 score, evidence with the shared passages), beside the
semantic matches; thresholds per request and per tenant. Both profiles."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from kenning.principal import Principal
from kenning.processors.text.normalize import normalize_text
from kenning.stores.metadata.tables import Asset
from tests.e2e.conftest import PROFILES, Api
from tests.fixtures import media

pytestmark = [pytest.mark.slow, PROFILES]


def _repost(text: str) -> str:
    """What a re-post does: a new lead-in, one word in 30 changed, a sign-off."""
    words = text.split()
    edited = [("REPORTEDLY" if i % 30 == 7 else w) for i, w in enumerate(words)]
    return "BREAKING: " + " ".join(edited) + " Share this story with your friends."


@pytest.fixture(scope="module")
def texts(api: Api) -> dict[str, str]:
    """12 real articles, a re-post of the first, and a short note."""
    ids: dict[str, str] = {}
    articles = media.news(12)
    for article in articles:
        r = api.client.post("/v1/assets", headers=api.headers,
                            json={"text": article.text, "title": article.title})
        assert r.status_code == 202, r.text
        ids[article.id] = r.json()["asset_id"]
    r = api.client.post("/v1/assets", headers=api.headers,
                        json={"text": _repost(articles[0].text)})
    ids["repost"] = r.json()["asset_id"]
    r = api.client.post("/v1/assets", headers=api.headers, json={"text": "Fires near Sydney."})
    ids["short"] = r.json()["asset_id"]
    api.wait()
    return ids


def _similar(api: Api, body: dict) -> dict:
    r = api.client.post("/v1/similar", headers=api.headers, json=body)
    assert r.status_code == 200, r.text
    return r.json()


def test_a_repost_is_a_near_duplicate_with_its_shared_passages(
    api: Api, texts: dict[str, str]
) -> None:
    original = texts["lee-bg-0001"]
    body = _similar(api, {"asset_id": texts["repost"]})
    first = body["matches"][0]
    assert (first["asset_id"], first["method"]) == (original, "text_near_duplicate")
    evidence = first["evidence"]
    assert 0.7 <= first["score"] == evidence["resemblance"] < 1.0
    assert evidence["simhash_distance"] <= 16
    assert evidence["cosine"] > 0.9  # semantically the same text too
    # Each shared passage: the same words at its place in the query's text and in the
    # original's (both as normalised at ingest), the longest first.
    query_text = normalize_text(_repost(media.news(1)[0].text))
    original_text = normalize_text(media.news(1)[0].text)
    sizes = [span["words"] for span in evidence["spans"]]
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] >= 8
    for span in evidence["spans"]:
        (q0, q1), (o0, o1) = span["query"], span["match"]
        assert query_text[q0:q1].casefold() == original_text[o0:o1].casefold()
        assert len(re.findall(r"[^\W_]+", query_text[q0:q1])) == span["words"]
        assert span["text"] == query_text[q0:q1]
    # The other articles are merely similar (bushfire news), never near-duplicates.
    rest = body["matches"][1:]
    assert rest and all(m["method"] == "text_semantic" for m in rest)
    assert all(0 <= m["score"] <= 1 and m["evidence"]["cosine"] >= 0.75 for m in rest)
    # A query text finds it the same way; a tiny text is too short to call a re-post.
    by_text = _similar(api, {"text": _repost(media.news(1)[0].text)})
    found = {m["asset_id"]: m["method"] for m in by_text["matches"]}
    assert found[original] == found[texts["repost"]] == "text_near_duplicate"
    short = _similar(api, {"text": "Fires near Sydney.", "threshold": -1})
    assert all(m["method"] == "text_semantic" for m in short["matches"])


def test_one_vector_per_text_for_queries_and_assets(api: Api, texts: dict[str, str]) -> None:
    """An article's own text as a query scores cosine 1 against its stored asset."""
    article = media.news(3)[2]
    body = _similar(api, {"text": article.text, "thresholds": {"text_near_duplicate": 1.0}})
    match = next(m for m in body["matches"] if m["asset_id"] == texts[article.id])
    assert match["evidence"]["cosine"] == pytest.approx(1.0, abs=1e-5)
    assert match["method"] == "text_near_duplicate" and match["score"] == 1.0


def test_thresholds_per_request_and_per_tenant(api: Api, texts: dict[str, str]) -> None:
    repost = texts["repost"]
    strict = _similar(api, {"asset_id": repost, "thresholds": {"text_near_duplicate": 0.99,
                                                                "text_semantic": 0.99}})
    assert strict["query"]["thresholds"]["text_near_duplicate"] == 0.99
    assert [m["method"] for m in strict["matches"]] == []  # cosine 0.9x, resemblance 0.8x
    before = api.client.get("/v1/matching", headers=api.headers).json()
    assert before["tenant"] == {"pdq": None, "text_near_duplicate": None,
                                "text_semantic": None, "audio_fingerprint": None,
                                "video_pdq": None}
    r = api.client.put("/v1/matching", headers=api.headers,
                       json={"text_near_duplicate": 0.99, "pdq": 10})
    assert r.status_code == 200, r.text
    assert r.json()["effective"]["text_near_duplicate"] == 0.99
    assert r.json()["effective"]["text_semantic"] == before["effective"]["text_semantic"]
    tenant_strict = _similar(api, {"asset_id": repost})
    assert "text_near_duplicate" not in {m["method"] for m in tenant_strict["matches"]}
    # A request overrides the tenant; the change is audited; bad values are 422.
    loose = _similar(api, {"asset_id": repost, "thresholds": {"text_near_duplicate": 0.5}})
    assert loose["matches"][0]["method"] == "text_near_duplicate"
    audit = api.client.get("/v1/audit", headers=api.headers,
                           params={"action": "matching.set"}).json()
    assert audit[0]["after"] == {"text_near_duplicate": 0.99, "pdq": 10}
    for bad in ({"pdq": 300}, {"text_semantic": 2}, {"text_near_duplicate": -0.1},
                {"simhash": 3}, {"pdq": "x"}):
        r = api.client.put("/v1/matching", headers=api.headers, json=bad)
        assert r.status_code == 422, (bad, r.text)
    r = api.client.put("/v1/matching", headers=api.headers, json={})
    assert r.json()["tenant"]["text_near_duplicate"] is None


def test_the_matchers_batch_lookup_finds_what_one_lookup_finds(
    api: Api, texts: dict[str, str]
) -> None:
    """``duplicates_many`` (the matcher's one pass over a batch, with the stored simhashes)
    answers each asset as ``duplicates`` does, leaves out another tenant's and unknown ids,
    and finds the re-post pair from both sides."""
    similarity = api.kenning.similarity
    ids = list(texts.values())
    with api.kenning.stores.db.session(write=False) as s:
        tenant_id = s.scalar(select(Asset.tenant_id).where(Asset.id == ids[0]))
    who = Principal(tenant_id=tenant_id, key_id="test")
    batch = similarity.duplicates_many(who, [*ids, "0" * 32])
    assert set(batch) == set(ids)
    assert batch == {a: similarity.duplicates(who, a) for a in ids}
    original, repost = texts["lee-bg-0001"], texts["repost"]
    assert [m.asset_id for m in batch[repost]] == [original]
    assert [m.asset_id for m in batch[original]] == [repost]
    assert batch[texts["short"]] == []
    other = api.kenning.tenants.create_tenant("other-batch")
    assert similarity.duplicates_many(Principal(tenant_id=other, key_id="t"), ids) == {}
