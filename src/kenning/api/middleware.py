"""Request ids in logs and headers; latency by route template; early size refusal."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from kenning.api.errors import error_body
from kenning.observability.logging import log_context
from kenning.observability.metrics import REQUEST_LATENCY

# Multipart framing around a file is small; anything much larger than the file limit
# is refused before a byte of the body is read.
_MULTIPART_SLACK = 64 * 1024


def install_middleware(app: FastAPI, max_upload_bytes: int) -> None:
    @app.middleware("http")
    async def observe(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> (
        Response
    ):
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        started = time.perf_counter()
        with log_context(request_id=request_id):
            length = request.headers.get("content-length")
            if length and length.isdigit() and int(length) > max_upload_bytes + _MULTIPART_SLACK:
                response: Response = JSONResponse(
                    error_body("file_too_large",
                               f"body of {length} bytes exceeds the {max_upload_bytes} limit"),
                    413,
                )
            else:
                response = await call_next(request)
        route = request.scope.get("route")
        template = getattr(route, "path", "unmatched")
        REQUEST_LATENCY.labels(template, request.method, str(response.status_code)).observe(
            time.perf_counter() - started
        )
        response.headers["X-Request-ID"] = request_id
        return response
