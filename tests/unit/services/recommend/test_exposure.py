"""Exposure audit (issue 10, item 6): Gini on known distributions, coverage, new writers
and groups by a writer attribute from a constructed event log; tenant isolation; bad
parameters are 422 with codes. On SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from kenning.errors import BadInput
from kenning.principal import Principal
from kenning.services.events import EventService
from kenning.services.recommend.exposure import ExposureService, gini
from kenning.services.tenants import TenantService
from kenning.settings import Settings
from kenning.stores.metadata import Database
from kenning.stores.metadata.tables import Asset
from tests.conftest import migrated_database

SETTINGS = Settings()
NOW = datetime.now(UTC).replace(microsecond=0)
UNTIL = (NOW + timedelta(minutes=1)).isoformat()


def mean_difference_gini(x: list[float]) -> float:
    """Gini as half the relative mean absolute difference: another formula than the
    service's (sorted ranks), so agreement means something."""
    a = np.asarray(x, dtype=float)
    return float(np.abs(a[:, None] - a[None, :]).sum() / (2 * a.size ** 2 * a.mean()))


# --- Gini -----------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 5, 100])
def test_gini_of_equal_exposure_is_zero(n: int) -> None:
    assert gini([7] * n) == pytest.approx(0.0)


@pytest.mark.parametrize("n", [1, 2, 5, 100])
def test_gini_when_one_writer_gets_everything_is_n_minus_one_over_n(n: int) -> None:
    assert gini([0] * (n - 1) + [42]) == pytest.approx((n - 1) / n)


def test_gini_of_known_and_random_distributions() -> None:
    assert gini([1, 2, 3, 4]) == pytest.approx(0.25)
    assert gini([4, 1, 3, 2]) == pytest.approx(0.25)  # order does not matter
    rng = np.random.default_rng(3)
    for _ in range(20):
        x = rng.pareto(1.5, size=rng.integers(2, 200)).tolist()
        assert gini(x) == pytest.approx(mean_difference_gini(x))


def test_gini_of_nothing_is_undefined() -> None:
    assert gini([]) is None and gini([0, 0, 0]) is None
    with pytest.raises(ValueError):
        gini([-1, 2])


# --- the audit over an event log ------------------------------------------------------------
@dataclass
class World:
    db: Database
    events: EventService
    exposure: ExposureService

    def tenant(self) -> Principal:
        tenant_id = TenantService(self.db).create_tenant(f"expo-{uuid.uuid4().hex[:8]}")
        return Principal(tenant_id=tenant_id, key_id="test")

    def story(self, who: Principal, meta: dict[str, Any], days_old: float) -> str:
        asset = Asset(tenant_id=who.tenant_id, kind="text", mime="text/plain", bytes=1,
                      sha256=hashlib.sha256(uuid.uuid4().bytes).hexdigest(), source="text",
                      meta=meta, created_at=NOW - timedelta(days=days_old))
        with self.db.session() as s:
            s.add(asset)
            s.flush()
            return asset.id

    def show(self, who: Principal, story: str, times: int, surface: str = "home",
             days_ago: float = 1) -> None:
        at = (NOW - timedelta(days=days_ago)).isoformat()
        self.events.record_raw(who, {"events": [
            {"event_id": uuid.uuid4().hex, "type": "impression", "reader_id": f"r{i}",
             "asset_id": story, "surface": surface, "position": i, "at": at}
            for i in range(times)]})


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> (
    Iterator[World]
):
    with migrated_database(request.param, tmp_path_factory.mktemp("exposure")) as db:
        yield World(db, EventService(db, SETTINGS), ExposureService(db, SETTINGS))


@dataclass
class Platform:
    who: Principal
    stories: dict[str, str]


@pytest.fixture(scope="module")
def platform(world: World) -> Platform:
    """Five writers, seven stories. ada (eu on her latest story, us on her first) 6
    impressions over two stories; bob (us) 3; cy (no region) 1; dee (eu, first story 3 days
    old: new) 2; eve (us) none; an unsigned story 2. Off the home surface: 4 more for bob;
    outside the window: 5 more for eve."""
    w = world
    who = w.tenant()
    s = {
        "ada-old": w.story(who, {"author": "ada", "author_region": "us"}, days_old=200),
        "ada-new": w.story(who, {"author": "ada", "author_region": "eu"}, days_old=50),
        "bob": w.story(who, {"author": "bob", "author_region": "us"}, days_old=90),
        "cy": w.story(who, {"author": "cy", "author_region": {"not": "a scalar"}},
                      days_old=80),
        "dee": w.story(who, {"author": "dee", "author_region": "eu"}, days_old=3),
        "eve": w.story(who, {"author": "eve", "author_region": "us"}, days_old=60),
        "unsigned": w.story(who, {}, days_old=10),
    }
    w.show(who, s["ada-old"], 2)
    w.show(who, s["ada-new"], 4)
    w.show(who, s["bob"], 3)
    w.show(who, s["bob"], 4, surface="footer")
    w.show(who, s["cy"], 1)
    w.show(who, s["dee"], 2)
    w.show(who, s["unsigned"], 2)
    w.show(who, s["eve"], 5, days_ago=40)  # before the 28-day window
    return Platform(who, s)


