"""/v1/assets and /v1/jobs: ingest, read, segments, delete. Thin: parse, call, return."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from kenning.api.bodies import file_part, json_body, read_upload
from kenning.api.deps import App, Who
from kenning.api.schemas import Accepted, AssetIn, BatchIn, BatchItemResult, BatchOut
from kenning.container import Kenning
from kenning.errors import BadInput, KenningError, TooLarge, UnsupportedMedia
from kenning.ingest.service import IngestRequest, IngestResult
from kenning.services.assets import AssetView, JobView, SegmentView
from kenning.services.tenants import Principal

router = APIRouter(prefix="/v1", tags=["assets"])

_MULTIPART_DOC: dict[str, Any] = {
    "requestBody": {
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "title": {"type": "string"},
                        "external_id": {"type": "string"},
                        "metadata": {"type": "string", "description": "JSON object"},
                        "callback_url": {"type": "string"},
                    },
                }
            },
            "application/json": {"schema": {"$ref": "#/components/schemas/AssetIn"}},
        },
        "required": True,
    }
}


def _accepted(result: IngestResult) -> Accepted:
    return Accepted(asset_id=result.asset_id, job_id=result.job_id, status=result.status,
                    duplicate_of=result.duplicate_of)


def _metadata(raw: Any) -> dict[str, Any] | None:
    if raw in (None, ""):
        return None
    try:
        value = json.loads(str(raw))
    except json.JSONDecodeError as exc:
        raise BadInput("metadata must be a JSON object", code="invalid_metadata") from exc
    if not isinstance(value, dict):
        raise BadInput("metadata must be a JSON object", code="invalid_metadata")
    return value


def _ingest_json(app: Kenning, who: Principal, item: AssetIn) -> IngestResult:
    req = IngestRequest(title=item.title, external_id=item.external_id,
                        metadata=item.metadata, callback_url=item.callback_url)
    if item.text is not None:
        return app.ingest.ingest_text(who, item.text, req)
    assert item.url is not None
    return app.ingest.ingest_url(who, item.url, req)


@router.post("/assets", status_code=202, response_model=Accepted, openapi_extra=_MULTIPART_DOC,
             summary="Ingest one item: a multipart file, or JSON with text or url")
async def create_asset(request: Request, app: App, who: Who) -> Accepted:
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        form = await request.form(max_files=1)
        upload = file_part(form)
        data = await read_upload(upload, app.settings.max_upload_bytes)
        req = IngestRequest(
            filename=upload.filename, title=_str(form.get("title")),
            external_id=_str(form.get("external_id")), metadata=_metadata(form.get("metadata")),
            callback_url=_str(form.get("callback_url")),
        )
        return _accepted(await run_in_threadpool(app.ingest.ingest_bytes, who, data, req))
    if ctype.startswith("application/json") or not ctype:
        item = AssetIn.model_validate(await json_body(request))
        return _accepted(await run_in_threadpool(_ingest_json, app, who, item))
    raise UnsupportedMedia(f"send multipart/form-data or application/json, not {ctype!r}",
                           code="unsupported_content_type")


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


@router.post("/assets/batch", status_code=202, response_model=BatchOut,
             summary="Ingest many JSON items (text or url); each gets its own result")
async def create_batch(request: Request, app: App, who: Who) -> BatchOut:
    batch = BatchIn.model_validate(await json_body(request))
    if len(batch.items) > app.settings.max_batch_items:
        raise TooLarge(f"at most {app.settings.max_batch_items} items per batch",
                       code="batch_too_large")
    results: list[BatchItemResult] = []
    for index, item in enumerate(batch.items):
        try:
            accepted = _accepted(await run_in_threadpool(_ingest_json, app, who, item))
            results.append(BatchItemResult(index=index, accepted=accepted))
        except KenningError as exc:
            results.append(BatchItemResult(
                index=index, error={"code": exc.code, "message": exc.message,
                                    "status": exc.status}))
    ok = sum(r.accepted is not None for r in results)
    return BatchOut(accepted=ok, rejected=len(results) - ok, results=results)


@router.get("/assets/{asset_id}", response_model=AssetView,
            summary="Status, metadata, features, stage provenance and webhook deliveries")
def get_asset(asset_id: str, app: App, who: Who) -> AssetView:
    return app.assets.get(who, asset_id)


@router.get("/assets/{asset_id}/segments", response_model=list[SegmentView],
            summary="Chunks, OCR blocks (later: shots, utterances) of an asset")
def get_segments(asset_id: str, app: App, who: Who, kind: str | None = None) -> (
    list[SegmentView]
):
    return app.assets.segments(who, asset_id, kind)


@router.get("/assets/{asset_id}/thumbnail", summary="JPEG thumbnail of an image asset",
            response_class=Response)
def get_thumbnail(asset_id: str, app: App, who: Who) -> Response:
    return Response(app.assets.thumbnail(who, asset_id), media_type="image/jpeg")


@router.delete("/assets/{asset_id}", status_code=204,
               summary="Delete an asset from the database, every index and blob storage")
def delete_asset(asset_id: str, app: App, who: Who) -> Response:
    app.assets.delete(who, asset_id)
    return Response(status_code=204)


@router.get("/jobs/{job_id}", response_model=JobView, tags=["jobs"],
            summary="A job and the state of each of its stages")
def get_job(job_id: str, app: App, who: Who) -> JobView:
    return app.assets.job(who, job_id)
