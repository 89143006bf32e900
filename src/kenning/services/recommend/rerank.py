"""Re-ranking: from scored candidates to the list one surface shows, with the why of each.

:func:`rerank` is pure (no database, no clock unless ``now`` is left out): it takes the
candidates of every source, already scored by the ranker, and the reader's state, and
answers which to show in what order, recording for every kept item why it was kept and
for every dropped one why it was dropped. Steps, in order:

1. **Repeats**: a candidate whose asset id came already (from another source) is folded
   into the first; the kept one carries the reasons of both, its best score.
2. **Filters** (always): safety-flagged, reported, hidden, muted author; read when the
   surface's ``drop_read`` says so. The reader's state may name near-duplicate clusters
   too (``read_clusters``, ``hidden_clusters``): another copy of a story the reader read
   or hid is dropped like the story.
3. **Freshness**: ``score + freshness_weight * 0.5 ** (age_h / freshness_half_life_h)``;
   a candidate without a published time gets no boost.
4. **Near-duplicates**: candidates of one cluster (``cluster_id``, from
   ``match_cluster_member``; see :func:`kenning.services.match_clusters.cluster_of`) are
   one story: the best (boosted) score stands for it, the others are dropped.
5. **MMR with an author cap**: greedily, the next item maximises
   ``lambda * relevance - (1 - lambda) * max cosine similarity to the items above``
   (relevance: the boosted score scaled to 0-1 over the candidates left; a candidate
   without an embedding is similar to nothing; a negative similarity counts as 0); an
   author at ``max_per_author`` is skipped. What is left when ``limit`` items are chosen
   is dropped as ``below_cut``.

Per-surface settings: :class:`kenning.settings.RerankConfig`, by surface in
``Settings.rerank_surfaces`` (default ``Settings.rerank_default``): see
:func:`config_for`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

from kenning.settings import RerankConfig, Settings

__all__ = ["Candidate", "DropReason", "Dropped", "Kept", "ReaderState", "RerankConfig",
           "RerankResult", "config_for", "rerank"]


@dataclass(frozen=True)
class Candidate:
    """One story a candidate source proposed, scored by the ranker."""

    asset_id: str
    score: float
    author: str | None = None
    language: str | None = None
    published_at: datetime | None = None
    embedding: Sequence[float] | npt.NDArray[np.floating[Any]] | None = None
    cluster_id: str | None = None
    reasons: Sequence[Any] = ()
    """Why the sources proposed it; passed through to :class:`Kept` untouched."""


@dataclass(frozen=True)
class ReaderState:
    """What the reader did that rules stories out (asset ids, author ids, cluster ids)."""

    read: frozenset[str] = frozenset()
    hidden: frozenset[str] = frozenset()
    reported: frozenset[str] = frozenset()
    muted_authors: frozenset[str] = frozenset()
    flagged: frozenset[str] = frozenset()
    """Stories trust-and-safety flagged (for every reader)."""
    read_clusters: frozenset[str] = frozenset()
    """Near-duplicate clusters of the stories read."""
    hidden_clusters: frozenset[str] = frozenset()
    """Near-duplicate clusters of the stories hidden or reported."""


class DropReason(StrEnum):
    REPEAT = "repeat"
    FLAGGED = "flagged"
    REPORTED = "reported"
    HIDDEN = "hidden"
    MUTED_AUTHOR = "muted_author"
    ALREADY_READ = "already_read"
    INVALID_SCORE = "invalid_score"
    NEAR_DUPLICATE = "near_duplicate"
    AUTHOR_CAP = "author_cap"
    BELOW_CUT = "below_cut"


@dataclass(frozen=True)
class Dropped:
    asset_id: str
    reason: DropReason
    detail: str
    by: str | None = None
    """The asset that stood in its way: the kept repeat or cluster member, the most
    similar item above, ... (None when nothing did)."""


@dataclass(frozen=True)
class Kept:
    """A shown item and why: its place, its scores and the candidate's reasons."""

    asset_id: str
    position: int
    score: float
    """The ranker's score (the best, when sources repeated the candidate)."""
    freshness_boost: float
    relevance: float
    """Boosted score scaled to 0-1 over the candidates that passed the filters."""
    max_similarity: float
    """Highest cosine similarity to an item above (0 at the top, or without embeddings)."""
    similar_to: str | None
    mmr: float
    author: str | None
    reasons: tuple[Any, ...]
    folded: tuple[str, ...] = ()
    """Near-duplicates and repeats this item stands for."""


