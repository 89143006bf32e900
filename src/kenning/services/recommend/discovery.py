"""How a writer's stories were discovered: ``GET /v1/authors/{author_id}/discovery``.

Impressions, opens, reads, likes and shares of the author's stories in ``[since, until)``,
by **source** and by **surface**, in day or week buckets (UTC; weeks start on Monday;
the first and last bucket hold only the part inside the window), with totals. Every
bucket of the window is listed, empty ones too.

* The author's stories are those the events name: each item event records its story's
  author as the metadata said when it arrived (``Event.author_id``, index
  ``ix_event_tenant_author_at``), so renaming an author later does not move history.
* **Surface and source** come from the event's *touch*: an impression, or an open that
  names its surface, is its own touch; any other event (an open without a surface, a
  read, a like, a share) takes the reader's latest touch of the same story at most
  :data:`TOUCH_WINDOW` before it (last-touch attribution). Source is ``recommendations``
  when the touch carries the ``request_id`` of a Kenning recommendations response,
  ``other`` when it does not (a slot Kenning did not fill), ``unattributed`` (and
  surface null) when there is no touch.
* An author the tenant has no trace of (no event, no story naming them) is 404
  ``unknown_author``, so another tenant's authors look like nobody's.

One ``GROUP BY (bucket, type, touch)`` query over the author's events in the window.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import (
    ColumnElement,
    Integer,
    Interval,
    and_,
    case,
    cast,
    exists,
    func,
    literal,
    or_,
    select,
)
from sqlalchemy.orm import Session, aliased

from kenning.errors import BadInput, NotFound
from kenning.ingest.metadata import check_key
from kenning.principal import Principal
from kenning.services.recommend.window import metadata_text, parse_window
from kenning.settings import Settings
from kenning.stores.metadata import Database
from kenning.stores.metadata.tables import Asset, Event

TYPES = ("impression", "open", "read", "like", "share")
COUNTED = {"impression": "impressions", "open": "opens", "read": "reads", "like": "likes",
           "share": "shares"}
BUCKETS = ("day", "week")
MAX_BUCKETS = 1000
"""Most buckets one report lists (422 ``range_too_long`` past it)."""
DEFAULT_DAYS = 28
TOUCH_WINDOW = timedelta(days=7)
"""How far back an engagement looks for the impression or open it came from."""
RECOMMENDATIONS, OTHER, UNATTRIBUTED = "recommendations", "other", "unattributed"

Bucket = Literal["day", "week"]


class Counts(BaseModel):
    impressions: int = 0
    opens: int = 0
    reads: int = 0
    likes: int = 0
    shares: int = 0

    def add(self, event_type: str, n: int) -> None:
        field = COUNTED[event_type]
        setattr(self, field, getattr(self, field) + n)


class SourceCounts(Counts):
    source: str = Field(description=f"`{RECOMMENDATIONS}` (served by a Kenning "
                        f"recommendations response), `{OTHER}` or `{UNATTRIBUTED}`.")


class SurfaceCounts(Counts):
    surface: str | None = Field(description="Where it was shown (null: not known).")


class BucketCounts(Counts):
    start: datetime = Field(description="The bucket's start (UTC midnight; Monday for weeks).")
    by_source: list[SourceCounts]
    by_surface: list[SurfaceCounts]


class DiscoveryReport(BaseModel):
    author_id: str
    since: datetime
    until: datetime
    bucket: Bucket
    totals: Counts
    by_source: list[SourceCounts] = Field(description="Most impressions first.")
    by_surface: list[SurfaceCounts] = Field(description="Most impressions first.")
    buckets: list[BucketCounts] = Field(description="Every bucket of the window, oldest first.")


def bucket_start(at: datetime, bucket: Bucket) -> datetime:
    """The start (UTC) of the bucket holding ``at``."""
    day = at.astimezone(UTC).date()
    if bucket == "week":
        day -= timedelta(days=day.weekday())
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _bucket_sql(dialect: str, bucket: Bucket, at: Any) -> ColumnElement[Any]:
    if dialect == "postgresql":
        return func.date_trunc(bucket, at)
    if bucket == "day":
        return func.date(at)
    weekday = (cast(func.strftime("%w", at), Integer) + 6) % 7  # Monday 0
    return func.date(at, func.printf("-%d days", weekday))


def _as_start(value: Any) -> datetime:
    if isinstance(value, str):
        value = date.fromisoformat(value[:10])
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC)
    assert isinstance(value, date)
    return datetime(value.year, value.month, value.day, tzinfo=UTC)


def _sorted(rows: dict[Any, Any]) -> list[Any]:
    """Most impressions (then opens, reads) first; ties by name, an unknown surface last."""
    return sorted(rows.items(), key=lambda kv: (
        -kv[1].impressions, -kv[1].opens, -kv[1].reads, kv[0] is None, kv[0] or ""))


class DiscoveryService:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.author_key = check_key(settings.events_author_key, code="invalid_setting",
                                    what="events_author_key")

    def report(self, who: Principal, author_id: str, *, since: str | None = None,
               until: str | None = None, bucket: str = "day") -> DiscoveryReport:
        if bucket not in BUCKETS:
            raise BadInput(f"bucket must be one of {', '.join(BUCKETS)}", code="invalid_bucket")
        size: Bucket = "week" if bucket == "week" else "day"
        start, end = parse_window(since, until, DEFAULT_DAYS)
        starts = _starts(start, end, size)
        with self.db.session(write=False) as s:
            if not self._known(s, who, author_id):
                raise NotFound(f"no author {author_id!r} in your tenant", code="unknown_author")
            rows = self._counts(s, who, author_id, start, end, size)
        return _assemble(author_id, start, end, size, starts, rows)

    def _known(self, s: Session, who: Principal, author_id: str) -> bool:
        """Whether an event or a story of the tenant names the author."""
        if s.scalar(select(exists().where(Event.tenant_id == who.tenant_id,
                                          Event.author_id == author_id))):
            return True
        author = metadata_text(s.get_bind().dialect.name, self.author_key)
        return bool(s.scalar(select(exists().where(Asset.tenant_id == who.tenant_id,
                                                   author == author_id))))

    @staticmethod
    def _counts(s: Session, who: Principal, author_id: str, start: datetime, end: datetime,
                size: Bucket) -> list[tuple[datetime, str, str | None, str, int]]:
        """(bucket start, type, surface, source, count) rows."""
        dialect = s.get_bind().dialect.name
        touch = aliased(Event)
        own = or_(Event.type == "impression",
                  and_(Event.type == "open", Event.data["surface"].as_string().is_not(None)))
        earliest = (func.datetime(Event.at, f"-{TOUCH_WINDOW.days} days")
                    if dialect == "sqlite" else Event.at - literal(TOUCH_WINDOW, Interval()))
        latest_touch = (
            select(touch.id)
            .where(touch.tenant_id == Event.tenant_id, touch.reader_id == Event.reader_id,
                   touch.asset_id == Event.asset_id, touch.at <= Event.at,
                   touch.at >= earliest,
                   or_(touch.type == "impression",
                       and_(touch.type == "open",
                            touch.data["surface"].as_string().is_not(None))))
            .order_by(touch.at.desc(), touch.id.desc()).limit(1).scalar_subquery())
        events = (
            select(_bucket_sql(dialect, size, Event.at).label("bucket"),
                   Event.type.label("type"),
                   case((own, Event.id), else_=latest_touch).label("touch_id"))
            .where(Event.tenant_id == who.tenant_id, Event.author_id == author_id,
                   Event.at >= start, Event.at < end, Event.type.in_(TYPES),
                   Event.asset_id.is_not(None))
            .subquery())
        t = aliased(Event)
        surface = t.data["surface"].as_string()
        source = case((t.id.is_(None), literal(UNATTRIBUTED)),
                      (t.data["request_id"].as_string().is_not(None), literal(RECOMMENDATIONS)),
                      else_=literal(OTHER))
        # Grouped by the columns of a subquery: PostgreSQL matches GROUP BY expressions by
        # text, and the JSON keys and literals above are bound parameters.
        touched = (select(events.c.bucket, events.c.type, surface.label("surface"),
                          source.label("source"))
                   .select_from(events).outerjoin(t, t.id == events.c.touch_id).subquery())
        c = touched.c
        q = (select(c.bucket, c.type, c.surface, c.source, func.count())
             .group_by(c.bucket, c.type, c.surface, c.source))
        return [(_as_start(b), str(kind), surf, str(src), int(n))
                for b, kind, surf, src, n in s.execute(q)]


def _starts(start: datetime, end: datetime, size: Bucket) -> list[datetime]:
    step = timedelta(days=7 if size == "week" else 1)
    first = bucket_start(start, size)
    count = -(-(end - first) // step)
    if count > MAX_BUCKETS:
        raise BadInput(f"the window holds {count} {size} buckets; at most {MAX_BUCKETS}",
                       code="range_too_long", limit=MAX_BUCKETS)
    return [first + i * step for i in range(count)]


def _assemble(author_id: str, start: datetime, end: datetime, size: Bucket,
              starts: list[datetime],
              rows: list[tuple[datetime, str, str | None, str, int]]) -> DiscoveryReport:
    totals = Counts()
    by_source: dict[str, SourceCounts] = {}
    by_surface: dict[str | None, SurfaceCounts] = {}
    buckets = {b: (Counts(), dict[str, SourceCounts](), dict[str | None, SurfaceCounts]())
               for b in starts}
    for b, kind, surface, source, n in rows:
        counts, b_source, b_surface = buckets[b]
        for target in (totals, counts,
                       by_source.setdefault(source, SourceCounts(source=source)),
                       by_surface.setdefault(surface, SurfaceCounts(surface=surface)),
                       b_source.setdefault(source, SourceCounts(source=source)),
                       b_surface.setdefault(surface, SurfaceCounts(surface=surface))):
            target.add(kind, n)
    return DiscoveryReport(
        author_id=author_id, since=start, until=end, bucket=size, totals=totals,
        by_source=[v for _, v in _sorted(by_source)],
        by_surface=[v for _, v in _sorted(by_surface)],
        buckets=[BucketCounts(start=b, by_source=[v for _, v in _sorted(src)],
                              by_surface=[v for _, v in _sorted(surf)],
                              **counts.model_dump())
                 for b, (counts, src, surf) in buckets.items()])
