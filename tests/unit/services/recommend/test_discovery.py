"""Writers' discovery report (issue 10, item 5): its sums match the event log exactly
(events recorded through the events service, counted again here by a plain loop), by
source and surface with last-touch attribution, in day and week buckets; tenants never
see each other's authors; bad parameters are 422 with stable codes. On SQLite and
PostgreSQL."""

from __future__ import annotations

import hashlib
import random
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kenning.errors import BadInput, NotFound
from kenning.principal import Principal
from kenning.services.events import EventService
from kenning.services.recommend.discovery import (
    MAX_BUCKETS,
    TOUCH_WINDOW,
    DiscoveryReport,
    DiscoveryService,
    bucket_start,
)
from kenning.services.tenants import TenantService
from kenning.settings import Settings
from kenning.stores.metadata import Database
from kenning.stores.metadata.tables import Asset
from tests.conftest import migrated_database

SETTINGS = Settings()
NOW = datetime.now(UTC).replace(microsecond=0)
FIELD = {"impression": "impressions", "open": "opens", "read": "reads", "like": "likes",
         "share": "shares"}


@dataclass
class World:
    db: Database
    events: EventService
    discovery: DiscoveryService

    def tenant(self) -> Principal:
        tenant_id = TenantService(self.db).create_tenant(f"disc-{uuid.uuid4().hex[:8]}")
        return Principal(tenant_id=tenant_id, key_id="test")

    def story(self, who: Principal, author: str | None) -> str:
        asset = Asset(tenant_id=who.tenant_id, kind="text", mime="text/plain", bytes=1,
                      sha256=hashlib.sha256(uuid.uuid4().bytes).hexdigest(), source="text",
                      meta={} if author is None else {"author": author})
        with self.db.session() as s:
            s.add(asset)
            s.flush()
            return asset.id


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> (
    Iterator[World]
):
    with migrated_database(request.param, tmp_path_factory.mktemp("discovery")) as db:
        yield World(db, EventService(db, SETTINGS), DiscoveryService(db, SETTINGS))


def event_log(stories: dict[str, str], seed: int) -> list[dict[str, Any]]:
    """A month of readers' events over ``stories`` (asset id -> author): impressions on
    surfaces with and without a request id, opens with and without a surface, reads,
    likes and shares; every event at its own minute, so "latest" is never a tie."""
    rng = random.Random(seed)
    minutes = rng.sample(range(1, 30 * 24 * 60), 900)
    out: list[dict[str, Any]] = []
    readers = [f"reader-{i}" for i in range(12)]
    for n, minute in enumerate(sorted(minutes, reverse=True)):
        kind = rng.choice(["impression"] * 4 + ["open"] * 2 + ["read", "like", "share"])
        e: dict[str, Any] = {"event_id": f"ev-{seed}-{n}", "type": kind,
                             "reader_id": rng.choice(readers), "asset_id": rng.choice(
                                 list(stories)),
                             "at": (NOW - timedelta(minutes=minute)).isoformat()}
        if kind == "impression":
            e |= {"surface": rng.choice(["home", "footer", "push"]),
                  "position": rng.randrange(10)}
            if rng.random() < 0.6:
                e["request_id"] = f"req-{rng.randrange(50)}"
        elif kind == "open" and rng.random() < 0.5:
            e["surface"] = rng.choice(["home", "search"])
            if rng.random() < 0.5:
                e["request_id"] = f"req-{rng.randrange(50)}"
        elif kind == "read":
            e |= {"dwell_ms": rng.randrange(1, 300_000), "scroll_depth": rng.random()}
        out.append(e)
    return out


