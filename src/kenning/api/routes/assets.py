"""/v1/assets and /v1/jobs: ingest, read, segments, delete. Thin: parse, call, return."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from pydantic import TypeAdapter
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile

from kenning.api.bodies import (
    StrictJSONRoute,
    file_part,
    form_text,
    invalid_json,
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
    BatchFileFields,
    BatchIn,
    BatchItemResult,
    BatchOut,
    ItemError,
    UploadFields,
)
from kenning.container import Kenning
from kenning.errors import BadInput, TooLarge, UnsupportedMedia
from kenning.ingest.metadata import validate_metadata
from kenning.ingest.service import IngestItem, IngestRequest, IngestResult, ItemOutcome
from kenning.principal import Principal
from kenning.services.assets import AssetView, JobView, SegmentView
from kenning.settings import Settings

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
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "array", "minItems": 1,
                                 "items": {"type": "string", "format": "binary"},
                                 "description": "One part per item, at most max_batch_items; "
                                 "all parts together within the upload size limit."},
                        "items": {"type": "string", "description": "Optional. A JSON array "
                                  "aligned by index with the file parts: one object per part "
                                  "with title, external_id, metadata, callback_url, filename "
                                  "(overrides the part's), by the rules of JSON ingest; "
                                  "unknown keys are refused."},
                    },
                }
            },
            "application/json": {"schema": {"$ref": "#/components/schemas/BatchIn"}},
        },
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


def _json_batch(raw: Any, settings: Settings) -> list[IngestItem]:
    """The whole batch checked before any item is stored: count, schema, metadata."""
    items = raw.get("items") if isinstance(raw, dict) else None
    if isinstance(items, list) and len(items) > settings.max_batch_items:
        raise _too_many(settings)
    batch = BatchIn.model_validate(raw)
    requests = _batch_requests(batch.items, settings, [None] * len(batch.items))
    return [IngestItem.text(item.text, req) if item.text is not None
            else IngestItem.url(item.url or "", req)
            for item, req in zip(batch.items, requests, strict=True)]


_FORM_ITEMS = TypeAdapter(list[BatchFileFields])


async def _form_batch(request: Request, settings: Settings) -> list[IngestItem]:
    """A multipart batch: ``file`` parts, and an optional ``items`` field (a JSON array
    aligned by index with them), checked as a whole before any item is stored."""
    form = await read_form(request, max_files=settings.max_batch_items)
    uploads: list[UploadFile] = []
    for name, value in form.multi_items():
        if name == "file" and isinstance(value, UploadFile):
            uploads.append(value)
        elif name == "file":
            raise BadInput("'file' parts must be files", code="missing_file")
        elif name == "items" and isinstance(value, UploadFile):
            raise BadInput("the items field must be a text field, not a file",
                           code="invalid_request")
        elif name != "items":
            raise BadInput(f"unknown form field {name[:100]!r}: a batch form has 'file' "
                           "parts and an optional 'items' field", code="invalid_request")
    if not uploads:
        raise BadInput("a batch form needs at least one 'file' part", code="missing_file")
    if len(uploads) > settings.max_batch_items:
        raise _too_many(settings)
    if len(form.getlist("items")) > 1:
        raise BadInput("give one 'items' field", code="invalid_request")
    entries = _form_entries(form_text(form, "items"), len(uploads))
    fields = _FORM_ITEMS.validate_python([
        {"filename": upload.filename or None, **entry}
        for upload, entry in zip(uploads, entries, strict=True)
    ])
    requests = _batch_requests(fields, settings, [f.filename or None for f in fields])
    return [IngestItem.upload(await read_upload(upload, settings.max_upload_bytes), req)
            for upload, req in zip(uploads, requests, strict=True)]


def _form_entries(raw: str | None, files: int) -> list[dict[str, Any]]:
    """The ``items`` field: strict JSON, an array of objects, one per file part."""
    if raw is None:
        return [{} for _ in range(files)]
    try:
        value = parse_json(raw.encode("utf-8"))
    except json.JSONDecodeError as exc:
        raise BadInput(f"the items field: {invalid_json(exc.msg, exc.pos).message}",
                       code="invalid_json") from exc
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise BadInput("the items field must be a JSON array of objects, one per file "
                       "part", code="invalid_request")
    if len(value) != files:
        raise BadInput(f"the items field has {len(value)} entries for {files} file parts; "
                       "give one per file part, in the same order", code="invalid_request")
    return value


def _batch_requests(fields: Sequence[AssetFields], settings: Settings,
                    filenames: Sequence[str | None]) -> list[IngestRequest]:
    """Each item's request, its metadata checked; a flaw names the item's index."""
    requests = []
    for index, (item, filename) in enumerate(zip(fields, filenames, strict=True)):
        try:
            requests.append(_ingest_request(item, settings, filename))
        except (BadInput, TooLarge) as exc:
            raise type(exc)(f"items[{index}]: {exc.message}", code=exc.code,
                            **{**exc.details, "index": index}) from exc
    return requests


def _too_many(settings: Settings) -> TooLarge:
    return TooLarge(f"at most {settings.max_batch_items} items per batch",
                    code="batch_too_large", limit=settings.max_batch_items)


def _batch_out(outcomes: Sequence[ItemOutcome]) -> BatchOut:
    results = [
        BatchItemResult(index=index, accepted=_accepted(outcome))
        if isinstance(outcome, IngestResult) else
        BatchItemResult(index=index, error=ItemError(
            code=outcome.code, message=outcome.message, status=outcome.status))
        for index, outcome in enumerate(outcomes)
    ]
    ok = sum(r.accepted is not None for r in results)
    return BatchOut(accepted=ok, rejected=len(results) - ok, results=results)


@router.post("/assets/batch", status_code=202, response_model=BatchOut,
             openapi_extra=_BATCH_DOC, responses=error_responses(401, 413, 415, 422, 429),
             summary="Ingest many items: multipart file parts, or JSON text and url items")
async def create_batch(request: Request, app: App, who: Who) -> BatchOut:
    """Check the batch as a whole (a flaw: 4xx, nothing stored), then ingest its items
    together (one transaction); each item gets its own result or error, in input order.
    Backpressure admits or refuses the batch as a whole (429)."""
    kind = media_type(request.headers)
    if is_multipart(kind):
        items = await _form_batch(request, app.settings)
    elif is_json(kind):
        items = _json_batch(await json_body(request), app.settings)
    else:
        raise UnsupportedMedia(f"send multipart/form-data or application/json, not {kind!r}",
                               code="unsupported_content_type")
    return _batch_out(await run_in_threadpool(app.ingest.ingest_many, who, items))


@router.get("/assets/{asset_id}", response_model=AssetView,
            responses=error_responses(401, 404, 422),
            summary="Status, metadata, features, stage provenance and webhook deliveries")
def get_asset(asset_id: str, app: App, who: Who) -> AssetView:
    return app.assets.get(who, asset_id)


@router.get("/assets/{asset_id}/segments", response_model=list[SegmentView],
            responses=error_responses(401, 404, 422),
            summary="Chunks, OCR blocks, shots (later: utterances) of an asset")
def get_segments(asset_id: str, app: App, who: Who, kind: str | None = None) -> (
    list[SegmentView]
):
    return app.assets.segments(who, asset_id, kind)


@router.get("/assets/{asset_id}/thumbnail", summary="JPEG thumbnail of an image or video asset",
            response_class=Response,
            responses={200: {"content": {"image/jpeg": {
                "schema": {"type": "string", "format": "binary"}}},
                "description": "The thumbnail."}, **error_responses(401, 404, 422)})
def get_thumbnail(asset_id: str, app: App, who: Who) -> Response:
    return Response(app.assets.thumbnail(who, asset_id), media_type="image/jpeg")


@router.get("/assets/{asset_id}/keyframes/{n}", summary="JPEG keyframe n of a video asset",
            response_class=Response,
            responses={200: {"content": {"image/jpeg": {
                "schema": {"type": "string", "format": "binary"}}},
                "description": "The keyframe (numbers and times: the shot segments' "
                "data.keyframes)."}, **error_responses(401, 404, 422)})
def get_keyframe(asset_id: str, n: Annotated[int, Path(ge=0, le=1_000_000)], app: App,
                 who: Who) -> Response:
    return Response(app.assets.keyframe(who, asset_id, n), media_type="image/jpeg")


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
