"""Candidate sources on the real path: real ABC news stories ingested through the
embedded pipeline (the real multilingual USE model embeds them into the real vector
index), events recorded through the event service into SQLite, candidates read back.

Each test uses readers of its own; the stories' authors and topics are metadata set at
ingest, their publication times are backdated 30 days (two stay fresh: an hour old).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update

from kenning.container import Kenning
from kenning.ingest.items import IngestRequest
from kenning.principal import Principal
from kenning.services.recommend.candidates import CandidateService
from kenning.services.recommend.reasons import ReaderContext, SourceCandidate
from kenning.settings import Settings
from kenning.stores.metadata.tables import Asset
from tests.fixtures import media

pytestmark = pytest.mark.slow

CRICKET = {"lee-bg-0017", "lee-bg-0038", "lee-bg-0048", "lee-bg-0056", "lee-bg-0060"}
FIRES = {"lee-bg-0001", "lee-bg-0009", "lee-bg-0010", "lee-bg-0020", "lee-bg-0034",
         "lee-bg-0041", "lee-bg-0049"}
YACHTS = {"lee-bg-0026", "lee-bg-0028", "lee-bg-0040", "lee-bg-0047", "lee-bg-0053"}
FRESH = ("lee-bg-0049", "lee-bg-0059")
ADA = ("lee-bg-0002", "lee-bg-0004")
GERMAN = ("Die Bundesregierung hat am Mittwoch in Berlin einen neuen Haushaltsentwurf "
          "vorgestellt. Der Finanzminister sagte, die Ausgaben für Bildung und Forschung "
          "sollten im kommenden Jahr deutlich steigen, während die Neuverschuldung sinken "
          "werde. Die Opposition kritisierte den Entwurf als unrealistisch und warf der "
          "Regierung vor, die Risiken der schwachen Konjunktur zu unterschätzen. Der "
          "Bundestag wird im Herbst über den Haushalt beraten.")
TOPICS = {"cricket": CRICKET, "bushfires": FIRES, "sailing": YACHTS}


def _meta(article_id: str, n: int) -> dict[str, Any]:
    topics = sorted(t for t, ids in TOPICS.items() if article_id in ids)
    return {"author": "ada" if article_id in ADA else f"writer-{n % 7}", "topics": topics}


@dataclass
class World:
    kenning: Kenning
    service: CandidateService
    a: Principal
    b: Principal
    ids: dict[str, dict[str, str]]
    """Tenant id -> article id -> asset id."""
    counter: Iterator[int] = field(default_factory=itertools.count)

    def asset(self, who: Principal, article: str) -> str:
        return self.ids[who.tenant_id][article]

    def article(self, who: Principal, asset_id: str) -> str:
        return {v: k for k, v in self.ids[who.tenant_id].items()}[asset_id]

    def record(self, who: Principal, reader: str, kind: str, article: str | None = None,
               ago_h: float = 1.0, **fields: Any) -> None:
        event: dict[str, Any] = {
            "event_id": f"e{next(self.counter)}", "type": kind, "reader_id": reader,
            "at": (datetime.now(UTC) - timedelta(hours=ago_h)).isoformat(), **fields}
        if article is not None:
            event["asset_id"] = self.asset(who, article)
        self.kenning.events.record_raw(who, {"events": [event]})

    def candidates(self, who: Principal, reader: str, **context: Any
                   ) -> list[SourceCandidate]:
        return self.service.candidates(who, ReaderContext(reader_id=reader, **context))

    def by_code(self, who: Principal, found: list[SourceCandidate], code: str
                ) -> list[tuple[str, dict[str, Any]]]:
        """(article, evidence) of the candidates with a reason ``code``, in source order."""
        out = []
        for c in found:
            for r in c.reasons:
                if r.code == code:
                    out.append((self.article(who, c.asset_id), r.evidence))
        return out


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("recs"), workers=1, log_json=False,
                        _env_file=None, recs_snapshot_max_age_s=0)
    kenning = Kenning(settings)
    a_id = kenning.tenants.create_tenant("recs-a")
    b_id = kenning.tenants.create_tenant("recs-b")
    a, b = (Principal(t, kenning.tenants.create_key(t).key_id) for t in (a_id, b_id))
    articles = media.news(60)
    kenning.start()
    try:
        ids: dict[str, dict[str, str]] = {a_id: {}, b_id: {}}
        for who, chosen in ((a, articles), (b, articles[:20])):
            for n, art in enumerate(chosen):
                ids[who.tenant_id][art.id] = kenning.ingest.ingest_bytes(
                    who, art.text.encode(), IngestRequest(title=art.title,
                                                          metadata=_meta(art.id, n))).asset_id
        ids[a_id]["german"] = kenning.ingest.ingest_bytes(
            a, GERMAN.encode(), IngestRequest(title="Haushalt", metadata={
                "author": "greta", "topics": ["politik"]})).asset_id
        kenning.join(timeout_s=600)
        old = datetime.now(UTC) - timedelta(days=30)
        with kenning.stores.db.session() as s:
            s.execute(update(Asset).values(created_at=old))
            fresh = [ids[a_id][f] for f in FRESH]
            s.execute(update(Asset).where(Asset.id.in_(fresh)).values(
                created_at=datetime.now(UTC) - timedelta(hours=1)))
        service = CandidateService(kenning.stores, settings,
                                   kenning.resources.embedder.model_id)
        yield World(kenning, service, a, b, ids)
    finally:
        kenning.close()


def test_every_story_was_processed(world: World) -> None:
    snapshot = world.service.snapshot(world.a.tenant_id)
    assert len(snapshot.catalogue) == 61
    assert snapshot.catalogue.get(world.asset(world.a, "german")).language == "de"  # type: ignore[union-attr]
    assert len(world.service.snapshot(world.b.tenant_id).catalogue) == 20


def test_content_follows_what_the_reader_read(world: World) -> None:
    a = world.a
    world.record(a, "content-1", "read", "lee-bg-0038", dwell_ms=180_000)
    world.record(a, "content-1", "like", "lee-bg-0048")
    content = world.by_code(a, world.candidates(a, "content-1"), "content:similar")
    top = [article for article, _ in content[:3]]
    assert top[0] in CRICKET and len(set(top) & CRICKET) >= 2, top
    assert all(e["because_of"] in {world.asset(a, "lee-bg-0038"), world.asset(a, "lee-bg-0048")}
               and 0 < e["cosine"] <= 1 for _, e in content)
    assert not {"lee-bg-0038", "lee-bg-0048"} & {article for article, _ in content}


def test_a_reader_with_no_history_gets_no_personal_candidates(world: World) -> None:
    found = world.candidates(world.a, "nobody-yet")
    sources = {r.source for c in found for r in c.reasons}
    assert not sources & {"content", "collaborative", "social"}
    assert "fresh" in sources


def test_read_hidden_reported_and_muted_never_come_back(world: World) -> None:
    a = world.a
    reader = "picky-1"
    world.record(a, reader, "read", "lee-bg-0038", dwell_ms=60_000)
    world.record(a, reader, "read", "lee-bg-0048", dwell_ms=60_000)
    world.record(a, reader, "hide", "lee-bg-0056")
    world.record(a, reader, "report", "lee-bg-0060", reason="off topic")
    muted = _meta("lee-bg-0017", 16)["author"]
    world.record(a, reader, "mute_author", author_id=muted)
    world.record(a, reader, "follow", author_id=muted)  # a follow does not undo a mute
    # Others make the ruled-out stories popular and co-engaged with what this reader read.
    for n in range(4):
        for article in ("lee-bg-0038", "lee-bg-0056", "lee-bg-0060", "lee-bg-0017"):
            world.record(a, f"crowd-{n}", "like", article)
    found = world.candidates(a, reader)
    assert found, "the other sources still propose stories"
    articles = {world.article(a, c.asset_id) for c in found}
    assert not articles & {"lee-bg-0038", "lee-bg-0048", "lee-bg-0056", "lee-bg-0060"}
    assert all(c.author != muted for c in found)
    snapshot = world.service.snapshot(a.tenant_id)
    muted_stories = {s.asset_id for s in snapshot.catalogue.stories.values()
                     if s.author == muted}
    assert muted_stories and not muted_stories & {c.asset_id for c in found}


def test_followed_authors_stories_and_what_they_engaged_with(world: World) -> None:
    a = world.a
    reader = "fan-1"
    world.record(a, reader, "follow", author_id="ada", ago_h=3)
    world.record(a, "ada", "share", "lee-bg-0033", ago_h=2)  # ada reads too
    found = world.candidates(a, reader)
    follows = world.by_code(a, found, "social:follows")
    assert sorted(article for article, _ in follows) == sorted(ADA)
    assert all(e == {"author_id": "ada"} for _, e in follows)
    engaged = world.by_code(a, found, "social:followed_engaged")
    assert engaged == [("lee-bg-0033", {"author_id": "ada"})]
    world.record(a, reader, "unfollow", author_id="ada", ago_h=1)
    after = world.candidates(a, reader)
    assert not world.by_code(a, after, "social:follows")
    assert not world.by_code(a, after, "social:followed_engaged")


def test_collaborative_models_propose_what_similar_readers_read(world: World) -> None:
    a = world.a
    for n in range(5):
        for article in ("lee-bg-0026", "lee-bg-0028", "lee-bg-0040"):
            world.record(a, f"sailor-{n}", "read", article, dwell_ms=90_000, ago_h=5)
    world.record(a, "sailor-new", "read", "lee-bg-0026", dwell_ms=90_000)
    world.record(a, "sailor-new", "read", "lee-bg-0028", dwell_ms=90_000)
    found = world.candidates(a, "sailor-new")
    cause = {world.asset(a, "lee-bg-0026"), world.asset(a, "lee-bg-0028")}
    for code in ("collaborative:ease", "collaborative:co_engagement"):
        proposed = world.by_code(a, found, code)
        assert proposed[0][0] == "lee-bg-0040", (code, proposed)
        assert proposed[0][1]["because_of"] in cause
        assert not {"lee-bg-0026", "lee-bg-0028"} & {article for article, _ in proposed}


def test_trending_ranks_by_recent_engagement(world: World) -> None:
    a = world.a
    for n in range(12):
        world.record(a, f"quake-{n}", "like", "lee-bg-0033", ago_h=0.5)
        world.record(a, f"quake-{n}", "share", "lee-bg-0033", ago_h=0.5)
    # Older engagement counts for less: a day-old burst of the same size ranks below.
    for n in range(12):
        world.record(a, f"old-{n}", "like", "lee-bg-0011", ago_h=48)
        world.record(a, f"old-{n}", "share", "lee-bg-0011", ago_h=48)
    trending = world.by_code(a, world.candidates(a, "trend-1"), "trending:engagement")
    ranked = [article for article, _ in trending]
    assert ranked[0] == "lee-bg-0033"
    assert ranked.index("lee-bg-0011") > 0
    assert trending[0][1]["engagements"] >= 24 and trending[0][1]["window_days"] == 7.0


def test_fresh_stories_and_new_ones_matched_by_content_alone(world: World) -> None:
    a = world.a
    fresh = world.by_code(a, world.candidates(a, "fresh-1"), "fresh:new")
    assert sorted(article for article, _ in fresh) == sorted(FRESH)
    world.record(a, "fires-1", "read", "lee-bg-0001", dwell_ms=120_000)
    world.record(a, "fires-1", "read", "lee-bg-0010", dwell_ms=120_000)
    new = world.by_code(a, world.candidates(a, "fires-1"), "cold_start:new_story")
    # Both fresh stories have no engagement; the bushfire one is this reader's.
    assert [article for article, _ in new] == ["lee-bg-0049", "lee-bg-0059"]
    assert new[0][1]["because_of"] in {world.asset(a, "lee-bg-0001"),
                                       world.asset(a, "lee-bg-0010")}


def test_cold_start_popular_in_the_readers_language_and_topics(world: World) -> None:
    a = world.a
    world.record(a, "leser-1", "read", "german", dwell_ms=30_000)
    for n in range(3):
        world.record(a, f"cricket-fan-{n}", "like", "lee-bg-0060")
    german = world.by_code(a, world.candidates(a, "leser-2", language="de"),
                           "cold_start:popular")
    assert german == [("german", {"engagements": 1, "window_days": 7.0, "language": "de"})]
    sport = world.by_code(a, world.candidates(a, "new-fan", language="en",
                                              topics=("Cricket",)), "cold_start:popular")
    assert sport and all(article in CRICKET for article, _ in sport)
    assert sport[0][0] == "lee-bg-0060"
    assert sport[0][1]["topic"] == "cricket" and sport[0][1]["language"] == "en"


def test_every_candidate_carries_its_reasons_and_metadata(world: World) -> None:
    a = world.a
    world.record(a, "all-1", "read", "lee-bg-0034", dwell_ms=60_000)
    world.record(a, "all-1", "follow", author_id="ada")
    found = world.candidates(a, "all-1")
    assert len({c.asset_id for c in found}) == len(found)
    known = {"content:similar", "collaborative:ease", "collaborative:co_engagement",
             "social:follows", "social:followed_engaged", "trending:engagement", "fresh:new",
             "cold_start:popular", "cold_start:new_story"}
    for c in found:
        assert c.reasons and {r.code for r in c.reasons} <= known
        assert set(c.scores) == {r.code for r in c.reasons}
        assert c.published_at is not None and c.author is not None
    assert {"content:similar", "social:follows", "fresh:new"} <= {
        r.code for c in found for r in c.reasons}


def test_one_tenants_events_never_reach_anothers_candidates(world: World) -> None:
    a, b = world.a, world.b
    world.record(a, "iso-1", "read", "lee-bg-0019", dwell_ms=60_000)
    world.record(a, "iso-1", "follow", author_id="ada")
    now = datetime.now(UTC)
    reader = ReaderContext(reader_id="iso-1")
    before = world.service.candidates(a, reader, now=now)
    # Tenant B: the same stories, a crowd on its copy of 0005, the same reader id
    # following someone else, and engagement that would co-engage with A's reader's story.
    for n in range(10):
        world.record(b, f"b-crowd-{n}", "share", "lee-bg-0005", ago_h=0.2)
        world.record(b, f"b-crowd-{n}", "read", "lee-bg-0019", dwell_ms=60_000, ago_h=0.2)
    world.record(b, "iso-1", "follow", author_id="writer-3")
    world.record(b, "ada", "like", "lee-bg-0007")
    after = world.service.candidates(a, reader, now=now)
    assert [c.model_dump() for c in after] == [c.model_dump() for c in before]
    mine = set(world.ids[a.tenant_id].values())
    assert {c.asset_id for c in after} <= mine
    theirs = world.service.candidates(b, reader, now=now)
    assert theirs and {c.asset_id for c in theirs} <= set(world.ids[b.tenant_id].values())
    assert world.by_code(b, theirs, "social:follows")  # writer-3's stories, in B
    assert all(e == {"author_id": "writer-3"}
               for _, e in world.by_code(b, theirs, "social:follows"))
    snapshot_a = world.service.snapshot(a.tenant_id)
    assert not {f"b-crowd-{n}" for n in range(10)} & set(snapshot_a.interactions.readers)
    assert not set(snapshot_a.interactions.items) - mine


def test_a_changed_snapshot_is_rebuilt_in_the_background(world: World) -> None:
    """With a snapshot age: the first snapshot is built in the request; after the age,
    changed data is rebuilt (models fitted) in a thread while the old one is served."""
    settings = world.service.settings.model_copy(update={"recs_snapshot_max_age_s": 0.2})
    service = CandidateService(world.kenning.stores, settings,
                               world.kenning.resources.embedder.model_id)
    tenant = world.a.tenant_id
    first = service.snapshot(tenant)
    assert service.snapshot(tenant) is first  # young: served without reading the marks
    world.record(world.a, "background-1", "like", "lee-bg-0041")
    time.sleep(0.25)
    assert service.snapshot(tenant) is first  # changed: the old one while it rebuilds
    deadline = time.monotonic() + 60
    while (current := service.snapshot(tenant)) is first and time.monotonic() < deadline:
        time.sleep(0.05)
    assert current is not first and current.mark != first.mark
    assert "background-1" in set(current.interactions.readers)
    assert current.fitted  # the models were fitted in the thread, not in a request
