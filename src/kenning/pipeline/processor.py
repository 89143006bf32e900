"""What a processor is: a declared, batch-first unit of enrichment.

A processor declares its ``name``, ``version``, the ``media`` kinds it accepts, the
artifacts it ``requires`` and the artifacts it ``produces``; the pipeline derives stage
order from those declarations (see :mod:`kenning.pipeline.dag`). Processors never call
each other and never touch stores: they return a :class:`StageOutput` and the stage
runner persists each part in the store that owns it (segments -> metadata, embeddings ->
vector index, fingerprints -> hash index, keyword docs -> keyword index, blobs -> blob
store, artifacts -> feature rows read by later stages).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from kenning.media.kinds import MediaKind

SOURCE = "source"
"""The innate artifact every asset has: its original bytes (``StageInput.blob()``)."""


@dataclass(frozen=True)
class StageInput:
    """One asset as a processor sees it."""

    asset_id: str
    tenant_id: str
    kind: MediaKind
    sha256: str
    mime: str
    metadata: Mapping[str, Any]
    artifacts: Mapping[str, Any]
    """Outputs of earlier stages by artifact name (only the ones this processor requires)."""
    blob: Callable[[], bytes]
    """Loads the asset's original bytes lazily (once per step: later calls reuse them)."""
    memo: dict[str, Any] = field(default_factory=dict)
    """Shared by the processors of one step for this asset (e.g. the decoded image), so
    work one of them did is not repeated by the next. Dropped when the step ends."""


@dataclass
class SegmentOut:
    """A piece of an asset: a text chunk, an OCR block, later a shot or an utterance."""

    kind: str
    seq: int
    text: str | None = None
    start_s: float | None = None
    end_s: float | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class SegmentRef:
    """Points at a segment by the stage that produced it and its sequence number."""

    producer: str
    seq: int


@dataclass
class EmbeddingOut:
    space: str
    """Embedding space: the model id, so vectors of different models never mix."""
    vector: np.ndarray
    segment: SegmentRef | None = None


@dataclass
class FingerprintOut:
    algorithm: str
    bits: bytes
    quality: float | None = None
    variant: str = "original"
    """For dihedral hashes: which transform of the image this hash is of."""


@dataclass
class KeywordDocOut:
    segment: SegmentRef
    text: str


@dataclass
class StageOutput:
    """Everything one stage produced for one asset; every part is optional."""

    artifacts: dict[str, Any] = field(default_factory=dict)
    segments: list[SegmentOut] = field(default_factory=list)
    embeddings: list[EmbeddingOut] = field(default_factory=list)
    fingerprints: list[FingerprintOut] = field(default_factory=list)
    keyword_docs: list[KeywordDocOut] = field(default_factory=list)
    blobs: dict[str, bytes] = field(default_factory=dict)
    """Derived files (thumbnails...) by role; stored content-addressed, keys recorded."""
    asset_metadata: dict[str, Any] = field(default_factory=dict)
    """Merged into the asset's metadata (dimensions, EXIF...)."""
    language: str | None = None
    title: str | None = None
    """A title found in the content; used when the client gave none."""
    confidence: float | None = None
    model_version: str | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe form, used by the feature cache (it shares the artifacts' and
        segments' values, which the caller serialises at once)."""
        def ref(r: SegmentRef | None) -> dict[str, Any] | None:
            return {"producer": r.producer, "seq": r.seq} if r else None

        return {
            "artifacts": self.artifacts,
            "segments": [
                {"kind": g.kind, "seq": g.seq, "text": g.text, "start_s": g.start_s,
                 "end_s": g.end_s, "data": g.data}
                for g in self.segments
            ],
            "embeddings": [
                {"space": e.space,
                 "vector": base64.b64encode(
                     np.ascontiguousarray(e.vector, dtype=np.float32).tobytes()).decode(),
                 "segment": ref(e.segment)}
                for e in self.embeddings
            ],
            "fingerprints": [
                {"algorithm": f.algorithm, "bits": base64.b64encode(f.bits).decode(),
                 "quality": f.quality, "variant": f.variant}
                for f in self.fingerprints
            ],
            "keyword_docs": [{"segment": ref(k.segment), "text": k.text}
                             for k in self.keyword_docs],
            "blobs": {k: base64.b64encode(v).decode() for k, v in self.blobs.items()},
            "asset_metadata": self.asset_metadata,
            "language": self.language,
            "title": self.title,
            "confidence": self.confidence,
            "model_version": self.model_version,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StageOutput:
        return cls(
            artifacts=dict(data["artifacts"]),
            segments=[SegmentOut(**s) for s in data["segments"]],
            embeddings=[
                EmbeddingOut(
                    space=e["space"],
                    vector=_vector(e["vector"]),
                    segment=SegmentRef(**e["segment"]) if e["segment"] else None,
                )
                for e in data["embeddings"]
            ],
            fingerprints=[
                FingerprintOut(**{**f, "bits": base64.b64decode(f["bits"])})
                for f in data["fingerprints"]
            ],
            keyword_docs=[
                KeywordDocOut(segment=SegmentRef(**k["segment"]), text=k["text"])
                for k in data["keyword_docs"]
            ],
            blobs={k: base64.b64decode(v) for k, v in data["blobs"].items()},
            asset_metadata=dict(data["asset_metadata"]),
            language=data["language"],
            title=data.get("title"),
            confidence=data["confidence"],
            model_version=data["model_version"],
        )


def _vector(value: Any) -> np.ndarray:
    """A cached vector: base64 of float32 bytes (or, in entries written before, a list)."""
    if isinstance(value, str):
        return np.frombuffer(base64.b64decode(value), dtype=np.float32).copy()
    return np.asarray(value, dtype=np.float32)


@runtime_checkable
class Processor(Protocol):
    """The contract every processor meets. Class attributes are the declaration."""

    name: str
    """Stable dotted name, e.g. ``image.pdq``; also the stage name."""
    version: str
    """Bump when output changes; part of the cache key (include the model id)."""
    media: frozenset[MediaKind]
    requires: frozenset[str]
    produces: frozenset[str]
    queue: str
    """Broker queue the stage runs on (slow models get their own)."""
    time_limit_s: float | None
    cacheable: bool
    """Whether outputs may be reused for identical bytes (same sha256, name, version)."""
    batched: bool
    """Whether ``process`` gains from many items at once (a model). A step with such a
    member runs each processor over the whole batch; otherwise it runs asset by asset,
    so at most one asset's decoded media is held at a time."""
    own_step: bool
    """Run in a step of its own instead of joining the connected processors of its queue."""
    max_batch: int | None
    """Most assets per batch of its step (slow processors keep a batch inside their time
    limit, which bounds the whole batch); ``None``: the ``step_batch_items`` setting."""

    def process(self, batch: Sequence[StageInput]) -> list[StageOutput]:
        """Process a batch; return one output per input, in order. Raise to fail it."""
        ...


class BaseProcessor:
    """Convenience base with sensible declaration defaults and a single-item helper."""

    name: str = ""
    version: str = "1"
    media: frozenset[MediaKind] = frozenset()
    requires: frozenset[str] = frozenset()
    produces: frozenset[str] = frozenset()
    queue: str = "default"
    time_limit_s: float | None = None
    cacheable: bool = True
    batched: bool = False
    own_step: bool = False
    max_batch: int | None = None

    def process(self, batch: Sequence[StageInput]) -> list[StageOutput]:
        return [self.process_one(item) for item in batch]

    def process_one(self, item: StageInput) -> StageOutput:
        raise NotImplementedError
