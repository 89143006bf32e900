"""The feature store (issue 10, item 3): online features from the real candidate sources
over real news stories and an event log; offline features of the served items equal the
online ones for the same instant; nothing after an impression (events, late-arriving
events, follows, hides, new stories) changes its features: no label leakage.

Stories are real ABC news articles stored as ready assets (no pipeline: the sources
used here read the catalogue and the event log, not the vector index).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from kenning.container import Kenning
from kenning.principal import Principal
from kenning.services.recommend.candidates import CandidateService
from kenning.services.recommend.cold_start import PopularSource
from kenning.services.recommend.collaborative import CollaborativeSource
from kenning.services.recommend.context import Request, Source
from kenning.services.recommend.feature_store import offline_features
from kenning.services.recommend.features import (
    FEATURES,
    REQUEST_FEATURES,
    STATE_FEATURES,
    as_dict,
    feature_tick,
    from_dict,
    online_features,
)
from kenning.services.recommend.history import load_reader
from kenning.services.recommend.models import EASE, CoEngagement
from kenning.services.recommend.reasons import ReaderContext, SourceCandidate, merge_candidates
from kenning.services.recommend.social import SocialSource
from kenning.services.recommend.trending import FreshSource, TrendingSource
from kenning.settings import Settings
from kenning.stores.metadata.tables import RecServed
from tests.fixtures import media
from tests.unit.services.recommend.served_log import add_stories, event, serve

DAY = timedelta(days=1)
COL = {name: i for i, name in enumerate(FEATURES)}


@dataclass
class World:
    kenning: Kenning
    service: CandidateService
    sources: list[Source]
    a: Principal
    b: Principal
    stories: list[str]
    """Tenant A's stories; story n is by writer-(n % 5)."""
    now: datetime

    def request(self, now: datetime, reader: str = "alice") -> tuple[Request,
                                                                    list[SourceCandidate]]:
        with self.kenning.stores.db.session(write=False) as s:
            history = load_reader(s, self.a.tenant_id, reader)
        request = Request(self.a.tenant_id, ReaderContext(reader_id=reader, language="en",
                                                          topics=("Cricket",)),
                          history, self.service.snapshot(self.a.tenant_id, now), now, 50)
        return request, merge_candidates(src.propose(request) for src in self.sources)

    def by(self, writer: int) -> list[str]:
        return [a for n, a in enumerate(self.stories) if n % 5 == writer]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("features"), workers=0,
                        run_workers=False, log_json=False, _env_file=None,
                        recs_snapshot_max_age_s=0)
    kenning = Kenning(settings)
    a_id = kenning.tenants.create_tenant("features-a")
    b_id = kenning.tenants.create_tenant("features-b")
    a, b = Principal(a_id, "test"), Principal(b_id, "test")
    now = datetime.now(UTC)
    articles = media.news(30)
    with kenning.stores.db.session() as s:
        stories = add_stories(s, a_id, articles[:25], now - 20 * DAY,
                              topics={n: ["cricket"] for n in range(0, 25, 4)})
        fresh = add_stories(s, a_id, articles[25:], now - timedelta(hours=5))
        b_stories = add_stories(s, b_id, articles[:10], now - 20 * DAY)
        stories += fresh
        # A crowd engages over the past two weeks; some of it long ago, some today.
        for r in range(12):
            for k in range(4):
                n = (r * 3 + k * 7) % 25
                event(s, a_id, ["open", "read", "like", "share"][k], f"crowd-{r}",
                      now - timedelta(days=(r + k) % 14, hours=1), asset_id=stories[n],
                      dwell_ms=60_000)
        # Alice: follows writer-1, reads writer-2's stories, hid one of writer-3's.
        event(s, a_id, "follow", "alice", now - 3 * DAY, author_id="writer-1")
        event(s, a_id, "read", "alice", now - 2 * DAY, asset_id=stories[2], dwell_ms=120_000)
        event(s, a_id, "like", "alice", now - 2 * DAY, asset_id=stories[7])
        event(s, a_id, "hide", "alice", now - DAY, asset_id=stories[3])
        # Alice in tenant B: none of it is tenant A's.
        for n in range(6):
            event(s, b_id, "share", "alice", now - DAY, asset_id=b_stories[n])
            event(s, b_id, "follow", "alice", now - DAY, author_id=f"writer-{n % 5}")
    sources: list[Source] = [CollaborativeSource(EASE), CollaborativeSource(CoEngagement),
                             SocialSource(14 * 86_400.0), TrendingSource(86_400.0),
                             FreshSource(3 * 86_400.0), PopularSource(86_400.0)]
    service = CandidateService(kenning.stores, settings, "unused", sources)
    try:
        yield World(kenning, service, sources, a, b, stories, now)
    finally:
        kenning.close()


@pytest.fixture(scope="module")
def served(world: World) -> tuple[np.ndarray, list[SourceCandidate], list[RecServed]]:
    """Online features at the world's instant, logged as a served request."""
    request, candidates = world.request(world.now)
    X = online_features(request, candidates)
    with world.kenning.stores.db.session() as s:
        serve(s, world.a.tenant_id, "alice", world.now, [c.asset_id for c in candidates],
              features=[as_dict(row) for row in X])
    with world.kenning.stores.db.session(write=False) as s:
        rows = list(s.query(RecServed).filter_by(tenant_id=world.a.tenant_id)
                    .order_by(RecServed.position))
    return X, candidates, rows


