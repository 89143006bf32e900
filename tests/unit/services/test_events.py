"""Events (issue 10, item 1): every type stored as sent, a batch stored whole or refused
whole with a code naming the bad event, idempotent by event id under concurrency, scoped to
the tenant; on SQLite and PostgreSQL, and through the HTTP API."""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, func, select

from kenning.api.app import create_app
from kenning.container import Kenning
from kenning.errors import BadInput, Conflict, KenningError, TooLarge
from kenning.principal import Principal
from kenning.services.events import EventService, parse_batch
from kenning.services.tenants import TenantService
from kenning.settings import Settings
from kenning.stores.metadata import Database
from kenning.stores.metadata.tables import Asset, Event
from tests.conftest import migrated_database

SETTINGS = Settings(max_events_per_batch=1000)
NOW = datetime.now(UTC)
"""A fixed instant in the past of every test (events at or before it are valid); tests of
the future bound take the clock when they run."""


def at(minutes_ago: float = 0) -> str:
    return (NOW - timedelta(minutes=minutes_ago)).isoformat()


@dataclass
class World:
    db: Database
    events: EventService

    def tenant(self) -> Principal:
        tenant_id = TenantService(self.db).create_tenant(f"events-{uuid.uuid4().hex[:8]}")
        return Principal(tenant_id=tenant_id, key_id="test")

    def asset(self, who: Principal, meta: dict[str, Any] | None = None) -> str:
        asset = Asset(tenant_id=who.tenant_id, kind="text", mime="text/plain", bytes=1,
                      sha256=hashlib.sha256(uuid.uuid4().bytes).hexdigest(), source="text",
                      meta=meta or {})
        with self.db.session() as s:
            s.add(asset)
            s.flush()
            return asset.id

    def stored(self, who: Principal) -> int:
        with self.db.session(write=False) as s:
            return int(s.scalar(select(func.count()).select_from(Event)
                                .where(Event.tenant_id == who.tenant_id)) or 0)

    def record(self, who: Principal, events: list[dict[str, Any]]) -> tuple[int, int]:
        out = self.events.record_raw(who, {"events": events})
        return out.accepted, out.duplicates


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> (
    Iterator[World]
):
    with migrated_database(request.param, tmp_path_factory.mktemp("events")) as database:
        yield World(database, EventService(database, SETTINGS))


def every_type(asset: str, reader: str = "r1", prefix: str = "e") -> list[dict[str, Any]]:
    base = {"reader_id": reader, "asset_id": asset}
    return [
        {**base, "event_id": f"{prefix}0", "type": "impression", "at": at(10),
         "surface": "home", "position": 3, "request_id": "req-1"},
        {**base, "event_id": f"{prefix}1", "type": "open", "at": at(9), "surface": "home"},
        {**base, "event_id": f"{prefix}2", "type": "read", "at": at(8), "dwell_ms": 42_000,
         "scroll_depth": 0.75},
        {**base, "event_id": f"{prefix}3", "type": "like", "at": at(7)},
        {**base, "event_id": f"{prefix}4", "type": "share", "at": at(6)},
        {**base, "event_id": f"{prefix}5", "type": "hide", "at": at(5)},
        {**base, "event_id": f"{prefix}6", "type": "report", "at": at(4), "reason": "spam"},
        {"reader_id": reader, "event_id": f"{prefix}7", "type": "follow", "at": at(3),
         "author_id": "ada"},
        {**base, "event_id": f"{prefix}8", "type": "unfollow", "at": at(2)},
        {"reader_id": reader, "event_id": f"{prefix}9", "type": "mute_author", "at": at(1),
         "author_id": "bob"},
    ]


# --- storing and listing -----------------------------------------------------------------
def test_every_type_is_stored_as_sent_and_listed_newest_first(world: World) -> None:
    who = world.tenant()
    story = world.asset(who, {"author": "ada", "desk": "science"})
    assert world.record(who, every_type(story)) == (10, 0)
    page = world.events.list(who, "r1").events
    assert [e.event_id for e in page] == [f"e{i}" for i in range(9, -1, -1)]
    by_id = {e.event_id: e for e in page}
    assert (by_id["e0"].surface, by_id["e0"].position, by_id["e0"].request_id) == (
        "home", 3, "req-1")
    assert (by_id["e2"].dwell_ms, by_id["e2"].scroll_depth) == (42_000, 0.75)
    assert by_id["e6"].reason == "spam"
    # Item events record the story's author; author events name theirs or their story's.
    assert {e: by_id[e].author_id for e in ("e0", "e3", "e7", "e8", "e9")} == {
        "e0": "ada", "e3": "ada", "e7": "ada", "e8": "ada", "e9": "bob"}
    assert by_id["e8"].asset_id == story and by_id["e7"].asset_id is None
    assert by_id["e0"].at == datetime.fromisoformat(at(10))
    assert world.events.list(who, "r1", limit=2).events[0].event_id == "e9"
    assert world.events.list(who, "nobody").events == []


