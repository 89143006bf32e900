"""Builders for Kenning's own processors, registered as ``kenning.processors`` entry points."""

from __future__ import annotations

from kenning.pipeline.processor import Processor
from kenning.pipeline.registry import Resources


def text_processors(resources: Resources) -> list[Processor]:
    from kenning.processors.text import (
        ChunkText,
        DetectLanguage,
        EmbedText,
        KeywordIndexText,
        NormalizeText,
    )

    s = resources.settings
    return [
        NormalizeText(),
        ChunkText(s.chunk_chars, s.chunk_overlap_chars),
        DetectLanguage(),
        EmbedText(resources.embedder),
        KeywordIndexText(),
    ]


def image_processors(resources: Resources) -> list[Processor]:
    from kenning.processors.image import build_image_processors

    # The OCR backend is handed over lazily: models load on the first OCR stage.
    return list(build_image_processors(resources.settings, ocr=_LazyOcr(resources)))


class _LazyOcr:
    """Defers building the OCR backend until a stage needs it."""

    def __init__(self, resources: Resources) -> None:
        self._resources = resources

    @property
    def name(self) -> str:
        return self._resources.settings.ocr_backend

    @property
    def version(self) -> str:
        return self._resources.ocr.version

    def read(self, image):  # type: ignore[no-untyped-def]
        return self._resources.ocr.read(image)
