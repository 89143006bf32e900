"""The OpenAPI document: every referenced schema defined, every error answer described.

Some routes parse their bodies themselves (multipart or JSON on one path, a batch
counted before it is validated), so FastAPI does not see their models; their schemas
are added to ``components`` here. The door's own refusals are documented where they
can happen: 413 on every route that reads a body (the body limit), 422 on every /v1
route (no U+0000 in a query string), 503 on every /v1 route (a store that does not
answer, with Retry-After).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from kenning.api.errors import ErrorResponse, error_responses

_REF = "#/components/schemas/{model}"


def install_openapi(app: FastAPI, body_models: Sequence[type[BaseModel]]) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version,
                                 description=app.description, routes=app.routes)
            _document_the_door(schema)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            models: list[type[BaseModel]] = [ErrorResponse, *body_models]
            _, defs = models_json_schema([(m, "validation") for m in models],
                                         ref_template=_REF)
            for name, definition in defs.get("$defs", {}).items():
                components.setdefault(name, definition)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _document_the_door(schema: dict[str, Any]) -> None:
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            # Every /v1 route reads the metadata store (its key, at least): 503 when the
            # store does not answer.
            extra = [422, 503] if path.startswith("/v1/") else []
            if method in ("post", "put", "patch"):
                extra.append(413)
            responses = operation.setdefault("responses", {})
            for status, spec in error_responses(*extra).items():
                responses.setdefault(str(status), spec)
