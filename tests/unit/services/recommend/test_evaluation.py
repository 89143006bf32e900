"""Offline metrics on examples small enough to check by hand, and the position-bias
model recovering known examination probabilities from a simulated log."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest

from kenning.services.recommend.evaluation import (
    MAX_WEIGHT,
    ListContext,
    evaluate,
    label_weights,
    position_bias,
    top_lists,
)
from kenning.services.recommend.feature_store import Examples
from kenning.services.recommend.features import FEATURES

T = datetime(2026, 1, 1, tzinfo=UTC)


def examples(groups: list[int], positions: list[int], y: list[int], assets: list[str]
             ) -> Examples:
    n = len(groups)
    return Examples(np.zeros((n, len(FEATURES))), np.asarray(y, dtype=np.int64),
                    np.asarray(groups, dtype=np.int64), np.full(n, 0.5),
                    np.zeros((n, len(FEATURES))), [f"q{g}" for g in groups], assets,
                    ["r"] * n, np.asarray(positions, dtype=np.int64), [T] * n, ["blend"] * n)


# Request 0 shows a, b, c and the reader engaged with b; request 1 shows d, e, nothing engaged.
EX = examples([0, 0, 0, 1, 1], [0, 1, 2, 0, 1], [0, 1, 0, 0, 0], ["a", "b", "c", "d", "e"])
CONTEXT = ListContext(catalogue_size=10, readers={"a": 3, "b": 0, "d": 7}, all_readers=7,
                      vectors={"a": np.array([1, 0], np.float32),
                               "b": np.array([0, 1], np.float32),
                               "c": np.array([0.6, 0.8], np.float32)},
                      authors={"a": "ada", "b": "ada", "c": None, "d": "bo", "e": "bo"})


def test_a_ranker_that_puts_the_engaged_story_first() -> None:
    scores = np.array([0.1, 0.9, 0.2, 0.5, 0.4])
    metrics = evaluate(EX, scores, CONTEXT, k=2)
    assert metrics["ndcg"] == 1.0 and metrics["recall"] == 1.0
    assert metrics["ndcg_debiased"] == 1.0 and metrics["recall_debiased"] == 1.0
    assert (metrics["requests"], metrics["requests_with_positive"]) == (2, 1)
    assert [[EX.asset_ids[i] for i in top] for top in top_lists(EX, scores, 2)] == [
        ["b", "c"], ["d", "e"]]
    assert metrics["coverage"] == pytest.approx(4 / 10)
    # b, c: cosine 0.8 -> 0.2 (d, e have no vectors); authors ada, (c's own) -> 1; d, e -> 1/2.
    assert metrics["intra_list_diversity"] == pytest.approx(0.2)
    assert metrics["author_diversity"] == pytest.approx((1 + 0.5) / 2)
    # -log2((readers + 1) / 8): b 3, c 3, d 0, e 3.
    assert metrics["novelty"] == pytest.approx((3 + 3) / 2 / 2 + (0 + 3) / 2 / 2)


def test_the_logged_order_and_position_weights() -> None:
    logged = evaluate(EX, -EX.positions.astype(float), CONTEXT, k=2)
    assert logged["ndcg"] == pytest.approx(1 / math.log2(3))  # b at rank 2
    assert logged["recall"] == 1.0 and logged["intra_list_diversity"] == pytest.approx(1.0)
    # A cut at 1 misses b; weights do not change a single-story request's NDCG.
    cut = evaluate(EX, -EX.positions.astype(float), CONTEXT, k=1,
                   weights=np.array([1.0, 4.0, 1.0, 1.0, 1.0]))
    assert cut["recall"] == 0.0 and cut["ndcg"] == 0.0 and cut["ndcg_debiased"] == 0.0


def test_ratio_of_sums_weighs_requests_by_their_gains() -> None:
    ex = examples([0, 0, 1, 1], [0, 1, 0, 1], [1, 0, 0, 1], ["a", "b", "c", "d"])
    scores = np.array([0.9, 0.1, 0.9, 0.1])  # right in request 0, wrong in request 1
    weights = np.array([1.0, 1.0, 1.0, 3.0])  # position 1 seen a third as often
    metrics = evaluate(ex, scores, ListContext(4), weights=weights)
    assert metrics["ndcg"] == pytest.approx((1 + 1 / math.log2(3)) / 2)
    assert metrics["ndcg_debiased"] == pytest.approx((1 + 3 / math.log2(3)) / (1 + 3))


def test_position_bias_recovers_known_examination() -> None:
    rng = np.random.default_rng(3)
    examine = np.array([1.0, 0.7, 0.45, 0.3, 0.2])
    appeal = rng.uniform(0.1, 0.8, size=50)
    n = 40_000
    items = rng.integers(50, size=n)
    positions = rng.integers(5, size=n)  # uniformly random placement
    clicks = (rng.random(n) < 0.9 * examine[positions] * appeal[items]).astype(int)
    theta = position_bias(positions, clicks, [str(i) for i in items])
    assert list(theta) == [0, 1, 2, 3, 4]
    assert [theta[p] for p in range(5)] == pytest.approx(list(examine), abs=0.05)
    assert label_weights([0, 2, 9], theta).tolist() == pytest.approx(
        [1.0, 1 / theta[2], 1 / theta[4]])  # past the last known position: the last


def test_position_bias_without_engagement_and_its_cap() -> None:
    assert position_bias([0, 1, 1], [0, 0, 0], ["a", "b", "c"]) == {0: 1.0, 1: 1.0}
    assert position_bias([], [], []) == {}
    theta = position_bias([0] * 50 + [1] * 5000, [1] * 50 + [0] * 5000,
                          ["a"] * 50 + ["a"] * 5000)
    assert theta[1] == pytest.approx(1 / MAX_WEIGHT)
