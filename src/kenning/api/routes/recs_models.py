"""/v1/recommendations/models: versions of the tenant's learned ranker, and training one
on demand (the run itself happens on a worker, through the queue)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Path, Query
from starlette.concurrency import run_in_threadpool

from kenning.api.bodies import StrictJSONRoute
from kenning.api.deps import App, Who
from kenning.api.errors import ERROR_SCHEMA_REF, error_responses
from kenning.container import Kenning
from kenning.services.recommend.schemas import RecsUnavailable
from kenning.services.recommend.versions import ModelInfo, ModelList, State

if TYPE_CHECKING:
    from kenning.services.recommend.training import TrainingService

router = APIRouter(prefix="/v1/recommendations", tags=["recommendations"],
                   route_class=StrictJSONRoute)


def _error(status: int, description: str) -> dict[int | str, dict[str, Any]]:
    return {status: {"description": description, "content": {
        "application/json": {"schema": {"$ref": ERROR_SCHEMA_REF}}}}}


_UNAVAILABLE = _error(501, "This installation cannot train rankers: the recs extra is not "
                           "installed (`recs_unavailable`).")


def _service(app: Kenning) -> TrainingService:
    if app.recs_training is None:
        raise RecsUnavailable("ranker training needs the recs extra: "
                              "pip install 'kenning[recs]'")
    return app.recs_training


@router.post("/models", status_code=202, response_model=ModelInfo,
             responses={**error_responses(401), **_UNAVAILABLE, **_error(
                 409, "A version of your tenant's ranker is training already "
                      "(`training_in_progress`, `details.model_id`)."), **_error(
                 503, "The work broker did not take the run (`store_unavailable`); retry.")},
             summary="Train a new version of your tenant's ranker (on a worker)")
async def train(app: App, who: Who) -> ModelInfo:
    """Queues a training run and answers at once with the new version, ``training``.
    A worker fits it on your served recommendations and their impressions, evaluates it
    on the newest of them and promotes it to ``serving`` or rejects it (see ``gate``);
    poll ``GET /v1/recommendations/models/{id}``. No body."""
    service = _service(app)
    return await run_in_threadpool(service.request, who)


@router.get("/models", response_model=ModelList, responses={
    **error_responses(401, 422), **_UNAVAILABLE},
    summary="Versions of your tenant's ranker, newest first")
def models(
    app: App, who: Who,
    limit: Annotated[int, Query(ge=1, le=100, description="Most versions listed.")] = 20,
    state: Annotated[State | None, Query(description="Only versions in this state.")] = None,
) -> ModelList:
    """Each with its state, offline metrics, off-policy estimates and gate decision.
    422 `invalid_request`: limit outside 1-100, an unknown state."""
    return _service(app).models(who, limit=limit, state=state)


@router.get("/models/{model_id}", response_model=ModelInfo, responses={
    **error_responses(401, 422), **_UNAVAILABLE,
    **_error(404, "No version of your tenant's ranker has this id (`unknown_model`).")},
    summary="One version of your tenant's ranker")
def model(
    app: App, who: Who,
    model_id: Annotated[str, Path(min_length=1, max_length=32, pattern=r"^[0-9a-f]+$",
                                  description="The version's id (from POST or the list).")],
) -> ModelInfo:
    return _service(app).get(who, model_id)
