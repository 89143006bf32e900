"""What the writers' reports share: a time window from query text, and metadata fields
read in SQL (the discovery report and the exposure audit)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, String, case, cast, func

from kenning.errors import BadInput
from kenning.stores.metadata.tables import Asset

EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)


def parse_time(value: str | None, name: str) -> datetime | None:
    """``value`` (ISO 8601: a date, or a date-time; without an offset it is UTC) as an
    aware datetime; 422 ``invalid_time`` naming the parameter when it is not one."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        parsed = parsed.astimezone(UTC)
    except (ValueError, OverflowError):  # overflow: year 9999 moved past the end by its offset
        raise BadInput(f"{name}: give an ISO 8601 date or date-time, e.g. 2026-01-31 or "
                       "2026-01-31T12:00:00Z", code="invalid_time", parameter=name) from None
    if not EARLIEST <= parsed <= LATEST:
        raise BadInput(f"{name} must lie between 1970 and 2200", code="invalid_time",
                       parameter=name)
    return parsed


def parse_window(since: str | None, until: str | None, default_days: float,
                 now: datetime | None = None) -> tuple[datetime, datetime]:
    """``[since, until)``: ``until`` defaults to now, ``since`` to ``default_days`` before
    ``until``; 422 ``invalid_range`` unless ``since < until``."""
    end = parse_time(until, "until") or (now or datetime.now(UTC))
    start = parse_time(since, "since") or max(EARLIEST, end - timedelta(days=default_days))
    if start >= end:
        raise BadInput("since must come before until", code="invalid_range",
                       since=start.isoformat(), until=end.isoformat())
    return start, end


def metadata_text(dialect: str, key: str, *, scalars: bool = False) -> ColumnElement[Any]:
    """The asset metadata field ``key`` as text, else NULL: strings only, or with
    ``scalars`` numbers and booleans too (as their JSON text). ``key`` must have passed
    :func:`kenning.ingest.metadata.check_key` (no quote, backslash or control character).
    A row whose stored JSON the database cannot read has no value."""
    if dialect == "sqlite":
        path = f'$."{key}"'
        doc = case((func.json_valid(Asset.meta) == 1, Asset.meta))
        kind = func.json_type(doc, path)
        whens: list[tuple[ColumnElement[bool], Any]] = [
            (kind == "text", func.json_extract(doc, path))]
        if scalars:
            whens += [(kind.in_(("integer", "real")), cast(func.json_extract(doc, path), String)),
                      (kind.in_(("true", "false")), kind)]
        return case(*whens)
    field = Asset.meta[key]
    kinds = ("string", "number", "boolean") if scalars else ("string",)
    return case((func.json_typeof(field).in_(kinds), field.as_string()))
