"""Serving ``GET /v1/users/{id}/recommendations``: precomputed candidates, online features,
the serving ranker, the surface's re-ranking, exploration, and the served log.

One request, in order:

1. **Precomputed candidates** (:mod:`kenning.services.recommend.pools`). A reader's pool
   is every source's candidates merged, cut to the ``recs_serve_pool_size`` best by the
   blend (the first stage), with the history and tenant snapshot they came from and the
   near-duplicate clusters of the candidates and of the reader's stories. It is made
   once and kept per (tenant, reader, declared language and topics) for
   ``recs_serve_cache_ttl_s``, in at most ``recs_serve_cache_readers`` pools (least
   recently served dropped first; about 80 KB each). The reader's own events invalidate
   it at once: each request reads the reader's event mark (:func:`reader_mark`: the
   newest id and the count of their events other than impressions, which change
   nothing a source reads) and a pool made under another mark is made again, so a hide
   or a read counts from the next request on, in every process. Impressions do not
   invalidate: a client that logs what it showed still hits the pool. Other readers'
   events and new stories reach a pool when it expires (the tenant snapshot itself
   refreshes at most once per ``recs_snapshot_max_age_s``). A new reader's first
   request, and the first after their own event, makes the pool (the cold path).
2. **Online features** (:func:`kenning.services.recommend.features.online_features`) of
   the pool's candidates at the request's time.
3. **Score.** The tenant's serving ranker
   (:func:`kenning.services.recommend.ranker.serving_ranker`; policy
   ``ranker:<version>``), or, when none serves (or it fails), the fixed **blend** (policy
   ``blend``, :func:`blend`).
4. **Re-rank** for the surface (:mod:`kenning.services.recommend.rerank`): filters
   (read, hidden, reported, muted, and near-duplicates of those), one story per
   near-duplicate cluster, freshness boost, MMR with an author cap; run over
   ``limit + recs_explore_pool`` so that the stories just past the cut passed the same
   rules.
5. **Explore** (:mod:`kenning.services.recommend.explore`): epsilon-greedy slot swaps with
   exact propensities, seeded by the request id.
6. **Log**: one ``INSERT`` of one ``rec_served`` row per served item (request id, position,
   first reason's source, score, propensity, policy, the online features used, and the
   request's clock as ``at``: the time the features were computed for).

The response carries the request id; clients send it back in impression events
(``data.request_id``), which is how training joins what was shown to what was read.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import ValidationError
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from kenning.errors import BadInput
from kenning.principal import Principal
from kenning.services.match_clusters import cluster_of
from kenning.services.recommend.candidates import CandidateService
from kenning.services.recommend.catalogue import story_vectors
from kenning.services.recommend.context import Request
from kenning.services.recommend.explain import explain, story_ids
from kenning.services.recommend.explore import Shown, explore
from kenning.services.recommend.features import as_dict, online_features
from kenning.services.recommend.history import load_reader
from kenning.services.recommend.pools import Pool, PoolCache, StoryCache, pack
from kenning.services.recommend.ranker import serving_ranker
from kenning.services.recommend.reasons import ReaderContext, SourceCandidate, merge_candidates
from kenning.services.recommend.rerank import Candidate, Kept, ReaderState, config_for, rerank
from kenning.services.recommend.schemas import (
    SURFACE_PATTERN,
    ItemReason,
    Recommendations,
    RecommendedItem,
)
from kenning.settings import Settings
from kenning.stores.metadata.tables import Asset, Event, RecServed, Segment, new_id, utcnow

__all__ = ["BLEND_WEIGHTS", "RecommendationService", "blend", "reader_mark", "story_titles"]

log = logging.getLogger(__name__)

_SURFACE = re.compile(SURFACE_PATTERN)
_LANGUAGE = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})?")
STORY_CACHE = 250_000
"""Most stories whose vector and title one process keeps (all tenants; emptied when
full)."""

BLEND_WEIGHTS = {"content": 1.0, "collaborative": 1.0, "social": 0.9, "cold_start": 0.5,
                 "trending": 0.5, "fresh": 0.3}
"""Per source, what its best candidate adds to the blend (a source not listed: 0.3)."""


def blend(candidates: Sequence[SourceCandidate]) -> npt.NDArray[np.float64]:
    """The fixed score when no learned ranker serves.

    Scores of different sources are not comparable (a cosine, a model score, a decayed
    count), so each reason code's scores are turned into ranks among the candidates that
    have one: ``1`` for the best, down to ``1 / n`` for the last of ``n``. A candidate's
    blend is the sum, over its reason codes, of its source's weight
    (:data:`BLEND_WEIGHTS`) times that rank: a story several sources propose outranks
    one only a single source liked, and the best of a strong source outranks the best
    of a weak one.
    """
    out = np.zeros(len(candidates), dtype=np.float64)
    by_code: dict[str, list[tuple[float, int]]] = {}
    for i, c in enumerate(candidates):
        for code, score in c.scores.items():
            by_code.setdefault(code, []).append((score, i))
    for code, scored in by_code.items():
        weight = BLEND_WEIGHTS.get(code.split(":", 1)[0], 0.3)
        scored.sort(key=lambda si: (-si[0], candidates[si[1]].asset_id))
        n = len(scored)
        for rank, (_, i) in enumerate(scored):
            out[i] += weight * (n - rank) / n
    return out


def reader_mark(s: Session, tenant_id: str, reader_id: str) -> tuple[Any, ...]:
    """The newest id and the count of the reader's events other than impressions."""
    row = s.execute(select(func.max(Event.id), func.count()).where(
        Event.tenant_id == tenant_id, Event.reader_id == reader_id,
        Event.type != "impression")).one()
    return tuple(row)


