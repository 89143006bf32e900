"""The isolated child: killed at its wall clock, stopped at its memory ceiling, a crash
answered as an error; the parent process never harmed."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import replace

import pytest

from kenning.errors import Backpressure
from kenning.media.isolate import (
    Isolation,
    MediaDecodeError,
    MediaTooLarge,
    child_slots,
    run_isolated,
)

T = "tests.unit.media.isolate_targets:"
LIMITS = Isolation(timeout_s=20.0, memory_bytes=512 * 1024 * 1024)


def test_the_answer_comes_from_another_process() -> None:
    got = run_isolated(T + "echo", {"a": 1}, b"x" * 100_000, LIMITS)
    assert got["request"] == {"a": 1}
    assert got["size"] == 100_000
    assert got["pid"] != os.getpid()


def test_an_endless_task_is_killed_at_the_time_limit() -> None:
    started = time.monotonic()
    with pytest.raises(MediaDecodeError) as err:
        run_isolated(T + "spin", {}, b"", replace(LIMITS, timeout_s=0.5))
    assert err.value.code == "decode_timeout"
    assert err.value.status == 422
    assert str(err.value).startswith("decode_timeout: ")
    assert time.monotonic() - started < 15  # killed, not waited for
    # The parent goes on: the next child works.
    assert run_isolated(T + "echo", {}, b"ok", LIMITS)["size"] == 2


def test_unbounded_allocation_stops_at_the_memory_ceiling() -> None:
    with pytest.raises(MediaTooLarge) as err:
        run_isolated(T + "hog", {}, b"", LIMITS)
    assert (err.value.code, err.value.status) == ("decode_memory", 413)
    assert run_isolated(T + "echo", {}, b"ok", LIMITS)["size"] == 2


def test_a_crashing_decoder_is_an_error_not_a_crash() -> None:
    with pytest.raises(MediaDecodeError) as err:
        run_isolated(T + "crash", {}, b"", LIMITS)
    assert err.value.code == "decode_failed"
    assert "SIGSEGV" in err.value.message


def test_errors_keep_their_code() -> None:
    with pytest.raises(MediaDecodeError) as err:
        run_isolated(T + "refuse", {}, b"", LIMITS)
    assert (err.value.code, err.value.message) == ("truncated_media", "not a real file")


def test_no_free_decoder_is_backpressure_for_a_caller_that_cannot_wait() -> None:
    slots = child_slots(1)
    assert slots.acquire(timeout=5)
    try:
        with pytest.raises(Backpressure):
            run_isolated(T + "echo", {}, b"", LIMITS, processes=1, wait_s=0.05)
    finally:
        slots.release()
    done = threading.Event()

    def later() -> None:
        run_isolated(T + "echo", {}, b"", LIMITS, processes=1, wait_s=30)
        done.set()

    thread = threading.Thread(target=later)
    thread.start()
    thread.join(60)
    assert done.is_set()
