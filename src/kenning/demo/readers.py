"""Pseudonymous demo readers and their reading histories, for ``kenning demo``.

The demo corpus has stories but no readers. :func:`reader_events` makes them up,
deterministically: each of :data:`READERS` readers follows one or two of
:data:`DEMO_TOPICS` and, over the last week, opened and read a handful of that topic's
stories (``pools``: the stories a semantic search for the topic finds), liked some,
shared a few, now and then read something off-topic and hid a story they did not want.
Event ids carry the day, so running the demo again the same day adds nothing (the events
are duplicates) and on another day adds a new week of reading.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

__all__ = ["DEMO_TOPICS", "READERS", "reader_events", "reader_id"]

READERS = 50
DEMO_TOPICS: dict[str, str] = {
    "bushfires": "bushfires threaten homes as firefighters battle the blaze",
    "afghanistan": "Taliban fighters in Afghanistan",
    "middle east": "Israeli and Palestinian violence, Yasser Arafat",
    "terrorism": "Osama bin Laden and al Qaeda terrorist attacks",
    "cricket": "cricket test match between Australia and South Africa",
    "economy": "interest rates, the economy and the Reserve Bank",
    "airlines": "Qantas and Ansett airline workers",
    "courts": "a court hears the case against the accused",
}
"""Topic -> the query that finds its stories in the demo corpus (ABC news, 2001)."""


def reader_id(n: int) -> str:
    return f"demo-reader-{n:02d}"


def reader_events(pools: Mapping[str, Sequence[str]], *, now: datetime,
                  readers: int = READERS, seed: int = 2026) -> list[dict[str, Any]]:
    """Events (``POST /v1/events`` items) of ``readers`` readers over the week before
    ``now`` (times count back from ``now``'s midnight, so one day's runs agree)."""
    topics = sorted(t for t, pool in pools.items() if pool)
    if not topics:
        return []
    everything = sorted({a for pool in pools.values() for a in pool})
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return [e for n in range(readers)
            for e in _one_reader(n, pools, topics, everything, day, seed)]


def _one_reader(n: int, pools: Mapping[str, Sequence[str]], topics: list[str],
                everything: list[str], day: datetime, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(f"{seed}:{n}")
    reader = reader_id(n)
    events: list[dict[str, Any]] = []

    def add(kind: str, asset_id: str, at: datetime, **fields: Any) -> None:
        events.append({"event_id": f"demo-{day:%Y%m%d}-{reader}-{len(events)}",
                       "type": kind, "reader_id": reader, "asset_id": asset_id,
                       "at": at.isoformat(), **fields})

    mine = rng.sample(topics, min(len(topics), 2 if rng.random() < 0.35 else 1))
    liked = sorted({a for t in mine for a in pools[t]})
    chosen = rng.sample(liked, min(len(liked), rng.randint(3, 7)))
    if rng.random() < 0.4:
        chosen.append(rng.choice(everything))  # curiosity: one story off their topics
    for asset_id in dict.fromkeys(chosen):
        at = day - timedelta(seconds=rng.uniform(3600, 7 * 86_400))
        add("open", asset_id, at)
        add("read", asset_id, at + timedelta(seconds=30),
            dwell_ms=rng.randint(15_000, 240_000), scroll_depth=round(rng.uniform(0.2, 1.0), 2))
        if rng.random() < 0.25:
            add("like", asset_id, at + timedelta(seconds=60))
        if rng.random() < 0.05:
            add("share", asset_id, at + timedelta(seconds=90))
    others = sorted(set(everything) - set(liked) - set(chosen))
    if others and rng.random() < 0.2:
        add("hide", rng.choice(others), day - timedelta(seconds=rng.uniform(60, 3600)))
    return events
