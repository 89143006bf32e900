"""Writers' reports: how an author's stories were discovered, and the exposure audit of
impressions across writers."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from kenning.api.bodies import StrictJSONRoute
from kenning.api.deps import App, Who
from kenning.api.errors import ERROR_SCHEMA_REF, error_responses
from kenning.services.recommend.discovery import BUCKETS, MAX_BUCKETS, DiscoveryReport
from kenning.services.recommend.exposure import ExposureReport

router = APIRouter(prefix="/v1", route_class=StrictJSONRoute)

_NO_CONTROL = r"^[^\x00-\x1f\x7f-\x9f]+$"
_UNKNOWN_AUTHOR: dict[int | str, dict[str, Any]] = {404: {
    "description": "No event and no story of your tenant names this author "
                   "(`unknown_author`).",
    "content": {"application/json": {"schema": {"$ref": ERROR_SCHEMA_REF}}}}}

Since = Annotated[str | None, Query(
    max_length=64, description="Window start, inclusive: an ISO 8601 date or date-time "
    "(UTC without an offset). Default: 28 days before until.")]
Until = Annotated[str | None, Query(
    max_length=64, description="Window end, exclusive (same forms). Default: now.")]


@router.get("/authors/{author_id}/discovery", response_model=DiscoveryReport,
            tags=["recommendations"],
            responses={**error_responses(401, 422), **_UNKNOWN_AUTHOR},
            summary="How an author's stories were discovered: by source and surface, "
                    "over time")
def discovery(
    app: App, who: Who,
    author_id: Annotated[str, Path(min_length=1, max_length=128, pattern=_NO_CONTROL,
                                   description="The author as asset metadata names them.")],
    since: Since = None, until: Until = None,
    bucket: Annotated[str, Query(
        max_length=16, json_schema_extra={"enum": list(BUCKETS)},
        description=f"Bucket size: day or week (UTC; weeks start on Monday); at most "
                    f"{MAX_BUCKETS} buckets.")] = "day",
) -> DiscoveryReport:
    """Impressions, opens, reads, likes and shares, with totals. 422: `invalid_time`
    (since or until not an ISO 8601 date or date-time), `invalid_range` (since not before
    until), `invalid_bucket`, `range_too_long`."""
    return app.discovery.report(who, author_id, since=since, until=until, bucket=bucket)


@router.get("/recommendations/exposure", response_model=ExposureReport,
            tags=["recommendations"], responses=error_responses(401, 422),
            summary="Exposure audit: impressions across writers (Gini, coverage, new "
                    "writers, groups by a writer attribute)")
def exposure(
    app: App, who: Who, since: Since = None, until: Until = None,
    surface: Annotated[str | None, Query(
        min_length=1, max_length=100, pattern=_NO_CONTROL,
        description="Only impressions on this surface (default: all).")] = None,
    attribute: Annotated[str | None, Query(
        max_length=128, description="A writer attribute in asset metadata to group by, "
        "e.g. author_region (writers without it: `unknown`).")] = None,
    new_writer_days: Annotated[int | None, Query(
        ge=1, le=3650, description="A writer whose first story is at most this many days "
        "older than until is new (default: the server's exposure_new_writer_days).")] = None,
) -> ExposureReport:
    """Over impressions in [since, until). 422: `invalid_time`, `invalid_range`,
    `invalid_attribute`."""
    return app.exposure.report(who, since=since, until=until, surface=surface,
                               attribute=attribute, new_writer_days=new_writer_days)
