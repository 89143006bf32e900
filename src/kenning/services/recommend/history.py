"""One reader's history, read from the event log: what they engaged with (and how
strongly, and when), what they ruled out (hidden, reported, muted authors) and whom they
follow.

Engagement weights by event type (:data:`WEIGHTS`): an impression is not engagement (the
reader was shown the story, nothing more); open 1; read 1 plus up to 2 for dwell (one per
minute); like 3; share 4. A story's engagement is the sum of its events' weights,
capped at :data:`MAX_STRENGTH` so one compulsive re-reader does not outweigh the rest.

Exclusions are permanent (no event undoes them): a hidden or reported story, and every
story of a muted author, never comes back from a source (:meth:`ReaderHistory.excludes`);
nor does a story the reader already engaged with. Follows are the latest of each
reader-author pair's follow and unfollow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from kenning.stores.metadata.tables import Event

__all__ = ["ENGAGEMENT_TYPES", "MAX_STRENGTH", "WEIGHTS", "Engagement", "ReaderHistory",
           "event_weight", "load_reader", "reader_history"]

ENGAGEMENT_TYPES = ("open", "read", "like", "share")
WEIGHTS = {"open": 1.0, "read": 1.0, "like": 3.0, "share": 4.0}
READ_DWELL_BONUS = 2.0
"""Most a read's dwell adds to its weight (one per minute on the story)."""
MAX_STRENGTH = 8.0


def event_weight(kind: str, data: dict[str, Any] | None) -> float:
    """How much one event says the reader wanted the story (0 for non-engagement)."""
    weight = WEIGHTS.get(kind, 0.0)
    if kind == "read" and data:
        dwell = data.get("dwell_ms")
        if isinstance(dwell, int | float) and dwell > 0:
            weight += min(float(dwell) / 60_000.0, READ_DWELL_BONUS)
    return weight


@dataclass
class Engagement:
    """A reader's engagement with one story: summed (capped) weight, latest time."""

    weight: float
    last_at: datetime


@dataclass
class ReaderHistory:
    reader_id: str
    engaged: dict[str, Engagement] = field(default_factory=dict)
    hidden: set[str] = field(default_factory=set)
    reported: set[str] = field(default_factory=set)
    muted_authors: set[str] = field(default_factory=set)
    follows: set[str] = field(default_factory=set)

    def excludes(self, asset_id: str, author: str | None) -> bool:
        """A story no source proposes to this reader: engaged with already, hidden,
        reported, or by a muted author."""
        return (asset_id in self.engaged or asset_id in self.hidden
                or asset_id in self.reported
                or (author is not None and author in self.muted_authors))

    @property
    def ruled_out(self) -> set[str]:
        """Stories excluded by id (engaged, hidden, reported); authors aside."""
        return set(self.engaged) | self.hidden | self.reported


def reader_history(reader_id: str,
                   rows: list[tuple[str, str | None, str | None, datetime, Any]]
                   ) -> ReaderHistory:
    """The history of ``(type, asset_id, author_id, at, data)`` rows in time order."""
    history = ReaderHistory(reader_id)
    for kind, asset_id, author_id, at, data in rows:
        if kind in ENGAGEMENT_TYPES and asset_id is not None:
            weight = event_weight(kind, data)
            seen = history.engaged.get(asset_id)
            if seen is None:
                history.engaged[asset_id] = Engagement(min(weight, MAX_STRENGTH), at)
            else:
                seen.weight = min(seen.weight + weight, MAX_STRENGTH)
                seen.last_at = max(seen.last_at, at)
        elif kind == "hide" and asset_id is not None:
            history.hidden.add(asset_id)
        elif kind == "report" and asset_id is not None:
            history.reported.add(asset_id)
        elif kind == "mute_author" and author_id is not None:
            history.muted_authors.add(author_id)
        elif kind == "follow" and author_id is not None:
            history.follows.add(author_id)
        elif kind == "unfollow" and author_id is not None:
            history.follows.discard(author_id)
    return history


def load_reader(s: Session, tenant_id: str, reader_id: str) -> ReaderHistory:
    """The reader's whole history in the tenant (events are kept at most
    ``events_max_age_days``; the index on tenant, reader and time serves it)."""
    rows = s.execute(
        select(Event.type, Event.asset_id, Event.author_id, Event.at, Event.data)
        .where(Event.tenant_id == tenant_id, Event.reader_id == reader_id)
        .order_by(Event.at, Event.id)).tuples().all()
    return reader_history(reader_id, list(rows))
