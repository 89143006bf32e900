"""text.embed: chunk embeddings (and one asset-level mean vector) in the model's space."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from kenning.media.kinds import MediaKind
from kenning.pipeline.processor import (
    BaseProcessor,
    EmbeddingOut,
    SegmentRef,
    StageInput,
    StageOutput,
)
from kenning.processors.text.chunk import chunk_texts


class Embedder(Protocol):
    model_id: str

    def embed(self, texts: Sequence[str], timeout: float | None = None) -> np.ndarray: ...


def mean_vector(rows: np.ndarray) -> np.ndarray:
    """A text's vector: the unit-length mean of its chunks' vectors. The one definition,
    for stored assets (``text.embed``) and for query texts
    (:func:`text_vector`), so their cosines compare."""
    mean = np.asarray(rows, dtype=np.float32).mean(axis=0)
    out: np.ndarray = mean / max(float(np.linalg.norm(mean)), 1e-12)
    return out


def text_vector(embedder: Embedder, text: str, size: int, overlap: int) -> np.ndarray:
    """The vector of a normalised ``text`` chunked as ``text.chunk`` chunks it (``size``,
    ``overlap``): how a query text compares with stored texts."""
    return mean_vector(embedder.embed(chunk_texts(text, size, overlap)))


class EmbedText(BaseProcessor):
    name = "text.embed"
    media = frozenset({MediaKind.TEXT, MediaKind.IMAGE})
    requires = frozenset({"chunks"})
    produces = frozenset({"embeddings.text"})
    queue = "embed"
    batched = True

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
        self.version = f"1+{embedder.model_id}"

    def process(self, batch: Sequence[StageInput]) -> list[StageOutput]:
        # One model call for the whole batch; the batcher may merge it with other workers'.
        texts = [list(item.artifacts["chunks"]["texts"]) for item in batch]
        flat = [t for item_chunks in texts for t in item_chunks]
        vectors = self.embedder.embed(flat) if flat else np.zeros((0, 0), np.float32)
        outputs, offset = [], 0
        for item, item_chunks in zip(batch, texts, strict=True):
            rows = vectors[offset : offset + len(item_chunks)]
            offset += len(item_chunks)
            producer = item.artifacts["chunks"]["producer"]
            embeddings = [
                EmbeddingOut(self.embedder.model_id, row, SegmentRef(producer, seq))
                for seq, row in enumerate(rows)
            ]
            if len(rows):
                embeddings.append(EmbeddingOut(self.embedder.model_id, mean_vector(rows), None))
            outputs.append(
                StageOutput(
                    artifacts={"embeddings.text": {"space": self.embedder.model_id,
                                                   "count": len(rows)}},
                    embeddings=embeddings,
                    model_version=self.embedder.model_id,
                )
            )
        return outputs
