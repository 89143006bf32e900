"""Hybrid fusion: per asset, scaled by score sizes, with the cross-lingual keyword rule."""

from __future__ import annotations

import math
import random

import pytest

from kenning.services.fusion import FusionWeights, LegHit, best_per_asset, fuse, ranked_alone

WEIGHTS = FusionWeights(k=60, keyword=1.0, semantic=1.0, crosslingual_keyword=0.0)


def _hits(*rows: tuple[str, int, float]) -> list[LegHit]:
    return [LegHit(asset, segment, score) for asset, segment, score in rows]


def _order(**legs: list[LegHit]) -> list[str]:
    return [h.asset_id for h in fuse(legs, WEIGHTS, query_language=None, asset_languages={})]


def test_an_asset_counts_once_per_retriever_with_its_best_segment() -> None:
    # "long" has three chunks that all match the keyword leg a little; "short" matches
    # best on both legs. Per chunk, "long" collected three contributions and won.
    keyword = _hits(("short", 1, 9.0), ("long", 2, 8.0), ("long", 3, 7.9), ("long", 4, 7.8))
    semantic = _hits(("short", 1, 0.8), ("long", 3, 0.7), ("long", 2, 0.6))
    fused = fuse({"keyword": keyword, "semantic": semantic}, WEIGHTS,
                 query_language=None, asset_languages={})
    assert [h.asset_id for h in fused] == ["short", "long"]
    long = fused[1].components
    assert (long["keyword"].rank, long["keyword"].segment_id) == (2, 2)
    assert (long["semantic"].rank, long["semantic"].segment_id) == (2, 3)
    assert best_per_asset(keyword) == _hits(("short", 1, 9.0), ("long", 2, 8.0))


def test_a_keyword_lead_counts_by_its_size() -> None:
    # The quoted sentence: keyword has "target" far ahead; the embedding puts a near
    # neighbour first by a hair. Plain RRF (ranks only) ties them and falls back to luck;
    # scaled, the keyword lead wins.
    keyword = _hits(("target", 1, 30.0), ("neighbour", 2, 6.0))
    semantic = _hits(("neighbour", 2, 0.71), ("target", 1, 0.70))
    assert _order(keyword=keyword, semantic=semantic) == ["target", "neighbour"]
    # Near ties on both legs: neither lead is large, the embedding's order stands when
    # its lead is the larger one.
    keyword = _hits(("a", 1, 10.0), ("b", 2, 9.9))
    semantic = _hits(("b", 2, 0.80), ("a", 1, 0.60))
    assert _order(keyword=keyword, semantic=semantic) == ["b", "a"]


def test_contributions_add_up_and_ranks_are_one_based() -> None:
    keyword = _hits(("a", 1, 4.0), ("b", 2, 2.0))
    semantic = _hits(("b", 2, 0.5), ("a", 1, 0.25), ("c", 3, -0.1))
    fused = {h.asset_id: h for h in fuse({"keyword": keyword, "semantic": semantic}, WEIGHTS,
                                          query_language=None, asset_languages={})}
    b = fused["b"].components
    assert b["keyword"].rank == 2 and b["semantic"].rank == 1
    assert b["keyword"].contribution == pytest.approx(1.0 * (2.0 / 4.0) / 62)
    assert b["semantic"].contribution == pytest.approx(1.0 * 1.0 / 61)
    for hit in fused.values():
        assert hit.score == pytest.approx(sum(c.contribution for c in hit.components.values()))
    assert fused["c"].score == 0.0  # a negative cosine adds nothing


def test_cross_lingual_hits_rank_as_semantic_search_ranks_them() -> None:
    # A German query over English assets, plus one German asset. The keyword leg matched
    # a name shared across languages in some English assets and reordered them.
    rng = random.Random(7)
    assets = [f"en{i}" for i in range(30)] + ["de0"]
    languages = {a: ("de" if a.startswith("de") else "en") for a in assets}
    for _ in range(50):
        semantic = sorted((LegHit(a, i, rng.uniform(0.2, 0.9)) for i, a in enumerate(assets)),
                          key=lambda h: -h.score)
        keyword = sorted((LegHit(a, i, rng.uniform(1, 20)) for i, a in enumerate(assets)
                          if rng.random() < 0.5), key=lambda h: -h.score)
        fused = fuse({"keyword": keyword, "semantic": semantic}, WEIGHTS,
                     query_language="de", asset_languages=languages)
        semantic_rank = {h.asset_id: r for r, h in enumerate(semantic)}
        english = [h.asset_id for h in fused if languages[h.asset_id] == "en"]
        assert english == sorted(english, key=semantic_rank.__getitem__)
        for hit in fused:
            if languages[hit.asset_id] == "en" and "keyword" in hit.components:
                assert hit.components["keyword"].weight == 0.0
        # Among English assets no keyword match lifts one above another, so an English
        # target is never ranked lower than semantic search ranks it, but for the German
        # asset, which may rise with its keyword evidence.
        for target in english:
            above = {h.asset_id for h in fused[:[h.asset_id for h in fused].index(target)]}
            assert above - {"de0"} <= {a for a in english if semantic_rank[a]
                                       < semantic_rank[target]}


def test_same_or_unknown_languages_keep_the_full_keyword_weight() -> None:
    keyword = _hits(("a", 1, 5.0))
    semantic = _hits(("b", 2, 0.9), ("a", 1, 0.8))
    for query_language, language in (("en", "en"), (None, "en"), ("en", None)):
        fused = fuse({"keyword": keyword, "semantic": semantic}, WEIGHTS,
                     query_language=query_language, asset_languages={"a": language})
        assert fused[0].asset_id == "a"
        assert fused[0].components["keyword"].weight == 1.0
    cross = fuse({"keyword": keyword, "semantic": semantic}, WEIGHTS,
                 query_language="de", asset_languages={"a": "en", "b": "en"})
    assert [h.asset_id for h in cross] == ["b", "a"]
    half = FusionWeights(k=60, keyword=1.0, semantic=1.0, crosslingual_keyword=0.5)
    assert half.of("keyword", "de", "en") == 0.5 and half.of("semantic", "de", "en") == 1.0


def test_ties_go_to_the_asset_id_not_the_segment_id() -> None:
    keyword = _hits(("b", 1, 5.0), ("a", 9, 5.0))
    semantic = _hits(("a", 9, 0.5), ("b", 1, 0.5))
    fused = fuse({"keyword": keyword, "semantic": semantic}, WEIGHTS,
                 query_language=None, asset_languages={})
    assert math.isclose(fused[0].score, fused[1].score)
    assert [h.asset_id for h in fused] == ["a", "b"]


def test_one_retriever_alone_keeps_its_scores_and_order() -> None:
    hits = _hits(("a", 1, 3.0), ("a", 2, 2.0), ("b", 3, 1.0))
    ranked = ranked_alone("keyword", hits)
    assert [(h.asset_id, h.segment_id, h.score) for h in ranked] == [("a", 1, 3.0),
                                                                      ("b", 3, 1.0)]
    assert ranked[1].components["keyword"].rank == 2


def test_a_limit_keeps_the_first_assets_not_the_first_segments() -> None:
    hits = _hits(("a", 1, 3.0), ("a", 2, 2.5), ("b", 3, 2.0), ("c", 4, 1.0))
    assert [h.asset_id for h in ranked_alone("semantic", hits, 2)] == ["a", "b"]
    assert ranked_alone("semantic", hits, 2) == ranked_alone("semantic", hits)[:2]
    assert [h.asset_id for h in best_per_asset(hits, 1)] == ["a"]
