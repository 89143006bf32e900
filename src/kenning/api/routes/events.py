"""/v1/events: readers' interactions (batched, idempotent by event id) and their listing."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from kenning.api.bodies import StrictJSONRoute, json_body
from kenning.api.deps import App, Who
from kenning.api.errors import ERROR_SCHEMA_REF, error_responses
from kenning.services.events import MAX_LIMIT, EventPage, EventsOut

router = APIRouter(prefix="/v1", tags=["events"], route_class=StrictJSONRoute)

_EVENTS_DOC: dict[str, Any] = {"requestBody": {"content": {
    "application/json": {"schema": {"$ref": "#/components/schemas/EventsIn"}},
}, "required": True}}
_CONFLICT: dict[int | str, dict[str, Any]] = {409: {
    "description": "An event id already stored with other content (`event_conflict`, "
                   "`details.index`); nothing of the batch was stored.",
    "content": {"application/json": {"schema": {"$ref": ERROR_SCHEMA_REF}}}}}


@router.post("/events", response_model=EventsOut, openapi_extra=_EVENTS_DOC,
             responses={**error_responses(401, 413, 415, 422), **_CONFLICT},
             summary="Record readers' events: a batch stored whole or refused whole")
async def post_events(request: Request, app: App, who: Who) -> EventsOut:
    """Events already stored with the same content are counted as duplicates, not stored
    again. The first bad event refuses the batch: 422 with a code and ``details.index``."""
    raw = await json_body(request)
    return await run_in_threadpool(app.events.record_raw, who, raw)


@router.get("/events", response_model=EventPage, responses=error_responses(401, 422),
            summary="A reader's events in your tenant, newest first")
def list_events(
    app: App, who: Who,
    reader_id: Annotated[str, Query(min_length=1, max_length=128,
                                    description="The reader's pseudonymous id.")],
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Most events listed.")] = 100,
) -> EventPage:
    return app.events.list(who, reader_id, limit)
