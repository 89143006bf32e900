"""Building a tenant's served log for the ranker's tests: real news stories as asset rows,
events written with the time they were received, and ``rec_served`` rows.

Events go straight into the table (not through ``POST /v1/events``) because the feature
store reads ``received_at``, which the event service always sets to the server's clock;
a log that happened over past weeks needs it in the past.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from kenning.demo.news import NewsArticle
from kenning.stores.metadata.tables import Asset, Event, RecServed, new_id

_ids: Iterator[int] = itertools.count()


def add_stories(s: Session, tenant_id: str, articles: Sequence[NewsArticle],
                published: datetime, *, authors: int = 5, languages: dict[int, str] | None = None,
                topics: dict[int, list[str]] | None = None) -> list[str]:
    """One ready text asset per article (title and author metadata; ``writer-{n % authors}``;
    ``topics`` by article number), published at ``published``; asset ids in article
    order."""
    ids = []
    for n, article in enumerate(articles):
        asset = Asset(tenant_id=tenant_id, kind="text", mime="text/plain",
                      bytes=len(article.text.encode()), title=article.title,
                      sha256=hashlib.sha256(f"{tenant_id}:{article.id}".encode()).hexdigest(),
                      source="text", status="ready", language=(languages or {}).get(n, "en"),
                      meta={"author": f"writer-{n % authors}", "article": article.id,
                            "topics": (topics or {}).get(n, [])},
                      created_at=published, updated_at=published)
        s.add(asset)
        s.flush()
        ids.append(asset.id)
    return ids


def event(s: Session, tenant_id: str, kind: str, reader: str, at: datetime, *,
          asset_id: str | None = None, author_id: str | None = None,
          received: datetime | None = None, **data: Any) -> None:
    """One event, received when it happened unless ``received`` says otherwise."""
    s.add(Event(tenant_id=tenant_id, event_id=f"ev-{next(_ids)}", type=kind, reader_id=reader,
                asset_id=asset_id, author_id=author_id, at=at, received_at=received or at,
                data=data))


def serve(s: Session, tenant_id: str, reader: str, at: datetime, items: Sequence[str], *,
          features: Sequence[dict[str, float]] | None = None,
          propensities: Sequence[float] | None = None, policy: str = "blend",
          surface: str = "home", request_id: str | None = None) -> str:
    """One served request (``rec_served`` rows, positions in order); its request id."""
    request_id = request_id or new_id()
    for position, asset_id in enumerate(items):
        s.add(RecServed(tenant_id=tenant_id, request_id=request_id, reader_id=reader,
                        surface=surface, asset_id=asset_id, position=position,
                        source="trending", score=float(len(items) - position),
                        propensity=propensities[position] if propensities else 1.0,
                        policy=policy, features=dict(features[position]) if features else {},
                        at=at))
    return request_id


def impress(s: Session, tenant_id: str, reader: str, request_id: str,
            items: Sequence[str], at: datetime, *, surface: str = "home") -> None:
    """The client's impression events for ``items`` of a served request."""
    for position, asset_id in enumerate(items):
        event(s, tenant_id, "impression", reader, at + timedelta(milliseconds=position),
              asset_id=asset_id, surface=surface, position=position, request_id=request_id)


EXAMINE = np.array([1.0, 0.8, 0.65, 0.5, 0.4, 0.33, 0.28, 0.24, 0.2, 0.17, 0.15, 0.13])
SLATE = len(EXAMINE)


def simulate(s: Session, tenant_id: str, stories: list[str], rng: np.random.Generator, *,
             requests: int, start: datetime, end: datetime) -> None:
    """A served log the ranker can learn from: 60 readers who each follow two of eight
    writers (``writer-{n % 8}``; stories from :func:`add_stories` with ``authors=8``)
    are served ``SLATE`` random stories at a time in a uniformly random order
    (propensity ``1 / SLATE``) between ``start`` and ``end``, and read one 10 minutes
    later with probability ``EXAMINE[position] * sigmoid(-2 + 2.5 follows + 2.5
    content)`` (``content_similarity`` is a logged request feature)."""
    readers = [f"reader-{i}" for i in range(60)]
    follows = {r: set(rng.choice(8, size=2, replace=False).tolist()) for r in readers}
    for r, writers in follows.items():
        for w in writers:
            event(s, tenant_id, "follow", r, start - timedelta(days=5), author_id=f"writer-{w}")
    for q in range(requests):
        at = start + (end - start) * (q / requests)
        reader = readers[int(rng.integers(len(readers)))]
        items = rng.choice(len(stories), size=SLATE, replace=False)
        content = rng.random(SLATE)
        request_id = serve(s, tenant_id, reader, at, [stories[i] for i in items],
                           features=[{"content_similarity": float(c), "n_sources": 1.0,
                                      "language_match": 1.0} for c in content],
                           propensities=[1 / SLATE] * SLATE)
        impress(s, tenant_id, reader, request_id, [stories[i] for i in items], at)
        for position, (i, c) in enumerate(zip(items, content, strict=True)):
            followed = float(int(i) % 8 in follows[reader])
            p = EXAMINE[position] / (1 + np.exp(-(-2 + 2.5 * followed + 2.5 * c)))
            if rng.random() < p:
                event(s, tenant_id, "read", reader, at + timedelta(minutes=10),
                      asset_id=stories[i], dwell_ms=40_000)
