"""Errors the API maps by class: a metadata store that does not answer is 503 with
Retry-After (come back), not a 500."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from kenning.api.errors import DATABASE_RETRY_AFTER_S, ErrorResponse
from tests.unit.api.conftest import Door


def test_a_database_that_does_not_answer_is_503_with_retry_after(
    door: Door, monkeypatch: pytest.MonkeyPatch
) -> None:
    @contextmanager
    def down(*_: Any, **__: Any) -> Any:
        raise OperationalError("SELECT 1", {}, Exception(
            "server closed the connection unexpectedly"))
        yield  # pragma: no cover

    with monkeypatch.context() as patch:
        patch.setattr(door.kenning.stores.db, "session", down)
        patch.setattr(door.kenning.stores.db, "reading", down)  # the Core reads too
        for method, path in (("GET", "/v1/assets/0123456789abcdef0123456789abcdef"),
                             ("POST", "/v1/search")):
            r = door.client.request(method, path, headers=door.json_headers,
                                    json={"query": "anything"} if method == "POST" else None)
            assert r.status_code == 503, r.text
            assert r.headers["Retry-After"] == str(DATABASE_RETRY_AFTER_S)
            assert ErrorResponse.model_validate(r.json()).error.code == "store_unavailable"
    assert door.client.get("/v1/assets/0123456789abcdef0123456789abcdef",
                           headers=door.headers).status_code == 404  # back again