@dataclass
class RerankResult:
    kept: list[Kept] = field(default_factory=list)
    dropped: list[Dropped] = field(default_factory=list)
    """Every candidate not kept, once, in the order the steps dropped them."""

    def why_dropped(self) -> dict[str, DropReason]:
        return {d.asset_id: d.reason for d in self.dropped}


def config_for(settings: Settings, surface: str) -> RerankConfig:
    """The surface's re-ranking settings (``rerank_default`` when it has none)."""
    return settings.rerank_surfaces.get(surface, settings.rerank_default)


@dataclass
class _Item:
    candidate: Candidate
    score: float
    reasons: list[Any]
    folded: list[str] = field(default_factory=list)
    boost: float = 0.0

    @property
    def boosted(self) -> float:
        return self.score + self.boost


def rerank(candidates: Sequence[Candidate], state: ReaderState, config: RerankConfig,
           limit: int, now: datetime | None = None) -> RerankResult:
    """The ``limit`` items to show, in order, and why every other candidate is not shown.

    Raises ``ValueError`` when ``limit`` is negative or embeddings differ in length.
    """
    if limit < 0:
        raise ValueError("limit must be >= 0")
    now = now or datetime.now(UTC)
    result = RerankResult()
    items = _fold_repeats(candidates, result)
    items = [i for i in items if _passes(i, state, config, result)]
    for item in items:
        item.boost = _freshness(item.candidate.published_at, now, config)
    if config.collapse_clusters:
        items = _collapse(items, result)
    _select(items, config, limit, result)
    return result


def _fold_repeats(candidates: Sequence[Candidate], result: RerankResult) -> list[_Item]:
    first: dict[str, _Item] = {}
    for c in candidates:
        if not math.isfinite(c.score):
            result.dropped.append(Dropped(c.asset_id, DropReason.INVALID_SCORE,
                                          f"score {c.score!r} is not a finite number"))
            continue
        seen = first.get(c.asset_id)
        if seen is None:
            first[c.asset_id] = _Item(c, c.score, list(c.reasons))
            continue
        seen.score = max(seen.score, c.score)
        seen.reasons.extend(r for r in c.reasons if r not in seen.reasons)
        result.dropped.append(Dropped(c.asset_id, DropReason.REPEAT,
                                      "proposed again by another source: folded into the "
                                      "first"))
    return list(first.values())


def _passes(item: _Item, state: ReaderState, config: RerankConfig,
            result: RerankResult) -> bool:
    c = item.candidate
    cluster = c.cluster_id
    why: tuple[DropReason, str] | None = None
    if c.asset_id in state.flagged:
        why = DropReason.FLAGGED, "flagged by trust and safety"
    elif c.asset_id in state.reported:
        why = DropReason.REPORTED, "the reader reported it"
    elif c.asset_id in state.hidden:
        why = DropReason.HIDDEN, "the reader hid it"
    elif cluster is not None and cluster in state.hidden_clusters:
        why = DropReason.HIDDEN, f"a near-duplicate (cluster {cluster}) of a story the " \
            "reader hid or reported"
    elif c.author is not None and c.author in state.muted_authors:
        why = DropReason.MUTED_AUTHOR, f"the reader muted {c.author}"
    elif config.drop_read and c.asset_id in state.read:
        why = DropReason.ALREADY_READ, "the reader read it"
    elif config.drop_read and cluster is not None and cluster in state.read_clusters:
        why = DropReason.ALREADY_READ, f"a near-duplicate (cluster {cluster}) of a story " \
            "the reader read"
    if why is None:
        return True
    result.dropped.append(Dropped(c.asset_id, why[0], why[1]))
    return False


