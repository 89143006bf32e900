"""The exposure audit: how impressions spread across the tenant's writers and stories.

``GET /v1/recommendations/exposure`` answers, for impressions in ``[since, until)`` (on one
surface, or all):

* **gini** over writers' impressions, writers with none included (0: everyone equal;
  ``(n-1)/n``: one writer of ``n`` gets everything), and **story_gini** over stories;
* **coverage**: the share of the catalogue's stories with at least one impression;
* **new writers**: writers whose first story is at most ``new_writer_days`` older than
  ``until``, their share of writers and of impressions;
* **groups** by a writer attribute in asset metadata (``attribute``, e.g. ``author_region``):
  each value's share of writers beside its share of impressions, and their ratio (1:
  exposure in proportion). A writer's value is the one on their latest story that has
  one; a writer without it is in ``"unknown"``.

Definitions: the catalogue is the tenant's stories (assets) created before ``until``,
plus any shown in the window. A writer is an author named by a story (asset metadata
``events_author_key``) or recorded on an impression; each impression counts for the
author recorded on it (the story's author when the event arrived, as in the discovery
report), and impressions of stories without an author are counted apart
(``impressions_without_author``). A writer's first story is their earliest
``created_at`` in the catalogue.

Two queries: impressions ``GROUP BY asset_id, author_id`` over the window (index
``ix_event_tenant_type_at``), and the catalogue's (id, author, attribute, created_at).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from kenning.errors import BadInput
from kenning.ingest.metadata import check_key
from kenning.principal import Principal
from kenning.services.recommend.window import metadata_text, parse_window
from kenning.settings import Settings
from kenning.stores.metadata import Database
from kenning.stores.metadata.tables import Asset, Event

UNKNOWN = "unknown"
"""The group of writers without the attribute."""
DEFAULT_DAYS = 28
"""The window when ``since`` is not given: this many days before ``until``."""
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def gini(values: Iterable[float]) -> float | None:
    """Gini coefficient of non-negative amounts (None when there are none, or all are 0).

    ``sum_i (2i - n - 1) x_i / (n * sum x)`` over the amounts sorted ascending, i = 1..n.
    """
    x = np.sort(np.asarray(list(values), dtype=np.float64))
    if x.size == 0 or x.sum() <= 0:
        return None
    if x[0] < 0:
        raise ValueError("amounts must be non-negative")
    n = x.size
    ranks = np.arange(1, n + 1)
    return float(np.sum((2 * ranks - n - 1) * x) / (n * x.sum()))


class ExposureGroup(BaseModel):
    value: str = Field(description=f"The attribute's value (`{UNKNOWN}`: writers without it).")
    writers: int
    writer_share: float = Field(description="Its writers over all writers.")
    impressions: int
    impression_share: float | None = Field(
        description="Its writers' impressions over all writers' impressions (null: none).")
    exposure_ratio: float | None = Field(
        description="impression_share / writer_share: 1 is exposure in proportion.")


class ExposureReport(BaseModel):
    since: datetime
    until: datetime
    surface: str | None = Field(description="The surface audited (null: every surface).")
    attribute: str | None
    new_writer_days: int
    impressions: int = Field(description="Impressions in the window.")
    impressions_without_author: int
    writers: int = Field(description="Writers of the catalogue or of the impressions.")
    writers_shown: int = Field(description="Writers with at least one impression.")
    gini: float | None = Field(description="Gini of impressions over writers (0 equal, "
                               "(n-1)/n all to one; null without impressions).")
    stories: int = Field(description="Stories in the catalogue.")
    stories_shown: int
    coverage: float | None = Field(description="stories_shown / stories (null: no stories).")
    story_gini: float | None = Field(description="Gini of impressions over stories.")
    new_writers: int
    new_writer_share: float | None = Field(description="new_writers / writers.")
    new_writer_impression_share: float | None = Field(
        description="New writers' impressions over all writers' impressions.")
    groups: list[ExposureGroup] | None = Field(
        description="By the writer attribute, most impressions first (null: no attribute).")


def _share(part: float, whole: float) -> float | None:
    return part / whole if whole else None


class ExposureService:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self.author_key = check_key(settings.events_author_key, code="invalid_setting",
                                    what="events_author_key")

    def report(self, who: Principal, *, since: str | None = None, until: str | None = None,
               surface: str | None = None, attribute: str | None = None,
               new_writer_days: int | None = None) -> ExposureReport:
        start, end = parse_window(since, until, DEFAULT_DAYS)
        if attribute is not None:
            check_key(attribute, code="invalid_attribute", what="attribute")
        days = self.settings.exposure_new_writer_days if new_writer_days is None \
            else new_writer_days
        if not 1 <= days <= 3650:
            raise BadInput("new_writer_days must be 1-3650", code="invalid_new_writer_days")
        with self.db.session(write=False) as s:
            shown = self._impressions(s, who, start, end, surface)
            catalogue = self._catalogue(s, who, end, {a for a, _ in shown}, attribute)
        return _summarise(shown, catalogue, start, end, surface, attribute, days)

    @staticmethod
    def _impressions(s: Session, who: Principal, start: datetime, end: datetime,
                     surface: str | None) -> dict[tuple[str, str | None], int]:
        q = (select(Event.asset_id, Event.author_id, func.count())
             .where(Event.tenant_id == who.tenant_id, Event.type == "impression",
                    Event.at >= start, Event.at < end, Event.asset_id.is_not(None))
             .group_by(Event.asset_id, Event.author_id))
        if surface is not None:
            q = q.where(Event.data["surface"].as_string() == surface)
        return {(str(a), w): int(n) for a, w, n in s.execute(q)}

    def _catalogue(self, s: Session, who: Principal, end: datetime, shown: set[str],
                   attribute: str | None) -> list[tuple[str, str | None, str | None, datetime]]:
        dialect = s.get_bind().dialect.name
        author = metadata_text(dialect, self.author_key)
        value = metadata_text(dialect, attribute, scalars=True) if attribute else None
        columns: list[Any] = [Asset.id, author, Asset.created_at]
        if value is not None:
            columns.append(value)
        base = select(*columns).where(Asset.tenant_id == who.tenant_id)
        rows = list(s.execute(base.where(Asset.created_at < end)))
        late = sorted(shown - {row[0] for row in rows})  # shown, though created after `until`
        for i in range(0, len(late), 500):
            rows += s.execute(base.where(Asset.id.in_(late[i:i + 500])))
        return [(row[0], _writer(row[1]), row[3] if value is not None else None, row[2])
                for row in rows]


def _writer(name: object) -> str | None:
    """An author as the events record them (1-128 characters, no control characters)."""
    if isinstance(name, str) and 0 < len(name) <= 128 and not _CONTROL.search(name):
        return name
    return None


def _summarise(shown: dict[tuple[str, str | None], int],
               catalogue: list[tuple[str, str | None, str | None, datetime]],
               start: datetime, end: datetime, surface: str | None, attribute: str | None,
               days: int) -> ExposureReport:
    per_writer: dict[str, int] = defaultdict(int)
    per_story: dict[str, int] = defaultdict(int)
    without_author = 0
    for (asset_id, author), n in shown.items():
        per_story[asset_id] += n
        if author is None:
            without_author += n
        else:
            per_writer[author] += n
    first: dict[str, datetime] = {}
    value_of: dict[str, tuple[datetime, str]] = {}
    for _, author, value, created in catalogue:
        if author is None:
            continue
        per_writer.setdefault(author, 0)
        first[author] = min(first.get(author, created), created)
        if value is not None and (author not in value_of or created >= value_of[author][0]):
            value_of[author] = (created, value)
    writer_impressions = sum(per_writer.values())
    new_since = end - timedelta(days=days)
    new = [w for w, t in first.items() if t >= new_since]
    stories = {asset_id for asset_id, *_ in catalogue}
    return ExposureReport(
        since=start, until=end, surface=surface, attribute=attribute, new_writer_days=days,
        impressions=writer_impressions + without_author,
        impressions_without_author=without_author, writers=len(per_writer),
        writers_shown=sum(1 for n in per_writer.values() if n),
        gini=gini(per_writer.values()), stories=len(stories),
        stories_shown=sum(1 for a in stories if per_story.get(a)),
        coverage=_share(sum(1 for a in stories if per_story.get(a)), len(stories)),
        story_gini=gini(per_story.get(a, 0) for a in stories),
        new_writers=len(new), new_writer_share=_share(len(new), len(per_writer)),
        new_writer_impression_share=_share(sum(per_writer[w] for w in new),
                                           writer_impressions),
        groups=None if attribute is None else _groups(per_writer, value_of,
                                                      writer_impressions))


def _groups(per_writer: dict[str, int], value_of: dict[str, tuple[datetime, str]],
            total: int) -> list[ExposureGroup]:
    writers: dict[str, int] = defaultdict(int)
    impressions: dict[str, int] = defaultdict(int)
    for writer, n in per_writer.items():
        value = value_of[writer][1] if writer in value_of else UNKNOWN
        writers[value] += 1
        impressions[value] += n
    out = []
    for value in sorted(writers, key=lambda v: (-impressions[v], v)):
        writer_share = writers[value] / len(per_writer)
        impression_share = _share(impressions[value], total)
        out.append(ExposureGroup(
            value=value, writers=writers[value], writer_share=writer_share,
            impressions=impressions[value], impression_share=impression_share,
            exposure_ratio=None if impression_share is None
            else impression_share / writer_share))
    return out
