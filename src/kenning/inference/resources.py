"""Shared, lazily built model runtimes (embedder, OCR) handed to processor builders."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kenning.settings import Settings

if TYPE_CHECKING:
    from kenning.inference.batcher import EmbeddingBatcher
    from kenning.inference.ocr import OcrBackend


def cap_native_threads(threads: int) -> None:
    """Cap the BLAS and OpenMP pools of this process at ``threads`` (``model_threads``).

    A serving process answers many requests at once on few cores: a pool per call spins
    up threads that wait on each other (measured: a 1,000 x 512 product against one query
    took 13x longer on two OpenBLAS threads than on one, on a busy 2-core machine).
    Without threadpoolctl (the ``text`` extra) nothing is capped.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(limits=threads)


@dataclass
class Resources:
    """Shared, lazily built model runtimes handed to processor builders."""

    settings: Settings
    _embedder: EmbeddingBatcher | None = None
    _ocr: OcrBackend | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def embedder(self) -> EmbeddingBatcher:
        with self._lock:
            if self._embedder is None:
                from kenning.inference.batcher import EmbeddingBatcher
                from kenning.inference.embedding import make_embedding_backend

                s = self.settings
                self._embedder = EmbeddingBatcher(
                    make_embedding_backend(s.embedding_model, threads=s.model_threads),
                    max_items=s.embed_batch_size,
                    max_chars=s.embed_batch_chars,
                    wait_ms=s.embed_batch_wait_ms,
                )
            return self._embedder

    @property
    def ocr(self) -> OcrBackend:
        with self._lock:
            if self._ocr is None:
                from kenning.inference.ocr import make_ocr_backend

                self._ocr = make_ocr_backend(self.settings)
            return self._ocr

    def close(self) -> None:
        if self._embedder is not None:
            self._embedder.close()