def test_a_story_without_an_author_records_none(world: World) -> None:
    who = world.tenant()
    plain = world.asset(who, {"author": {"name": "not a string"}})
    assert world.record(who, [{"event_id": "x", "type": "like", "reader_id": "r",
                               "asset_id": plain, "at": at()}]) == (1, 0)
    assert world.events.list(who, "r").events[0].author_id is None


# --- idempotency -------------------------------------------------------------------------
def test_resending_a_batch_stores_nothing_twice(world: World) -> None:
    who = world.tenant()
    batch = every_type(world.asset(who, {"author": "ada"}))
    assert world.record(who, batch) == (10, 0)
    assert world.record(who, batch) == (0, 10)
    assert world.record(who, [*batch[:3], *every_type(batch[0]["asset_id"], prefix="n")[:2]]
                        ) == (2, 3)
    assert world.stored(who) == 12


def test_an_id_reused_with_other_content_is_a_conflict_and_stores_nothing(
    world: World
) -> None:
    who = world.tenant()
    story = world.asset(who, {"author": "ada"})
    world.record(who, every_type(story))
    changed = {**every_type(story)[2], "dwell_ms": 1}
    fresh = every_type(story, prefix="f")[:2]
    with pytest.raises(Conflict) as caught:
        world.record(who, [*fresh, changed])
    assert (caught.value.status, caught.value.code) == (409, "event_conflict")
    assert caught.value.details == {"index": 2, "event_id": "e2"}
    assert world.stored(who) == 10  # the fresh events were not stored either
    # The time is content too, to the microsecond, whatever offset wrote it.
    same_instant = {**every_type(story)[3], "at": datetime.fromisoformat(at(7)).astimezone(
        timezone(timedelta(hours=5))).isoformat()}
    assert world.record(who, [same_instant]) == (0, 1)
    with pytest.raises(Conflict):
        world.record(who, [{**every_type(story)[3], "at": at(7.5)}])


def test_repeats_inside_one_batch(world: World) -> None:
    who = world.tenant()
    story = world.asset(who)
    like = {"event_id": "dup", "type": "like", "reader_id": "r", "asset_id": story, "at": at()}
    assert world.record(who, [like, like, like]) == (1, 2)
    with pytest.raises(BadInput) as caught:
        world.record(who, [like, {**like, "event_id": "ok"}, {**like, "reader_id": "s"}])
    assert (caught.value.code, caught.value.details) == (
        "duplicate_event_id", {"index": 2, "first_index": 0})
    assert world.stored(who) == 1


