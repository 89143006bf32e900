"""Offline evaluation of a ranking policy on held-out served requests.

A policy is evaluated by how it would have ordered each held-out request's impressions
(the items the reader was shown), given its scores; the labels are what the reader
engaged with afterwards. Metrics, all at ``k`` (10):

* ``ndcg``: NDCG@k (:func:`sklearn.metrics.ndcg_score`, tied scores averaged), the mean
  over requests with at least one engaged item and at least two items (a one-item list
  ranks the same under every policy);
* ``recall``: engaged items in the top k over engaged items, the mean over requests
  with an engaged item;
* ``coverage``: distinct stories in all top-k lists over the stories in the catalogue;
* ``intra_list_diversity``: 1 - the mean pairwise cosine of the stories' text vectors
  in a top-k list, the mean over lists with two or more vectors (None when no story has
  a vector); ``author_diversity``: distinct authors over items in a top-k list (a
  story without an author counts as its own), the mean over lists of two or more;
* ``novelty``: the mean over lists of the mean ``-log2((readers + 1) / (all readers + 1))``
  of their stories, readers counted before the split (a story nobody read is novel).

Because the policies reorder what was served, list metrics (coverage, diversity,
novelty) differ between policies only where a request served more than k items. The
logged policy is evaluated with the served order (``scores = -position``).

**Position bias.** Readers engage more with what is shown higher, so raw labels favour
whichever policy ordered the log (a uniformly random order scores well on its own
clicks, and a request with one engaged item rewards the order that showed it high
whatever weight that item gets, since NDCG divides by the request's ideal DCG). So
besides the conventional ``ndcg`` and ``recall`` (raw labels, means over requests),
``ndcg_debiased`` and ``recall_debiased`` are ratios of sums over requests (sum of
DCG@k over sum of ideal DCG@k, :func:`sklearn.metrics.dcg_score`; sum of top-k gains
over sum of gains) whose gains weigh each engaged item by ``1 / theta(position)``, the
inverse of how often its position is examined relative to the first. Their numerators
are linear in the gains, so unbiased for the order's value under a position-based
model; their denominators depend on the labels only, the same for every policy. The
gate compares ``ndcg_debiased``. theta is the position-based click model's,
``P(engage) = theta(position) * gamma(story)``, fitted by expectation-maximisation on
the log (:func:`position_bias`; Wang et al. 2018, "Position bias estimation for unbiased
learning to rank in personal search"), weights capped at :data:`MAX_WEIGHT`. It is
identified where the log varies which story stands where (exploration, ``recs_explore``,
or one story at different slots across requests); a log that never does cannot tell a
position's pull from its stories' appeal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from kenning.services.recommend.feature_store import Examples

__all__ = ["MAX_WEIGHT", "K", "ListContext", "evaluate", "label_weights", "position_bias",
           "top_lists"]

K = 10
MAX_WEIGHT = 10.0
"""Largest weight an engaged item gets for its position (theta at least 1 / 10)."""
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class ListContext:
    """What the list metrics need besides the examples."""

    catalogue_size: int
    readers: dict[str, int] = field(default_factory=dict)
    """Distinct readers per story before the split."""
    all_readers: int = 0
    vectors: dict[str, npt.NDArray[np.float32]] = field(default_factory=dict)
    """Unit text vectors by story."""
    authors: dict[str, str | None] = field(default_factory=dict)


def _groups(groups: npt.NDArray[np.int64]) -> list[npt.NDArray[np.intp]]:
    """Row indexes of each group (groups are contiguous)."""
    if len(groups) == 0:
        return []
    cuts = np.flatnonzero(np.diff(groups)) + 1
    return list(np.split(np.arange(len(groups)), cuts))


def top_lists(examples: Examples, scores: FloatArray, k: int = K) -> list[npt.NDArray[np.intp]]:
    """Per request, the row indexes of its top ``k`` by score (ties: logged position)."""
    out = []
    for idx in _groups(examples.groups):
        order = np.lexsort((examples.positions[idx], -scores[idx]))
        out.append(idx[order[:k]])
    return out


def position_bias(positions: npt.ArrayLike, labels: npt.ArrayLike, items: list[str], *,
                  iterations: int = 100) -> dict[int, float]:
    """``theta(position) / theta(0)`` of the position-based click model, by EM (see the
    module docstring); 1 for every position when nothing was engaged with."""
    pos = np.asarray(positions, dtype=np.int64)
    c = np.asarray(labels, dtype=np.float64)
    if len(pos) == 0 or c.sum() == 0:
        return {int(p): 1.0 for p in np.unique(pos)}
    slots, p_idx = np.unique(pos, return_inverse=True)
    _, i_idx = np.unique(np.asarray(items), return_inverse=True)
    n_p = np.bincount(p_idx).astype(np.float64)
    n_i = np.bincount(i_idx).astype(np.float64)
    theta = np.full(len(slots), 0.5)
    gamma = np.full(len(n_i), 0.5)
    for _ in range(iterations):
        t, g = theta[p_idx], gamma[i_idx]
        miss = np.maximum(1.0 - t * g, 1e-12)
        examined = c + (1 - c) * t * (1 - g) / miss  # P(examined | observation)
        relevant = c + (1 - c) * (1 - t) * g / miss  # P(relevant | observation)
        theta = np.clip(np.bincount(p_idx, weights=examined) / n_p, 1e-6, 1.0)
        gamma = np.clip(np.bincount(i_idx, weights=relevant) / n_i, 1e-6, 1.0)
    relative = np.clip(theta / theta[0], 1.0 / MAX_WEIGHT, None)
    return {int(p): float(v) for p, v in zip(slots, relative, strict=True)}


def label_weights(positions: npt.ArrayLike, theta: dict[int, float]) -> FloatArray:
    """``1 / theta(position)`` per row (a position ``theta`` lacks: the nearest below it)."""
    known = sorted(theta)
    out = []
    for p in np.asarray(positions, dtype=np.int64).tolist():
        below = [k for k in known if k <= p]
        out.append(1.0 / theta[below[-1] if below else known[0]] if known else 1.0)
    return np.asarray(out, dtype=np.float64)


def _diversity(vectors: list[npt.NDArray[np.float32]]) -> float:
    m = np.stack(vectors).astype(np.float64)
    sims = m @ m.T
    n = len(vectors)
    return 1.0 - float((sims.sum() - np.trace(sims)) / (n * (n - 1)))


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def evaluate(examples: Examples, scores: FloatArray, context: ListContext,
             k: int = K, weights: FloatArray | None = None) -> dict[str, float | int | None]:
    """The metrics of the module docstring for a policy scoring ``examples`` by
    ``scores`` (higher first); ``weights``: each row's label weight (position bias)."""
    from sklearn.metrics import dcg_score, ndcg_score

    scores = np.asarray(scores, dtype=np.float64)
    labels = examples.y.astype(np.float64)
    gains = labels * (np.ones(len(examples)) if weights is None else weights)
    ndcgs, recalls = [], []
    dcg = ideal = hit = total = 0.0
    for idx in _groups(examples.groups):
        positives = float(labels[idx].sum())
        if positives <= 0:
            continue
        top = idx[np.lexsort((examples.positions[idx], -scores[idx]))[:k]]
        recalls.append(float(labels[top].sum()) / positives)
        hit += float(gains[top].sum())
        total += float(gains[idx].sum())
        if len(idx) >= 2:
            ndcgs.append(float(ndcg_score(labels[idx][None, :], scores[idx][None, :], k=k)))
            dcg += float(dcg_score(gains[idx][None, :], scores[idx][None, :], k=k))
            ideal += float(dcg_score(gains[idx][None, :], gains[idx][None, :], k=k))
    lists = top_lists(examples, scores, k)
    shown = {examples.asset_ids[i] for top in lists for i in top}
    diversity, authors, novelty = [], [], []
    log_all = math.log2(context.all_readers + 1)
    for top in lists:
        assets = [examples.asset_ids[i] for i in top]
        vectors = [context.vectors[a] for a in assets if a in context.vectors]
        if len(vectors) >= 2:
            diversity.append(_diversity(vectors))
        if len(assets) >= 2:
            names = [context.authors.get(a) or f"story:{a}" for a in assets]
            authors.append(len(set(names)) / len(names))
        if assets:
            novelty.append(float(np.mean([log_all - math.log2(context.readers.get(a, 0) + 1)
                                          for a in assets])))
    return {
        "ndcg": _mean(ndcgs), "recall": _mean(recalls),
        "ndcg_debiased": dcg / ideal if ideal > 0 else None,
        "recall_debiased": hit / total if total > 0 else None,
        "coverage": len(shown) / context.catalogue_size if context.catalogue_size else None,
        "intra_list_diversity": _mean(diversity), "author_diversity": _mean(authors),
        "novelty": _mean(novelty), "requests": len(lists), "requests_with_positive": len(recalls),
    }
