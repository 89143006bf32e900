"""Image processors: guarded decode + EXIF, thumbnail, PDQ fingerprints, ORB local
features (unless ``settings.orb_keypoints`` is 0), OCR; image-text (CLIP) embeddings when
``settings.clip_model_dir`` is set (:mod:`kenning.processors.image.clip`, registered by
:func:`kenning.processors.builtin.image_processors`).

They need the ``image`` extra (see :mod:`kenning.processors.image.extra`); without it
the package still imports, but they are not registered.
"""

from __future__ import annotations

from kenning.inference.ocr import OcrBackend
from kenning.pipeline.processor import Processor
from kenning.processors.image.clip import EmbedImageClip, EmbedKeyframesClip
from kenning.processors.image.decode import DecodeImage
from kenning.processors.image.ocr import OcrImage
from kenning.processors.image.orb import ImageOrb
from kenning.processors.image.pdq import HashPdq
from kenning.processors.image.thumbnail import ThumbnailImage
from kenning.settings import Settings

__all__ = [
    "PROCESSORS",
    "DecodeImage",
    "EmbedImageClip",
    "EmbedKeyframesClip",
    "HashPdq",
    "ImageOrb",
    "OcrImage",
    "ThumbnailImage",
    "build_image_processors",
]

PROCESSORS: list[type] = [DecodeImage, ThumbnailImage, HashPdq, ImageOrb, OcrImage]
"""The image processor classes, in dependency order."""


def build_image_processors(settings: Settings, ocr: OcrBackend | None = None) -> list[Processor]:
    """Instances of every image processor; ``ocr`` defaults to the configured backend."""
    local = [ImageOrb(settings)] if settings.orb_keypoints else []
    return [
        DecodeImage(settings),
        ThumbnailImage(settings),
        HashPdq(settings),
        *local,
        OcrImage(settings, ocr),
    ]
