"""text.chunk: the ``text`` artifact -> overlapping chunks stored as segments.

Chunks end at paragraph or sentence boundaries when one is near the target size, so a
search hit quotes whole sentences.
"""

from __future__ import annotations

import re

from kenning.media.kinds import MediaKind
from kenning.pipeline.processor import BaseProcessor, SegmentOut, StageInput, StageOutput

# Sentence ends include the CJK full stop and full-width ! and ?.
_BOUNDARY = re.compile(r"\n\n|(?<=[.!?\u3002\uff01\uff1f])\s+|\n")
_SPACE = re.compile(r"\s+")


def chunk_texts(text: str, size: int, overlap: int) -> list[str]:
    """The chunk texts ``text.chunk`` makes of an already normalised ``text``."""
    return [text[s:e].strip() for s, e in chunk_text(text, size, overlap)]


def chunk_text(text: str, size: int, overlap: int) -> list[tuple[int, int]]:
    """Split into (start, end) character spans of about ``size``, overlapping a little."""
    if not text:
        return []
    spans: list[tuple[int, int]] = []
    start = 0
    while start < len(text):
        end = min(start + size, len(text))
        if end < len(text):
            # Prefer the last boundary in the back half of the window.
            window = text[start + size // 2 : end]
            cuts = [m.end() for m in _BOUNDARY.finditer(window)]
            if not cuts and not text[end].isspace():
                # No sentence end nearby: cut after the last space, never inside a word.
                cuts = [m.end() for m in _SPACE.finditer(window)]
            if cuts:
                end = start + size // 2 + cuts[-1]
        spans.append((start, end))
        if end >= len(text):
            break
        start = max(end - overlap, start + 1)
        # Do not start a chunk mid-word.
        while 0 < start < end and not text[start - 1].isspace():
            start += 1
    return [(s, e) for s, e in spans if text[s:e].strip()]


class ChunkText(BaseProcessor):
    name = "text.chunk"
    media = frozenset({MediaKind.TEXT, MediaKind.IMAGE})
    requires = frozenset({"text"})
    produces = frozenset({"chunks"})
    queue = "text"
    cacheable = False

    def __init__(self, size: int = 1000, overlap: int = 100) -> None:
        self.size = size
        self.overlap = overlap
        self.version = f"2+{size}/{overlap}"

    def process_one(self, item: StageInput) -> StageOutput:
        text: str = item.artifacts["text"]["text"]
        spans = chunk_text(text, self.size, self.overlap)
        segments = [
            SegmentOut(
                kind="chunk",
                seq=i,
                text=text[s:e].strip(),
                data={"char_start": s, "char_end": e, "source": item.artifacts["text"]["source"]},
            )
            for i, (s, e) in enumerate(spans)
        ]
        return StageOutput(
            artifacts={
                "chunks": {"producer": self.name, "texts": [seg.text for seg in segments]}
            },
            segments=segments,
        )