def _race(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run the calls at once; each result or the exception it raised."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = calls[i]()
        except Exception as exc:  # the result under test
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_concurrent_identical_batches_store_each_event_once(world: World) -> None:
    who = world.tenant()
    story = world.asset(who)
    batch = [{"event_id": f"c{i}", "type": "impression", "reader_id": f"r{i % 7}",
              "asset_id": story, "at": at(i / 100), "surface": "home", "position": i % 20}
             for i in range(500)]
    # Each thread sends the batch in its own order: locks are taken in id order anyway.
    orders = [batch, batch[::-1], batch[250:] + batch[:250], batch]
    results = _race([lambda b=b: world.record(who, b) for b in orders])  # type: ignore[misc]
    assert all(isinstance(r, tuple) for r in results), results
    assert sum(r[0] for r in results) == 500
    assert all(r[0] + r[1] == 500 for r in results)
    assert world.stored(who) == 500


def test_concurrent_conflicting_batches_one_wins_whole(world: World) -> None:
    who = world.tenant()
    story = world.asset(who)

    def batch(reader: str) -> list[dict[str, Any]]:
        return [{"event_id": f"k{i}", "type": "like", "reader_id": reader, "asset_id": story,
                 "at": at(i)} for i in range(200)]

    results = _race([lambda: world.record(who, batch("a")),
                     lambda: world.record(who, batch("b"))])
    assert sorted(type(r).__name__ for r in results) == ["Conflict", "tuple"], results
    winner = "a" if results[0] == (200, 0) else "b"
    assert world.stored(who) == 200
    assert {e.reader_id for e in world.events.list(who, winner, limit=1000).events} == {winner}


# --- tenants, assets, authors ------------------------------------------------------------
def test_another_tenants_asset_refuses_the_batch_and_events_stay_in_their_tenant(
    world: World
) -> None:
    mine, theirs = world.tenant(), world.tenant()
    my_story, their_story = world.asset(mine), world.asset(theirs)
    like = {"type": "like", "reader_id": "r", "at": at()}
    for other in (their_story, "0" * 32):
        with pytest.raises(BadInput) as caught:
            world.record(mine, [{**like, "event_id": "a", "asset_id": my_story},
                                {**like, "event_id": "b", "asset_id": other}])
        assert (caught.value.code, caught.value.details) == (
            "unknown_asset", {"index": 1, "asset_id": other})
    assert world.stored(mine) == 0
    assert world.record(mine, [{**like, "event_id": "a", "asset_id": my_story}]) == (1, 0)
    # The same event id in another tenant is another event; neither sees the other's.
    assert world.record(theirs, [{**like, "event_id": "a", "asset_id": their_story}]) == (1, 0)
    assert [e.asset_id for e in world.events.list(mine, "r").events] == [my_story]
    assert [e.asset_id for e in world.events.list(theirs, "r").events] == [their_story]


@pytest.mark.parametrize(("event", "code"), [
    ({"asset_id": "STORY_NO_AUTHOR"}, "no_author"),
    ({"asset_id": "STORY", "author_id": "bob"}, "author_mismatch"),
    ({"asset_id": "0" * 32, "author_id": "ada"}, "unknown_asset"),
])
def test_author_events_that_name_a_story(world: World, event: dict[str, Any],
                                         code: str) -> None:
    who = world.tenant()
    stories = {"STORY": world.asset(who, {"author": "ada"}),
               "STORY_NO_AUTHOR": world.asset(who, {"desk": "x"})}
    event = {k: stories.get(v, v) for k, v in event.items()}
    with pytest.raises(BadInput) as caught:
        world.record(who, [{"event_id": "f", "type": "follow", "reader_id": "r", "at": at(),
                            **event}])
    assert (caught.value.code, caught.value.details["index"]) == (code, 0)
    assert world.stored(who) == 0


def test_deleting_a_story_takes_its_item_events_and_leaves_follows(world: World) -> None:
    who = world.tenant()
    story = world.asset(who, {"author": "ada"})
    world.record(who, every_type(story))
    with world.db.session() as s:
        s.execute(delete(Asset).where(Asset.id == story))
    left = world.events.list(who, "r1").events
    assert sorted(e.type for e in left) == ["follow", "mute_author", "unfollow"]
    assert next(e for e in left if e.type == "unfollow").asset_id == story  # as context


# --- validation: the first bad event refuses the batch, by index and code ----------------
GOOD = {"event_id": "g", "type": "like", "reader_id": "r", "asset_id": "a" * 32}
BAD: list[tuple[dict[str, Any], str, list[str]]] = [
    ({"type": "click"}, "invalid_event_type", []),
    ({"type": None}, "invalid_event_type", []),
    ({"event_id": ""}, "invalid_event", ["event_id"]),
    ({"event_id": "x" * 129}, "invalid_event", ["event_id"]),
    ({"event_id": 7}, "invalid_event", ["event_id"]),
    ({"reader_id": "r\n"}, "invalid_event", ["reader_id"]),
    ({"reader_id": "r\x85"}, "invalid_event", ["reader_id"]),
    ({"at": "2026-01-01T00:00:00"}, "invalid_event", ["at"]),  # no offset
    ({"at": 1_700_000_000}, "invalid_event", ["at"]),
    ({"at": "yesterday"}, "invalid_event", ["at"]),
    ({"asset_id": None}, "invalid_event", ["asset_id"]),
    ({"author_id": "ada"}, "invalid_event", ["author_id"]),  # not on item events
    ({"colour": "red"}, "invalid_event", ["colour"]),
    ({"type": "impression", "surface": "home"}, "invalid_event", ["position"]),
    ({"type": "impression", "surface": "home", "position": -1}, "invalid_event", ["position"]),
    ({"type": "impression", "surface": "home", "position": "3"}, "invalid_event",
     ["position"]),
    ({"type": "impression", "surface": "home", "position": True}, "invalid_event",
     ["position"]),
    ({"type": "impression", "surface": "", "position": 0}, "invalid_event", ["surface"]),
    ({"type": "impression", "surface": "a\tb", "position": 0}, "invalid_event", ["surface"]),
    ({"type": "impression", "surface": "home", "position": 0, "request_id": ""},
     "invalid_event", ["request_id"]),
    ({"type": "read"}, "invalid_event", ["dwell_ms"]),
    ({"type": "read", "dwell_ms": -1}, "invalid_event", ["dwell_ms"]),
    ({"type": "read", "dwell_ms": 1.5}, "invalid_event", ["dwell_ms"]),
    ({"type": "read", "dwell_ms": 10, "scroll_depth": 1.01}, "invalid_event",
     ["scroll_depth"]),
    ({"type": "read", "dwell_ms": 10, "scroll_depth": -0.1}, "invalid_event",
     ["scroll_depth"]),
    ({"type": "report"}, "invalid_event", ["reason"]),
    ({"type": "report", "reason": "x" * 501}, "invalid_event", ["reason"]),
    ({"type": "follow", "asset_id": None}, "invalid_event", []),  # neither author nor story
    ({"type": "mute_author", "author_id": "a" * 129}, "invalid_event", ["author_id"]),
]


@pytest.mark.parametrize(("change", "code", "loc"), BAD, ids=[str(b[0])[:60] for b in BAD])
def test_a_bad_event_refuses_the_batch_naming_its_index(
    change: dict[str, Any], code: str, loc: list[str]
) -> None:
    good = {**GOOD, "at": at()}
    bad = {k: v for k, v in {**good, **change}.items() if v is not None or k != "asset_id"}
    if change.get("type") is None and "type" in change:
        bad.pop("type")
    with pytest.raises(BadInput) as caught:
        parse_batch({"events": [good, {**good, "event_id": "h"}, bad, {"junk": 1}]}, SETTINGS)
    assert (caught.value.status, caught.value.code) == (422, code)
    assert caught.value.details["index"] == 2
    if code == "invalid_event":
        assert [e["loc"] for e in caught.value.details["errors"]] == [loc]


@pytest.mark.parametrize("body", [[], {"events": {}}, {"events": [], "x": 1}, {"event": []},
                                  "events"])
def test_a_body_that_is_not_a_batch_is_invalid_request(body: Any) -> None:
    with pytest.raises(BadInput) as caught:
        parse_batch(body, SETTINGS)
    assert caught.value.code == "invalid_request"


def test_the_batch_size_is_counted_before_anything_is_validated() -> None:
    with pytest.raises(TooLarge) as caught:
        parse_batch({"events": [{}] * 1001}, SETTINGS)
    assert (caught.value.status, caught.value.code, caught.value.details) == (
        413, "batch_too_large", {"limit": 1000})
    assert parse_batch({"events": []}, SETTINGS) == []


@pytest.mark.parametrize(("offset", "code"), [
    (timedelta(minutes=6), "event_in_future"),
    (-timedelta(days=366), "event_too_old"),
    (datetime(1970, 1, 1, tzinfo=UTC) - datetime(2026, 1, 1, tzinfo=UTC), "event_too_old"),
])
def test_times_out_of_range(world: World, offset: timedelta, code: str) -> None:
    # Times are taken when the test runs (a suite may reach it minutes after import).
    when = datetime.now(UTC) + offset
    who = world.tenant()
    story = world.asset(who)
    like = {"type": "like", "reader_id": "r", "asset_id": story}
    with pytest.raises(BadInput) as caught:
        world.record(who, [{**like, "event_id": "ok", "at": at()},
                           {**like, "event_id": "bad", "at": when.isoformat()}])
    assert (caught.value.code, caught.value.details) == (code, {"index": 1})
    # A clock a little ahead is skew, not an error.
    skewed = (datetime.now(UTC) + timedelta(minutes=4)).isoformat()
    assert world.record(who, [{**like, "event_id": "skew", "at": skewed}]) == (1, 0)


# --- through HTTP ------------------------------------------------------------------------
@dataclass
class Door:
    client: TestClient
    kenning: Kenning
    headers: dict[str, str]

    def asset(self, meta: dict[str, Any] | None = None, tenant: str | None = None) -> str:
        db = self.kenning.stores.db
        who = Principal(tenant or self.tenant_id, "test")
        return World(db, self.kenning.events).asset(who, meta)

    @property
    def tenant_id(self) -> str:
        return self.kenning.tenants.authenticate(self.headers["Authorization"][7:]).tenant_id

    def count(self) -> int:
        with self.kenning.stores.db.session(write=False) as s:
            return int(s.scalar(select(func.count()).select_from(Event)) or 0)


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Door]:
    data_dir = tmp_path_factory.mktemp("events-door")
    kenning = Kenning(Settings(data_dir=data_dir, workers=0, run_workers=False,
                               log_json=False))
    with TestClient(create_app(kenning)) as client:
        key = (data_dir / "bootstrap_api_key").read_text().strip()
        yield Door(client, kenning, {"Authorization": f"Bearer {key}"})