def story_titles(s: Session, tenant_id: str, asset_ids: set[str]) -> dict[str, str | None]:
    """Titles by asset id; a story ingested without one (a file upload) is titled by the
    first line of its first text chunk, cut to about 80 characters."""
    if not asset_ids:
        return {}
    # The tenant is checked on the rows: with a few hundred ids and no statistics, SQLite
    # walks the tenant's index (every asset of the tenant) instead of the ids'.
    titles = {asset_id: title for asset_id, tenant, title in s.execute(
        select(Asset.id, Asset.tenant_id, Asset.title).where(Asset.id.in_(list(asset_ids))))
        if tenant == tenant_id}
    untitled = [a for a, t in titles.items() if not (t and t.strip())]
    if untitled:
        # The tenant is already checked (titles): by asset ids alone, SQLite uses their
        # index, not the tenant's (every segment of the tenant).
        for asset_id, text in s.execute(select(Segment.asset_id, Segment.text).where(
                Segment.asset_id.in_(untitled), Segment.kind == "chunk",
                Segment.seq == 0).order_by(Segment.id)):
            line = next((ln.strip() for ln in (text or "").splitlines() if ln.strip()), "")
            if line and not titles.get(asset_id):
                titles[asset_id] = line if len(line) <= 80 else \
                    line[:80].rsplit(" ", 1)[0] + "…"
    return titles


