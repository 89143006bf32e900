"""The ranker's features, online and point-in-time offline: the feature store.

:data:`FEATURES` names the columns, in order. Two kinds:

* **Request features** (:data:`REQUEST_FEATURES`) are what candidate generation said
  about the story for this request: the sources' scores (content cosine, the
  collaborative model's score, co-engagement, followed readers' engagement, cold-start
  popularity), how many sources proposed it, and whether it matches the reader's
  language (declared, else the one they read most) and declared topics. They come from
  the candidate's ``scores`` and reasons and from the request's context, which exist
  only at serving time (the ANN index and the fitted models are not versioned, the
  reader's declared context is not stored). The served log (``rec_served.features``)
  keeps them; offline they are read back from it: written when the item was served,
  never updated, so point-in-time by construction.
* **State features** (:data:`STATE_FEATURES`) are recomputed offline from the event log
  and the stories as they were before the impression (:func:`offline_features`), and
  online from the request's snapshot and history: the story's popularity (distinct
  readers in the last 30 days) and trending score (engagement halved every 24 h), its
  freshness, whether the reader follows its author, the reader's engagement with the
  author's other stories (author affinity), the reader's hides and reports of the
  author's other stories (the safety signal: no trust-and-safety label exists in the
  catalogue yet, and stories flagged for everyone never reach the ranker, the re-ranker
  drops them), and how active the reader is.

Time: story-level state is computed as of ``tick``, the request's clock floored to the
minute (:func:`feature_tick`), from events that happened (``at``) in the 30 days
before the tick; offline additionally only from events received before the tick, as
the serving process could have known them. Reader-level state comes from the reader's
history as loaded for the request: offline, the reader's events received before the
impression's time (``rec_served.at``, which must be the request's clock). Online and
offline agree exactly when the tenant snapshot was current (it may lag by
``recs_snapshot_max_age_s``; the logged values are kept beside the recomputed ones for
that skew), no story or event was deleted since, and no event arrived late (an event
received after the tick that says it happened before it counts online once the snapshot
holds it, offline never for that tick).
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from kenning.services.recommend.catalogue import Catalogue
from kenning.services.recommend.context import Request, TenantSnapshot
from kenning.services.recommend.history import ReaderHistory
from kenning.services.recommend.interactions import Interactions, decay
from kenning.services.recommend.reasons import SourceCandidate

__all__ = ["FEATURES", "REQUEST_FEATURES", "STATE_FEATURES", "ItemStats", "ReaderAuthors",
           "as_dict", "feature_tick", "from_dict", "item_stats", "online_features",
           "reader_authors", "request_columns", "state_columns"]

FloatArray = npt.NDArray[np.float64]

REQUEST_FEATURES: tuple[str, ...] = (
    "content_similarity",  # cosine of the reader's profile and the story (content, new story)
    "cf_score",  # the collaborative model's score (ease, als or bpr: recs_model's scale)
    "co_engagement",  # item-to-item co-engagement score
    "followed_engaged",  # log1p of followed readers' decayed engagement
    "cold_start_popular",  # log1p of the cold-start source's decayed popularity
    "n_sources",  # how many sources proposed the story
    "language_match",  # 1 same language as the reader's, 0 another, 0.5 unknown
    "topic_match",  # 1 when the story has a topic the reader declared
)
STATE_FEATURES: tuple[str, ...] = (
    "popularity",  # log1p of distinct readers who engaged in the 30 days before the tick
    "trending",  # log1p of engagement weight halved every 24 h before the tick
    "freshness",  # 0.5 ** (age in hours at the tick / 48)
    "follows_author",  # 1 when the reader follows the story's author
    "author_affinity",  # log1p of the reader's engagement with the author's other stories
    "author_negative",  # the reader's hidden or reported stories by the same author
    "reader_activity",  # log1p of the stories the reader engaged with
)
FEATURES: tuple[str, ...] = REQUEST_FEATURES + STATE_FEATURES
"""Feature names, in column order. A ranker artefact records the names it was trained
on; one trained on other names is not served."""

TICK_S = 60
POPULARITY_WINDOW_S = 30 * 86_400.0
TRENDING_HALF_LIFE_S = 86_400.0
FRESHNESS_HALF_LIFE_H = 48.0
_CONTENT = ("content:similar", "cold_start:new_story")


def feature_tick(now: datetime) -> float:
    """The time story-level features are computed at: ``now`` floored to the minute,
    as seconds since the epoch (so every request of one minute shares them)."""
    return float(math.floor(now.timestamp() / TICK_S) * TICK_S)


def as_dict(row: FloatArray | Sequence[float]) -> dict[str, float]:
    """One feature row as ``{name: value}`` (what ``rec_served.features`` stores)."""
    return {name: float(v) for name, v in zip(FEATURES, row, strict=True)}


def from_dict(values: dict[str, Any] | None) -> FloatArray:
    """A stored feature dict back as a row in :data:`FEATURES` order (0 for a name it
    lacks or a value that is not a finite number)."""
    out = np.zeros(len(FEATURES), dtype=np.float64)
    for i, name in enumerate(FEATURES):
        v = (values or {}).get(name)
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
            out[i] = float(v)
    return out


@dataclass(frozen=True)
class ItemStats:
    """Story-level engagement as of one tick: distinct readers and trending weight, by
    position in ``index``."""

    tick: float
    index: Mapping[str, int]
    readers: npt.NDArray[np.int64]
    trending: FloatArray

    def of(self, asset_id: str) -> tuple[int, float]:
        i = self.index.get(asset_id)
        return (0, 0.0) if i is None else (int(self.readers[i]), float(self.trending[i]))


def item_stats(interactions: Interactions, tick: float,
               index: Mapping[str, int] | None = None) -> ItemStats:
    """Distinct readers and decayed engagement per story from ``interactions``' events
    that happened in the 30 days before ``tick``, summed in the events' order
    (``index``: ``interactions.item_index``, when the caller keeps it)."""
    keep = (interactions.at >= tick - POPULARITY_WINDOW_S) & (interactions.at < tick)
    items, readers = interactions.item_idx[keep], interactions.reader_idx[keep]
    n_items, n_readers = len(interactions.items), max(len(interactions.readers), 1)
    weights = interactions.weight[keep] * decay(tick - interactions.at[keep],
                                                TRENDING_HALF_LIFE_S)
    trending = np.bincount(items, weights=weights, minlength=n_items).astype(np.float64)
    pairs = np.sort(items * n_readers + readers)  # a sort: np.unique's hashing is slower
    distinct = pairs[np.r_[True, pairs[1:] != pairs[:-1]]] if len(pairs) else pairs
    counts = np.bincount(distinct // n_readers, minlength=n_items).astype(np.int64)
    return ItemStats(tick, interactions.item_index if index is None else index, counts,
                     trending)


_stats_lock = threading.Lock()
_stats: dict[int, tuple[weakref.ref[TenantSnapshot], Mapping[str, int], ItemStats | None]] = {}
_MAX_CACHED = 64


def _snapshot_stats(snapshot: TenantSnapshot, tick: float) -> ItemStats:
    """:func:`item_stats` of the snapshot at ``tick``: its story index built once per
    snapshot, its counts once per minute (a request costs lookups)."""
    key = id(snapshot)
    with _stats_lock:
        cached = _stats.get(key)
    if cached is not None and cached[0]() is snapshot:
        index, stats = cached[1], cached[2]
        if stats is not None and stats.tick == tick:
            return stats
    else:
        index = snapshot.interactions.item_index
    stats = item_stats(snapshot.interactions, tick, index)
    with _stats_lock:
        if key not in _stats and len(_stats) >= _MAX_CACHED:
            for k in [k for k, v in _stats.items() if v[0]() is None] or list(_stats)[:1]:
                _stats.pop(k, None)
        _stats[key] = (weakref.ref(snapshot), index, stats)
    return stats


def request_columns(candidate: SourceCandidate, language: str | None,
                    declared: frozenset[str], story_topics: frozenset[str]) -> list[float]:
    """The :data:`REQUEST_FEATURES` of one candidate (``declared``: the reader's topics,
    lower case; ``story_topics``: the story's, from the catalogue)."""
    scores = candidate.scores
    content = max((scores[k] for k in _CONTENT if k in scores), default=0.0)
    cf = max((v for k, v in scores.items()
              if k.startswith("collaborative:") and k != "collaborative:co_engagement"),
             default=0.0)
    story_language = candidate.language
    if language is None or story_language is None:
        language_match = 0.5
    else:
        language_match = 1.0 if story_language == language else 0.0
    topic = bool(declared & story_topics)
    return [float(content), float(cf),
            float(scores.get("collaborative:co_engagement", 0.0)),
            math.log1p(max(scores.get("social:followed_engaged", 0.0), 0.0)),
            math.log1p(max(scores.get("cold_start:popular", 0.0), 0.0)),
            float(len({r.source for r in candidate.reasons})), language_match,
            1.0 if topic else 0.0]


@dataclass(frozen=True)
class ReaderAuthors:
    """A reader's summed engagement weight, and hidden or reported stories, by author
    (once per request: every candidate's author features are lookups)."""

    engaged: dict[str, float]
    negative: dict[str, int]


def reader_authors(history: ReaderHistory, catalogue: Catalogue) -> ReaderAuthors:
    engaged: dict[str, float] = {}
    negative: dict[str, int] = {}
    for other, engagement in history.engaged.items():
        story = catalogue.get(other)
        if story is not None and story.author is not None:
            engaged[story.author] = engaged.get(story.author, 0.0) + engagement.weight
    for other in history.hidden | history.reported:
        story = catalogue.get(other)
        if story is not None and story.author is not None:
            negative[story.author] = negative.get(story.author, 0) + 1
    return ReaderAuthors(engaged, negative)


def state_columns(asset_id: str, author: str | None, published_at: datetime | None,
                  stats: ItemStats, history: ReaderHistory, catalogue: Catalogue,
                  authors: ReaderAuthors | None = None) -> list[float]:
    """The :data:`STATE_FEATURES` of one story for one reader (``authors``: the reader's
    :func:`reader_authors`, computed here when not given)."""
    if published_at is None:
        freshness = 0.0
    else:
        age_h = max(stats.tick - published_at.timestamp(), 0.0) / 3600.0
        freshness = 0.5 ** (age_h / FRESHNESS_HALF_LIFE_H)
    affinity = negative = 0.0
    if author is not None and (asset_id in history.engaged or asset_id in history.hidden
                               or asset_id in history.reported):
        # The story itself is in the history (sources never propose such): its own
        # engagement or hide is not affinity with its author.
        for other, engagement in history.engaged.items():
            story = catalogue.get(other)
            if other != asset_id and story is not None and story.author == author:
                affinity += engagement.weight
        for other in history.hidden | history.reported:
            story = catalogue.get(other)
            if other != asset_id and story is not None and story.author == author:
                negative += 1.0
    elif author is not None:
        authors = authors or reader_authors(history, catalogue)
        affinity = authors.engaged.get(author, 0.0)
        negative = float(authors.negative.get(author, 0))
    readers, trending = stats.of(asset_id)
    return [math.log1p(readers), math.log1p(trending), freshness,
            1.0 if author is not None and author in history.follows else 0.0,
            math.log1p(affinity), negative, math.log1p(len(history.engaged))]


def _topics(catalogue: Catalogue, asset_id: str) -> frozenset[str]:
    story = catalogue.get(asset_id)
    return story.topics if story is not None else frozenset()


def online_features(request: Request, candidates: Sequence[SourceCandidate]) -> FloatArray:
    """Features of ``candidates`` for ``request``: ``(len(candidates), len(FEATURES))``,
    float64, from the request's snapshot, history and clock and the candidates' scores
    and reasons only."""
    if not candidates:
        return np.zeros((0, len(FEATURES)), dtype=np.float64)
    stats = _snapshot_stats(request.snapshot, feature_tick(request.now))
    language = request.language()
    authors = reader_authors(request.history, request.catalogue)
    declared = frozenset(t.strip().lower() for t in request.reader.topics if t.strip())
    out: FloatArray = np.asarray(
        [request_columns(c, language, declared, _topics(request.catalogue, c.asset_id))
         + state_columns(c.asset_id, c.author, c.published_at, stats, request.history,
                         request.catalogue, authors) for c in candidates], dtype=np.float64)
    return out
