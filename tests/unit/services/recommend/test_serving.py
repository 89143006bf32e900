"""Serving recommendations on the real path: real ABC news stories ingested through the
embedded pipeline (the real multilingual USE model embeds them, the matcher clusters a
near-duplicate copy), events recorded through the event service, recommendations served
by the container's :class:`RecommendationService` and its ``rec_served`` rows read back.

Each test uses readers of its own; the stories are backdated 30 days.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select, update

from kenning.container import Kenning
from kenning.errors import BadInput
from kenning.ingest.items import IngestRequest
from kenning.principal import Principal
from kenning.services.recommend import serving as serving_module
from kenning.services.recommend.explore import explore_probability
from kenning.services.recommend.features import FEATURES
from kenning.services.recommend.reasons import ReaderContext
from kenning.services.recommend.schemas import Recommendations
from kenning.services.recommend.serving import RecommendationService, story_titles
from kenning.settings import Settings
from kenning.stores.metadata.tables import Asset, MatchClusterMember, RecServed
from tests.fixtures import media

pytestmark = pytest.mark.slow

CRICKET = ("lee-bg-0017", "lee-bg-0038", "lee-bg-0048", "lee-bg-0056", "lee-bg-0060")
COPY = "copy-of-0038"


def _meta(article_id: str, n: int) -> dict[str, Any]:
    return {"author": f"writer-{n % 6}", "topics": ["cricket"] if article_id in CRICKET else []}


def _near_copy(text: str) -> str:
    """The same story lightly edited (a syndicated copy): one sentence added."""
    return text.rstrip() + "\nThe report was first published by the ABC."


@dataclass
class World:
    kenning: Kenning
    a: Principal
    b: Principal
    ids: dict[str, dict[str, str]]
    """Tenant id -> article id -> asset id."""
    counter: Iterator[int] = field(default_factory=itertools.count)

    @property
    def service(self) -> RecommendationService:
        assert self.kenning.recommendations is not None
        return self.kenning.recommendations

    def asset(self, who: Principal, article: str) -> str:
        return self.ids[who.tenant_id][article]

    def record(self, who: Principal, reader: str, kind: str, asset_id: str,
               **fields: Any) -> None:
        event: dict[str, Any] = {
            "event_id": f"e{next(self.counter)}", "type": kind, "reader_id": reader,
            "at": (datetime.now(UTC) - timedelta(minutes=5)).isoformat(),
            "asset_id": asset_id, **fields}
        self.kenning.events.record_raw(who, {"events": [event]})

    def with_settings(self, **changes: Any) -> RecommendationService:
        return RecommendationService(self.service.source,
                                     self.kenning.settings.model_copy(update=changes))

    def served(self, who: Principal, request_id: str) -> list[RecServed]:
        with self.kenning.stores.db.session(write=False) as s:
            rows = s.scalars(select(RecServed).where(
                RecServed.tenant_id == who.tenant_id, RecServed.request_id == request_id)
                .order_by(RecServed.position)).all()
            s.expunge_all()
            return list(rows)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("serve"), workers=1, log_json=False,
                        _env_file=None, recs_snapshot_max_age_s=0, recs_explore=0.0)
    kenning = Kenning(settings)
    a_id = kenning.tenants.create_tenant("serve-a")
    b_id = kenning.tenants.create_tenant("serve-b")
    a, b = (Principal(t, kenning.tenants.create_key(t).key_id) for t in (a_id, b_id))
    articles = media.news(60)
    kenning.start()
    try:
        ids: dict[str, dict[str, str]] = {a_id: {}, b_id: {}}
        for who, chosen in ((a, articles), (b, articles[:15])):
            for n, art in enumerate(chosen):
                ids[who.tenant_id][art.id] = kenning.ingest.ingest_bytes(
                    who, art.text.encode(), IngestRequest(title=art.title,
                                                          metadata=_meta(art.id, n))).asset_id
        original = next(art for art in articles if art.id == "lee-bg-0038")
        ids[a_id][COPY] = kenning.ingest.ingest_bytes(
            a, _near_copy(original.text).encode(), IngestRequest(
                title=original.title + " (syndicated)",
                metadata={"author": "syndicate", "topics": ["cricket"]})).asset_id
        extra = media.news(61)[60]  # uploaded as a file would be: no title field
        ids[a_id]["untitled"] = kenning.ingest.ingest_bytes(
            a, f"{extra.title}\n\n{extra.text}".encode(), IngestRequest()).asset_id
        kenning.join(timeout_s=600)
        for _ in range(20):  # cluster the near-duplicates now (the matcher runs every 2 s)
            if not kenning.matching.run_once().matched:
                break
        with kenning.stores.db.session() as s:
            s.execute(update(Asset).values(created_at=datetime.now(UTC) - timedelta(days=30)))
        yield World(kenning, a, b, ids)
    finally:
        kenning.close()


def _ids(found: Recommendations) -> list[str]:
    return [item.asset_id for item in found.items]


def test_every_item_has_a_reason_in_words(world: World) -> None:
    a = world.a
    world.record(a, "why-1", "read", world.asset(a, "lee-bg-0017"), dwell_ms=120_000)
    world.record(a, "why-1", "like", world.asset(a, "lee-bg-0048"))
    found = world.service.recommend(a, "why-1", limit=10)
    assert len(found.items) == 10 and found.policy == "blend"
    assert [i.position for i in found.items] == list(range(10))
    titles = {media_title for media_title in (
        next(art.title for art in media.news(60) if art.id == read)
        for read in ("lee-bg-0017", "lee-bg-0048"))}
    because = []
    for item in found.items:
        assert item.reasons and all(r.text for r in item.reasons), item
        assert item.explanation == item.reasons[0].text
        assert item.source == item.reasons[0].source
        assert item.title
        for r in item.reasons:
            if r.code == "content:similar":
                because.append(r.text)
    assert because, "content similarity names the stories read"
    assert all(any(t.startswith(f"because you read “{title[:40]}") for title in titles)
               for t in because), because
    # The top of the list is cricket, like what the reader read.
    cricket = {world.asset(a, c) for c in (*CRICKET, COPY)}
    assert set(_ids(found)[:2]) <= cricket


def test_hidden_muted_and_read_stories_never_come_back(world: World) -> None:
    a = world.a
    world.record(a, "filter-1", "read", world.asset(a, "lee-bg-0017"), dwell_ms=60_000)
    first = world.service.recommend(a, "filter-1", limit=12)
    hidden, read = first.items[0].asset_id, first.items[1].asset_id
    muted = next(i.author for i in first.items[2:] if i.author is not None)
    world.record(a, "filter-1", "hide", hidden)
    world.record(a, "filter-1", "read", read, dwell_ms=30_000)
    world.kenning.events.record_raw(a, {"events": [{
        "event_id": f"e{next(world.counter)}", "type": "mute_author", "reader_id": "filter-1",
        "author_id": muted, "at": datetime.now(UTC).isoformat()}]})
    exploring = world.with_settings(recs_explore=0.5, recs_explore_pool=20)
    served: set[str] = set()
    for service in (world.service, exploring, exploring, exploring):
        found = service.recommend(a, "filter-1", limit=20)
        assert found.items
        served |= set(_ids(found))
        assert all(i.author != muted for i in found.items)
    assert not served & {hidden, read, world.asset(a, "lee-bg-0017")}


def test_a_near_duplicate_cluster_is_served_once(world: World) -> None:
    a = world.a
    original, copy = world.asset(a, "lee-bg-0038"), world.asset(a, COPY)
    with world.kenning.stores.db.session(write=False) as s:
        clusters = dict(s.execute(select(MatchClusterMember.asset_id,
                                         MatchClusterMember.cluster_id).where(
            MatchClusterMember.asset_id.in_([original, copy]))).tuples().all())
    assert clusters[original] == clusters[copy], "the matcher clustered the copy"
    world.record(a, "dup-1", "read", world.asset(a, "lee-bg-0017"), dwell_ms=60_000)
    proposed = {c.asset_id for c in world.service.source.candidates(
        a, ReaderContext(reader_id="dup-1"))}
    assert {original, copy} <= proposed, "both copies are candidates"
    found = _ids(world.service.recommend(a, "dup-1", limit=30))
    assert len({original, copy} & set(found)) == 1
    # A reader who read the copy is never served the original.
    world.record(a, "dup-2", "read", copy, dwell_ms=60_000)
    assert original not in _ids(world.service.recommend(a, "dup-2", limit=30))


def test_the_served_log_matches_the_response(world: World) -> None:
    a = world.a
    world.record(a, "log-1", "read", world.asset(a, "lee-bg-0056"), dwell_ms=90_000)
    found = world.service.recommend(a, "log-1", surface="article_footer", limit=8)
    rows = world.served(a, found.request_id)
    assert [(r.asset_id, r.position, r.source, r.score, r.policy) for r in rows] == [
        (i.asset_id, i.position, i.source, i.score, found.policy) for i in found.items]
    assert {(r.reader_id, r.surface, r.tenant_id) for r in rows} == {
        ("log-1", "article_footer", a.tenant_id)}
    assert len({r.at for r in rows}) == 1
    for r in rows:
        assert list(r.features) == list(FEATURES)
        assert all(np.isfinite(v) for v in r.features.values())
        assert r.propensity == 1.0  # recs_explore is 0 in this world
    # article_footer caps each author at one story.
    authors = [i.author for i in found.items if i.author is not None]
    assert len(authors) == len(set(authors))


def test_propensities_are_the_exploration_policy(world: World) -> None:
    a = world.a
    world.record(a, "explore-1", "read", world.asset(a, "lee-bg-0017"), dwell_ms=60_000)
    epsilon, pool, limit = 0.3, 5, 8
    service = world.with_settings(recs_explore=epsilon, recs_explore_pool=pool)
    greedy = _ids(world.service.recommend(a, "explore-1", limit=limit))
    q = explore_probability(epsilon, limit, pool)
    swapped = 0
    for _ in range(25):
        found = service.recommend(a, "explore-1", limit=limit)
        rows = world.served(a, found.request_id)
        assert len(rows) == limit and len({r.asset_id for r in rows}) == limit
        for r in rows:
            assert 0 < r.propensity <= 1
            if r.asset_id == greedy[r.position]:
                assert r.propensity == pytest.approx(1 - q)
            else:
                swapped += 1
                assert r.asset_id not in greedy
                assert r.propensity == pytest.approx(q / pool)
        # Everything that may stand at a slot: the ranked story and each of the pool.
        assert (1 - q) + pool * (q / pool) == pytest.approx(1.0)
    assert 0 < swapped < 25 * limit


def test_tenants_never_see_each_others_stories_or_logs(world: World) -> None:
    a, b = world.a, world.b
    world.record(a, "shared-reader", "read", world.asset(a, "lee-bg-0017"), dwell_ms=60_000)
    world.record(b, "shared-reader", "read", world.asset(b, "lee-bg-0001"), dwell_ms=60_000)
    in_a = world.service.recommend(a, "shared-reader", limit=10)
    in_b = world.service.recommend(b, "shared-reader", limit=10)
    assert set(_ids(in_a)) <= set(world.ids[a.tenant_id].values())
    assert set(_ids(in_b)) <= set(world.ids[b.tenant_id].values())
    named = {r.evidence.get("because_of") for i in in_b.items for r in i.reasons} - {None}
    assert named <= set(world.ids[b.tenant_id].values())
    assert world.served(b, in_a.request_id) == []
    assert {r.asset_id for r in world.served(b, in_b.request_id)} == set(_ids(in_b))
    # A reader unknown to tenant B gets B's cold start only, not A's history.
    fresh = world.service.recommend(b, "why-1", limit=5)
    assert set(_ids(fresh)) <= set(world.ids[b.tenant_id].values())
    assert all(r.source != "content" for i in fresh.items for r in i.reasons)


def test_precomputed_candidates_are_kept_until_the_reader_acts(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    a = world.a
    service = world.service
    computed: list[str] = []
    compute = service._make

    def counting(*args: Any, **kwargs: Any) -> Any:
        computed.append(args[1].reader_id)
        return compute(*args, **kwargs)

    monkeypatch.setattr(service, "_make", counting)
    world.record(a, "cache-1", "read", world.asset(a, "lee-bg-0038"), dwell_ms=60_000)
    first = service.recommend(a, "cache-1", limit=5)
    service.recommend(a, "cache-1", limit=5, surface="article_footer")
    assert computed == ["cache-1"]
    world.record(a, "cache-1", "impression", first.items[0].asset_id, surface="home",
                 position=0, request_id=first.request_id)
    service.recommend(a, "cache-1", limit=5)
    assert computed == ["cache-1"], "an impression changes nothing a source reads"
    world.record(a, "cache-1", "read", first.items[0].asset_id, dwell_ms=10_000)
    again = service.recommend(a, "cache-1", limit=5)
    assert computed == ["cache-1", "cache-1"]
    assert first.items[0].asset_id not in _ids(again)
    # Declared topics are another pool.
    service.recommend(a, "cache-1", limit=5, topics=["Cricket"])
    assert len(computed) == 3
    service.forget(world.b.tenant_id)  # another tenant's: this pool stays
    service.recommend(a, "cache-1", limit=5)
    assert len(computed) == 3
    service.forget(a.tenant_id)
    service.recommend(a, "cache-1", limit=5)
    assert len(computed) == 4


def test_a_story_without_a_title_is_titled_by_its_first_line(world: World) -> None:
    a = world.a
    extra = media.news(61)[60]
    untitled, titled = world.asset(a, "untitled"), world.asset(a, "lee-bg-0017")
    with world.kenning.stores.db.session(write=False) as s:
        titles = story_titles(s, a.tenant_id, {untitled, titled})
        assert story_titles(s, world.b.tenant_id, {untitled}) == {}  # not B's story
    assert titles[titled] == next(x.title for x in media.news(60) if x.id == "lee-bg-0017")
    expected = extra.title.rstrip("…").rstrip()
    assert titles[untitled] is not None and len(titles[untitled]) <= 81
    assert titles[untitled].rstrip("…").startswith(expected[:60]), (titles[untitled], expected)


class _Reversed:
    """A test double of the contract's Ranker: scores by a fixed feature, negated."""

    version = 3

    def score(self, x: np.ndarray) -> np.ndarray:
        return -x[:, 0]


