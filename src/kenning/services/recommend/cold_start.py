"""Cold start: a reader with little history, and a story with none.

* ``cold_start:popular``: the tenant's stories by time-decayed engagement, among those in
  the reader's language (declared, else the one they read most; any language when
  unknown) and, when the reader declared topics, on one of those topics (when no story
  matches a topic, the language alone). Evidence: ``language``, ``topic`` (the first
  declared topic the story has), ``engagements`` (events in the last ``window_days``).
* ``cold_start:new_story``: stories published in the last ``recs_fresh_days`` that at
  most ``max_readers`` readers engaged with, by content similarity alone: the reader's
  content profile searched among them (no engagement needed). Evidence: ``because_of``
  (the reader's closest story) and ``cosine``.
"""

from __future__ import annotations

import numpy as np
from sqlalchemy import select

from kenning.services.recommend.content import reader_profile, search_stories
from kenning.services.recommend.context import Request
from kenning.services.recommend.reasons import SourceCandidate
from kenning.services.recommend.trending import DAY_S, top_allowed
from kenning.stores.bundle import Stores
from kenning.stores.metadata.tables import Embedding

__all__ = ["NewStorySource", "PopularSource"]

_MEMO_S = 300
"""The new stories are made once per snapshot and this many seconds of the clock."""
_IN_CHUNK = 5000  # asset ids per IN (...) list


class PopularSource:
    name = "cold_start"

    def __init__(self, half_life_s: float, window_days: float = 7.0) -> None:
        self.half_life_s = half_life_s
        self.window_days = window_days

    def propose(self, request: Request) -> list[SourceCandidate]:
        interactions = request.snapshot.interactions
        if len(interactions.items) == 0:
            return []
        language = request.language()
        topics = [t.strip().lower() for t in request.reader.topics if t.strip()]
        stories = [request.catalogue.get(a) for a in interactions.items]
        in_language = np.array([s is not None and (language is None or s.language == language)
                                for s in stories], dtype=bool)
        on_topic = np.array([s is not None and bool(s.topics.intersection(topics))
                             for s in stories], dtype=bool)
        keep = in_language & on_topic if topics and (in_language & on_topic).any() \
            else in_language
        scores = interactions.decayed(request.now, self.half_life_s)
        counts = interactions.counts(request.now, self.window_days * DAY_S)
        out = []
        for i in top_allowed(request, scores, request.limit, keep):
            story = stories[i]
            assert story is not None
            evidence: dict[str, object] = {"engagements": int(counts[i]),
                                           "window_days": self.window_days}
            if language is not None:
                evidence["language"] = language
            topic = next((t for t in topics if t in story.topics), None)
            if topic is not None:
                evidence["topic"] = topic
            out.append(request.candidate(story.asset_id, round(float(scores[i]), 6),
                                         "cold_start", "popular", **evidence))
        return out


class NewStorySource:
    name = "cold_start_new"

    def __init__(self, stores: Stores, space: str, fresh_s: float, half_life_s: float,
                 max_readers: int = 2) -> None:
        self.stores = stores
        self.space = space
        self.fresh_s = fresh_s
        self.half_life_s = half_life_s
        self.max_readers = max_readers

    def new_stories(self, request: Request) -> list[str]:
        """Stories published in the fresh window with at most ``max_readers`` readers."""
        interactions = request.snapshot.interactions
        readers: dict[str, int] = {}
        if len(interactions.items):
            pairs = np.unique(np.stack([interactions.item_idx, interactions.reader_idx]),
                              axis=1)
            per_item = np.bincount(pairs[0], minlength=len(interactions.items))
            readers = {interactions.items[i]: int(n) for i, n in enumerate(per_item)}
        now = request.now.timestamp()
        out = []
        for asset_id in request.catalogue.newest:
            age = now - request.catalogue.stories[asset_id].published_at.timestamp()
            if age > self.fresh_s:
                break
            if age >= 0 and readers.get(asset_id, 0) <= self.max_readers:
                out.append(asset_id)
        return out

    def embedded_new_stories(self, request: Request) -> dict[str, int]:
        """:meth:`new_stories` with their asset-level embedding ids (those without one
        left out), made once per snapshot and 5 minutes of the clock: every reader's
        request in that time shares them (the fresh window moves by at most that)."""
        key = (self.name, self.space, int(request.now.timestamp() // _MEMO_S))
        snapshot = request.snapshot
        with snapshot.lock:
            made = snapshot.memo.get(key)
        if made is not None:
            return dict(made)
        new = self.new_stories(request)
        ids: dict[str, int] = {}
        with self.stores.db.session(write=False) as s:
            for chunk in range(0, len(new), _IN_CHUNK):
                ids.update(s.execute(select(Embedding.asset_id, Embedding.id).where(
                    Embedding.tenant_id == request.tenant_id, Embedding.space == self.space,
                    Embedding.segment_id.is_(None),
                    Embedding.asset_id.in_(new[chunk:chunk + _IN_CHUNK]))).tuples().all())
        with snapshot.lock:
            snapshot.memo = {k: v for k, v in snapshot.memo.items()
                             if not (isinstance(k, tuple) and k[:2] == key[:2])}
            snapshot.memo[key] = ids
        return dict(ids)

    def propose(self, request: Request) -> list[SourceCandidate]:
        new = self.embedded_new_stories(request)
        fresh = {a: emb for a, emb in new.items() if request.allowed(a)}
        if not fresh:
            return []
        profile = reader_profile(self.stores, request, self.space, self.half_life_s)
        if profile is None:
            return []
        out = []
        for asset_id, score, vector in search_stories(self.stores, request, self.space,
                                                      profile.vector, request.limit, fresh,
                                                      embedding_ids=fresh):
            because, cosine = profile.closest(vector)
            out.append(request.candidate(asset_id, round(score, 6), "cold_start", "new_story",
                                         because_of=because, cosine=round(cosine, 6)))
        return out