def _post(door: Door, body: Any, headers: dict[str, str] | None = None) -> Any:
    return door.client.post("/v1/events", json=body,
                            headers=door.headers if headers is None else headers)


def test_http_a_batch_of_1000_once_then_as_duplicates(door: Door) -> None:
    story = door.asset({"author": "ada"})
    batch = [{"event_id": f"h{i}", "type": "impression", "reader_id": f"reader-{i % 50}",
              "asset_id": story, "at": at(i / 60), "surface": "home", "position": i % 10,
              "request_id": "rq"} for i in range(1000)]
    first = _post(door, {"events": batch})
    assert (first.status_code, first.json()) == (200, {"accepted": 1000, "duplicates": 0})
    again = _post(door, {"events": batch})
    assert again.json() == {"accepted": 0, "duplicates": 1000}
    listed = door.client.get("/v1/events", params={"reader_id": "reader-0", "limit": 5},
                             headers=door.headers)
    assert listed.status_code == 200
    events = listed.json()["events"]
    assert [e["event_id"] for e in events] == ["h0", "h50", "h100", "h150", "h200"]
    assert events[0]["author_id"] == "ada" and events[0]["position"] == 0


def test_http_errors_carry_codes_and_store_nothing(door: Door) -> None:
    story = door.asset()
    good = {"event_id": "z1", "type": "like", "reader_id": "r", "asset_id": story, "at": at()}
    before = door.count()
    cases: list[tuple[Any, int, str]] = [
        ({"events": [good, {**good, "event_id": "z2", "type": "read"}]}, 422, "invalid_event"),
        ({"events": [good, {**good, "event_id": "z2", "asset_id": "nope"}]}, 422,
         "unknown_asset"),
        ({"events": [good] * 1001}, 413, "batch_too_large"),
        ({"events": "no"}, 422, "invalid_request"),
    ]
    for body, status, code in cases:
        response = _post(door, body)
        assert (response.status_code, response.json()["error"]["code"]) == (status, code)
    assert door.count() == before
    assert _post(door, {"events": [good]}).json() == {"accepted": 1, "duplicates": 0}
    conflict = _post(door, {"events": [{**good, "event_id": "z3"}, {**good, "reader_id": "s"}]})
    assert conflict.status_code == 409
    assert conflict.json()["error"]["code"] == "event_conflict"
    assert conflict.json()["error"]["details"] == {"index": 1, "event_id": "z1"}
    raw = door.client.post("/v1/events", content=b'{"events": [NaN]}',
                           headers={**door.headers, "Content-Type": "application/json"})
    assert (raw.status_code, raw.json()["error"]["code"]) == (422, "invalid_json")
    assert _post(door, {"events": [good]}, headers={}).status_code == 401
    assert door.client.get("/v1/events", params={"reader_id": "r", "limit": 1001},
                           headers=door.headers).status_code == 422
    assert door.count() == before + 1


def test_http_another_tenant_sees_none_of_these_events(door: Door) -> None:
    tenant_id = door.kenning.tenants.create_tenant(f"other-{uuid.uuid4().hex[:6]}")
    other = {"Authorization": f"Bearer {door.kenning.tenants.create_key(tenant_id, 't').key}"}
    story = door.asset()
    _post(door, {"events": [{"event_id": "t1", "type": "share", "reader_id": "shared-reader",
                             "asset_id": story, "at": at()}]})
    # Their batch naming my story is refused; my reader's events are invisible to them.
    refused = _post(door, {"events": [{"event_id": "t1", "type": "share",
                                       "reader_id": "shared-reader", "asset_id": story,
                                       "at": at()}]}, headers=other)
    assert (refused.status_code, refused.json()["error"]["code"]) == (422, "unknown_asset")
    listed = door.client.get("/v1/events", params={"reader_id": "shared-reader"},
                             headers=other)
    assert listed.json() == {"events": []}


def test_settings_author_key_is_checked(tmp_path: Path) -> None:
    with pytest.raises(KenningError):
        EventService(Database(f"sqlite:///{tmp_path / 'x.db'}"),
                     Settings(events_author_key='by"line'))
