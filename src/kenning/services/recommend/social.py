"""The social source: stories by the authors the reader follows, and stories those
authors engaged with as readers (an author's id and their reader id are one id space on a
publishing platform: a writer reads too).

* ``social:follows`` (evidence ``author_id``): the followed authors' stories, newest
  first, scored ``0.5 ** (age / half_life)``.
* ``social:followed_engaged`` (evidence ``author_id``, the followed account): what they
  engaged with, by their time-decayed engagement weight.

Up to ``limit`` of each kind; a story both by a followed author and engaged with by
another carries both reasons once merged.
"""

from __future__ import annotations

from collections import defaultdict

from kenning.services.recommend.context import Request
from kenning.services.recommend.interactions import decay
from kenning.services.recommend.reasons import SourceCandidate

__all__ = ["SocialSource"]


class SocialSource:
    name = "social"

    def __init__(self, half_life_s: float) -> None:
        self.half_life_s = half_life_s

    def propose(self, request: Request) -> list[SourceCandidate]:
        follows = request.history.follows
        if not follows:
            return []
        return self._by_followed(request) + self._engaged_by_followed(request)

    def _by_followed(self, request: Request) -> list[SourceCandidate]:
        now = request.now.timestamp()
        out = []
        for asset_id in request.catalogue.newest:
            story = request.catalogue.stories[asset_id]
            if story.author not in request.history.follows or not request.allowed(asset_id):
                continue
            age = max(now - story.published_at.timestamp(), 0.0)
            out.append(request.candidate(asset_id, round(float(decay(age, self.half_life_s)), 6),
                                         "social", "follows", author_id=story.author))
            if len(out) >= request.limit:
                break
        return out

    def _engaged_by_followed(self, request: Request) -> list[SourceCandidate]:
        interactions = request.snapshot.interactions
        index = interactions.reader_index
        now = request.now.timestamp()
        best: dict[str, tuple[float, str]] = {}
        totals: dict[str, float] = defaultdict(float)
        for author in sorted(request.history.follows):
            reader = index.get(author)
            if reader is None or author == request.reader.reader_id:
                continue
            mask = interactions.reader_idx == reader
            weights = interactions.weight[mask] * decay(now - interactions.at[mask],
                                                        self.half_life_s)
            per_item: dict[int, float] = defaultdict(float)
            for item, w in zip(interactions.item_idx[mask].tolist(), weights.tolist(),
                               strict=True):
                per_item[item] += w
            for item, w in per_item.items():
                asset_id = interactions.items[item]
                if w <= 0 or not request.allowed(asset_id):
                    continue
                totals[asset_id] += w
                if asset_id not in best or w > best[asset_id][0]:
                    best[asset_id] = (w, author)
        ranked = sorted(totals, key=lambda a: (-totals[a], a))[:request.limit]
        return [request.candidate(a, round(totals[a], 6), "social", "followed_engaged",
                                  author_id=best[a][1]) for a in ranked]
