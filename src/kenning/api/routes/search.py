"""/v1/search and /v1/similar."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from kenning.api.bodies import file_part, json_body, read_upload
from kenning.api.deps import App, Who
from kenning.services.search import SearchRequest, SearchResponse
from kenning.services.similarity import SimilarRequest, SimilarResponse

router = APIRouter(prefix="/v1", tags=["search"])


@router.post("/search", response_model=SearchResponse,
             summary="Keyword (BM25), semantic or hybrid (RRF) search with filters")
def search(body: SearchRequest, app: App, who: Who) -> SearchResponse:
    return app.search.search(who, body)


@router.post(
    "/similar", response_model=SimilarResponse,
    summary="Near-duplicates (PDQ) and similar texts for an asset, a text or a file",
    openapi_extra={"requestBody": {"content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/SimilarRequest"}},
        "multipart/form-data": {"schema": {"type": "object", "properties": {
            "file": {"type": "string", "format": "binary"},
            "threshold": {"type": "number"}, "limit": {"type": "integer"}}}},
    }, "required": True}},
)
async def similar(request: Request, app: App, who: Who) -> SimilarResponse:
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        form = await request.form(max_files=1)
        data = await read_upload(file_part(form), app.settings.max_upload_bytes)
        fields = {k: v for k, v in form.items() if isinstance(v, str) and k != "file"}
        req = SimilarRequest.model_validate(fields)
        return await run_in_threadpool(app.similarity.similar, who, req, data)
    req = SimilarRequest.model_validate(await json_body(request))
    return await run_in_threadpool(app.similarity.similar, who, req, None)
