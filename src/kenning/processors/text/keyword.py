"""text.keyword: hands every chunk to the keyword (BM25) index."""

from __future__ import annotations

from kenning.media.kinds import MediaKind
from kenning.pipeline.processor import (
    BaseProcessor,
    KeywordDocOut,
    SegmentRef,
    StageInput,
    StageOutput,
)


class KeywordIndexText(BaseProcessor):
    name = "text.keyword"
    version = "1"
    media = frozenset({MediaKind.TEXT, MediaKind.IMAGE})
    requires = frozenset({"chunks"})
    produces = frozenset({"keyword"})
    queue = "text"
    cacheable = False

    def process_one(self, item: StageInput) -> StageOutput:
        chunks = item.artifacts["chunks"]
        docs = [
            KeywordDocOut(SegmentRef(chunks["producer"], seq), text)
            for seq, text in enumerate(chunks["texts"])
        ]
        return StageOutput(artifacts={"keyword": {"docs": len(docs)}}, keyword_docs=docs)
