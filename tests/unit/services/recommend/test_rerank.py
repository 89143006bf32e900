"""Re-ranking (issue 10, item 4): filters (a hidden or muted item never comes back),
near-duplicate collapse, MMR diversity, the author cap and the freshness boost, each with
the why of every kept and dropped candidate."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kenning.services.recommend.rerank import (
    Candidate,
    DropReason,
    ReaderState,
    RerankConfig,
    config_for,
    rerank,
)
from kenning.settings import Settings

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
PLAIN = RerankConfig(mmr_lambda=1.0, max_per_author=None, freshness_half_life_h=None)
"""Relevance order alone: no diversity, no cap, no boost."""
NOBODY = ReaderState()


def c(asset_id: str, score: float, **kw: object) -> Candidate:
    return Candidate(asset_id=asset_id, score=score, **kw)  # type: ignore[arg-type]


def order(candidates: list[Candidate], config: RerankConfig = PLAIN,
          state: ReaderState = NOBODY, limit: int = 10) -> list[str]:
    return [k.asset_id for k in rerank(candidates, state, config, limit, NOW).kept]


# --- filters ------------------------------------------------------------------------------
def test_every_filter_drops_with_its_reason_whatever_the_score() -> None:
    state = ReaderState(read=frozenset({"read"}), hidden=frozenset({"hidden"}),
                        reported=frozenset({"reported"}), muted_authors=frozenset({"bob"}),
                        flagged=frozenset({"flagged"}))
    candidates = [c("hidden", 9.0), c("muted", 8.0, author="bob"), c("read", 7.0),
                  c("reported", 6.0), c("flagged", 5.0), c("ok", 0.1, author="ada")]
    result = rerank(candidates, state, PLAIN, 10, NOW)
    assert [k.asset_id for k in result.kept] == ["ok"]
    assert result.why_dropped() == {
        "hidden": DropReason.HIDDEN, "muted": DropReason.MUTED_AUTHOR,
        "read": DropReason.ALREADY_READ, "reported": DropReason.REPORTED,
        "flagged": DropReason.FLAGGED}
    muted = next(d for d in result.dropped if d.asset_id == "muted")
    assert "bob" in muted.detail


def test_drop_read_is_per_surface_but_hidden_and_muted_always_go() -> None:
    state = ReaderState(read=frozenset({"a"}), hidden=frozenset({"b"}),
                        muted_authors=frozenset({"bob"}))
    keep_read = PLAIN.model_copy(update={"drop_read": False})
    candidates = [c("a", 3.0), c("b", 2.0), c("m", 1.5, author="bob"), c("d", 1.0)]
    assert order(candidates, keep_read, state) == ["a", "d"]
    assert order(candidates, PLAIN, state) == ["d"]


def test_near_duplicates_of_what_the_reader_read_or_hid_are_dropped_too() -> None:
    state = ReaderState(read_clusters=frozenset({"k1"}), hidden_clusters=frozenset({"k2"}))
    result = rerank([c("copy-of-read", 5.0, cluster_id="k1"),
                     c("copy-of-hidden", 4.0, cluster_id="k2"), c("other", 1.0, cluster_id="k3")],
                    state, PLAIN, 10, NOW)
    assert [k.asset_id for k in result.kept] == ["other"]
    assert result.why_dropped() == {"copy-of-read": DropReason.ALREADY_READ,
                                    "copy-of-hidden": DropReason.HIDDEN}


def test_repeats_fold_into_one_item_with_every_reason_and_the_best_score() -> None:
    result = rerank([c("a", 0.4, reasons=["content"]), c("b", 0.5, reasons=["trending"]),
                     c("a", 0.9, reasons=["social", "content"])], NOBODY, PLAIN, 10, NOW)
    kept = {k.asset_id: k for k in result.kept}
    assert [k.asset_id for k in result.kept] == ["a", "b"]
    assert kept["a"].score == 0.9 and kept["a"].reasons == ("content", "social")
    assert [(d.asset_id, d.reason) for d in result.dropped] == [("a", DropReason.REPEAT)]


def test_a_score_that_is_not_a_number_is_dropped_not_ranked() -> None:
    result = rerank([c("nan", float("nan")), c("inf", float("inf")), c("ok", 1.0)],
                    NOBODY, PLAIN, 10, NOW)
    assert [k.asset_id for k in result.kept] == ["ok"]
    assert result.why_dropped() == {"nan": DropReason.INVALID_SCORE,
                                    "inf": DropReason.INVALID_SCORE}


# --- near-duplicates ----------------------------------------------------------------------
def test_a_cluster_of_near_duplicates_is_one_story_the_best_scored_member() -> None:
    candidates = [c("wire-copy", 0.7, cluster_id="k"), c("original", 0.9, cluster_id="k"),
                  c("rewrite", 0.8, cluster_id="k"), c("lone", 0.5),
                  c("other-story", 0.6, cluster_id="j")]
    result = rerank(candidates, NOBODY, PLAIN, 10, NOW)
    assert [k.asset_id for k in result.kept] == ["original", "other-story", "lone"]
    assert result.kept[0].folded == ("rewrite", "wire-copy")
    assert {(d.asset_id, d.reason, d.by) for d in result.dropped} == {
        ("rewrite", DropReason.NEAR_DUPLICATE, "original"),
        ("wire-copy", DropReason.NEAR_DUPLICATE, "original")}
    off = PLAIN.model_copy(update={"collapse_clusters": False})
    assert order(candidates, off) == ["original", "rewrite", "wire-copy", "other-story", "lone"]


def test_the_freshness_boost_can_decide_which_member_stands_for_the_story() -> None:
    config = PLAIN.model_copy(update={"freshness_half_life_h": 24.0, "freshness_weight": 0.2})
    old = c("old", 0.80, cluster_id="k", published_at=NOW - timedelta(days=30))
    new = c("new", 0.75, cluster_id="k", published_at=NOW - timedelta(hours=1))
    assert order([old, new], config) == ["new"]
    assert order([old, new]) == ["old"]


# --- MMR, author cap, freshness -----------------------------------------------------------
def test_mmr_trades_relevance_for_novelty_as_lambda_says() -> None:
    same_topic = [1.0, 0.0, 0.0]
    candidates = [c("a", 1.0, embedding=same_topic),
                  c("b", 0.9, embedding=np.array([0.99, 0.14, 0.0])),
                  c("z", 0.5, embedding=[0.0, 0.0, 2.0])]
    assert order(candidates) == ["a", "b", "z"]
    diverse = PLAIN.model_copy(update={"mmr_lambda": 0.5})
    result = rerank(candidates, NOBODY, diverse, 10, NOW)
    assert [k.asset_id for k in result.kept] == ["a", "z", "b"]
    a, z, b = result.kept
    # relevance is the score scaled over the candidates: a 1, b 0.8, z 0.
    assert (a.relevance, z.relevance, b.relevance) == pytest.approx((1.0, 0.0, 0.8))
    assert (a.max_similarity, z.max_similarity) == (0.0, 0.0)
    cos_ab = 0.99 / np.hypot(0.99, 0.14)
    assert b.max_similarity == pytest.approx(cos_ab) and b.similar_to == "a"
    assert b.mmr == pytest.approx(0.5 * 0.8 - 0.5 * cos_ab)
    assert z.mmr == pytest.approx(0.0) and z.similar_to is None


def test_items_without_embeddings_are_similar_to_nothing() -> None:
    candidates = [c("a", 1.0, embedding=[1.0, 0.0]), c("b", 0.9, embedding=[1.0, 0.0]),
                  c("x", 0.8), c("zero", 0.7, embedding=[0.0, 0.0])]
    config = PLAIN.model_copy(update={"mmr_lambda": 0.5})
    kept = rerank(candidates, NOBODY, config, 10, NOW).kept
    assert [k.asset_id for k in kept] == ["a", "x", "zero", "b"]
    assert [k.max_similarity for k in kept] == pytest.approx([0.0, 0.0, 0.0, 1.0])


def test_embeddings_of_different_lengths_are_a_caller_bug() -> None:
    with pytest.raises(ValueError, match="different lengths"):
        rerank([c("a", 1.0, embedding=[1.0, 0.0]), c("b", 0.5, embedding=[1.0, 0.0, 0.0])],
               NOBODY, PLAIN, 10, NOW)


def test_an_author_gets_at_most_the_cap_and_the_rest_says_why() -> None:
    candidates = [c("a1", 1.0, author="ada"), c("a2", 0.9, author="ada"),
                  c("a3", 0.8, author="ada"), c("b1", 0.1, author="bob"), c("n", 0.05)]
    capped = PLAIN.model_copy(update={"max_per_author": 2})
    result = rerank(candidates, NOBODY, capped, 10, NOW)
    assert [k.asset_id for k in result.kept] == ["a1", "a2", "b1", "n"]
    assert result.why_dropped() == {"a3": DropReason.AUTHOR_CAP}
    assert order(candidates) == ["a1", "a2", "a3", "b1", "n"]


def test_freshness_boost_halves_every_half_life() -> None:
    config = PLAIN.model_copy(update={"freshness_half_life_h": 10.0, "freshness_weight": 0.4})
    result = rerank([c("old", 1.0, published_at=NOW - timedelta(hours=20)),
                     c("new", 1.0, published_at=NOW - timedelta(hours=10)),
                     c("now", 1.0, published_at=NOW + timedelta(minutes=5)),
                     c("undated", 1.0)], NOBODY, config, 10, NOW)
    boosts = {k.asset_id: k.freshness_boost for k in result.kept}
    assert boosts == pytest.approx({"now": 0.4, "new": 0.2, "old": 0.1, "undated": 0.0})
    assert [k.asset_id for k in result.kept] == ["now", "new", "old", "undated"]


def test_limit_cuts_and_says_so() -> None:
    candidates = [c(f"s{i}", 1.0 - i / 10) for i in range(5)]
    result = rerank(candidates, NOBODY, PLAIN, 2, NOW)
    assert [k.asset_id for k in result.kept] == ["s0", "s1"]
    assert [k.position for k in result.kept] == [0, 1]
    assert result.why_dropped() == {f"s{i}": DropReason.BELOW_CUT for i in (2, 3, 4)}
    assert rerank(candidates, NOBODY, PLAIN, 0, NOW).kept == []
    with pytest.raises(ValueError):
        rerank(candidates, NOBODY, PLAIN, -1, NOW)


def test_each_surface_has_its_config_and_others_the_default() -> None:
    settings = Settings(rerank_surfaces={"home": RerankConfig(mmr_lambda=0.3)},
                        rerank_default=RerankConfig(max_per_author=5))
    assert config_for(settings, "home").mmr_lambda == 0.3
    assert config_for(settings, "push").max_per_author == 5
    defaults = Settings()
    assert config_for(defaults, "article_footer").max_per_author == 1
    assert config_for(defaults, "anything") == defaults.rerank_default


def test_surfaces_come_from_the_environment_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KENNING_RERANK_SURFACES", '{"home": {"mmr_lambda": 0.6}}')
    assert config_for(Settings(), "home") == RerankConfig(mmr_lambda=0.6)


# --- invariants over arbitrary inputs -----------------------------------------------------
_candidate = st.builds(
    Candidate,
    asset_id=st.sampled_from([f"s{i}" for i in range(12)]),
    score=st.floats(-5, 5, allow_nan=False),
    author=st.sampled_from([None, "ada", "bob", "cy"]),
    published_at=st.one_of(st.none(), st.integers(0, 24 * 30).map(
        lambda h: NOW - timedelta(hours=h))),
    embedding=st.one_of(st.none(), st.lists(st.floats(-1, 1), min_size=3, max_size=3)),
    cluster_id=st.sampled_from([None, "k1", "k2"]),
)
_ids = st.frozensets(st.sampled_from([f"s{i}" for i in range(12)]), max_size=4)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(candidates=st.lists(_candidate, max_size=25), read=_ids, hidden=_ids, reported=_ids,
       flagged=_ids, muted=st.frozensets(st.sampled_from(["ada", "bob"]), max_size=1),
       lam=st.floats(0, 1), cap=st.sampled_from([None, 1, 2]), limit=st.integers(0, 12))
def test_invariants(candidates: list[Candidate], read: frozenset[str], hidden: frozenset[str],
                    reported: frozenset[str], flagged: frozenset[str], muted: frozenset[str],
                    lam: float, cap: int | None, limit: int) -> None:
    state = ReaderState(read=read, hidden=hidden, reported=reported, flagged=flagged,
                        muted_authors=muted)
    config = RerankConfig(mmr_lambda=lam, max_per_author=cap)
    result = rerank(candidates, state, config, limit, NOW)
    kept = result.kept
    # Every candidate is accounted for exactly once: kept, or dropped with a reason.
    assert len(kept) + len(result.dropped) == len(candidates)
    ids = [k.asset_id for k in kept]
    assert len(ids) == len(set(ids)) <= limit
    assert [k.position for k in kept] == list(range(len(kept)))
    by_id: dict[str, Candidate] = {}
    for x in candidates:  # a repeat is folded into the first of its id
        by_id.setdefault(x.asset_id, x)
    for k in kept:
        assert k.asset_id not in read | hidden | reported | flagged
        assert by_id[k.asset_id].author not in muted or by_id[k.asset_id].author is None
    clusters = [by_id[i].cluster_id for i in ids if by_id[i].cluster_id is not None]
    assert len(clusters) == len(set(clusters))
    if cap is not None:
        authors = [k.author for k in kept if k.author is not None]
        assert all(authors.count(a) <= cap for a in set(authors))
