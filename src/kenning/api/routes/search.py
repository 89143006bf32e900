"""/v1/search, /v1/similar and the tenant's match thresholds (/v1/matching)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from kenning.api.bodies import (
    StrictJSONRoute,
    file_part,
    is_multipart,
    json_body,
    media_type,
    read_form,
    read_upload,
)
from kenning.api.deps import App, Who
from kenning.api.errors import error_responses
from kenning.services.search import SearchRequest, SearchResponse
from kenning.services.similarity import (
    MatchingSettings,
    SimilarRequest,
    SimilarResponse,
    Thresholds,
)

router = APIRouter(prefix="/v1", tags=["search"], route_class=StrictJSONRoute)

_SIMILAR_DOC = {"requestBody": {"content": {
    "application/json": {"schema": {"$ref": "#/components/schemas/SimilarRequest"}},
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "format": "binary"},
        "threshold": {"type": "number", "description": "PDQ: 0-256; text: -1 to 1."},
        "limit": {"type": "integer", "minimum": 1, "maximum": 200},
        "modality": {"type": "string"}}}},
}, "required": True}}


@router.post("/search", response_model=SearchResponse,
             responses=error_responses(401, 404, 413, 422),
             summary="Keyword (BM25), semantic or hybrid (RRF) search with filters")
async def search(body: SearchRequest, app: App, who: Who) -> SearchResponse:
    # async, the work in the pool: FastAPI would hop to the pool a second time to
    # validate a plain function's response (run_in_threadpool in serialize_response).
    return await run_in_threadpool(app.search.search, who, body)


@router.post(
    "/similar", response_model=SimilarResponse, openapi_extra=_SIMILAR_DOC,
    responses=error_responses(401, 404, 413, 415, 422, 429),
    summary="Near-duplicates (images, texts, audio, video) of an asset, a text or a file",
)
async def similar(request: Request, app: App, who: Who) -> SimilarResponse:
    if is_multipart(media_type(request.headers)):
        form = await read_form(request)
        upload = file_part(form)
        fields = {k: v for k, v in form.items() if isinstance(v, str) and k != "file"}
        req = SimilarRequest.model_validate(fields)
        data = await read_upload(upload, app.settings.max_upload_bytes)
        return await run_in_threadpool(app.similarity.similar, who, req, data)
    req = SimilarRequest.model_validate(await json_body(request))
    return await run_in_threadpool(app.similarity.similar, who, req, None)


@router.get("/matching", response_model=MatchingSettings, responses=error_responses(401),
            summary="This tenant's match thresholds, and the thresholds that apply")
def matching(app: App, who: Who) -> MatchingSettings:
    return app.similarity.matching(who)


@router.put("/matching", response_model=MatchingSettings, responses=error_responses(401, 422),
            summary="Set this tenant's match thresholds (a method left out: the default)")
def set_matching(body: Thresholds, app: App, who: Who) -> MatchingSettings:
    return app.similarity.set_matching(who, body)