def _freshness(published: datetime | None, now: datetime, config: RerankConfig) -> float:
    if published is None or config.freshness_half_life_h is None or not config.freshness_weight:
        return 0.0
    if published.tzinfo is None:
        published = published.replace(tzinfo=UTC)
    age_h = max(0.0, (now - published).total_seconds() / 3600)
    return float(config.freshness_weight * 0.5 ** (age_h / config.freshness_half_life_h))


def _ranked(items: list[_Item]) -> list[_Item]:
    """Best boosted score first; ties by asset id, so the order never depends on input."""
    return sorted(items, key=lambda i: (-i.boosted, i.candidate.asset_id))


def _collapse(items: list[_Item], result: RerankResult) -> list[_Item]:
    best: dict[str, _Item] = {}
    kept: list[_Item] = []
    for item in _ranked(items):
        cluster = item.candidate.cluster_id
        if cluster is None:
            kept.append(item)
            continue
        winner = best.get(cluster)
        if winner is None:
            best[cluster] = item
            kept.append(item)
            continue
        winner.folded.append(item.candidate.asset_id)
        result.dropped.append(Dropped(
            item.candidate.asset_id, DropReason.NEAR_DUPLICATE,
            f"same story (cluster {cluster}) as a better-scored member",
            by=winner.candidate.asset_id))
    return kept


def _unit_vectors(items: list[_Item]) -> npt.NDArray[np.float64]:
    """Rows of unit length (zero rows for items without a usable embedding)."""
    dims = {len(e) for i in items if (e := i.candidate.embedding) is not None}
    if len(dims) > 1:
        raise ValueError(f"embeddings of different lengths: {sorted(dims)}")
    dim = dims.pop() if dims else 0
    out = np.zeros((len(items), dim), dtype=np.float64)
    for row, item in enumerate(items):
        if item.candidate.embedding is not None:
            out[row] = np.asarray(item.candidate.embedding, dtype=np.float64)
    out[~np.isfinite(out).all(axis=1)] = 0.0
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    unit: npt.NDArray[np.float64] = np.divide(out, norms, out=np.zeros_like(out),
                                              where=norms > 0)
    return unit


def _select(items: list[_Item], config: RerankConfig, limit: int,
            result: RerankResult) -> None:
    items = _ranked(items)
    if not items:
        return
    boosted = np.array([i.boosted for i in items])
    spread = float(boosted.max() - boosted.min())
    relevance = (boosted - boosted.min()) / spread if spread > 0 else np.ones(len(items))
    vectors = _unit_vectors(items)
    lam = config.mmr_lambda
    max_sim = np.zeros(len(items))
    nearest = np.full(len(items), -1)
    open_ = np.ones(len(items), dtype=bool)
    per_author: dict[str, int] = {}
    cap = config.max_per_author
    while open_.any() and len(result.kept) < limit:
        mmr = lam * relevance - (1 - lam) * max_sim
        j = int(np.argmax(np.where(open_, mmr, -np.inf)))
        open_[j] = False
        item = items[j]
        author = item.candidate.author
        if cap is not None and author is not None and per_author.get(author, 0) >= cap:
            result.dropped.append(Dropped(item.candidate.asset_id, DropReason.AUTHOR_CAP,
                                          f"{cap} item(s) by {author} above already"))
            continue
        if author is not None:
            per_author[author] = per_author.get(author, 0) + 1
        above = items[int(nearest[j])].candidate.asset_id if nearest[j] >= 0 else None
        result.kept.append(Kept(
            asset_id=item.candidate.asset_id, position=len(result.kept), score=item.score,
            freshness_boost=item.boost, relevance=float(relevance[j]),
            max_similarity=float(max_sim[j]), similar_to=above, mmr=float(mmr[j]),
            author=author, reasons=tuple(item.reasons), folded=tuple(item.folded)))
        if vectors.shape[1]:
            sims = vectors @ vectors[j]
            closer = sims > max_sim
            max_sim = np.where(closer, sims, max_sim)
            nearest = np.where(closer, j, nearest)
    for rest in np.flatnonzero(open_):
        result.dropped.append(Dropped(items[int(rest)].candidate.asset_id, DropReason.BELOW_CUT,
                                      f"ranked past the first {limit}"))
