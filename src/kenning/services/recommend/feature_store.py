"""The feature store's offline side: features of logged impressions as of their time, and
the labelled examples the ranker learns from.

:func:`offline_features` recomputes the state features of served items
(``rec_served`` rows) from the events and stories as they were before each row's time,
and reads the request features back from the row (see
:mod:`kenning.services.recommend.features` for which is which and why the two sides
agree). Nothing that happened after a row changes its features: that is what makes
training on them free of label leakage.

:func:`training_examples` joins the served log to what readers did next: a served item
is an example when the client reported its impression (an ``impression`` event of the
same reader and story carrying the response's ``request_id``), and it is positive when
the same reader opened, read, liked or shared the story within ``label_window_s`` after
that impression. Items never shown (below the fold) are not examples: nothing says the
reader saw them. Labels of items served less than ``label_window_s`` ago are not final;
callers pass an ``until`` at least that far in the past.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from sqlalchemy import select
from sqlalchemy.orm import Session

from kenning.services.recommend.catalogue import load_catalogue
from kenning.services.recommend.features import (
    FEATURES,
    POPULARITY_WINDOW_S,
    REQUEST_FEATURES,
    TRENDING_HALF_LIFE_S,
    ItemStats,
    ReaderAuthors,
    feature_tick,
    from_dict,
    reader_authors,
    state_columns,
)
from kenning.services.recommend.history import (
    ENGAGEMENT_TYPES,
    ReaderHistory,
    event_weight,
    reader_history,
)
from kenning.services.recommend.interactions import decay
from kenning.stores.metadata.tables import Asset, Event, RecServed

__all__ = ["Examples", "ServedRow", "offline_features", "training_examples"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
_CHUNK = 500


def _no_stats(tick: float) -> ItemStats:
    return ItemStats(tick, {}, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64))

_S = len(REQUEST_FEATURES)


class ServedRow(Protocol):
    """What the feature store reads of a served item (a ``RecServed`` row)."""

    @property
    def reader_id(self) -> str: ...
    @property
    def asset_id(self) -> str: ...
    @property
    def at(self) -> datetime: ...
    @property
    def features(self) -> dict[str, Any]: ...


def _chunks(values: Sequence[str]) -> Iterator[list[str]]:
    for i in range(0, len(values), _CHUNK):
        yield list(values[i:i + _CHUNK])


@dataclass
class _StoryEvents:
    """One story's engagement events in id order (as the snapshot holds them)."""

    readers: list[str] = field(default_factory=list)
    weight: list[float] = field(default_factory=list)
    at: list[float] = field(default_factory=list)
    received: list[float] = field(default_factory=list)

    def stats(self, asset_id: str, tick: float) -> ItemStats:
        at, received = np.asarray(self.at), np.asarray(self.received)
        keep = (at >= tick - POPULARITY_WINDOW_S) & (at < tick) & (received < tick)
        if not keep.any():
            return _no_stats(tick)
        w = np.asarray(self.weight)[keep] * decay(tick - at[keep], TRENDING_HALF_LIFE_S)
        # bincount sums in order, as the online side's bincount over all stories does.
        trending = float(np.bincount(np.zeros(len(w), dtype=np.int64), weights=w)[0])
        readers = len({r for r, k in zip(self.readers, keep.tolist(), strict=True) if k})
        return ItemStats(tick, {asset_id: 0}, np.array([readers], dtype=np.int64),
                         np.array([trending], dtype=np.float64))


def _story_events(s: Session, tenant_id: str, assets: list[str], start: float,
                  end: float) -> dict[str, _StoryEvents]:
    out: dict[str, _StoryEvents] = defaultdict(_StoryEvents)
    lo, hi = datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(end, UTC)
    for chunk in _chunks(assets):
        query = (select(Event.asset_id, Event.reader_id, Event.type, Event.data, Event.at,
                        Event.received_at)
                 .where(Event.tenant_id == tenant_id, Event.type.in_(ENGAGEMENT_TYPES),
                        Event.asset_id.in_(chunk), Event.at >= lo, Event.at < hi)
                 .order_by(Event.id))
        for asset_id, reader, kind, data, at, received in s.execute(query):
            weight = event_weight(kind, data)
            if weight <= 0 or asset_id is None:
                continue
            story = out[asset_id]
            story.readers.append(reader)
            story.weight.append(weight)
            story.at.append(at.timestamp())
            story.received.append(received.timestamp())
    return out


