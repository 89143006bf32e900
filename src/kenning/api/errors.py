"""Every error leaves the API as ``{"error": {"code", "message", "details"?}}``.

This module is the only place that builds error bodies: the exception handlers below,
the middleware's early refusals (:func:`error_response`) and the OpenAPI description
of each route's error answers (:func:`error_responses`).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.exceptions import HTTPException

from kenning.api.bodies import invalid_json
from kenning.errors import Backpressure, KenningError, Unavailable

log = logging.getLogger(__name__)


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable code (see the README).")
    message: str = Field(description="What went wrong, for humans.")
    details: dict[str, Any] | None = Field(
        None, description="Structured context, e.g. limits or schema errors."
    )


class ErrorResponse(BaseModel):
    """The body of every 4xx/5xx answer."""

    error: ErrorDetail


ERROR_SCHEMA_REF = "#/components/schemas/ErrorResponse"
"""Where the OpenAPI document defines :class:`ErrorResponse` (see kenning.api.openapi)."""

_DESCRIPTIONS = {
    401: "Missing or unknown API key (`unauthorized`).",
    404: "No such asset or job in your tenant (`not_found`).",
    413: "A size limit was exceeded (body, file, text, image, metadata, batch).",
    415: "The content type or the sniffed media type is not supported.",
    422: "The input is malformed or invalid (strict JSON, schema, values).",
    429: "Too much queued work (`backpressure`); retry after `Retry-After` seconds.",
    503: "A store does not answer (`store_unavailable`: the database restarting, the blob "
         "store unreachable); nothing was half written; retry after `Retry-After` seconds.",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error statuses, all with the error body."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        out[status] = {
            "description": _DESCRIPTIONS[status],
            "content": {"application/json": {"schema": {"$ref": ERROR_SCHEMA_REF}}},
        }
        if status in (429, 503):
            out[status]["headers"] = {
                "Retry-After": {"schema": {"type": "integer"},
                                "description": "Seconds to wait before retrying."}
            }
    return out


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> (
    dict[str, Any]
):
    body: dict[str, Any] = {"code": code, "message": message}
    if details:
        body["details"] = details
    return {"error": body}


def error_response(status: int, code: str, message: str,
                   details: dict[str, Any] | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, message, details), status)


def _validation_response(exc: RequestValidationError | ValidationError) -> JSONResponse:
    errors = exc.errors()
    for e in errors:
        if e.get("type") == "json_invalid":  # FastAPI's wrapper of the strict parser's error
            loc = e.get("loc", ())
            bad = invalid_json(str((e.get("ctx") or {}).get("error", "malformed")),
                               loc[-1] if loc else "?")
            return error_response(bad.status, bad.code, bad.message)
    return error_response(
        422, "invalid_request", "the request does not match the schema",
        {"errors": [{"loc": list(e.get("loc", ())),
                     "msg": e.get("msg", "")} for e in errors]},
    )


DATABASE_RETRY_AFTER_S = 5

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized",
               403: "forbidden", 413: "payload_too_large"}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(KenningError)
    async def _kenning(_: Request, exc: KenningError) -> JSONResponse:
        headers = {}
        if isinstance(exc, Backpressure | Unavailable):
            headers["Retry-After"] = str(exc.retry_after)
        if exc.status >= 500:
            log.error("server error", extra={"code": exc.code, "error": exc.message})
        return JSONResponse(error_body(exc.code, exc.message, exc.details), exc.status,
                            headers=headers)

    @app.exception_handler(RequestValidationError)
    @app.exception_handler(ValidationError)
    async def _validation(_: Request, exc: RequestValidationError | ValidationError) -> (
        JSONResponse
    ):
        return _validation_response(exc)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        # A 400 from the framework (a body it could not parse) is bad input like any other.
        status = 422 if exc.status_code == 400 else exc.status_code
        code = "invalid_request" if exc.status_code == 400 else _HTTP_CODES.get(
            exc.status_code, "http_error")
        return JSONResponse(error_body(code, str(exc.detail)), status,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    async def _database(_: Request, exc: Exception) -> JSONResponse:
        # The metadata store does not answer (restarting, unreachable, locked past its
        # busy timeout): nothing was half written (transactions roll back); come back.
        log.error("database unavailable", extra={"error": f"{type(exc).__name__}"})
        return JSONResponse(
            error_body("store_unavailable", "the database is unavailable; retry shortly"),
            503, headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)})

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse(error_body("internal_error", "unexpected server error"), 500)
