"""Off-policy estimates: what a ranker that did not serve would have earned, from the
served log's propensities.

Each logged impression is an action (this story at this position of this request) with
the probability the serving policy had of taking it (``rec_served.propensity``) and a
reward (engaged or not, :mod:`kenning.services.recommend.feature_store`). A target
policy's value, the expected reward per impression had it served, is estimated by

* **IPS** (inverse propensity scoring, Horvitz-Thompson): ``mean(r * w)`` with weights
  ``w = pi_target(action) / pi_logged(action)``: unbiased when the logging policy gave
  every action the target takes a positive probability (exploration), high variance
  when weights are large;
* **SNIPS** (self-normalised): ``sum(r * w) / sum(w)``: a little biased, consistent, far
  lower variance; undefined (None) when no logged action has weight.

``ess`` is the effective sample size ``(sum w)^2 / sum w^2``: how many impressions the
estimate is really worth. The logged policy's own value is the mean reward (on-policy).

For a ranker, :func:`slate_propensities` gives the target probabilities under the
item-position model: the target re-ranks each logged slate deterministically, and takes
the logged action exactly when it puts the story at the rank the story was shown at
(ranks among the request's impressions, which equal positions when the client shows a
prefix of the list).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["Estimate", "estimate", "ips", "slate_propensities", "snips"]

FloatArray = npt.NDArray[np.float64]


def _weights(rewards: npt.ArrayLike, logged: npt.ArrayLike, target: npt.ArrayLike
             ) -> tuple[FloatArray, FloatArray]:
    r = np.asarray(rewards, dtype=np.float64)
    p = np.asarray(logged, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    if not (r.shape == p.shape == t.shape) or r.ndim != 1:
        raise ValueError("rewards and both propensities must be vectors of one length")
    if len(p) and (not np.all(np.isfinite(p)) or p.min() <= 0 or p.max() > 1):
        raise ValueError("logged propensities must lie in (0, 1]")
    if len(t) and (not np.all(np.isfinite(t)) or t.min() < 0 or t.max() > 1):
        raise ValueError("target propensities must lie in [0, 1]")
    return r, t / p


def ips(rewards: npt.ArrayLike, logged: npt.ArrayLike, target: npt.ArrayLike) -> float | None:
    """Inverse propensity scoring: ``mean(r * target / logged)`` (None with no data)."""
    r, w = _weights(rewards, logged, target)
    return float(np.mean(r * w)) if len(r) else None


def snips(rewards: npt.ArrayLike, logged: npt.ArrayLike, target: npt.ArrayLike
          ) -> float | None:
    """Self-normalised IPS: ``sum(r * w) / sum(w)`` (None when no weight)."""
    r, w = _weights(rewards, logged, target)
    total = float(w.sum())
    return float((r * w).sum() / total) if total > 0 else None


@dataclass(frozen=True)
class Estimate:
    """A target policy's estimated value per impression."""

    ips: float | None
    snips: float | None
    n: int
    """Logged impressions."""
    matched: int
    """Impressions the target policy takes with positive probability."""
    ess: float
    """Effective sample size of the weights."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def estimate(rewards: npt.ArrayLike, logged: npt.ArrayLike, target: npt.ArrayLike
             ) -> Estimate:
    r, w = _weights(rewards, logged, target)
    ess = float(w.sum() ** 2 / (w ** 2).sum()) if (w > 0).any() else 0.0
    return Estimate(ips(r, logged, target), snips(r, logged, target), len(r),
                    int((w > 0).sum()), ess)


def slate_propensities(groups: npt.ArrayLike, positions: npt.ArrayLike,
                       scores: npt.ArrayLike) -> FloatArray:
    """Per logged impression, 1 when ranking its request's impressions by ``scores``
    (descending; ties by logged position) puts it at the rank it was shown at, else 0."""
    g = np.asarray(groups)
    pos = np.asarray(positions, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    out = np.zeros(len(g), dtype=np.float64)
    for group in np.unique(g):
        idx = np.flatnonzero(g == group)
        logged_rank = np.argsort(np.argsort(pos[idx], kind="stable"), kind="stable")
        target_rank = np.argsort(np.lexsort((pos[idx], -s[idx])), kind="stable")
        out[idx] = (logged_rank == target_rank).astype(np.float64)
    return out
