"""Hostile-input guards for uploads: byte, text-length and pixel limits, then a full decode.

Order matters. The byte limit is checked before anything looks inside the body; the type
is sniffed from magic bytes; image dimensions are read from the header (``Image.open``
is lazy) and refused *before* PIL allocates a pixel buffer, so a 50,000 x 50,000 PNG of
a few hundred bytes costs nothing. Only then is the image fully decoded, which catches
truncated and damaged files.

Our limits are checked on every call from :class:`~kenning.settings.Settings`. PIL's own
process-wide decompression-bomb ceiling (``Image.MAX_IMAGE_PIXELS``) stays in place as a
second line of defence; it is only ever raised (under a lock, never lowered) so that
``max_image_pixels`` means what it says when configured above PIL's default.
"""

from __future__ import annotations

import io
import logging
import threading
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, ImageOps

from kenning.errors import CorruptMedia, EmptyContent, TooLarge, UnsupportedMedia
from kenning.ingest.sniff import sniff
from kenning.pipeline.processor import MediaKind
from kenning.settings import Settings

__all__ = ["Validated", "normalize_image", "open_image", "safe_open_image", "validate_upload"]

log = logging.getLogger(__name__)

_PIL_FORMATS = {
    "image/jpeg": "JPEG",
    "image/png": "PNG",
    "image/gif": "GIF",
    "image/webp": "WEBP",
    "image/bmp": "BMP",
    "image/tiff": "TIFF",
}
_HIGH_DEPTH_MODES = frozenset({"I", "F", "I;16", "I;16L", "I;16B", "I;16N"})
_ALPHA_MODES = frozenset({"RGBA", "LA", "La", "RGBa", "PA"})
_pil_lock = threading.Lock()


@dataclass(frozen=True)
class Validated:
    """An upload that passed every guard: its kind, type and measured size."""

    kind: MediaKind
    mime: str
    size_bytes: int
    width: int | None = None
    """Stored width in pixels (before EXIF orientation); images only."""
    height: int | None = None
    format: str | None = None
    """PIL format name (``JPEG``, ``PNG``...); images only."""
    chars: int | None = None
    """Length in characters; text only."""


def validate_upload(data: bytes, settings: Settings) -> Validated:
    """Check an upload against every ingest limit and decode it once.

    Raises :class:`EmptyContent`, :class:`TooLarge` (codes ``file_too_large``,
    ``text_too_long``, ``image_too_large``), :class:`UnsupportedMedia` or
    :class:`CorruptMedia` (code ``corrupt_media``).
    """
    _check_bytes(data, settings)
    sniffed = sniff(data)
    if sniffed.kind is MediaKind.TEXT:
        text = data.decode("utf-8-sig")
        if not text.strip():
            raise EmptyContent("the text is blank")
        if len(text) > settings.max_text_chars:
            raise TooLarge(
                f"text has {len(text)} characters; the limit is {settings.max_text_chars}",
                code="text_too_long",
                limit=settings.max_text_chars,
                actual=len(text),
            )
        return Validated(sniffed.kind, sniffed.mime, len(data), chars=len(text))
    im = open_image(data, settings)
    return Validated(
        sniffed.kind, sniffed.mime, len(data), width=im.width, height=im.height, format=im.format
    )


def open_image(data: bytes, settings: Settings) -> Image.Image:
    """Decode image bytes under every guard; the result is loaded but not normalised.

    The returned image keeps its original mode, ``format`` and EXIF. Use
    :func:`safe_open_image` for pixels ready to process.
    """
    _check_bytes(data, settings)
    sniffed = sniff(data)
    if sniffed.kind is not MediaKind.IMAGE:
        raise UnsupportedMedia(f"expected an image, got {sniffed.mime}")
    _raise_pil_ceiling(settings.max_image_pixels)
    _require_strict_loading()
    try:
        # Restricting PIL to the sniffed format keeps other decoders out of reach.
        im = Image.open(io.BytesIO(data), formats=[_PIL_FORMATS[sniffed.mime]])
    except Image.DecompressionBombError as exc:
        raise TooLarge(f"image is too large: {exc}", code="image_too_large") from exc
    except Exception as exc:
        raise CorruptMedia(f"cannot read {sniffed.mime} header: {exc}") from exc
    _check_dimensions(im.width, im.height, settings)
    try:
        im.load()
    except Image.DecompressionBombError as exc:
        raise TooLarge(f"image is too large: {exc}", code="image_too_large") from exc
    except MemoryError as exc:
        raise TooLarge("image is too large to decode", code="image_too_large") from exc
    except Exception as exc:
        raise CorruptMedia(f"{sniffed.mime} does not decode (truncated or damaged): {exc}") from exc
    return im


def safe_open_image(data: bytes, settings: Settings) -> Image.Image:
    """Decode image bytes under every guard; EXIF orientation applied, mode RGB or RGBA."""
    return normalize_image(open_image(data, settings))


def normalize_image(im: Image.Image) -> Image.Image:
    """Apply EXIF orientation and convert to 8-bit ``RGB`` (or ``RGBA`` if it has alpha)."""
    try:
        oriented = ImageOps.exif_transpose(im)
    except Exception:  # a malformed orientation tag must not fail ingest
        log.debug("ignoring unreadable EXIF orientation", exc_info=True)
        oriented = im
    if oriented.mode in ("RGB", "RGBA"):
        return oriented
    if oriented.mode in _HIGH_DEPTH_MODES:
        return Image.fromarray(_to_uint8(np.asarray(oriented)), mode="L").convert("RGB")
    has_alpha = oriented.mode in _ALPHA_MODES or (
        oriented.mode == "P" and "transparency" in oriented.info
    )
    return oriented.convert("RGBA" if has_alpha else "RGB")


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype.kind == "u" and arr.dtype.itemsize == 2:
        return (arr.astype(np.uint32) >> 8).astype(np.uint8)
    values = arr.astype(np.float64)
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return np.zeros(arr.shape, dtype=np.uint8)
    return ((values - lo) * (255.0 / (hi - lo))).round().astype(np.uint8)


def _check_bytes(data: bytes, settings: Settings) -> None:
    if not data:
        raise EmptyContent("the upload is empty")
    if len(data) > settings.max_upload_bytes:
        raise TooLarge(
            f"upload is {len(data)} bytes; the limit is {settings.max_upload_bytes}",
            code="file_too_large",
            limit=settings.max_upload_bytes,
            actual=len(data),
        )


def _check_dimensions(width: int, height: int, settings: Settings) -> None:
    if width <= 0 or height <= 0:
        raise CorruptMedia(f"image declares impossible dimensions {width}x{height}")
    if width * height > settings.max_image_pixels or max(width, height) > settings.max_image_side:
        raise TooLarge(
            f"image is {width}x{height} pixels; the limits are {settings.max_image_pixels} "
            f"pixels and {settings.max_image_side} per side",
            code="image_too_large",
            width=width,
            height=height,
        )


def _raise_pil_ceiling(limit: int) -> None:
    current = Image.MAX_IMAGE_PIXELS
    if current is None or current >= limit:
        return
    with _pil_lock:
        if Image.MAX_IMAGE_PIXELS is not None and limit > Image.MAX_IMAGE_PIXELS:
            Image.MAX_IMAGE_PIXELS = limit


def _require_strict_loading() -> None:
    # PIL only has a process-wide switch; a truncated image must fail, never half-load.
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        log.warning("ImageFile.LOAD_TRUNCATED_IMAGES was enabled; turning it off for ingest")
        ImageFile.LOAD_TRUNCATED_IMAGES = False
