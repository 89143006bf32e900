"""Whether this install can process images: the ``image`` extra (PDQ hashing, OCR runtime).

A text-only install (``pip install 'kenning[text]'``) lacks it. Its image processors are
then not registered (:func:`kenning.processors.builtin.image_processors` logs one line
naming the extra) and image uploads are refused up front with ``415
unsupported_media_type`` (:func:`require_image_support`), instead of being stored and
failing later inside a stage.
"""

from __future__ import annotations

import functools
import importlib.util

from kenning.errors import UnsupportedMedia
from kenning.settings import Settings

__all__ = ["IMAGE_EXTRA", "missing_image_extra", "require_image_support"]

IMAGE_EXTRA = "image"
"""The extra that brings image support: ``pip install 'kenning[image]'``."""

# Always needed: PDQ. The OCR runtime only for the backend it belongs to (the Tesseract
# backend is its own extra and says so when its stage first runs).
_ALWAYS = ("pdqhash",)
_OCR_MODULES = {"rapidocr": ("rapidocr", "onnxruntime")}


@functools.cache
def missing_image_extra(ocr_backend: str) -> str | None:
    """None when images can be processed here; otherwise what is missing and how to fix it.

    Only looks for the modules (nothing is imported; the answer is kept for the process):
    e.g. ``"pdqhash is not installed: pip install 'kenning[image]'"``.
    """
    for module in (*_ALWAYS, *_OCR_MODULES.get(ocr_backend, ())):
        if not _installed(module):
            return f"{module} is not installed: pip install 'kenning[{IMAGE_EXTRA}]'"
    return None


def require_image_support(settings: Settings) -> None:
    """Refuse an image up front when this install cannot process images.

    Raises :class:`~kenning.errors.UnsupportedMedia` (415, ``unsupported_media_type``)
    whose message names the extra to install.
    """
    why = missing_image_extra(settings.ocr_backend)
    if why is not None:
        raise UnsupportedMedia(f"this server cannot process images ({why})", extra=IMAGE_EXTRA)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a finder refused it, or a broken half-import
        return False
