"""Pools: packing loses nothing; the pool cache honours marks, age and its size; the story
cache loads only what it misses, per tenant."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import numpy as np

from kenning.services.recommend.pools import Pool, PoolCache, StoryCache, pack
from kenning.services.recommend.reasons import Reason, SourceCandidate


def _candidate(asset_id: str) -> SourceCandidate:
    return SourceCandidate(
        asset_id=asset_id, score=0.5, scores={"content:similar": 0.5, "trending:engagement": 2.0},
        reasons=[Reason(source="content", kind="similar",
                        evidence={"because_of": "x", "cosine": 0.5}),
                 Reason(source="trending", kind="engagement",
                        evidence={"engagements": 3, "window_days": 7.0})],
        author="ada", language="en", published_at=datetime(2026, 1, 2, tzinfo=UTC))


def _pool(mark: tuple[Any, ...], made: float | None = None) -> Pool:
    return Pool(request=None, packed=(pack(_candidate("a")),), clusters={},  # type: ignore[arg-type]
                mark=mark, made=time.monotonic() if made is None else made)


def test_packing_round_trips() -> None:
    original = _candidate("a")
    back = pack(original).unpack()
    assert back == original
    assert [r.code for r in back.reasons] == ["content:similar", "trending:engagement"]
    back.scores["x"] = 1.0  # each unpack is its own copy
    assert "x" not in pack(original).unpack().scores


def test_the_pool_cache_honours_mark_age_and_size() -> None:
    cache = PoolCache(size=2)
    cache.put(("t", "r1"), _pool((5, 2)))
    assert cache.get(("t", "r1"), (5, 2), ttl_s=60) is not None
    assert cache.get(("t", "r1"), (6, 3), ttl_s=60) is None  # the reader acted since
    assert cache.get(("t", "r1"), (5, 2), ttl_s=0) is None  # expired
    cache.put(("t", "r1"), _pool((5, 2), made=time.monotonic() - 100))
    assert cache.get(("t", "r1"), (5, 2), ttl_s=60) is None
    cache.put(("t", "r1"), _pool((5, 2)))
    cache.put(("t", "r2"), _pool((1, 1)))
    cache.get(("t", "r1"), (5, 2), ttl_s=60)  # r1 served last: r2 goes first
    cache.put(("u", "r3"), _pool((1, 1)))
    assert len(cache) == 2 and cache.get(("t", "r2"), (1, 1), ttl_s=60) is None
    cache.forget("t")
    assert len(cache) == 1 and cache.get(("u", "r3"), (1, 1), ttl_s=60) is not None


def test_the_story_cache_loads_misses_per_tenant() -> None:
    cache = StoryCache(size=4)
    asked: list[set[str]] = []

    def vectors(ids: set[str]) -> dict[str, Any]:
        asked.append(set(ids))
        return {a: np.ones(3, dtype=np.float32) for a in ids if a != "novec"}

    def titles(ids: set[str]) -> dict[str, str | None]:
        return {a: f"title {a}" for a in ids}

    cache.ensure("t", {"a", "b", "novec"}, vectors, titles)
    cache.ensure("t", {"a", "b"}, vectors, titles)
    assert asked == [{"a", "b", "novec"}]
    assert cache.vector("t", "a") is not None and cache.vector("u", "a") is None
    assert cache.title_map("t", ["a", "zz"]) == {"a": "title a", "zz": None}
    cache.ensure("u", {"a", "b"}, vectors, titles)  # past the size: emptied, then loaded
    assert cache.vector("t", "a") is None and cache.vector("u", "a") is not None
    cache.forget("u")
    assert cache.title_map("u", ["a"]) == {"a": None}
