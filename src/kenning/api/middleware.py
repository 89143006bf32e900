"""Pure ASGI middleware at the door: request ids and latency, URL checks, body limits.

Body limits are enforced on the byte stream itself, so they hold with or without a
Content-Length header (chunked transfer encoding): the wrapped ``receive`` counts bytes
and, once the limit is passed, refuses to read further; the client gets a 413 whatever
the route was doing with the body. Multipart bodies may be as large as a file
(``max_upload_bytes``) plus framing; every other body is read as JSON and has its own,
smaller bound (``max_json_bytes``). A body declared larger than anything the server
accepts is refused before a byte of it is read (``file_too_large``).
"""

from __future__ import annotations

import re
import time
import uuid

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kenning.api.bodies import is_multipart, media_type
from kenning.api.errors import error_response
from kenning.observability.logging import log_context
from kenning.observability.metrics import REQUEST_LATENCY
from kenning.settings import Settings

MULTIPART_SLACK = 64 * 1024
"""Multipart framing and small text fields around the file."""

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class Observe:
    """A request id in logs and in ``X-Request-ID``; latency by route template."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        offered = Headers(scope=scope).get("x-request-id", "")
        request_id = offered if _REQUEST_ID.fullmatch(offered) else uuid.uuid4().hex
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message).append("X-Request-ID", request_id)
            await send(message)

        with log_context(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                template = getattr(scope.get("route"), "path", "unmatched")
                REQUEST_LATENCY.labels(template, scope["method"], str(status)).observe(
                    time.perf_counter() - started
                )


class UrlGuard:
    """No U+0000 reaches a query: a path holding one names nothing (404), a /v1 query
    string holding one is bad input (422). PostgreSQL refuses U+0000 in text."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = None
            if "\x00" in scope["path"]:
                refusal = error_response(404, "not_found", "no such resource")
            elif scope["path"].startswith("/v1/") and (
                b"%00" in scope["query_string"] or b"\x00" in scope["query_string"]
            ):
                refusal = error_response(422, "invalid_request",
                                         "query parameters must not contain U+0000")
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BodyTooLarge(Exception):
    """Raised into the app by the wrapped ``receive`` once a body passed its limit."""


class BodyLimit:
    """Counts request body bytes as they stream in; past the limit, a 413 and no more reads.

    Limits are read from ``settings`` on every request.
    """

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    def limits(self, headers: Headers) -> tuple[int, int, str]:
        """(ceiling, limit, code): nothing past ``ceiling`` is ever read; this body's
        ``limit`` and the code that names it."""
        ceiling = self.settings.max_upload_bytes + MULTIPART_SLACK
        if is_multipart(media_type(headers)):
            return ceiling, ceiling, "file_too_large"
        return ceiling, min(self.settings.max_json_bytes, ceiling), "body_too_large"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        ceiling, limit, code = self.limits(headers)
        declared = headers.get("content-length", "")
        received = 0
        refusal: JSONResponse | None = None
        started = False

        def refuse(size: str, bound: int, bound_code: str) -> BodyTooLarge:
            nonlocal refusal
            refusal = error_response(413, bound_code,
                                     f"request body of {size} exceeds the {bound} byte limit",
                                     {"limit": bound})
            return BodyTooLarge(bound_code)

        async def limited_receive() -> Message:
            nonlocal received
            if refusal is not None:
                raise BodyTooLarge("the body was refused")
            if received == 0 and declared.isdigit():
                if int(declared) > ceiling:
                    raise refuse(f"{declared} bytes", ceiling - MULTIPART_SLACK,
                                 "file_too_large")
                if int(declared) > limit:
                    raise refuse(f"{declared} bytes", limit, code)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise refuse(f"more than {limit} bytes", limit, code)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refusal is not None and not started:
                return  # the app's answer to a body it could not read; ours follows
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if refusal is None or started:
                raise
        if refusal is not None and not started:
            await refusal(scope, receive, send)


def install_middleware(app: FastAPI, settings: Settings) -> None:
    # Added innermost first: Observe sees every answer, the guards' refusals included.
    app.add_middleware(BodyLimit, settings=settings)
    app.add_middleware(UrlGuard)
    app.add_middleware(Observe)
