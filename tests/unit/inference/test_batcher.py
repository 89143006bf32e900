"""EmbeddingBatcher: merges callers into few model calls, each caller gets its own rows.

Batches here close on their caps (``max_items`` / ``max_chars``) rather than on the
wait timer, so which requests share a model call is deterministic.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from kenning.inference.batcher import EmbeddingBatcher
from kenning.inference.embedding import EmbeddingBackend

LONG_WAIT_MS = 10_000.0
"""Long enough that only a cap can close a batch in time."""


class CountingBackend:
    """Deterministic embeddings (a seeded projection of each text) with a call log."""

    model_id = "counting-test"
    dim = 8

    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[list[str]] = []
        self.fail_on = fail_on
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.gate.set()
        self._lock = threading.Lock()

    @classmethod
    def vector(cls, text: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
        v = np.random.default_rng(seed).standard_normal(cls.dim).astype(np.float32)
        return v / np.linalg.norm(v)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            self.calls.append(list(texts))
        self.entered.set()
        self.gate.wait(timeout=10)
        if self.fail_on is not None and any(self.fail_on in t for t in texts):
            raise ValueError(f"model refused {self.fail_on!r}")
        return np.vstack([self.vector(t) for t in texts])


def expected(texts: Sequence[str]) -> np.ndarray:
    return np.vstack([CountingBackend.vector(t) for t in texts])


def in_parallel(fn: Callable[[int], object], n: int) -> list[object]:
    barrier = threading.Barrier(n)

    def call(i: int) -> object:
        barrier.wait()
        try:
            return fn(i)
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(call, range(n)))


def test_backend_meets_the_protocol() -> None:
    assert isinstance(CountingBackend(), EmbeddingBackend)


def test_concurrent_callers_share_one_model_call_and_get_their_own_rows() -> None:
    backend = CountingBackend()
    batcher = EmbeddingBatcher(backend, max_items=16, max_chars=100_000, wait_ms=LONG_WAIT_MS)
    try:
        texts = {i: [f"caller {i} text a", f"caller {i} text b"] for i in range(8)}
        results = in_parallel(lambda i: batcher.embed(texts[i]), 8)
    finally:
        batcher.close()
    assert len(backend.calls) == 1  # 8 callers x 2 texts = 16 = max_items: one call
    assert sorted(backend.calls[0]) == sorted(t for ts in texts.values() for t in ts)
    for i, rows in enumerate(results):
        assert isinstance(rows, np.ndarray) and rows.shape == (2, 8)
        np.testing.assert_array_equal(rows, expected(texts[i]))
    assert batcher.model_id == "counting-test" and batcher.dim == 8


def test_without_a_wait_a_lone_caller_runs_the_model_itself_and_a_busy_model_batches(
) -> None:
    """wait_ms 0: an idle model runs a lone request on the caller's thread (no hand-over);
    requests that arrive while it is busy queue and share the next call."""
    threads: list[str] = []

    class Recording(CountingBackend):
        def embed(self, texts: Sequence[str]) -> np.ndarray:
            threads.append(threading.current_thread().name)
            return super().embed(texts)

    backend = Recording()
    batcher = EmbeddingBatcher(backend, max_items=16, max_chars=100_000, wait_ms=0)
    try:
        np.testing.assert_array_equal(batcher.embed(["alone"]), expected(["alone"]))
        assert threads == [threading.current_thread().name]
        backend.gate.clear()  # the next call holds the model until the gate opens
        backend.entered.clear()
        with ThreadPoolExecutor(4) as pool:
            first = pool.submit(batcher.embed, ["first"])
            assert backend.entered.wait(10)
            rest = [pool.submit(batcher.embed, [f"queued {i}"]) for i in range(3)]
            while batcher._queue.unfinished_tasks < 3:  # all three queued behind the model
                threading.Event().wait(0.01)
            backend.gate.set()
            np.testing.assert_array_equal(first.result(10), expected(["first"]))
            for i, future in enumerate(rest):
                np.testing.assert_array_equal(future.result(10), expected([f"queued {i}"]))
    finally:
        batcher.close()
    assert backend.calls[:2] == [["alone"], ["first"]]
    assert sorted(backend.calls[2]) == [f"queued {i}" for i in range(3)]  # one shared call
    assert len(backend.calls) == 3


def test_max_items_caps_every_model_call() -> None:
    backend = CountingBackend()
    batcher = EmbeddingBatcher(backend, max_items=4, max_chars=100_000, wait_ms=LONG_WAIT_MS)
    try:
        results = in_parallel(lambda i: batcher.embed([f"a{i}", f"b{i}"]), 6)
    finally:
        batcher.close()
    assert [len(c) for c in backend.calls] == [4, 4, 4]  # 12 texts, never more than 4
    for i, rows in enumerate(results):
        np.testing.assert_array_equal(rows, expected([f"a{i}", f"b{i}"]))


def test_max_chars_caps_every_model_call() -> None:
    backend = CountingBackend()
    batcher = EmbeddingBatcher(backend, max_items=100, max_chars=30, wait_ms=LONG_WAIT_MS)
    texts = [f"ten chars{i}" for i in range(6)]  # 10 characters each
    assert {len(t) for t in texts} == {10}
    try:
        results = in_parallel(lambda i: batcher.embed([texts[i]]), 6)
    finally:
        batcher.close()
    assert [sum(map(len, c)) for c in backend.calls] == [30, 30]
    for i, rows in enumerate(results):
        np.testing.assert_array_equal(rows, expected([texts[i]]))


def test_a_request_is_never_split_across_calls() -> None:
    backend = CountingBackend()
    batcher = EmbeddingBatcher(backend, max_items=4, max_chars=100_000, wait_ms=50)
    try:
        results = in_parallel(lambda i: batcher.embed([f"x{i}", f"y{i}", f"z{i}"]), 4)
    finally:
        batcher.close()
    # 3 + 3 > 4: each request runs alone, whole.
    assert sorted(sorted(c) for c in backend.calls) == [
        [f"x{i}", f"y{i}", f"z{i}"] for i in range(4)
    ]
    for i, rows in enumerate(results):
        np.testing.assert_array_equal(rows, expected([f"x{i}", f"y{i}", f"z{i}"]))


def test_a_backend_error_reaches_every_caller_in_the_batch() -> None:
    backend = CountingBackend(fail_on="boom")
    batcher = EmbeddingBatcher(backend, max_items=4, max_chars=100_000, wait_ms=LONG_WAIT_MS)
    try:
        results = in_parallel(lambda i: batcher.embed(["boom" if i == 0 else f"fine {i}"]), 4)
        assert len(backend.calls) == 1
        for outcome in results:
            assert isinstance(outcome, ValueError)
            assert str(outcome) == "model refused 'boom'"
        # The batcher survives the failure and serves the next caller.
        np.testing.assert_array_equal(batcher.embed(["after"] * 4), expected(["after"] * 4))
    finally:
        batcher.close()


def test_a_caller_that_timed_out_is_dropped_and_others_are_served() -> None:
    backend = CountingBackend()
    backend.gate.clear()  # the first model call blocks until released
    batcher = EmbeddingBatcher(backend, max_items=64, max_chars=100_000, wait_ms=1)
    try:
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(batcher.embed, ["first"])
            assert backend.entered.wait(5)  # "first" is inside the model now
            with pytest.raises(TimeoutError):
                batcher.embed(["gave up"], timeout=0.05)  # queued behind it, gives up
            last = pool.submit(batcher.embed, ["last"])
            backend.gate.set()
            np.testing.assert_array_equal(first.result(5), expected(["first"]))
            np.testing.assert_array_equal(last.result(5), expected(["last"]))
    finally:
        batcher.close()
    # The abandoned texts never reached the model.
    assert [t for call in backend.calls for t in call] == ["first", "last"]


def test_empty_input_and_closed_batcher() -> None:
    backend = CountingBackend()
    batcher = EmbeddingBatcher(backend)
    empty = batcher.embed([])
    assert empty.shape == (0, 8) and empty.dtype == np.float32
    batcher.close()
    assert backend.calls == []
    with pytest.raises(RuntimeError, match="closed"):
        batcher.embed(["too late"])


def test_a_backend_returning_the_wrong_row_count_fails_loudly() -> None:
    class ShortBackend(CountingBackend):
        def embed(self, texts: Sequence[str]) -> np.ndarray:
            return super().embed(texts)[:-1]

    batcher = EmbeddingBatcher(ShortBackend())
    try:
        with pytest.raises(RuntimeError, match="returned 1 rows for 2 texts"):
            batcher.embed(["one", "two"], timeout=5)
    finally:
        batcher.close()


def test_close_answers_every_accepted_request() -> None:
    backend = CountingBackend()
    backend.gate.clear()  # hold the model so requests pile up
    batcher = EmbeddingBatcher(backend, max_items=1)
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(batcher.embed, [f"text {i}"], 10) for i in range(4)]
        assert backend.entered.wait(5)
        for _ in range(500):  # the other three are queued behind the running one
            if batcher._queue.qsize() == 3:
                break
            threading.Event().wait(0.01)
        closer = threading.Thread(target=batcher.close)
        closer.start()
        backend.gate.set()
        closer.join(10)
        rows = [f.result(timeout=10) for f in futures]
    assert [r.shape for r in rows] == [(1, 8)] * 4
    assert sum(len(c) for c in backend.calls) == 4