class _Broken:
    version = 4

    def score(self, x: np.ndarray) -> np.ndarray:
        raise RuntimeError("model file damaged")


def test_a_serving_ranker_scores_and_a_broken_one_falls_back_to_the_blend(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    a = world.a
    world.record(a, "ranked-1", "read", world.asset(a, "lee-bg-0017"), dwell_ms=60_000)
    monkeypatch.setattr(serving_module, "serving_ranker", lambda s, tenant: _Reversed())
    found = world.service.recommend(a, "ranked-1", limit=5)
    assert found.policy == "ranker:3"
    assert {r.policy for r in world.served(a, found.request_id)} == {"ranker:3"}
    monkeypatch.setattr(serving_module, "serving_ranker", lambda s, tenant: _Broken())
    found = world.service.recommend(a, "ranked-1", limit=5)
    assert found.policy == "blend" and len(found.items) == 5


@pytest.mark.parametrize(("kwargs", "code"), [
    ({"reader_id": ""}, "invalid_reader"),
    ({"reader_id": "r" * 129}, "invalid_reader"),
    ({"reader_id": "bad\x00id"}, "invalid_reader"),
    ({"surface": ""}, "invalid_surface"),
    ({"surface": "x" * 33}, "invalid_surface"),
    ({"surface": "home page"}, "invalid_surface"),
    ({"limit": 0}, "invalid_limit"),
    ({"limit": 51}, "invalid_limit"),
    ({"language": "english!"}, "invalid_language"),
    ({"topics": [""]}, "invalid_topics"),
    ({"topics": ["t"] * 51}, "invalid_topics"),
])
def test_bad_parameters_are_refused_with_a_code(world: World, kwargs: dict[str, Any],
                                                code: str) -> None:
    args: dict[str, Any] = {"reader_id": "ok", **kwargs}
    reader = args.pop("reader_id")
    with pytest.raises(BadInput) as caught:
        world.service.recommend(world.a, reader, **args)
    assert caught.value.code == code and caught.value.status == 422