def _reader_events(s: Session, tenant_id: str, readers: list[str], until: datetime
                   ) -> dict[str, list[tuple[float, tuple[str, str | None, str | None,
                                                         datetime, Any]]]]:
    """Each reader's events received before ``until``, in (at, id) order, with their
    receipt time."""
    out: dict[str, list[tuple[float, tuple[str, str | None, str | None, datetime, Any]]]] = (
        defaultdict(list))
    for chunk in _chunks(readers):
        query = (select(Event.reader_id, Event.type, Event.asset_id, Event.author_id, Event.at,
                        Event.data, Event.received_at)
                 .where(Event.tenant_id == tenant_id, Event.reader_id.in_(chunk),
                        Event.received_at < until)
                 .order_by(Event.at, Event.id))
        for reader, kind, asset_id, author_id, at, data, received in s.execute(query):
            out[reader].append((received.timestamp(), (kind, asset_id, author_id, at, data)))
    return out


def offline_features(session: Session, tenant_id: str, rows: Sequence[ServedRow], *,
                     author_key: str = "author", topics_key: str = "topics") -> FloatArray:
    """Features of served items as of each row's time: ``(len(rows), len(FEATURES))``.

    Request features are the row's logged ones; state features are recomputed from
    events received before the row (story-level: before its minute tick) and from the
    stories' metadata (``author_key``: ``events_author_key``, ``topics_key``:
    ``recs_topics_key``)."""
    out = np.zeros((len(rows), len(FEATURES)), dtype=np.float64)
    if not rows:
        return out
    catalogue = load_catalogue(session, tenant_id, author_key=author_key,
                               topics_key=topics_key)
    asset_ids = sorted({r.asset_id for r in rows})
    stories: dict[str, tuple[str | None, datetime]] = {}
    for chunk in _chunks(asset_ids):
        for asset_id, meta, created in session.execute(
                select(Asset.id, Asset.meta, Asset.created_at)
                .where(Asset.tenant_id == tenant_id, Asset.id.in_(chunk))):
            author = meta.get(author_key) if isinstance(meta, dict) else None
            stories[asset_id] = (author if isinstance(author, str) and 0 < len(author) <= 128
                                 else None, created)
    ticks = [feature_tick(r.at) for r in rows]
    events = _story_events(session, tenant_id, asset_ids, min(ticks) - POPULARITY_WINDOW_S,
                           max(ticks))
    readers = _reader_events(session, tenant_id, sorted({r.reader_id for r in rows}),
                             max(r.at for r in rows))
    stats: dict[tuple[str, float], ItemStats] = {}
    histories: dict[tuple[str, datetime], tuple[ReaderHistory, ReaderAuthors]] = {}
    for i, (row, tick) in enumerate(zip(rows, ticks, strict=True)):
        out[i, :_S] = from_dict(row.features)[:_S]
        key = (row.asset_id, tick)
        if key not in stats:
            stats[key] = events[row.asset_id].stats(row.asset_id, tick) \
                if row.asset_id in events else _no_stats(tick)
        hkey = (row.reader_id, row.at)
        if hkey not in histories:
            cutoff = row.at.timestamp()
            history = reader_history(row.reader_id, [
                e for received, e in readers.get(row.reader_id, []) if received < cutoff])
            histories[hkey] = (history, reader_authors(history, catalogue))
        author, published = stories.get(row.asset_id, (None, None))
        history, authors = histories[hkey]
        out[i, _S:] = state_columns(row.asset_id, author, published, stats[key], history,
                                    catalogue, authors)
    return out


@dataclass(frozen=True)
class Examples:
    """Labelled served items, sorted by request time; one group per request.

    Unpacks as ``X, y, groups, propensities, logged``; the rest describes each row."""

    X: FloatArray
    """Point-in-time features (:func:`offline_features`)."""
    y: IntArray
    """1 when the reader engaged within the label window after the impression."""
    groups: IntArray
    """Request number (0, 1, ...), contiguous."""
    propensities: FloatArray
    """The serving policy's probability of this item at this position."""
    logged: FloatArray
    """The features as logged online (``rec_served.features``)."""
    request_ids: list[str]
    asset_ids: list[str]
    reader_ids: list[str]
    positions: IntArray
    at: list[datetime]
    policies: list[str]

    def __iter__(self) -> Iterator[Any]:
        return iter((self.X, self.y, self.groups, self.propensities, self.logged))

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, mask: npt.NDArray[np.bool_]) -> Examples:
        """The rows ``mask`` keeps (whole requests, when the mask is by request)."""
        idx = np.flatnonzero(mask)
        _, groups = np.unique(self.groups[idx], return_inverse=True)
        return Examples(self.X[idx], self.y[idx], groups.astype(np.int64),
                        self.propensities[idx], self.logged[idx],
                        [self.request_ids[i] for i in idx], [self.asset_ids[i] for i in idx],
                        [self.reader_ids[i] for i in idx], self.positions[idx],
                        [self.at[i] for i in idx], [self.policies[i] for i in idx])