class RecommendationService:
    def __init__(self, candidates: CandidateService, settings: Settings) -> None:
        self.source = candidates
        self.stores = candidates.stores
        self.settings = settings
        self.pools = PoolCache(settings.recs_serve_cache_readers)
        self.stories = StoryCache(STORY_CACHE)

    # --- the request -------------------------------------------------------------------
    def recommend(self, who: Principal, reader_id: str, *, surface: str = "home",
                  limit: int | None = None, language: str | None = None,
                  topics: Sequence[str] = ()) -> Recommendations:
        """Recommendations for one reader on one surface (see the module docstring).

        Raises :class:`BadInput` (422): ``invalid_reader`` (empty, longer than 128 or
        with control characters), ``invalid_surface``, ``invalid_limit``,
        ``invalid_language``, ``invalid_topics``.
        """
        reader = self._reader(reader_id, language, topics)
        surface = self._surface(surface)
        limit = self._limit(limit)
        now = utcnow()
        tenant = who.tenant_id
        with self.stores.db.session(write=False) as s:
            mark = reader_mark(s, tenant, reader.reader_id)
            ranker = serving_ranker(s, tenant)
        key = (tenant, reader.reader_id, reader.language, reader.topics)
        pool = self.pools.get(key, mark, self.settings.recs_serve_cache_ttl_s)
        if pool is None:
            pool = self._make(who, reader, now)
            self.pools.put(key, pool)
        candidates = pool.candidates()
        self._stories(tenant, {c.asset_id for c in candidates}
                      | set().union(*(story_ids(c.reasons) for c in candidates)))
        features = online_features(replace(pool.request, now=now), candidates)
        scores, policy = self._score(ranker, features, candidates)
        greedy, spare = self._rerank(pool, candidates, scores, surface, limit, now)
        request_id = new_id()
        shown = explore(greedy, spare, self.settings.recs_explore,
                        random.Random(int(request_id, 16)))
        self._log(who, request_id, reader.reader_id, surface, policy, candidates, features,
                  shown, now)
        return Recommendations(request_id=request_id, reader_id=reader.reader_id,
                               surface=surface, policy=policy, generated_at=now,
                               items=self._items(pool, shown))

    def forget(self, tenant_id: str | None = None) -> None:
        """Drop precomputed pools and cached stories (of one tenant, or all)."""
        self.pools.forget(tenant_id)
        self.stories.forget(tenant_id)

    # --- validation --------------------------------------------------------------------
    @staticmethod
    def _reader(reader_id: str, language: str | None, topics: Sequence[str]) -> ReaderContext:
        if not 0 < len(reader_id) <= 128 or any(ord(ch) < 32 or 127 <= ord(ch) < 160
                                                for ch in reader_id):
            raise BadInput("a reader id is 1-128 characters without control characters",
                           code="invalid_reader")
        if language is not None and not _LANGUAGE.fullmatch(language):
            raise BadInput("language: an ISO 639 code such as en or de",
                           code="invalid_language")
        cleaned = tuple(t.strip().lower() for t in topics)
        if len(cleaned) > 50 or any(not t or len(t) > 100 for t in cleaned):
            raise BadInput("topics: at most 50, each 1-100 characters",
                           code="invalid_topics")
        try:
            return ReaderContext(reader_id=reader_id, language=language and language.lower(),
                                 topics=tuple(sorted(set(cleaned))))
        except ValidationError as exc:  # pragma: no cover - the checks above are stricter
            raise BadInput(str(exc), code="invalid_reader") from exc

    @staticmethod
    def _surface(surface: str) -> str:
        if not _SURFACE.match(surface):
            raise BadInput("surface: 1-32 letters, digits, '_', '.', ':' or '-', starting "
                           "with a letter or digit", code="invalid_surface")
        return surface

    def _limit(self, limit: int | None) -> int:
        most = self.settings.recs_serve_max_limit
        if limit is None:
            return min(self.settings.recs_serve_default_limit, most)
        if not 1 <= limit <= most:
            raise BadInput(f"limit: 1 to {most}", code="invalid_limit", max=most)
        return limit

    # --- precomputed candidates --------------------------------------------------------
    def _make(self, who: Principal, reader: ReaderContext, now: datetime) -> Pool:
        made = time.monotonic()
        tenant = who.tenant_id
        snapshot = self.source.snapshot(tenant, now)
        with self.stores.db.session(write=False) as s:
            # Mark and history in one read transaction: an event after them changes
            # the mark, so this pool is made again on the reader's next request.
            mark = reader_mark(s, tenant, reader.reader_id)
            history = load_reader(s, tenant, reader.reader_id)
        request = Request(tenant, reader, history, snapshot, now,
                          self.settings.recs_serve_candidates_per_source)
        candidates = merge_candidates(source.propose(request) for source in self.source.sources)
        size = self.settings.recs_serve_pool_size
        if len(candidates) > size:  # the first stage's cut: the blend's best
            best = np.argsort(-blend(candidates), kind="stable")[:size]
            candidates = [candidates[i] for i in sorted(best.tolist())]
        ids = {c.asset_id for c in candidates}
        with self.stores.db.session(write=False) as s:
            clusters = cluster_of(s, ids | history.ruled_out)
        return Pool(request, tuple(pack(c) for c in candidates), clusters, mark, made)

    def _stories(self, tenant_id: str, ids: set[str]) -> None:
        """Vectors and titles of these stories into the shared cache (the misses)."""
        def vectors(missing: set[str]) -> dict[str, npt.NDArray[np.float32]]:
            with self.stores.db.session(write=False) as s:
                return story_vectors(s, tenant_id, self.source.space, missing)

        def titles(missing: set[str]) -> dict[str, str | None]:
            with self.stores.db.session(write=False) as s:
                return story_titles(s, tenant_id, missing)

        self.stories.ensure(tenant_id, ids, vectors, titles)

    # --- score, re-rank ----------------------------------------------------------------
    def _score(self, ranker: Any, features: npt.NDArray[np.float64],
               candidates: list[SourceCandidate]) -> tuple[npt.NDArray[np.float64], str]:
        if ranker is not None and candidates:
            try:
                scores = np.asarray(ranker.score(features), dtype=np.float64)
                if scores.shape == (len(candidates),) and np.isfinite(scores).all():
                    return scores, f"ranker:{ranker.version}"
                log.error("serving ranker gave unusable scores; serving the blend",
                          extra={"version": ranker.version, "shape": list(scores.shape)})
            except Exception:
                log.exception("serving ranker failed; serving the blend")
        return blend(candidates), "blend"

    def _rerank(self, pool: Pool, candidates: list[SourceCandidate],
                scores: npt.NDArray[np.float64], surface: str, limit: int,
                now: datetime) -> tuple[list[Kept], list[Kept]]:
        history = pool.request.history
        clusters = pool.clusters
        tenant = pool.request.tenant_id
        state = ReaderState(
            read=frozenset(history.engaged), hidden=frozenset(history.hidden),
            reported=frozenset(history.reported),
            muted_authors=frozenset(history.muted_authors),
            read_clusters=frozenset(clusters[a] for a in history.engaged if a in clusters),
            hidden_clusters=frozenset(clusters[a] for a in history.hidden | history.reported
                                      if a in clusters))
        ranked = [Candidate(asset_id=c.asset_id, score=float(score), author=c.author,
                            language=c.language, published_at=c.published_at,
                            embedding=self.stories.vector(tenant, c.asset_id),
                            cluster_id=clusters.get(c.asset_id), reasons=tuple(c.reasons))
                  for c, score in zip(candidates, scores, strict=True)]
        spare = self.settings.recs_explore_pool
        kept = rerank(ranked, state, config_for(self.settings, surface), limit + spare,
                      now).kept
        return kept[:limit], kept[limit:]

    # --- log and answer ----------------------------------------------------------------
    def _log(self, who: Principal, request_id: str, reader_id: str, surface: str,
             policy: str, candidates: list[SourceCandidate],
             features: npt.NDArray[np.float64], shown: list[Shown[Kept]],
             now: datetime) -> None:
        if not shown:
            return
        row_of = {c.asset_id: i for i, c in enumerate(candidates)}
        rows = [{
            "tenant_id": who.tenant_id, "request_id": request_id, "reader_id": reader_id,
            "surface": surface, "asset_id": s.item.asset_id, "position": s.position,
            "source": s.item.reasons[0].source if s.item.reasons else "unknown",
            "score": _score_of(s.item), "propensity": s.propensity, "policy": policy,
            "features": as_dict(features[row_of[s.item.asset_id]]), "at": now,
        } for s in shown]
        with self.stores.db.session() as s:
            s.execute(insert(RecServed), rows)

    def _items(self, pool: Pool, shown: list[Shown[Kept]]) -> list[RecommendedItem]:
        named = {a for s in shown for a in story_ids(list(s.item.reasons))}
        titles = self.stories.title_map(pool.request.tenant_id,
                                        [s.item.asset_id for s in shown] + sorted(named))
        out = []
        for item in shown:
            kept = item.item
            story = pool.request.catalogue.get(kept.asset_id)
            reasons = [ItemReason(code=r.code, source=r.source, kind=r.kind,
                                  text=explain(r, titles), evidence=r.evidence)
                       for r in kept.reasons]
            out.append(RecommendedItem(
                asset_id=kept.asset_id, position=item.position,
                title=titles.get(kept.asset_id), author=kept.author,
                language=story.language if story is not None else None,
                score=_score_of(kept), source=reasons[0].source if reasons else "unknown",
                explanation=reasons[0].text if reasons else "recommended", reasons=reasons))
        return out


def _score_of(kept: Kept) -> float:
    return round(kept.score + kept.freshness_boost, 6)
