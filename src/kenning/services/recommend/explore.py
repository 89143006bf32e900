"""Exploration: how the served order departs from the ranked one, and the exact probability
of every item shown at its position (the propensities off-policy estimates divide by).

The policy, given the re-ranked list cut into ``greedy`` (the ``limit`` best, in order)
and ``pool`` (the ``M`` next-best, which passed the same filters, cluster collapse and
author cap: :func:`kenning.services.recommend.rerank.rerank` ran over ``limit + M``):

1. Each position ``i`` is *explored* independently with probability ``epsilon``
   (``Settings.recs_explore``). When more positions are explored than the pool holds
   (``k > M``), a uniformly random ``M`` of them stay explored, the others keep their
   greedy item.
2. The explored positions get distinct pool items: a uniformly random injection, so each
   explored position holds any one pool item with probability ``1 / M``.

Every position's marginal is therefore exact and the same for all positions:
``q = P(position explored) = epsilon * E[min(1, M / (1 + B))]`` with
``B ~ Binomial(L - 1, epsilon)`` (the other positions explored; ``L`` the list's length),
so the greedy item at ``i`` was shown there with probability ``1 - q`` and each pool item
with probability ``q / M`` (``1 - q + M * q / M = 1``: the propensities of everything
that could stand at one position sum to one). ``epsilon = 0`` or an empty pool is the
deterministic ranked list (propensity 1). Positions keep their meaning: an explored item
is logged at the slot it was shown in. Randomness comes from the caller's generator (the
service seeds it from the request id, so a response can be replayed).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["Shown", "explore", "explore_probability"]

T = TypeVar("T")


@dataclass(frozen=True)
class Shown(Generic[T]):
    """One served slot: the item, whether exploration put it there, and the probability
    that the policy shows this item at this position."""

    item: T
    position: int
    propensity: float
    explored: bool


def explore_probability(epsilon: float, length: int, pool: int) -> float:
    """``q``: the probability that any one position of a list of ``length`` is explored
    (holds a pool item) under the policy of the module docstring."""
    if not 0.0 <= epsilon < 1.0:
        raise ValueError("epsilon must be in [0, 1)")
    if epsilon == 0.0 or pool <= 0 or length <= 0:
        return 0.0
    others = length - 1
    expected = 0.0
    for b in range(others + 1):
        pmf = math.comb(others, b) * epsilon ** b * (1.0 - epsilon) ** (others - b)
        expected += pmf * min(1.0, pool / (1 + b))
    return epsilon * expected


def explore(greedy: Sequence[T], pool: Sequence[T], epsilon: float,
            rng: random.Random) -> list[Shown[T]]:
    """The served list (as long as ``greedy``) and each slot's propensity."""
    q = explore_probability(epsilon, len(greedy), len(pool))
    if q == 0.0:
        return [Shown(item, i, 1.0, False) for i, item in enumerate(greedy)]
    explored = [i for i in range(len(greedy)) if rng.random() < epsilon]
    if len(explored) > len(pool):
        explored = sorted(rng.sample(explored, len(pool)))
    fill = dict(zip(explored, rng.sample(list(pool), len(explored)), strict=True))
    exploit, swap = 1.0 - q, q / len(pool)
    return [Shown(fill[i], i, swap, True) if i in fill else Shown(item, i, exploit, False)
            for i, item in enumerate(greedy)]
