"""Events: what readers did with the tenant's stories, the feedback recommendations learn from.

A batch (``POST /v1/events``) is stored whole or not at all: the first flaw refuses it
with a 4xx whose code names what is wrong and whose ``details.index`` names the event.

* Kinds: item events (``impression``, ``open``, ``read``, ``like``, ``share``, ``hide``,
  ``report``) name an ``asset_id`` of the caller's tenant (any other id, another tenant's
  included, is 422 ``unknown_asset``); author events (``follow``, ``unfollow``,
  ``mute_author``) name an ``author_id``, or the ``asset_id`` of a story whose author
  (the asset metadata field ``settings.events_author_key``) they mean, or both
  (422 ``author_mismatch`` when they disagree, ``no_author`` when the story names none).
  Item events record the asset's author as its metadata says on arrival.
* Readers are pseudonymous ids chosen by the client; no reader table exists.
* Idempotency: ``event_id`` is unique per tenant. An event already stored with the same
  content is a duplicate (counted, not stored again, whoever sent it first, even
  concurrently); the same id with other content is 409 ``event_conflict`` and nothing of
  the batch is stored (a retry is safe, a reused id is a client bug worth hearing about).
  Content is what the client sent: type, reader, asset, author (when named), time and
  the type's fields; an author derived from a story is not part of it.
* ``at`` is an ISO 8601 date-time with an offset, at most ``events_max_future_s`` ahead
  of the server's clock (422 ``event_in_future``) and ``events_max_age_days`` behind it
  (422 ``event_too_old``).

One batch is one transaction: one read of its assets, one ``INSERT ... ON CONFLICT DO
NOTHING RETURNING`` (rows in event-id order, so two overlapping batches on PostgreSQL
lock in the same order and never deadlock) and, only when some ids were there already,
one read of those to tell duplicates from conflicts.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)
from pydantic_core import ErrorDetails
from sqlalchemy import ColumnElement, case, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from kenning.errors import BadInput, Conflict, TooLarge
from kenning.ingest.metadata import check_key
from kenning.principal import Principal
from kenning.settings import Settings
from kenning.stores.metadata import Database
from kenning.stores.metadata.tables import Asset, Event, utcnow

MAX_LIMIT = 1000
"""Most events one listing returns."""
ITEM_TYPES = ("impression", "open", "read", "like", "share", "hide", "report")
AUTHOR_TYPES = ("follow", "unfollow", "mute_author")

_NO_CONTROL = r"^[^\x00-\x1f\x7f-\x9f]+$"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
Id = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=_NO_CONTROL)]
"""Event, reader, author and request ids: 1-128 characters, no control characters."""
AssetRef = Annotated[str, StringConstraints(min_length=1, max_length=100)]
Label = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=_NO_CONTROL)]
_ISO = re.compile(r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d")


def _iso_text(value: object) -> object:
    if not isinstance(value, str) or not _ISO.match(value):
        raise ValueError("give an ISO 8601 date-time with an offset, e.g. 2026-01-31T12:00:00Z")
    return value


When = Annotated[AwareDatetime, BeforeValidator(_iso_text), Field(strict=False, description=(
    "When it happened: ISO 8601 with an offset (Z or +hh:mm)."))]


class BaseEvent(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    type: str
    event_id: Id = Field(description="Client-chosen, unique per tenant: the idempotency key.")
    reader_id: Id = Field(description="The reader's pseudonymous id.")
    at: When


class ItemEvent(BaseEvent):
    asset_id: AssetRef = Field(description="An asset of your tenant.")


class Impression(ItemEvent):
    """The story was shown (in a list, a module, a push)."""

    type: Literal["impression"]
    surface: Label = Field(description="Where it was shown, e.g. home, article_footer.")
    position: int = Field(ge=0, le=100_000, description="0-based slot on that surface.")
    request_id: Id | None = Field(None, description="The recommendations response that "
                                  "served it; omit for slots Kenning did not fill.")


class Open(ItemEvent):
    """The reader opened the story (optionally: from where)."""

    type: Literal["open"]
    surface: Label | None = None
    position: int | None = Field(None, ge=0, le=100_000)
    request_id: Id | None = None


class Read(ItemEvent):
    """The reader spent time on the story."""

    type: Literal["read"]
    dwell_ms: int = Field(ge=0, le=86_400_000, description="Time on the story (at most a day).")
    scroll_depth: float | None = Field(None, ge=0, le=1, description="Deepest scroll, 0-1.")


class Like(ItemEvent):
    type: Literal["like"]


class Share(ItemEvent):
    type: Literal["share"]


class Hide(ItemEvent):
    """Show the reader this story no more."""

    type: Literal["hide"]


class Report(ItemEvent):
    """The reader reported the story (trust and safety)."""

    type: Literal["report"]
    reason: str = Field(min_length=1, max_length=500, pattern=r"^[^\x00]+$")


class AuthorEvent(BaseEvent):
    author_id: Id | None = Field(None, description="The author as asset metadata names them.")
    asset_id: AssetRef | None = Field(None, description="A story of your tenant whose author "
                                      "is meant (where the reader acted); kept as context.")

    @model_validator(mode="after")
    def _someone(self) -> AuthorEvent:
        if self.author_id is None and self.asset_id is None:
            raise ValueError("name the author_id, or the asset_id of one of their stories")
        return self


class Follow(AuthorEvent):
    type: Literal["follow"]


class Unfollow(AuthorEvent):
    type: Literal["unfollow"]


class MuteAuthor(AuthorEvent):
    type: Literal["mute_author"]


EventIn = Annotated[Impression | Open | Read | Like | Share | Hide | Report | Follow | Unfollow
                    | MuteAuthor, Field(discriminator="type")]


class EventsIn(BaseModel):
    """A batch, stored whole or refused whole (at most ``max_events_per_batch`` events)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    events: list[EventIn]


