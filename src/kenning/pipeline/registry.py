"""Processor discovery: built-in and third-party processors register the same way.

A distribution exposes an entry point in the ``kenning.processors`` group whose value is
a builder ``(resources) -> list[Processor]``. Kenning's own text and image processors
are registered through exactly this hook (see ``pyproject.toml``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from kenning.pipeline.dag import PlannedStage, plan
from kenning.pipeline.processor import MediaKind, Processor
from kenning.settings import Settings

if TYPE_CHECKING:
    from kenning.inference.batcher import EmbeddingBatcher
    from kenning.inference.ocr import OcrBackend

ENTRY_POINT_GROUP = "kenning.processors"


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


Builder = Callable[[Resources], Iterable[Processor]]


class ProcessorRegistry:
    """Processors by name, plus the stage plan for each media kind."""

    def __init__(self, processors: Iterable[Processor]) -> None:
        self._by_name: dict[str, Processor] = {}
        for proc in processors:
            if proc.name in self._by_name:
                raise ValueError(f"processor {proc.name!r} registered twice")
            self._by_name[proc.name] = proc
        self._plans = {kind: plan(kind, self._by_name.values()) for kind in MediaKind}

    @classmethod
    def from_entry_points(cls, resources: Resources) -> ProcessorRegistry:
        builders: list[Builder] = [ep.load() for ep in entry_points(group=ENTRY_POINT_GROUP)]
        return cls(p for build in builders for p in build(resources))

    def get(self, name: str) -> Processor:
        return self._by_name[name]

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def plan(self, kind: MediaKind) -> list[PlannedStage]:
        return self._plans[kind]

    def queues(self) -> set[str]:
        return {p.queue for p in self._by_name.values()}
