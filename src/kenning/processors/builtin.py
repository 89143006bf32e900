"""Builders for Kenning's own processors, registered as ``kenning.processors`` entry points."""

from __future__ import annotations

import logging

from kenning.inference.resources import Resources
from kenning.pipeline.processor import Processor

log = logging.getLogger(__name__)


def text_processors(resources: Resources) -> list[Processor]:
    """The text processors: normalise, chunk, language id, embeddings, keyword index,
    SimHash."""
    from kenning.processors.text import (
        ChunkText,
        DetectLanguage,
        EmbedText,
        KeywordIndexText,
        NormalizeText,
        SimHashText,
    )

    s = resources.settings
    return [
        NormalizeText(),
        ChunkText(s.chunk_chars, s.chunk_overlap_chars),
        DetectLanguage(),
        EmbedText(resources.embedder),
        KeywordIndexText(),
        SimHashText(),
    ]


def image_processors(resources: Resources) -> list[Processor]:
    """The image processors, or none when the ``image`` extra is not installed here."""
    from kenning.processors.image import build_image_processors
    from kenning.processors.image.extra import missing_image_extra

    missing = missing_image_extra(resources.settings.ocr_backend)
    if missing is not None:
        # Ingest refuses images with the same message (kenning.ingest.validate).
        log.warning("image processors not registered, images will be refused: %s", missing)
        return []
    from kenning.processors.image.clip import clip_processors

    # The OCR backend is handed over lazily: models load on the first OCR stage.
    return [*build_image_processors(resources.settings, ocr=_LazyOcr(resources)),
            *clip_processors(resources.settings)]


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


def av_processors(resources: Resources) -> list[Processor]:
    """The audio/video processors, or none when the ``video`` extra is not installed."""
    from kenning.processors.av import build_av_processors
    from kenning.processors.av.extra import missing_av_extra

    missing = missing_av_extra()
    if missing is not None:
        # Ingest refuses audio and video with the same message (kenning.ingest.validate).
        log.warning("audio/video processors not registered, audio and video will be "
                    "refused: %s", missing)
        return []
    from kenning.processors.av.audioprint import audio_fingerprint_processors
    from kenning.processors.av.shots import DetectShots
    from kenning.processors.av.speech import speech_processors
    from kenning.processors.image.clip import clip_processors

    return [*build_av_processors(resources.settings), DetectShots(resources.settings),
            *speech_processors(resources),
            *audio_fingerprint_processors(resources.settings),
            *clip_processors(resources.settings, video=True),
            *_video_ocr(resources)]


def _video_ocr(resources: Resources) -> list[Processor]:
    """``av.ocr`` (on-screen text in video), unless ``video_ocr_max_keyframes`` is 0 or
    the OCR backend (the ``image`` extra) is missing here."""
    from kenning.processors.av.ocr import OcrVideo
    from kenning.processors.image.extra import missing_image_extra

    s = resources.settings
    if not s.video_ocr_max_keyframes:
        return []
    missing = missing_image_extra(s.ocr_backend)
    if missing is not None:
        log.warning("on-screen text in video not read: %s", missing)
        return []
    return [OcrVideo(s, _LazyOcr(resources), resources.embedder)]