class EventsOut(BaseModel):
    accepted: int = Field(description="Events stored by this call.")
    duplicates: int = Field(description="Events already stored (or repeated in the batch) "
                            "with the same content: not stored again.")


class EventView(BaseModel):
    """A stored event: what was sent, the author recorded, and when it arrived."""

    event_id: str
    type: str
    reader_id: str
    asset_id: str | None
    author_id: str | None
    at: datetime
    received_at: datetime
    surface: str | None = None
    position: int | None = None
    request_id: str | None = None
    dwell_ms: int | None = None
    scroll_depth: float | None = None
    reason: str | None = None


class EventPage(BaseModel):
    events: list[EventView] = Field(description="Newest first (by `at`).")


_FIELDS = ("surface", "position", "request_id", "dwell_ms", "scroll_depth", "reason")


def parse_batch(raw: Any, settings: Settings) -> list[BaseEvent]:
    """``raw`` (a parsed JSON body) as events, counted before it is validated.

    413 ``batch_too_large``; 422 ``invalid_event_type`` or ``invalid_event`` naming the
    first bad event's ``index`` (``errors`` list what is wrong with it), or
    ``invalid_request`` when the body is not ``{"events": [...]}``.
    """
    events = raw.get("events") if isinstance(raw, dict) else None
    if isinstance(events, list) and len(events) > settings.max_events_per_batch:
        raise TooLarge(f"at most {settings.max_events_per_batch} events per batch",
                       code="batch_too_large", limit=settings.max_events_per_batch)
    try:
        return list(EventsIn.model_validate(raw).events)
    except ValidationError as exc:
        raise _first_flaw(exc) from None


