"""Fresh and trending sources: what the tenant's readers engage with now, and what was
just published.

* ``trending:engagement``: stories by time-decayed engagement (each event's weight halved
  every ``recs_trending_half_life_hours``); evidence ``engagements`` (events in the last
  ``window_days``) and ``window_days``.
* ``fresh:new``: stories published in the last ``recs_fresh_days``, newest first, scored
  ``0.5 ** (age / fresh_days)``; evidence ``published_at``.
"""

from __future__ import annotations

import numpy as np

from kenning.services.recommend.context import Request
from kenning.services.recommend.interactions import decay
from kenning.services.recommend.reasons import SourceCandidate

__all__ = ["FreshSource", "TrendingSource", "top_allowed"]

DAY_S = 86_400.0


def top_allowed(request: Request, scores: np.ndarray, limit: int,
                keep: np.ndarray | None = None) -> list[int]:
    """Indexes into the snapshot's items, best score first (ties: asset id), positive
    scores only, the reader's ruled-out stories skipped (``keep``: a mask of eligible)."""
    items = request.snapshot.interactions.items
    order = sorted((i for i in np.flatnonzero(scores > 0).tolist()
                    if keep is None or keep[i]), key=lambda i: (-scores[i], items[i]))
    out = []
    for i in order:
        if request.allowed(items[i]):
            out.append(i)
            if len(out) >= limit:
                break
    return out


class TrendingSource:
    name = "trending"

    def __init__(self, half_life_s: float, window_days: float = 7.0) -> None:
        self.half_life_s = half_life_s
        self.window_days = window_days

    def propose(self, request: Request) -> list[SourceCandidate]:
        interactions = request.snapshot.interactions
        if len(interactions.items) == 0:
            return []
        scores = interactions.decayed(request.now, self.half_life_s)
        counts = interactions.counts(request.now, self.window_days * DAY_S)
        return [request.candidate(interactions.items[i], round(float(scores[i]), 6),
                                  "trending", "engagement", engagements=int(counts[i]),
                                  window_days=self.window_days)
                for i in top_allowed(request, scores, request.limit)]


class FreshSource:
    name = "fresh"

    def __init__(self, fresh_s: float) -> None:
        self.fresh_s = fresh_s

    def propose(self, request: Request) -> list[SourceCandidate]:
        now = request.now.timestamp()
        out = []
        for asset_id in request.catalogue.newest:
            story = request.catalogue.stories[asset_id]
            age = now - story.published_at.timestamp()
            if age > self.fresh_s:
                break  # newest first: the rest are older
            if age < 0 or not request.allowed(asset_id):
                continue
            out.append(request.candidate(asset_id, round(float(decay(age, self.fresh_s)), 6),
                                         "fresh", "new",
                                         published_at=story.published_at.isoformat()))
            if len(out) >= request.limit:
                break
        return out
