"""JSON log lines carry the ids bound by log_context, and only inside it."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from kenning.observability.logging import (
    JsonFormatter,
    configure_logging,
    current_context,
    log_context,
)


@pytest.fixture
def lines() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("kenning.test.logging")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)


def records(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_ids_from_nested_contexts_appear_and_disappear(
    lines: tuple[logging.Logger, io.StringIO],
) -> None:
    log, stream = lines
    log.info("before")
    with log_context(request_id="req-1"):
        log.info("in request")
        with log_context(job_id="job-9", asset_id="asset-3", stage=None):
            log.warning("in stage %s", "text.chunk")
            assert current_context() == {"request_id": "req-1", "job_id": "job-9",
                                         "asset_id": "asset-3"}
        log.info("back in request")
    log.info("after")

    before, request, stage, back, after = records(stream)
    assert "request_id" not in before and "job_id" not in before
    assert request["request_id"] == "req-1" and "job_id" not in request
    assert stage["msg"] == "in stage text.chunk" and stage["level"] == "warning"
    assert (stage["request_id"], stage["job_id"], stage["asset_id"]) == ("req-1", "job-9",
                                                                         "asset-3")
    assert "stage" not in stage  # None values are not bound
    assert back["request_id"] == "req-1" and "job_id" not in back
    assert "request_id" not in after
    assert stage["logger"] == "kenning.test.logging"
    assert stage["ts"].endswith("+00:00")


def test_inner_context_overrides_and_restores(lines: tuple[logging.Logger, io.StringIO]) -> None:
    log, stream = lines
    with log_context(job_id="outer"):
        with log_context(job_id="inner"):
            log.info("a")
        log.info("b")
    assert [r["job_id"] for r in records(stream)] == ["inner", "outer"]


def test_extras_and_exceptions_are_fields(lines: tuple[logging.Logger, io.StringIO]) -> None:
    log, stream = lines
    with log_context(job_id="job-1"):
        try:
            raise ValueError("bad bytes")
        except ValueError:
            log.exception("stage failed", extra={"attempt": 2, "final": False})
    [line] = records(stream)
    assert (line["attempt"], line["final"], line["job_id"]) == (2, False, "job-1")
    assert line["level"] == "error" and "ValueError: bad bytes" in line["exc"]


def test_concurrent_requests_keep_their_own_ids(
    lines: tuple[logging.Logger, io.StringIO],
) -> None:
    log, stream = lines

    async def handle(request_id: str) -> None:
        with log_context(request_id=request_id):
            for step in range(3):
                log.info("step", extra={"step": step, "expect": request_id})
                await asyncio.sleep(0)  # let the other request run in between

    async def main() -> None:
        await asyncio.gather(handle("req-a"), handle("req-b"))

    asyncio.run(main())
    lines_ = records(stream)
    assert len(lines_) == 6
    assert [r["request_id"] for r in lines_] == ["req-a", "req-b"] * 3  # interleaved
    assert all(r["request_id"] == r["expect"] for r in lines_)


def test_configure_logging_installs_one_json_handler() -> None:
    root = logging.getLogger()
    saved_level, saved = root.level, list(root.handlers)
    try:
        configure_logging("debug")
        configure_logging("warning")
        ours = [h for h in root.handlers if getattr(h, "_kenning", False)]
        assert len(ours) == 1 and isinstance(ours[0].formatter, JsonFormatter)
        assert root.level == logging.WARNING
        assert logging.getLogger("httpx").level == logging.WARNING
    finally:
        for handler in list(root.handlers):
            if handler not in saved:
                root.removeHandler(handler)
        root.setLevel(saved_level)
