"""Cross-request inference batching (the text-embeddings-inference pattern).

Worker threads submit texts and wait on a future; one owner thread drains the queue
into batches capped by item count and a character budget (a token-budget proxy), runs
the model once per batch and hands each caller its rows. Callers that gave up (their
future was cancelled) are dropped before the model runs. Batch sizes and model time are
recorded as metrics inside the batcher itself.

With no wait window (``wait_ms`` 0, the default), a caller that finds the model idle and
nothing queued runs its own texts on its own thread: a lone search query pays no
hand-over to the owner thread and back. The model lock keeps one model call at a time
either way, so while the model is busy requests queue and are batched as before.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from kenning.inference.embedding import EmbeddingBackend
from kenning.observability.metrics import INFERENCE_BATCH_SIZE, INFERENCE_SECONDS


@dataclass
class _Request:
    texts: list[str]
    future: Future[np.ndarray]


class EmbeddingBatcher:
    """Thread-safe front of an :class:`EmbeddingBackend` that batches across callers."""

    def __init__(
        self,
        backend: EmbeddingBackend,
        *,
        max_items: int = 64,
        max_chars: int = 64_000,
        wait_ms: float = 5.0,
    ) -> None:
        self.backend = backend
        self.model_id = backend.model_id
        self._max_items = max_items
        self._max_chars = max_chars
        self._wait_s = wait_ms / 1000
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._carry: _Request | None = None
        self._thread = threading.Thread(target=self._loop, name="embed-batcher", daemon=True)
        self._stopped = threading.Event()
        # Held while enqueueing and while closing: no request can slip in behind the
        # stop sentinel, so every accepted request is answered.
        self._gate = threading.Lock()
        # Held by whoever runs the model: the owner thread, or a caller that found it idle.
        self._model = threading.Lock()
        self._thread.start()

    @property
    def dim(self) -> int:
        return self.backend.dim

    def embed(self, texts: Sequence[str], timeout: float | None = None) -> np.ndarray:
        """Embed texts (blocking); may share a model call with other threads."""
        if not texts:
            return np.zeros((0, self.backend.dim), dtype=np.float32)
        with self._gate:
            if self._stopped.is_set():
                raise RuntimeError("embedding batcher is closed")
            inline = (self._wait_s <= 0 and self._queue.empty()
                      and self._model.acquire(blocking=False))
            if not inline:
                request = _Request(list(texts), Future())
                self._queue.put(request)
        if inline:
            try:
                return self._run(list(texts))
            finally:
                self._model.release()
        try:
            return request.future.result(timeout=timeout)
        except TimeoutError:
            request.future.cancel()
            raise

    def close(self) -> None:
        with self._gate:
            if self._stopped.is_set():
                return
            self._stopped.set()
            self._queue.put(None)
        self._thread.join(timeout=30)

    def _embed_bounded(self, texts: list[str]) -> np.ndarray:
        """One backend call per slice within the item and character bounds: a request
        larger than them (a step's whole batch) is split, never padded into one call
        (the model's cost per text grows with the longest text of its call)."""
        parts, start, chars = [], 0, 0
        for i, text in enumerate(texts):
            if i > start and (i - start >= self._max_items or chars + len(text) > self._max_chars):
                parts.append(self.backend.embed(texts[start:i]))
                start, chars = i, 0
            chars += len(text)
        parts.append(self.backend.embed(texts[start:]))
        return parts[0] if len(parts) == 1 else np.vstack(parts)

    def _run(self, texts: list[str]) -> np.ndarray:
        """One batch through the model (the caller holds the model lock), measured."""
        INFERENCE_BATCH_SIZE.labels(self.model_id).observe(len(texts))
        started = time.perf_counter()
        vectors = self._embed_bounded(texts)
        if len(vectors) != len(texts):
            raise RuntimeError(
                f"{self.model_id} returned {len(vectors)} rows for {len(texts)} texts")
        INFERENCE_SECONDS.labels(self.model_id).observe(time.perf_counter() - started)
        return vectors

    def _next_batch(self) -> list[_Request] | None:
        first = self._carry or self._queue.get()
        self._carry = None
        if first is None:
            return None
        # The model lock first (a caller may be running the model itself), then what
        # queued meanwhile joins this batch. The caller of _next_batch releases it.
        self._model.acquire()
        batch, items, chars = [first], len(first.texts), sum(map(len, first.texts))
        deadline = time.monotonic() + self._wait_s
        while items < self._max_items and chars < self._max_chars:
            remaining = deadline - time.monotonic()
            try:
                nxt = self._queue.get(timeout=max(remaining, 0)) if remaining > 0 else (
                    self._queue.get_nowait()
                )
            except queue.Empty:
                break
            if nxt is None:
                self._queue.put(None)
                break
            size = sum(map(len, nxt.texts))
            if items + len(nxt.texts) > self._max_items or chars + size > self._max_chars:
                self._carry = nxt  # starts the next batch; never split a request
                break
            batch.append(nxt)
            items += len(nxt.texts)
            chars += size
        return batch

    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                live = [r for r in batch if r.future.set_running_or_notify_cancel()]
                if not live:
                    continue
                texts = [t for r in live for t in r.texts]
                vectors = self._run(texts)
            except BaseException as exc:  # hand the failure to every caller
                for r in live:
                    r.future.set_exception(exc)
                continue
            finally:
                self._model.release()
            offset = 0
            for r in live:
                r.future.set_result(vectors[offset : offset + len(r.texts)])
                offset += len(r.texts)