def test_names_are_fixed_and_round_trip() -> None:
    assert FEATURES == REQUEST_FEATURES + STATE_FEATURES and len(set(FEATURES)) == len(FEATURES)
    row = np.arange(len(FEATURES), dtype=np.float64)
    assert np.array_equal(from_dict(as_dict(row)), row)
    assert from_dict({"popularity": float("nan"), "freshness": True, "n_sources": 2})[
        COL["n_sources"]] == 2
    assert not from_dict({"popularity": float("nan"), "freshness": True}).any()


def test_online_features_say_what_the_log_says(world: World, served: tuple) -> None:
    X, candidates, _ = served
    assert X.shape == (len(candidates), len(FEATURES)) and X.dtype == np.float64
    assert len(candidates) > 10
    row = {c.asset_id: X[i] for i, c in enumerate(candidates)}
    followed = [a for a in world.by(1) if a in row]
    assert followed and all(row[a][COL["follows_author"]] == 1 for a in followed)
    others = [a for a in row if a not in world.by(1)]
    assert all(row[a][COL["follows_author"]] == 0 for a in others)
    # Writer-2: alice read story 2 (weight 1 + 2 for dwell) and liked 7 (3).
    for a in (a for a in world.by(2) if a in row):
        assert row[a][COL["author_affinity"]] == pytest.approx(math.log1p(6.0))
    for a in (a for a in world.by(3) if a in row and a != world.stories[3]):
        assert row[a][COL["author_negative"]] == 1
    assert {row[a][COL["reader_activity"]] for a in row} == {math.log1p(2)}  # tenant A only
    fresh = [a for a in world.stories[25:] if a in row]
    assert fresh and all(row[a][COL["freshness"]] == pytest.approx(
        0.5 ** ((feature_tick(world.now) - (world.now - timedelta(hours=5)).timestamp())
                / 3600 / 48)) for a in fresh)
    assert all(row[a][COL["n_sources"]] >= 1 for a in row)
    assert all(row[a][COL["language_match"]] == 1 for a in row)
    cricket = {world.stories[n] for n in range(0, 25, 4)}
    assert cricket & set(row) and all(
        row[a][COL["topic_match"]] == (1 if a in cricket else 0) for a in row)


def test_popularity_counts_distinct_readers_before_the_tick(world: World,
                                                            served: tuple) -> None:
    X, candidates, _ = served
    readers: dict[int, set[str]] = {}
    for r in range(12):
        for k in range(4):
            readers.setdefault((r * 3 + k * 7) % 25, set()).add(f"crowd-{r}")
    for i, c in enumerate(candidates):
        n = world.stories.index(c.asset_id)
        assert X[i, COL["popularity"]] == pytest.approx(math.log1p(len(readers.get(n, ()))))


def test_offline_features_equal_online_ones_for_the_same_instant(world: World,
                                                                 served: tuple) -> None:
    X, _, rows = served
    with world.kenning.stores.db.session(write=False) as s:
        offline = offline_features(s, world.a.tenant_id, rows)
    np.testing.assert_allclose(offline, X, rtol=0, atol=1e-12)


def test_nothing_after_the_impression_changes_its_features(world: World,
                                                           served: tuple) -> None:
    X, _, rows = served
    a, now = world.a.tenant_id, world.now
    later = now + timedelta(seconds=2)
    with world.kenning.stores.db.session() as s:
        for asset_id in [r.asset_id for r in rows][:5]:  # the served stories go viral
            for r in range(10):
                event(s, a, "share", f"late-{r}", later, asset_id=asset_id)
        event(s, a, "follow", "alice", later, author_id="writer-4")
        event(s, a, "like", "alice", later, asset_id=world.by(4)[0])
        event(s, a, "report", "alice", later, asset_id=world.by(1)[0])
        # Late arrival: says it happened an hour before, reached us after the impression.
        event(s, a, "share", "alice", now - timedelta(hours=1), asset_id=world.by(0)[0],
              received=later)
        add_stories(s, a, media.news(31)[30:], later)
    with world.kenning.stores.db.session(write=False) as s:
        offline = offline_features(s, a, rows)
    np.testing.assert_allclose(offline, X, rtol=0, atol=1e-12)
    # The same stories' features computed after those events do change (the test bites).
    request, _ = world.request(now + timedelta(minutes=2))
    by_id = {r.asset_id: i for i, r in enumerate(rows)}
    candidates = [c for c in world.request(now)[1] if c.asset_id in by_id]
    after = online_features(request, candidates)
    before = X[[by_id[c.asset_id] for c in candidates]]
    state = slice(len(REQUEST_FEATURES), None)
    assert not np.allclose(after[:, state], before[:, state])
    changed = {FEATURES[len(REQUEST_FEATURES) + j] for j in
               np.flatnonzero((after[:, state] != before[:, state]).any(axis=0))}
    assert {"popularity", "follows_author", "reader_activity"} <= changed
