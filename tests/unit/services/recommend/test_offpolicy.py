"""IPS and SNIPS: exact values on a log small enough to check by hand, refusals of
impossible propensities, and unbiasedness on simulated logs whose true values are known
(a bandit with a stochastic target, and slates re-ranked by a deterministic ranker under
position bias)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from kenning.services.recommend.offpolicy import estimate, ips, slate_propensities, snips


def test_a_hand_checked_log() -> None:
    rewards = [1, 0, 1, 0]
    logged = [0.5, 0.25, 0.5, 1.0]
    target = [1.0, 1.0, 0.0, 0.0]
    # weights 2, 4, 0, 0: IPS (1*2) / 4; SNIPS (1*2) / (2 + 4); ESS 6^2 / (4 + 16).
    assert ips(rewards, logged, target) == pytest.approx(0.5)
    assert snips(rewards, logged, target) == pytest.approx(1 / 3)
    result = estimate(rewards, logged, target)
    assert (result.n, result.matched) == (4, 2)
    assert result.ess == pytest.approx(1.8)
    # The logging policy evaluated on itself: the mean reward.
    assert ips(rewards, logged, logged) == pytest.approx(0.5)
    assert snips(rewards, logged, logged) == pytest.approx(0.5)


def test_no_weight_and_no_data() -> None:
    assert snips([1, 1], [0.5, 0.5], [0.0, 0.0]) is None
    assert ips([1, 1], [0.5, 0.5], [0.0, 0.0]) == 0.0
    assert ips([], [], []) is None and snips([], [], []) is None
    assert estimate([], [], []).ess == 0.0


@pytest.mark.parametrize(("logged", "target"), [
    ([0.0, 0.5], [1.0, 1.0]), ([1.5, 0.5], [1.0, 1.0]), ([float("nan"), 0.5], [1.0, 1.0]),
    ([0.5, 0.5], [1.2, 0.0]), ([0.5, 0.5], [-0.1, 0.0]), ([0.5], [1.0, 1.0])])
def test_impossible_propensities_are_refused(logged: list[float], target: list[float]) -> None:
    with pytest.raises(ValueError):
        ips([1.0] * len(logged), logged, target)


def test_slate_propensities_match_the_logged_rank() -> None:
    groups = [0, 0, 0, 1, 1]
    positions = [0, 1, 2, 0, 1]
    assert slate_propensities(groups, positions, [3, 2, 1, 5, 9]).tolist() == [1, 1, 1, 0, 0]
    assert slate_propensities(groups, positions, [0.1, 0.9, 0.5, 1, 1]).tolist() == [
        0, 0, 0, 1, 1]  # ties keep the logged order
    assert slate_propensities(groups, positions, [0.9, 0.1, 0.5, 2, 1]).tolist() == [
        1, 0, 0, 1, 1]
    # Ranks among the impressions, not raw positions: positions 0, 5, 9 are ranks 0, 1, 2.
    assert slate_propensities([0, 0, 0], [9, 0, 5], [1, 3, 2]).tolist() == [1, 1, 1]


def test_ips_is_unbiased_and_snips_consistent_on_a_simulated_bandit() -> None:
    rng = np.random.default_rng(7)
    mu = np.array([0.1, 0.3, 0.5, 0.2, 0.8])
    logging = np.array([0.4, 0.3, 0.15, 0.1, 0.05])  # rarely shows the best action
    target = np.array([0.05, 0.05, 0.2, 0.1, 0.6])
    truth = float(target @ mu)
    reps, n = 400, 500
    actions = rng.choice(5, size=(reps, n), p=logging)
    rewards = (rng.random((reps, n)) < mu[actions]).astype(float)
    estimates = np.array([ips(rewards[r], logging[actions[r]], target[actions[r]])
                          for r in range(reps)], dtype=float)
    se = estimates.std(ddof=1) / np.sqrt(reps)
    assert abs(estimates.mean() - truth) < 4 * se
    assert abs(float(rewards.mean()) - float(logging @ mu)) < 0.01  # the logged value
    assert truth - float(logging @ mu) > 0.3  # the target is clearly better
    self_normalised = np.array([snips(rewards[r], logging[actions[r]], target[actions[r]])
                                for r in range(reps)], dtype=float)
    assert abs(self_normalised.mean() - truth) < 0.01
    assert self_normalised.std() < estimates.std()


def test_ips_of_a_ranker_on_uniformly_shuffled_slates_under_position_bias() -> None:
    rng = np.random.default_rng(11)
    appeal = np.array([0.9, 0.2, 0.5, 0.1])  # how much each of 4 stories appeals
    examine = np.array([1.0, 0.6, 0.35, 0.2])  # how often each position is looked at
    ranker = np.array([0.5, 0.3, 0.9, 0.1])  # ranks story 2, 0, 1, 3
    order = np.argsort(-ranker)
    truth = float(np.mean(appeal[order] * examine))  # reward per impression, target
    logged_truth = float(np.mean(appeal) * np.mean(examine))
    perms = np.array(list(itertools.permutations(range(4))))
    reps, requests = 200, 400
    values = []
    for _ in range(reps):
        shown = perms[rng.integers(len(perms), size=requests)]  # uniform: p = 1/4 each
        stories = shown.ravel()
        positions = np.tile(np.arange(4), requests)
        groups = np.repeat(np.arange(requests), 4)
        rewards = (rng.random(len(stories)) < appeal[stories] * examine[positions]).astype(
            float)
        target = slate_propensities(groups, positions, ranker[stories])
        values.append(ips(rewards, np.full(len(stories), 0.25), target))
    v = np.array(values, dtype=float)
    assert abs(v.mean() - truth) < 4 * v.std(ddof=1) / np.sqrt(reps)
    assert truth > logged_truth + 0.05