def _impressions(s: Session, tenant_id: str, since: datetime, until: datetime,
                 requests: set[str]) -> dict[tuple[str, str, str], datetime]:
    """(request, reader, story) -> its first impression's time."""
    out: dict[tuple[str, str, str], datetime] = {}
    for reader, asset_id, at, data in s.execute(
            select(Event.reader_id, Event.asset_id, Event.at, Event.data)
            .where(Event.tenant_id == tenant_id, Event.type == "impression",
                   Event.at >= since, Event.at < until)):
        request = data.get("request_id") if isinstance(data, dict) else None
        if request in requests and asset_id is not None:
            key = (request, reader, asset_id)
            if key not in out or at < out[key]:
                out[key] = at
    return out


def _engagements(s: Session, tenant_id: str, since: datetime, until: datetime,
                 readers: set[str]) -> dict[tuple[str, str], list[datetime]]:
    """(reader, story) -> sorted times of their engagement events."""
    out: dict[tuple[str, str], list[datetime]] = defaultdict(list)
    for reader, asset_id, at in s.execute(
            select(Event.reader_id, Event.asset_id, Event.at)
            .where(Event.tenant_id == tenant_id, Event.type.in_(ENGAGEMENT_TYPES),
                   Event.at >= since, Event.at < until)):
        if reader in readers and asset_id is not None:
            out[(reader, asset_id)].append(at)
    for times in out.values():
        times.sort()
    return out


def training_examples(session: Session, tenant_id: str, since: datetime, until: datetime, *,
                      label_window_s: float = 86_400.0, max_rows: int | None = None,
                      author_key: str = "author", topics_key: str = "topics") -> Examples:
    """Examples from items served in ``[since, until)`` (the newest ``max_rows`` served
    items at most, whole requests), labelled by engagement within ``label_window_s``
    after their impression."""
    query = (select(RecServed).where(RecServed.tenant_id == tenant_id, RecServed.at >= since,
                                     RecServed.at < until)
             .order_by(RecServed.at.desc(), RecServed.id.desc()))
    served = list(session.scalars(query.limit(max_rows) if max_rows else query))
    if max_rows and len(served) == max_rows:  # the oldest request may be cut: drop it
        oldest = served[-1].request_id
        served = [r for r in served if r.request_id != oldest]
    served.sort(key=lambda r: (r.at, r.request_id, r.position, r.id))
    window = timedelta(seconds=label_window_s)
    # Impressions follow their response (a label window of slack for clients' clocks);
    # the rows read bound the events read.
    first, last = (served[0].at, served[-1].at) if served else (since, since)
    shown = _impressions(session, tenant_id, first - window, last + window,
                         {r.request_id for r in served})
    engaged = _engagements(session, tenant_id, first - window, last + 3 * window,
                           {r.reader_id for r in served})
    rows: list[RecServed] = []
    labels: list[int] = []
    for r in served:
        seen = shown.get((r.request_id, r.reader_id, r.asset_id))
        if seen is None:
            continue
        times = engaged.get((r.reader_id, r.asset_id), [])
        after = bisect_left(times, seen)
        labels.append(int(after < len(times) and times[after] <= seen + window))
        rows.append(r)
    codes: dict[str, int] = {}
    groups = [codes.setdefault(r.request_id, len(codes)) for r in rows]
    X = offline_features(session, tenant_id, rows, author_key=author_key,
                         topics_key=topics_key)
    logged = (np.stack([from_dict(r.features) for r in rows]) if rows
              else np.zeros((0, len(FEATURES))))
    return Examples(X, np.asarray(labels, dtype=np.int64), np.asarray(groups, dtype=np.int64),
                    np.asarray([r.propensity for r in rows], dtype=np.float64), logged,
                    [r.request_id for r in rows], [r.asset_id for r in rows],
                    [r.reader_id for r in rows],
                    np.asarray([r.position for r in rows], dtype=np.int64),
                    [r.at for r in rows], [r.policy for r in rows])
