"""Candidates for one reader from every source, each with its reasons.

:class:`CandidateService` reads the reader's history and the tenant's snapshot (its
catalogue and engagement log, and the models fitted on it) and asks each source in turn.
Everything is scoped to the caller's tenant: the snapshot holds that tenant's stories and
events only, the vector search runs in that tenant's namespace, and a fitted model never
serves another tenant.

Snapshots are kept per tenant and rebuilt (models refitted) when the tenant's events or
stories changed, at most once per ``recs_snapshot_max_age_s``, in a background thread
(models fitted there too): until it is done, and between rebuilds, a busy tenant's readers
are served the last snapshot; their own newest events still count (the history is read
per request). The re-ranker, the ranker and the precomputed candidates
that serve ``GET /v1/users/{id}/recommendations`` sit above this.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import func, select

from kenning.principal import Principal
from kenning.services.recommend.catalogue import RECOMMENDABLE, load_catalogue
from kenning.services.recommend.cold_start import NewStorySource, PopularSource
from kenning.services.recommend.collaborative import CollaborativeSource
from kenning.services.recommend.content import ContentSource
from kenning.services.recommend.context import Request, Source, TenantSnapshot
from kenning.services.recommend.history import load_reader
from kenning.services.recommend.implicit_models import ALS, BPR
from kenning.services.recommend.interactions import load_interactions
from kenning.services.recommend.models import EASE, CoEngagement, ImplicitModel
from kenning.services.recommend.reasons import ReaderContext, SourceCandidate, merge_candidates
from kenning.services.recommend.social import SocialSource
from kenning.services.recommend.trending import FreshSource, TrendingSource
from kenning.settings import Settings
from kenning.stores.bundle import Stores
from kenning.stores.metadata.tables import Asset, Event, utcnow

__all__ = ["CandidateService", "default_sources", "make_model"]

log = logging.getLogger(__name__)

DAY_S = 86_400.0


def make_model(settings: Settings) -> ImplicitModel:
    """The collaborative model ``recs_model`` names, with its settings."""
    if settings.recs_model == "als":
        return ALS(factors=settings.recs_als_factors)
    if settings.recs_model == "bpr":
        return BPR()
    return EASE(l2=settings.recs_ease_l2, max_items=settings.recs_ease_max_items)


def default_sources(stores: Stores, settings: Settings, space: str) -> list[Source]:
    profile_s = settings.recs_profile_half_life_days * DAY_S
    fresh_s = settings.recs_fresh_days * DAY_S
    trending_s = settings.recs_trending_half_life_hours * 3600.0
    return [
        ContentSource(stores, space, profile_s),
        CollaborativeSource(lambda: make_model(settings)),
        CollaborativeSource(CoEngagement),
        SocialSource(profile_s),
        TrendingSource(trending_s),
        FreshSource(fresh_s),
        PopularSource(trending_s),
        NewStorySource(stores, space, fresh_s, profile_s,
                       max_readers=settings.recs_new_story_max_readers),
    ]


class CandidateService:
    def __init__(self, stores: Stores, settings: Settings, space: str,
                 sources: Sequence[Source] | None = None) -> None:
        self.stores = stores
        self.settings = settings
        self.space = space
        self.sources = list(sources) if sources is not None else default_sources(
            stores, settings, space)
        self._snapshots: dict[str, TenantSnapshot] = {}
        self._checked: dict[str, float] = {}  # when each tenant's marks were last read
        self._rebuilding: set[str] = set()
        self._lock = threading.Lock()

    def candidates(self, who: Principal, reader: ReaderContext, *, limit: int | None = None,
                   now: datetime | None = None) -> list[SourceCandidate]:
        """Up to ``limit`` (default ``recs_candidates_per_source``) stories per source,
        merged: one candidate per story with the reasons of every source that proposed
        it. None the reader engaged with, hid, reported, or whose author they muted."""
        now = now or utcnow()
        per_source = limit or self.settings.recs_candidates_per_source
        with self.stores.db.session(write=False) as s:
            history = load_reader(s, who.tenant_id, reader.reader_id)
        request = Request(who.tenant_id, reader, history, self.snapshot(who.tenant_id, now),
                          now, per_source)
        return merge_candidates(source.propose(request) for source in self.sources)

    def snapshot(self, tenant_id: str, now: datetime | None = None) -> TenantSnapshot:
        """The tenant's current snapshot (see the module docstring).

        Its marks are read at most once per ``recs_snapshot_max_age_s`` (they count the
        tenant's events and stories: 0.4 s at 200k events). A snapshot whose data changed
        is rebuilt, models fitted, in a background thread while requests are served the
        one they had (a rebuild at 100k stories takes seconds); only a tenant's first
        snapshot, or any with ``recs_snapshot_max_age_s`` 0, is built in the request.
        """
        now = now or utcnow()
        max_age = self.settings.recs_snapshot_max_age_s
        with self._lock:
            cached = self._snapshots.get(tenant_id)
            checked = self._checked.get(tenant_id)
        if cached is not None and checked is not None and \
                time.monotonic() - checked < max_age:
            return cached
        mark = self._mark(tenant_id)
        with self._lock:
            self._checked[tenant_id] = time.monotonic()
        if cached is not None and cached.mark == mark:
            return cached
        if cached is not None and max_age > 0:
            self._rebuild_later(tenant_id, now, mark)
            return cached
        return self._build(tenant_id, now, mark)

    def _build(self, tenant_id: str, now: datetime, mark: tuple[object, ...]) -> TenantSnapshot:
        snapshot = self._load(tenant_id, now, mark)
        with self._lock:
            self._snapshots[tenant_id] = snapshot
        return snapshot

    def _load(self, tenant_id: str, now: datetime, mark: tuple[object, ...]) -> TenantSnapshot:
        with self.stores.db.session(write=False) as s:
            catalogue = load_catalogue(s, tenant_id, author_key=self.settings.events_author_key,
                                       topics_key=self.settings.recs_topics_key)
            since = now - timedelta(days=self.settings.recs_history_days)
            interactions = load_interactions(s, tenant_id, set(catalogue.stories), since)
        return TenantSnapshot(tenant_id, catalogue, interactions, utcnow(), mark)

    def _rebuild_later(self, tenant_id: str, now: datetime, mark: tuple[object, ...]) -> None:
        """Build the tenant's next snapshot and fit its models in a thread of its own (one
        per tenant at a time); it replaces the served one when done."""
        with self._lock:
            if tenant_id in self._rebuilding:
                return
            self._rebuilding.add(tenant_id)

        def rebuild() -> None:
            try:
                fresh = self._load(tenant_id, now, mark)
                for source in self.sources:  # fit before serving it, not in a request
                    fit = getattr(source, "model", None)
                    if callable(fit):
                        fit(fresh)
                with self._lock:
                    self._snapshots[tenant_id] = fresh
            except Exception:
                log.exception("recommendations: snapshot rebuild failed",
                              extra={"tenant": tenant_id})
            finally:
                with self._lock:
                    self._rebuilding.discard(tenant_id)

        threading.Thread(target=rebuild, name=f"recs-snapshot-{tenant_id[:8]}",
                         daemon=True).start()

    def _mark(self, tenant_id: str) -> tuple[object, ...]:
        with self.stores.db.session(write=False) as s:
            events = s.execute(select(func.max(Event.id), func.count()).where(
                Event.tenant_id == tenant_id)).one()
            assets = s.execute(select(func.max(Asset.updated_at), func.count()).where(
                Asset.tenant_id == tenant_id, Asset.status.in_(RECOMMENDABLE))).one()
        return (*events, *assets)
