"""Reading request bodies the same way on every route: size-capped files, strict JSON."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from starlette.datastructures import FormData, UploadFile

from kenning.errors import BadInput, EmptyContent, TooLarge


async def read_upload(upload: UploadFile, limit: int) -> bytes:
    """The file's bytes; refuses (413) past ``limit`` without reading further."""
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(f"file exceeds the {limit} byte limit", code="file_too_large")
    return data


def file_part(form: FormData) -> UploadFile:
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise BadInput("multipart body needs a 'file' part", code="missing_file")
    return upload


async def json_body(request: Request) -> Any:
    """The parsed JSON body; an empty body is ``empty_content``, bad JSON ``invalid_json``."""
    raw = await request.body()
    if not raw.strip():
        raise EmptyContent("the request body is empty")
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BadInput(f"invalid JSON: {exc.msg}", code="invalid_json") from exc