def expected(log: list[dict[str, Any]], stories: dict[str, str], author: str,
             since: datetime, until: datetime, bucket: str) -> dict[str, Counter[Any]]:
    """The report counted again, event by event, straight from the log."""
    def at(e: dict[str, Any]) -> datetime:
        return datetime.fromisoformat(e["at"])

    def is_touch(e: dict[str, Any]) -> bool:
        return e["type"] == "impression" or (e["type"] == "open" and "surface" in e)

    counts: dict[str, Counter[Any]] = {"totals": Counter(), "source": Counter(),
                                       "surface": Counter(), "bucket": Counter(),
                                       "bucket_source": Counter(), "bucket_surface": Counter()}
    for e in log:
        if stories[e["asset_id"]] != author or not since <= at(e) < until:
            continue
        if is_touch(e):
            touch: dict[str, Any] | None = e
        else:
            earlier = [t for t in log if is_touch(t) and t["reader_id"] == e["reader_id"]
                       and t["asset_id"] == e["asset_id"]
                       and at(e) - TOUCH_WINDOW <= at(t) <= at(e)]
            touch = max(earlier, key=at) if earlier else None
        surface = touch.get("surface") if touch else None
        source = ("unattributed" if touch is None
                  else "recommendations" if "request_id" in touch else "other")
        b = bucket_start(at(e), "week" if bucket == "week" else "day")
        field = FIELD[e["type"]]
        counts["totals"][field] += 1
        counts["source"][source, field] += 1
        counts["surface"][surface, field] += 1
        counts["bucket"][b, field] += 1
        counts["bucket_source"][b, source, field] += 1
        counts["bucket_surface"][b, surface, field] += 1
    return counts


def reported(report: DiscoveryReport) -> dict[str, Counter[Any]]:
    out: dict[str, Counter[Any]] = {k: Counter() for k in (
        "totals", "source", "surface", "bucket", "bucket_source", "bucket_surface")}
    for field in FIELD.values():
        out["totals"][field] = getattr(report.totals, field)
        for s in report.by_source:
            out["source"][s.source, field] = getattr(s, field)
        for f in report.by_surface:
            out["surface"][f.surface, field] = getattr(f, field)
        for b in report.buckets:
            out["bucket"][b.start, field] = getattr(b, field)
            for s in b.by_source:
                out["bucket_source"][b.start, s.source, field] = getattr(s, field)
            for f in b.by_surface:
                out["bucket_surface"][b.start, f.surface, field] = getattr(f, field)
    return {k: +v for k, v in out.items()}  # unary plus drops the zeros


@pytest.mark.parametrize("bucket", ["day", "week"])
def test_the_report_matches_the_event_log_exactly(world: World, bucket: str) -> None:
    who = world.tenant()
    stories = {world.story(who, a): a for a in ["ada", "ada", "ada", "bob", "bob"]}
    log = event_log(stories, seed=7)
    for i in range(0, len(log), 250):
        assert world.events.record_raw(who, {"events": log[i:i + 250]}).accepted == len(
            log[i:i + 250])
    since, until = NOW - timedelta(days=20, hours=5), NOW - timedelta(days=2, hours=3)
    report = world.discovery.report(who, "ada", since=since.isoformat(),
                                    until=until.isoformat(), bucket=bucket)
    want = expected(log, stories, "ada", since, until, bucket)
    assert reported(report) == {k: +v for k, v in want.items()}
    assert sum(want["totals"].values()) > 200  # the log is not trivially small
    assert {s.source for s in report.by_source} == {"recommendations", "other",
                                                    "unattributed"}
    # Every bucket of the window, in order, empty ones too; they add up to the totals.
    step = timedelta(days=7 if bucket == "week" else 1)
    assert report.buckets[0].start == bucket_start(since, report.bucket)
    assert all(b.start + step == c.start for b, c in zip(report.buckets, report.buckets[1:],
                                                         strict=False))
    assert report.buckets[-1].start < until <= report.buckets[-1].start + step
    for field in FIELD.values():
        assert sum(getattr(b, field) for b in report.buckets) == getattr(report.totals, field)
        assert sum(getattr(s, field) for s in report.by_source) == getattr(report.totals, field)