def test_audit_of_one_surface(world: World, platform: Platform) -> None:
    r = world.exposure.report(platform.who, until=UNTIL, surface="home",
                              attribute="author_region", new_writer_days=30)
    assert (r.impressions, r.impressions_without_author) == (14, 2)
    assert (r.writers, r.writers_shown) == (5, 4)
    assert r.gini == pytest.approx(mean_difference_gini([6, 3, 1, 2, 0]))
    assert (r.stories, r.stories_shown) == (7, 6)
    assert r.coverage == pytest.approx(6 / 7)
    assert r.story_gini == pytest.approx(mean_difference_gini([2, 4, 3, 1, 2, 0, 2]))
    assert (r.new_writers, r.new_writer_share) == (1, pytest.approx(1 / 5))
    assert r.new_writer_impression_share == pytest.approx(2 / 12)
    assert r.groups is not None
    groups = {g.value: g for g in r.groups}
    assert [g.value for g in r.groups] == ["eu", "us", "unknown"]  # most impressions first
    assert (groups["eu"].writers, groups["eu"].impressions) == (2, 8)
    assert (groups["us"].writers, groups["us"].impressions) == (2, 3)
    assert (groups["unknown"].writers, groups["unknown"].impressions) == (1, 1)
    assert groups["eu"].writer_share == pytest.approx(2 / 5)
    assert groups["eu"].impression_share == pytest.approx(8 / 12)
    assert groups["eu"].exposure_ratio == pytest.approx((8 / 12) / (2 / 5))
    assert sum(g.writers for g in r.groups) == r.writers


def test_audit_of_every_surface_and_a_longer_window(world: World, platform: Platform) -> None:
    every = world.exposure.report(platform.who, until=UNTIL)
    assert every.impressions == 18 and every.groups is None
    assert every.gini == pytest.approx(mean_difference_gini([6, 7, 1, 2, 0]))
    longer = world.exposure.report(platform.who, since=(NOW - timedelta(days=60)).isoformat(),
                                   until=UNTIL, attribute="author_region")
    assert longer.impressions == 23 and longer.writers_shown == 5
    assert longer.groups is not None
    assert {g.value: g.impressions for g in longer.groups} == {"eu": 8, "us": 12, "unknown": 1}
    # New is relative to the window's end: with 2 days, dee's 3-day-old first story is not.
    later = world.exposure.report(platform.who, since=(NOW - timedelta(days=60)).isoformat(),
                                  until=UNTIL, new_writer_days=2)
    assert later.new_writers == 0 and later.new_writer_impression_share == 0


def test_numbers_and_booleans_are_groups_too(world: World) -> None:
    who = world.tenant()
    a = world.story(who, {"author": "a", "tier": 2}, days_old=5)
    b = world.story(who, {"author": "b", "tier": True}, days_old=5)
    world.show(who, a, 1)
    world.show(who, b, 3)
    r = world.exposure.report(who, until=UNTIL, attribute="tier")
    assert r.groups is not None
    assert {g.value: g.impressions for g in r.groups} == {"true": 3, "2": 1}


def test_another_tenant_sees_none_of_it(world: World, platform: Platform) -> None:
    theirs = world.tenant()
    r = world.exposure.report(theirs, until=UNTIL, attribute="author_region")
    assert (r.impressions, r.writers, r.stories) == (0, 0, 0)
    assert r.gini is None and r.coverage is None and r.groups == []


@pytest.mark.parametrize(("params", "code"), [
    ({"since": "last week"}, "invalid_time"),
    ({"since": "2026-02-01", "until": "2026-01-01"}, "invalid_range"),
    ({"attribute": 'a"b'}, "invalid_attribute"),
    ({"attribute": ""}, "invalid_attribute"),
    ({"new_writer_days": 0}, "invalid_new_writer_days"),
])
def test_bad_parameters_are_refused_with_a_code(world: World, platform: Platform,
                                                params: dict[str, Any], code: str) -> None:
    with pytest.raises(BadInput) as caught:
        world.exposure.report(platform.who, **params)
    assert caught.value.code == code
