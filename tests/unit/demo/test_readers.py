"""The demo's readers: deterministic, on their topics, and valid events."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

from kenning.demo.readers import READERS, reader_events, reader_id
from kenning.services.events import EventsIn

POOLS = {"fires": [f"f{i}" for i in range(12)], "cricket": [f"c{i}" for i in range(12)],
         "courts": [f"k{i}" for i in range(12)], "empty": []}
NOW = datetime(2026, 12, 14, 15, 30, tzinfo=UTC)


def test_the_same_day_gives_the_same_events_and_another_day_new_ids() -> None:
    first = reader_events(POOLS, now=NOW)
    assert first == reader_events(POOLS, now=NOW + timedelta(hours=3))
    later = reader_events(POOLS, now=NOW + timedelta(days=1))
    assert not {e["event_id"] for e in first} & {e["event_id"] for e in later}
    assert reader_events({"empty": []}, now=NOW) == []


def test_readers_read_mostly_their_topics_within_the_last_week() -> None:
    events = reader_events(POOLS, now=NOW)
    EventsIn.model_validate({"events": events[:1000]})  # what POST /v1/events accepts
    assert len({e["event_id"] for e in events}) == len(events)
    assert {e["reader_id"] for e in events} == {reader_id(n) for n in range(READERS)}
    assert Counter(e["type"] for e in events).keys() >= {"open", "read", "like", "hide"}
    midnight = NOW.replace(hour=0, minute=0)
    for e in events:
        at = datetime.fromisoformat(e["at"])
        assert midnight - timedelta(days=7, minutes=5) <= at < midnight
    for n in range(READERS):
        reads = [e["asset_id"][0] for e in events
                 if e["reader_id"] == reader_id(n) and e["type"] == "read"]
        assert len(reads) >= 3
        assert Counter(reads).most_common(1)[0][1] >= len(reads) // 2  # a favourite topic
