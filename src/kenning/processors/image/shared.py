"""The image of an asset, decoded once per step and shared by the step's processors.

``image.decode``, ``image.thumbnail`` and ``image.pdq`` run in one step; each asks for
the image here and only the first one decodes it (under every guard and the pixel
budget, :mod:`kenning.media.images`). The step runs image processors asset by asset,
so at most one asset's pixels are held per worker beyond the decode itself.
"""

from __future__ import annotations

from PIL import Image

from kenning.media.images import normalize_image, open_image
from kenning.media.limits import DecodeLimits
from kenning.pipeline.processor import StageInput

__all__ = ["decoded", "original"]

_ORIGINAL = "image.original"
_NORMALIZED = "image.normalized"


def original(item: StageInput, limits: DecodeLimits) -> Image.Image:
    """The decoded image as stored: original mode, ``format`` and EXIF."""
    im = item.memo.get(_ORIGINAL)
    if im is None:
        im = item.memo[_ORIGINAL] = open_image(item.blob(), limits)
    assert isinstance(im, Image.Image)
    return im


def decoded(item: StageInput, limits: DecodeLimits) -> Image.Image:
    """The image oriented by EXIF, in 8-bit RGB or RGBA, ready to process."""
    im = item.memo.get(_NORMALIZED)
    if im is None:
        im = item.memo[_NORMALIZED] = normalize_image(original(item, limits))
    assert isinstance(im, Image.Image)
    return im