def test_an_engagement_takes_the_surface_and_source_of_its_latest_touch(world: World) -> None:
    who = world.tenant()
    story = world.story(who, "cy")

    def ev(n: int, kind: str, minutes_ago: int, **extra: Any) -> dict[str, Any]:
        return {"event_id": f"t{n}", "type": kind, "reader_id": "r", "asset_id": story,
                "at": (NOW - timedelta(minutes=minutes_ago)).isoformat(), **extra}

    world.events.record_raw(who, {"events": [
        ev(1, "impression", 600, surface="home", position=0, request_id="q1"),
        ev(2, "impression", 500, surface="push", position=0),
        ev(3, "open", 400),  # no surface: the push impression's
        ev(4, "read", 300, dwell_ms=1000),  # the push impression's, too
        ev(5, "open", 200, surface="search"),  # its own surface; no request id: other
        ev(6, "like", 100),  # the search open's
        ev(7, "share", 60 * 24 * 8 + 700),  # no touch in the week before it
    ]})
    report = world.discovery.report(who, "cy", since=(NOW - timedelta(days=10)).isoformat(),
                                    until=NOW.isoformat())
    by_surface = {s.surface: s for s in report.by_surface}
    assert (by_surface["home"].impressions, by_surface["home"].opens) == (1, 0)
    assert (by_surface["push"].impressions, by_surface["push"].opens,
            by_surface["push"].reads) == (1, 1, 1)
    assert (by_surface["search"].opens, by_surface["search"].likes) == (1, 1)
    assert by_surface[None].shares == 1
    by_source = {s.source: s for s in report.by_source}
    assert by_source["recommendations"].model_dump(exclude={"source"}) == {
        "impressions": 1, "opens": 0, "reads": 0, "likes": 0, "shares": 0}
    assert (by_source["other"].impressions, by_source["other"].opens,
            by_source["other"].reads, by_source["other"].likes) == (1, 2, 1, 1)
    assert by_source["unattributed"].shares == 1


def test_another_tenant_never_sees_the_author(world: World) -> None:
    mine, theirs = world.tenant(), world.tenant()
    story = world.story(mine, "dora")
    world.events.record_raw(mine, {"events": [{
        "event_id": "x", "type": "impression", "reader_id": "r", "asset_id": story,
        "surface": "home", "position": 0, "at": NOW.isoformat()}]})
    assert world.discovery.report(mine, "dora").totals.impressions == 1
    with pytest.raises(NotFound) as caught:
        world.discovery.report(theirs, "dora")
    assert caught.value.code == "unknown_author"
    # The same name in the other tenant is another author: it sees only its own events.
    world.story(theirs, "dora")
    assert world.discovery.report(theirs, "dora").totals.impressions == 0


def test_an_author_with_stories_but_no_events_gets_an_empty_report(world: World) -> None:
    who = world.tenant()
    world.story(who, "quiet")
    report = world.discovery.report(who, "quiet", bucket="week")
    assert report.totals.impressions == 0 and report.by_source == []
    assert len(report.buckets) in (4, 5) and all(b.impressions == 0 for b in report.buckets)


@pytest.mark.parametrize(("params", "code"), [
    ({"bucket": "year"}, "invalid_bucket"),
    ({"since": "yesterday"}, "invalid_time"),
    ({"until": "2026-13-45"}, "invalid_time"),
    ({"since": "0001-01-01"}, "invalid_time"),
    ({"since": "2026-02-01", "until": "2026-01-01"}, "invalid_range"),
    ({"since": "2026-01-01", "until": "2026-01-01"}, "invalid_range"),
    ({"since": "2020-01-01", "until": "2026-01-01"}, "range_too_long"),
])
def test_bad_parameters_are_refused_with_a_code(world: World, params: dict[str, str],
                                                code: str) -> None:
    who = world.tenant()
    world.story(who, "ada")
    with pytest.raises(BadInput) as caught:
        world.discovery.report(who, "ada", **params)
    assert caught.value.code == code


def test_weeks_allow_longer_windows_than_days(world: World) -> None:
    who = world.tenant()
    world.story(who, "ada")
    report = world.discovery.report(who, "ada", since="2020-01-01", until="2026-01-01",
                                    bucket="week")
    assert len(report.buckets) == 314 <= MAX_BUCKETS
    assert report.buckets[0].start == datetime(2019, 12, 30, tzinfo=UTC)  # a Monday
