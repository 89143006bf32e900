"""Shared, lazily built model runtimes (embedder, OCR) handed to processor builders."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kenning.settings import Settings

if TYPE_CHECKING:
    from kenning.inference.batcher import EmbeddingBatcher
    from kenning.inference.ocr import OcrBackend


NATIVE_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
"""What OpenMP (faiss's and the system's libgomp), OpenBLAS and MKL read once, when loaded."""


def native_threads_env(threads: int) -> None:
    """Size the native pools of libraries this process loads from now on at ``threads``,
    through the variables they read when loaded (a value the environment already has is
    kept). The command line calls it before it imports the stores or the models.

    It matters for every thread but the caller's: OpenMP's ``omp_set_num_threads`` (what
    threadpoolctl calls) changes only the calling thread's pool size; other threads keep
    libgomp's initial value, read from ``OMP_NUM_THREADS`` at load, else one per core.
    Measured on the busy 2-core machine: a faiss binary range search over 300 codes took
    31 us on the capped thread and 2.9 ms on another (the matcher's and request threads).
    """
    for name in NATIVE_THREAD_VARIABLES:
        os.environ.setdefault(name, str(threads))


def cap_native_threads(threads: int) -> None:
    """Cap the BLAS and OpenMP pools of this process at ``threads`` (``model_threads``).

    A serving process answers many requests at once on few cores: a pool per call spins
    up threads that wait on each other (measured: a 1,000 x 512 product against one query
    took 13x longer on two OpenBLAS threads than on one, on a busy 2-core machine).
    Libraries already loaded are capped through threadpoolctl (OpenMP: for the calling
    thread only, see :func:`native_threads_env`); those loaded later read the variables
    set here. Without threadpoolctl (the ``text`` extra) only the variables are set.
    """
    native_threads_env(threads)
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
