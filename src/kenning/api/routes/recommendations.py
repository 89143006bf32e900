"""/v1/users/{id}/recommendations: stories for one reader, each with its reasons."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from kenning.api.bodies import StrictJSONRoute
from kenning.api.deps import App, Who
from kenning.api.errors import ERROR_SCHEMA_REF, error_responses
from kenning.services.recommend.schemas import SURFACE_PATTERN, Recommendations, RecsUnavailable

router = APIRouter(prefix="/v1", tags=["recommendations"], route_class=StrictJSONRoute)

_NO_CONTROL = r"^[^\x00-\x1f\x7f-\x9f]+$"
_UNAVAILABLE: dict[int | str, dict[str, Any]] = {501: {
    "description": "This installation cannot serve recommendations: the recs extra is not "
                   "installed (`recs_unavailable`).",
    "content": {"application/json": {"schema": {"$ref": ERROR_SCHEMA_REF}}}}}


@router.get("/users/{reader_id}/recommendations", response_model=Recommendations,
            responses={**error_responses(401, 422), **_UNAVAILABLE},
            summary="Recommended stories for a reader, each with its reasons")
def recommendations(
    app: App, who: Who,
    reader_id: Annotated[str, Path(min_length=1, max_length=128, pattern=_NO_CONTROL,
                                   description="The reader's pseudonymous id (as in "
                                   "events).")],
    surface: Annotated[str, Query(
        min_length=1, max_length=32, pattern=SURFACE_PATTERN,
        description="Where the list is shown, e.g. home or article_footer: it picks the "
        "re-ranking settings (rerank_surfaces).")] = "home",
    limit: Annotated[int | None, Query(
        ge=1, le=100, description="How many stories (default recs_serve_default_limit; at "
        "most recs_serve_max_limit, else 422 invalid_limit).")] = None,
    language: Annotated[str | None, Query(
        min_length=2, max_length=16, pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})?$",
        description="The reader's language (ISO 639), for cold start; default: the one "
        "they read most.")] = None,
    topics: Annotated[list[str] | None, Query(
        max_length=50, description="Topics the reader declared (repeat the parameter), "
        "for cold start.")] = None,
) -> Recommendations:
    """Answers from the reader's precomputed candidates plus online features, scored by
    the serving ranker (or the fixed blend), re-ranked for the surface, with a little
    exploration. Hidden, reported and read stories, muted authors and near-duplicates
    of them never come back. Send ``request_id`` back in the impression events of the
    stories shown. 422: `invalid_request` (a parameter outside its schema),
    `invalid_limit`, `invalid_surface`, `invalid_reader`, `invalid_language`,
    `invalid_topics`."""
    service = app.recommendations
    if service is None:
        raise RecsUnavailable("recommendations need the recs extra: "
                              "pip install 'kenning[recs]'")
    return service.recommend(who, reader_id, surface=surface, limit=limit,
                             language=language, topics=topics or ())
