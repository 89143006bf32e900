"""The content source: stories whose text is close to what the reader engaged with.

The reader's profile is the time-decayed, engagement-weighted mean of the asset-level
text vectors of the stories they engaged with (each weight halved every
``recs_profile_half_life_days`` since the reader's latest engagement with the story),
normalised. It is searched in the tenant's asset-level vector namespace (the same ANN
index semantic search and ``/v1/similar`` use). Each candidate's reason names the story
read that it is closest to: ``content:similar`` with ``because_of`` and that ``cosine``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sqlalchemy import select

from kenning.services.recommend.catalogue import story_vectors
from kenning.services.recommend.context import Request
from kenning.services.recommend.interactions import decay
from kenning.services.recommend.reasons import SourceCandidate
from kenning.stores.bundle import Stores
from kenning.stores.metadata.tables import Embedding
from kenning.stores.namespaces import vector_namespace

__all__ = ["ContentSource", "Profile", "reader_profile", "search_stories"]

Vector = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Profile:
    vector: Vector
    """Unit length."""
    engaged: dict[str, Vector]
    """The unit vectors of the stories the profile is made of, by asset id."""

    def closest(self, vector: Vector) -> tuple[str, float]:
        """The engaged story closest to ``vector`` and its cosine."""
        best, cosine = "", -2.0
        for asset_id, v in self.engaged.items():
            c = float(v @ vector)
            if c > cosine or (c == cosine and asset_id < best):
                best, cosine = asset_id, c
        return best, cosine


def _unit(v: npt.NDArray[np.floating]) -> Vector:
    norm = float(np.linalg.norm(v))
    return (v / norm if norm > 0 else v).astype(np.float32)


def reader_profile(stores: Stores, request: Request, space: str,
                   half_life_s: float) -> Profile | None:
    """The reader's content profile, or None with no engaged story that has a vector."""
    engaged = request.history.engaged
    if not engaged:
        return None
    with stores.db.session(write=False) as s:
        vectors = story_vectors(s, request.tenant_id, space, list(engaged))
    if not vectors:
        return None
    now = request.now.timestamp()
    total = np.zeros_like(next(iter(vectors.values())), dtype=np.float64)
    weight_sum = 0.0
    for asset_id, v in vectors.items():
        e = engaged[asset_id]
        w = e.weight * float(decay(max(now - e.last_at.timestamp(), 0.0), half_life_s))
        total += w * _unit(v)
        weight_sum += w
    if weight_sum <= 0:
        return None
    return Profile(_unit(total / weight_sum), {a: _unit(v) for a, v in vectors.items()})


def search_stories(stores: Stores, request: Request, space: str, query: Vector, k: int,
                   allowed: Collection[str] | None = None, *,
                   embedding_ids: Mapping[str, int] | None = None,
                   ) -> list[tuple[str, float, Vector]]:
    """Stories nearest ``query`` in the tenant's asset-level namespace that the reader may
    get (``allowed``: only among these asset ids, whose asset-level embedding ids
    ``embedding_ids`` may already hold), best first: (asset, cosine, vector)."""
    stores.follower.catch_up()  # apply what committed before this request
    namespace = vector_namespace(request.tenant_id, space, asset_level=True)
    with stores.db.session(write=False) as s:
        allowed_ids = None
        if allowed is not None:
            if not allowed:
                return []
            if embedding_ids is not None:
                allowed_ids = {embedding_ids[a] for a in allowed if a in embedding_ids}
            else:
                allowed_ids = set(s.scalars(select(Embedding.id).where(
                    Embedding.tenant_id == request.tenant_id, Embedding.space == space,
                    Embedding.segment_id.is_(None), Embedding.asset_id.in_(list(allowed)))))
            if not allowed_ids:
                return []
        # Room for what the reader ruled out: those come back from the index too.
        hits = stores.vectors.search(namespace, query, k + len(request.history.ruled_out),
                                     allowed=allowed_ids)
        scores = {h.id: h.score for h in hits}
        rows = s.execute(select(Embedding.id, Embedding.asset_id, Embedding.vector).where(
            Embedding.id.in_(list(scores)), Embedding.tenant_id == request.tenant_id)).all()
    found = [(asset_id, scores[emb_id], _unit(np.frombuffer(raw, dtype=np.float32)))
             for emb_id, asset_id, raw in rows if request.allowed(asset_id)]
    found.sort(key=lambda f: (-f[1], f[0]))
    return found[:k]


class ContentSource:
    name = "content"

    def __init__(self, stores: Stores, space: str, half_life_s: float) -> None:
        self.stores = stores
        self.space = space
        self.half_life_s = half_life_s

    def propose(self, request: Request) -> list[SourceCandidate]:
        profile = reader_profile(self.stores, request, self.space, self.half_life_s)
        if profile is None:
            return []
        out = []
        for asset_id, score, vector in search_stories(self.stores, request, self.space,
                                                      profile.vector, request.limit):
            because, cosine = profile.closest(vector)
            out.append(request.candidate(asset_id, round(score, 6), "content", "similar",
                                         because_of=because, cosine=round(cosine, 6)))
        return out
