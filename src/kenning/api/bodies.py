"""Reading request bodies the same way on every route: strict JSON, checked forms, capped files.

Strict JSON is the one JSON dialect the API speaks, for bodies it parses itself
(:func:`json_body`) and for bodies FastAPI parses (:class:`StrictJSONRoute`): RFC 8259
without NaN/Infinity, without lone surrogates, nested at most 64 deep
(:data:`MAX_JSON_DEPTH`), and with no U+0000 in any string (PostgreSQL refuses it in
text). Form fields follow the same string rule. The byte size of every body is bounded
while it streams in (:mod:`kenning.api.middleware`), before any of this runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.datastructures import FormData, Headers, UploadFile
from starlette.exceptions import HTTPException

from kenning.errors import BadInput, EmptyContent, TooLarge, UnsupportedMedia
from kenning.ingest.metadata import check_string

_NUL_ESCAPE = b"\\u0000"


# --- content types -----------------------------------------------------------------------
def media_type(headers: Headers) -> str:
    """The request's media type, lower case, without parameters ('' when absent)."""
    return headers.get("content-type", "").split(";", 1)[0].strip().lower()


def is_multipart(kind: str) -> bool:
    return kind == "multipart/form-data"


def is_json(kind: str) -> bool:
    """JSON, or no content type at all (read as JSON, as the API always has)."""
    return not kind or kind == "application/json" or (
        kind.startswith("application/") and kind.endswith("+json")
    )


# --- strict JSON -------------------------------------------------------------------------
MAX_JSON_DEPTH = 64
"""Deepest nesting of arrays and objects a body may have. orjson stops at 1024, which is
past Python's recursion limit for validators and reprs that walk a value."""


def parse_json(raw: bytes) -> Any:
    """``raw`` as strict JSON; :class:`json.JSONDecodeError` (orjson's subclass) if not.

    Beyond orjson's rules (no NaN/Infinity, no lone surrogates): nesting at most
    :data:`MAX_JSON_DEPTH` levels, and no U+0000 in any string.
    """
    value = orjson.loads(raw)
    nul = _NUL_ESCAPE in raw
    # Fewer brackets than the bound cannot nest past it: most bodies skip the walk.
    if nul or raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH:
        _walk(value, raw, nul=nul)
    return value


def _walk(value: Any, raw: bytes, *, nul: bool) -> None:
    """One iterative pass: refuse deep nesting, and U+0000 when its escape occurs at all
    (a raw control byte is invalid JSON, so only the escape can carry one)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise json.JSONDecodeError(
                    f"nesting deeper than {MAX_JSON_DEPTH} levels",
                    raw.decode("utf-8", "replace"), 0)
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children)
            strings: list[Any] = list(node) if isinstance(node, dict) else []
        else:
            strings = [node]
        if nul and any(isinstance(s, str) and "\x00" in s for s in strings):
            raise json.JSONDecodeError("strings must not contain U+0000",
                                       raw.decode("utf-8", "replace"), raw.find(_NUL_ESCAPE))


async def json_body(request: Request) -> Any:
    """The parsed strict-JSON body: ``empty_content``, ``invalid_json`` (422) or 415."""
    kind = media_type(request.headers)
    if not is_json(kind):
        raise UnsupportedMedia(f"send application/json, not {kind!r}",
                               code="unsupported_content_type")
    raw = await request.body()
    if not raw.strip():
        raise EmptyContent("the request body is empty")
    try:
        return parse_json(raw)
    except json.JSONDecodeError as exc:
        raise invalid_json(exc.msg, exc.pos) from exc


STRICT_JSON = ("the API reads strict JSON: no NaN or Infinity, no lone surrogates, "
               "no U+0000, nesting at most 64 deep")


def invalid_json(reason: str, pos: object) -> BadInput:
    return BadInput(f"invalid JSON at byte {pos}: {reason} ({STRICT_JSON})", code="invalid_json")


class StrictJSONRequest(Request):
    """A request whose ``.json()`` is the strict parser."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = parse_json(await self.body())
        return self._json


class StrictJSONRoute(APIRoute):
    """Routes whose JSON bodies FastAPI parses use the strict parser too.

    FastAPI turns the parser's :class:`json.JSONDecodeError` into a validation error,
    which :mod:`kenning.api.errors` answers as 422 ``invalid_json``.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict_handler(request: Request) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict_handler


# --- forms and files ---------------------------------------------------------------------
async def read_form(
    request: Request, *, max_part_bytes: int = 1024 * 1024, max_files: int = 1
) -> FormData:
    """The multipart form (``max_files`` files at most) with every text field and filename
    checked.

    Framing errors are ``invalid_multipart`` (422); a text field past ``max_part_bytes``
    is ``field_too_large`` (413); more than ``max_files`` files, where more than one is
    allowed (a batch), is ``batch_too_large`` (413). Strings follow the strict-JSON rule
    (no U+0000).
    """
    try:
        form = await request.form(max_files=max_files, max_fields=50,
                                  max_part_size=max_part_bytes)
    except HTTPException as exc:  # Starlette's answer to a MultiPartException
        if "maximum size" in str(exc.detail):
            raise TooLarge(f"a form field exceeds {max_part_bytes} bytes",
                           code="field_too_large") from exc
        if max_files > 1 and "Too many files" in str(exc.detail):
            raise TooLarge(f"at most {max_files} files per request", code="batch_too_large",
                           limit=max_files) from exc
        raise BadInput(f"malformed multipart body: {exc.detail}",
                       code="invalid_multipart") from exc
    for name, value in form.multi_items():
        check_string(name, code="invalid_request", where="form field names")
        text = (value.filename or "") if isinstance(value, UploadFile) else value
        check_string(text, code="invalid_request", where=f"form field {name!r}")
    return form


def form_text(form: FormData, name: str) -> str | None:
    """A text field of the form; absent or empty is ``None``."""
    value = form.get(name)
    return value if isinstance(value, str) and value else None


def file_part(form: FormData) -> UploadFile:
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise BadInput("multipart body needs a 'file' part", code="missing_file")
    return upload


async def read_upload(upload: UploadFile, limit: int) -> bytes:
    """The file's bytes; refuses (413) past ``limit`` without reading further."""
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(f"file exceeds the {limit} byte limit", code="file_too_large")
    return data
