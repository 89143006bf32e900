"""Image processors: guarded decode + EXIF, thumbnail, PDQ fingerprints, OCR.

They need the ``image`` extra (see :mod:`kenning.processors.image.extra`); without it
the package still imports, but they are not registered.
"""

from __future__ import annotations

from kenning.inference.ocr import OcrBackend
from kenning.pipeline.processor import Processor
from kenning.processors.image.decode import DecodeImage
from kenning.processors.image.ocr import OcrImage
from kenning.processors.image.pdq import HashPdq
from kenning.processors.image.thumbnail import ThumbnailImage
from kenning.settings import Settings

__all__ = [
    "PROCESSORS",
    "DecodeImage",
    "HashPdq",
    "OcrImage",
    "ThumbnailImage",
    "build_image_processors",
]

PROCESSORS: list[type] = [DecodeImage, ThumbnailImage, HashPdq, OcrImage]
"""The image processor classes, in dependency order."""


def build_image_processors(settings: Settings, ocr: OcrBackend | None = None) -> list[Processor]:
    """Instances of every image processor; ``ocr`` defaults to the configured backend."""
    return [
        DecodeImage(settings),
        ThumbnailImage(settings),
        HashPdq(settings),
        OcrImage(settings, ocr),
    ]
