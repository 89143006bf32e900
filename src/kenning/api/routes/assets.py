"""/v1/assets and /v1/jobs: ingest, read, segments, delete. Thin: parse, call, return."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from kenning.api.bodies import (
    StrictJSONRoute,
    file_part,
    form_text,
    is_json,
    is_multipart,
    json_body,
    media_type,
    parse_json,
    read_form,
    read_upload,
)
from kenning.api.deps import App, Who
from kenning.api.errors import error_responses
from kenning.api.schemas import (
    MAX_EXTERNAL_ID_CHARS,
    MAX_TITLE_CHARS,
    MAX_URL_CHARS,
    Accepted,
    AssetFields,
    AssetIn,
    BatchIn,
    BatchItemResult,
    BatchOut,
    ItemError,
    UploadFields,
)
from kenning.container import Kenning
from kenning.errors import BadInput, KenningError, TooLarge, UnsupportedMedia
from kenning.ingest.metadata import validate_metadata
from kenning.ingest.service import IngestRequest, IngestResult
from kenning.principal import Principal
from kenning.services.assets import AssetView, JobView, SegmentView
from kenning.settings import Settings

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["assets"], route_class=StrictJSONRoute)

_MULTIPART_DOC: dict[str, Any] = {
    "requestBody": {
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "title": {"type": "string", "maxLength": MAX_TITLE_CHARS},
                        "external_id": {"type": "string", "maxLength": MAX_EXTERNAL_ID_CHARS},
                        "metadata": {"type": "string", "description": "A JSON object, "
                                     "with the same rules as in JSON ingest."},
                        "callback_url": {"type": "string", "maxLength": MAX_URL_CHARS},
                    },
                }
            },
            "application/json": {"schema": {"$ref": "#/components/schemas/AssetIn"}},
        },
        "required": True,
    }
}
_BATCH_DOC: dict[str, Any] = {
    "requestBody": {
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/BatchIn"}}},
        "required": True,
    }
}


def _accepted(result: IngestResult) -> Accepted:
    return Accepted(asset_id=result.asset_id, job_id=result.job_id, status=result.status,
                    duplicate_of=result.duplicate_of)


def _ingest_request(fields: AssetFields, settings: Settings,
                    filename: str | None = None) -> IngestRequest:
    return IngestRequest(filename=filename, title=fields.title, external_id=fields.external_id,
                         metadata=validate_metadata(fields.metadata, settings) or None,
                         callback_url=fields.callback_url)


def _form_metadata(form: FormData) -> Any:
    raw = form_text(form, "metadata")
    if raw is None:
        return None
    try:
        value = parse_json(raw.encode("utf-8"))
    except json.JSONDecodeError as exc:
        raise BadInput(f"metadata must be a JSON object (strict JSON): {exc.msg}",
                       code="invalid_metadata") from exc
    if not isinstance(value, dict):
        raise BadInput("metadata must be a JSON object", code="invalid_metadata")
    return value


def _ingest_json(app: Kenning, who: Principal, item: AssetIn, req: IngestRequest) -> (
    IngestResult
):
    if item.text is not None:
        return app.ingest.ingest_text(who, item.text, req)
    assert item.url is not None
    return app.ingest.ingest_url(who, item.url, req)


@router.post("/assets", status_code=202, response_model=Accepted, openapi_extra=_MULTIPART_DOC,
             responses=error_responses(401, 413, 415, 422, 429),
             summary="Ingest one item: a multipart file, or JSON with text or url")
async def create_asset(request: Request, app: App, who: Who) -> Accepted:
    kind = media_type(request.headers)
    if is_multipart(kind):
        form = await read_form(request)
        upload = file_part(form)
        fields = UploadFields.model_validate({
            "title": form_text(form, "title"), "external_id": form_text(form, "external_id"),
            "metadata": _form_metadata(form), "callback_url": form_text(form, "callback_url"),
            "filename": upload.filename or None,
        })
        req = _ingest_request(fields, app.settings, fields.filename)
        data = await read_upload(upload, app.settings.max_upload_bytes)
        return _accepted(await run_in_threadpool(app.ingest.ingest_bytes, who, data, req))
    if is_json(kind):
        item = AssetIn.model_validate(await json_body(request))
        req = _ingest_request(item, app.settings)
        return _accepted(await run_in_threadpool(_ingest_json, app, who, item, req))
    raise UnsupportedMedia(f"send multipart/form-data or application/json, not {kind!r}",
                           code="unsupported_content_type")


def _batch(raw: Any, settings: Settings) -> list[tuple[AssetIn, IngestRequest]]:
    """The whole batch checked before any item is stored: count, schema, metadata."""
    items = raw.get("items") if isinstance(raw, dict) else None
    if isinstance(items, list) and len(items) > settings.max_batch_items:
        raise TooLarge(f"at most {settings.max_batch_items} items per batch",
                       code="batch_too_large", limit=settings.max_batch_items)
    batch = BatchIn.model_validate(raw)
    checked = []
    for index, item in enumerate(batch.items):
        try:
            checked.append((item, _ingest_request(item, settings)))
        except (BadInput, TooLarge) as exc:
            raise type(exc)(f"items[{index}]: {exc.message}", code=exc.code,
                            **{**exc.details, "index": index}) from exc
    return checked


@router.post("/assets/batch", status_code=202, response_model=BatchOut,
             openapi_extra=_BATCH_DOC, responses=error_responses(401, 413, 415, 422),
             summary="Ingest many JSON items (text or url); each gets its own result")
async def create_batch(request: Request, app: App, who: Who) -> BatchOut:
    checked = _batch(await json_body(request), app.settings)
    results: list[BatchItemResult] = []
    for index, (item, req) in enumerate(checked):
        try:
            accepted = _accepted(await run_in_threadpool(_ingest_json, app, who, item, req))
            results.append(BatchItemResult(index=index, accepted=accepted))
        except KenningError as exc:
            results.append(BatchItemResult(index=index, error=ItemError(
                code=exc.code, message=exc.message, status=exc.status)))
        except Exception:
            log.exception("batch item failed", extra={"index": index})
            results.append(BatchItemResult(index=index, error=ItemError(
                code="internal_error", message="unexpected server error", status=500)))
    ok = sum(r.accepted is not None for r in results)
    return BatchOut(accepted=ok, rejected=len(results) - ok, results=results)


@router.get("/assets/{asset_id}", response_model=AssetView,
            responses=error_responses(401, 404, 422),
            summary="Status, metadata, features, stage provenance and webhook deliveries")
def get_asset(asset_id: str, app: App, who: Who) -> AssetView:
    return app.assets.get(who, asset_id)


@router.get("/assets/{asset_id}/segments", response_model=list[SegmentView],
            responses=error_responses(401, 404, 422),
            summary="Chunks, OCR blocks (later: shots, utterances) of an asset")
def get_segments(asset_id: str, app: App, who: Who, kind: str | None = None) -> (
    list[SegmentView]
):
    return app.assets.segments(who, asset_id, kind)


@router.get("/assets/{asset_id}/thumbnail", summary="JPEG thumbnail of an image asset",
            response_class=Response,
            responses={200: {"content": {"image/jpeg": {
                "schema": {"type": "string", "format": "binary"}}},
                "description": "The thumbnail."}, **error_responses(401, 404, 422)})
def get_thumbnail(asset_id: str, app: App, who: Who) -> Response:
    return Response(app.assets.thumbnail(who, asset_id), media_type="image/jpeg")


@router.delete("/assets/{asset_id}", status_code=204, response_class=Response,
               responses=error_responses(401, 404, 422),
               summary="Delete an asset from the database, every index and blob storage")
def delete_asset(asset_id: str, app: App, who: Who) -> Response:
    app.assets.delete(who, asset_id)
    return Response(status_code=204)


@router.get("/jobs/{job_id}", response_model=JobView, tags=["jobs"],
            responses=error_responses(401, 404, 422),
            summary="A job and the state of each of its stages")
def get_job(job_id: str, app: App, who: Who) -> JobView:
    return app.assets.job(who, job_id)
