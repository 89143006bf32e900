"""Exploration's propensities are the policy's true probabilities: computed exactly,
checked against the frequencies of 20,000 seeded draws."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from kenning.services.recommend.explore import explore, explore_probability

GREEDY = [f"g{i}" for i in range(10)]
POOL = [f"p{i}" for i in range(4)]


def test_no_exploration_is_the_ranked_list_with_propensity_one() -> None:
    for epsilon, pool in ((0.0, POOL), (0.3, [])):
        shown = explore(GREEDY, pool, epsilon, random.Random(1))
        assert [s.item for s in shown] == GREEDY
        assert {s.propensity for s in shown} == {1.0}
        assert not any(s.explored for s in shown)


def test_the_probability_matches_a_direct_sum_and_caps_at_the_pool() -> None:
    # One position explored; others explore with p; the pool of 1 holds one swap only.
    assert explore_probability(0.5, 2, 1) == pytest.approx(0.5 * (0.5 * 1 + 0.5 * 0.5))
    assert explore_probability(0.2, 5, 100) == pytest.approx(0.2)  # pool never runs out
    assert explore_probability(0.2, 0, 3) == 0.0
    with pytest.raises(ValueError):
        explore_probability(1.0, 3, 3)


@pytest.mark.parametrize(("epsilon", "pool"), [(0.3, POOL), (0.1, POOL[:2]), (0.6, POOL)])
def test_logged_propensities_equal_the_observed_frequencies(epsilon: float,
                                                           pool: list[str]) -> None:
    rng = random.Random(7)
    runs = 20_000
    seen: Counter[tuple[int, str]] = Counter()
    logged: dict[tuple[int, str], float] = {}
    for _ in range(runs):
        shown = explore(GREEDY, pool, epsilon, rng)
        items = [s.item for s in shown]
        assert len(set(items)) == len(items)  # never one story twice
        for s in shown:
            seen[s.position, s.item] += 1
            assert logged.setdefault((s.position, s.item), s.propensity) == s.propensity
            assert 0 < s.propensity <= 1
            assert s.explored == (s.item in pool)
    q = explore_probability(epsilon, len(GREEDY), len(pool))
    for position, greedy in enumerate(GREEDY):
        # Everything that can stand at a position: its greedy item and each pool item.
        assert logged[position, greedy] + sum(
            logged.get((position, p), q / len(pool)) for p in pool) == pytest.approx(1.0)
        for item in (greedy, *pool):
            p = logged.get((position, item), q / len(pool))
            sd = math.sqrt(p * (1 - p) / runs)
            assert abs(seen[position, item] / runs - p) < 5 * sd + 1e-9, (position, item)