def _first_flaw(exc: ValidationError) -> BadInput:
    by_index: dict[int, list[ErrorDetails]] = {}
    for e in exc.errors(include_url=False, include_input=False):
        loc = e["loc"]
        if len(loc) >= 2 and loc[0] == "events" and isinstance(loc[1], int):
            by_index.setdefault(loc[1], []).append(e)
    if not by_index:
        return BadInput('the body must be {"events": [...]}', code="invalid_request",
                        errors=[{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()])
    index = min(by_index)
    errors = by_index[index]
    if any(e["type"] in ("union_tag_invalid", "union_tag_not_found") for e in errors):
        return BadInput(f"events[{index}]: type must be one of "
                        f"{', '.join(ITEM_TYPES + AUTHOR_TYPES)}",
                        code="invalid_event_type", index=index)
    # loc is ("events", index, <type tag>, field...): the field is what the client wrote.
    fields = [{"loc": [str(p) for p in e["loc"][3:]], "msg": e["msg"]} for e in errors]
    where = ", ".join(".".join(f["loc"]) or "event" for f in fields)
    return BadInput(f"events[{index}]: invalid {where}", code="invalid_event", index=index,
                    errors=fields)


def _data(event: BaseEvent) -> dict[str, Any]:
    fields = event.__dict__  # not getattr: a field the type lacks costs an exception
    data = {f: v for f in _FIELDS if (v := fields.get(f)) is not None}
    if isinstance(event, AuthorEvent) and event.asset_id is not None:
        data["asset_id"] = event.asset_id
    return data


def _asset_of(event: BaseEvent) -> str | None:
    return event.asset_id if isinstance(event, ItemEvent | AuthorEvent) else None


def _named_author(event: BaseEvent) -> str | None:
    return event.author_id if isinstance(event, AuthorEvent) else None


def _content(event: BaseEvent) -> tuple[Any, ...]:
    """What makes two events with one id the same event (see the module docstring)."""
    item = isinstance(event, ItemEvent)
    return (event.type, event.reader_id, _asset_of(event) if item else None,
            _named_author(event), event.at, _data(event))


def _stored_content(row: Event, named_author: bool) -> tuple[Any, ...]:
    return (row.type, row.reader_id, row.asset_id, row.author_id if named_author else None,
            row.at, row.data)


class EventService:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self.author_key = check_key(settings.events_author_key, code="invalid_setting",
                                    what="events_author_key")

    def record_raw(self, who: Principal, raw: Any) -> EventsOut:
        """Parse a ``POST /v1/events`` body and record it (the API's path)."""
        return self.record(who, parse_batch(raw, self.settings))

    def record(self, who: Principal, events: Sequence[BaseEvent]) -> EventsOut:
        """Store the events not stored yet, all in one transaction, or refuse them all."""
        unique = self._check(events)
        for attempt in (1, 2):
            try:
                with self.db.session() as s:
                    accepted = self._write(s, who, events, unique)
                return EventsOut(accepted=accepted, duplicates=len(events) - accepted)
            except IntegrityError:
                # PostgreSQL: an asset deleted between our read and our insert (its
                # foreign key). Once more: the read now says unknown_asset.
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _check(self, events: Sequence[BaseEvent]) -> dict[str, int]:
        """Times and in-batch repeats, before the database: event id -> first index."""
        now = utcnow()
        latest = now + timedelta(seconds=self.settings.events_max_future_s)
        earliest = now - timedelta(days=self.settings.events_max_age_days)
        first: dict[str, int] = {}
        for index, event in enumerate(events):
            if event.at > latest:
                raise BadInput(f"events[{index}]: at is in the future (more than "
                               f"{self.settings.events_max_future_s:g} s ahead)",
                               code="event_in_future", index=index)
            if event.at < earliest:
                raise BadInput(f"events[{index}]: at is older than "
                               f"{self.settings.events_max_age_days:g} days",
                               code="event_too_old", index=index)
            seen = first.setdefault(event.event_id, index)
            if seen != index and _content(events[seen]) != _content(event):
                raise BadInput(f"events[{index}]: event_id {event.event_id!r} is also "
                               f"events[{seen}], with other content",
                               code="duplicate_event_id", index=index, first_index=seen)
        return first

    def _write(self, s: Session, who: Principal, events: Sequence[BaseEvent],
               unique: dict[str, int]) -> int:
        authors = self._assets(s, who, {a for e in events if (a := _asset_of(e)) is not None})
        now = utcnow()
        rows = []
        for event_id, index in sorted(unique.items()):
            event = events[index]
            rows.append({
                "tenant_id": who.tenant_id, "event_id": event_id, "type": event.type,
                "reader_id": event.reader_id,
                "asset_id": _asset_of(event) if isinstance(event, ItemEvent) else None,
                "author_id": self._author(event, index, authors), "at": event.at,
                "received_at": now, "data": _data(event)})
        if not rows:
            return 0
        inserted = self._insert(s, rows)
        if len(inserted) < len(rows):
            self._compare(s, who, events, {i: x for i, x in unique.items() if i not in inserted})
        return len(inserted)

    @staticmethod
    def _insert(s: Session, rows: list[dict[str, Any]]) -> set[str]:
        """Insert the rows whose ids are new; the ids inserted. (One ``RETURNING``
        statement per 1000 rows: measured faster on SQLite than a read of the ids first
        and a plain ``executemany``, and exact under concurrency on PostgreSQL.)"""
        insert = pg_insert if s.get_bind().dialect.name == "postgresql" else sqlite_insert
        statement = insert(Event).on_conflict_do_nothing().returning(Event.event_id)
        return set(s.connection().execute(statement, rows).scalars())

    def _assets(self, s: Session, who: Principal, ids: set[str]) -> dict[str, str | None]:
        """The caller's assets among ``ids``, each with its author (or None)."""
        if not ids:
            return {}
        author = _author_field(s.get_bind().dialect.name, self.author_key)
        rows = s.execute(select(Asset.id, author).where(
            Asset.tenant_id == who.tenant_id, Asset.id.in_(sorted(ids))))
        return {asset_id: _valid_author(name) for asset_id, name in rows}

    @staticmethod
    def _author(event: BaseEvent, index: int, authors: dict[str, str | None]) -> str | None:
        asset_id = _asset_of(event)
        if asset_id is not None and asset_id not in authors:
            raise BadInput(f"events[{index}]: no asset {asset_id}", code="unknown_asset",
                           index=index, asset_id=asset_id)
        named = _named_author(event)
        story_author = authors[asset_id] if asset_id is not None else None
        if isinstance(event, ItemEvent) or (named is None and story_author is not None):
            return story_author
        if named is None:
            raise BadInput(f"events[{index}]: asset {asset_id} names no author (metadata "
                           "field) and the event names none", code="no_author", index=index)
        if asset_id is not None and story_author != named:
            raise BadInput(f"events[{index}]: asset {asset_id} is by {story_author!r}, not "
                           f"{named!r}", code="author_mismatch", index=index)
        return named

    @staticmethod
    def _compare(s: Session, who: Principal, events: Sequence[BaseEvent],
                 seen: dict[str, int]) -> None:
        """Ids that were there already: the same content is a duplicate; other content
        refuses the batch (the caller's transaction rolls back)."""
        stored = {row.event_id: row for row in s.scalars(select(Event).where(
            Event.tenant_id == who.tenant_id, Event.event_id.in_(list(seen))))}
        for index in sorted(seen.values()):
            event = events[index]
            row = stored.get(event.event_id)
            if row is None:  # stored, then deleted with its asset since: not ours to add
                continue
            if _stored_content(row, _named_author(event) is not None) != _content(event):
                raise Conflict(f"events[{index}]: event_id {event.event_id!r} is stored "
                               "with other content", code="event_conflict", index=index,
                               event_id=event.event_id)

    def list(self, who: Principal, reader_id: str, limit: int = 100) -> EventPage:
        """The reader's events in the caller's tenant, newest first."""
        with self.db.session(write=False) as s:
            rows = s.scalars(select(Event).where(
                Event.tenant_id == who.tenant_id, Event.reader_id == reader_id)
                .order_by(Event.at.desc(), Event.id.desc())
                .limit(max(1, min(limit, MAX_LIMIT))))
            return EventPage(events=[_view(r) for r in rows])


def _view(row: Event) -> EventView:
    data = row.data or {}
    return EventView(event_id=row.event_id, type=row.type, reader_id=row.reader_id,
                     asset_id=row.asset_id or data.get("asset_id"), author_id=row.author_id,
                     at=row.at, received_at=row.received_at,
                     **{f: data[f] for f in _FIELDS if f in data})


def _author_field(dialect: str, key: str) -> ColumnElement[Any]:
    """The metadata field ``key`` when it is a string, else NULL; a row whose stored JSON
    the database cannot read (stored before metadata was validated) has none."""
    if dialect == "sqlite":
        path = f'$."{key}"'  # check_key: no quote, backslash or control character
        doc = case((func.json_valid(Asset.meta) == 1, Asset.meta))
        return case((func.json_type(doc, path) == "text", func.json_extract(doc, path)))
    field = Asset.meta[key]
    return case((func.json_typeof(field) == "string", field.as_string()))


def _valid_author(name: object) -> str | None:
    """An author as an id (1-128 characters, no control characters), else none."""
    if isinstance(name, str) and 0 < len(name) <= 128 and not _CONTROL.search(name):
        return name
    return None
