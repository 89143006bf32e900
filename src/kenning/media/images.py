"""Safe, bounded image decoding: sizes refused from the header, pixels under a budget.

Order matters. The type is sniffed from magic bytes and PIL is restricted to that one
format; image dimensions are read from the header (``Image.open`` is lazy) and refused
*before* PIL allocates a pixel buffer, so a 50,000 x 50,000 PNG of a few hundred bytes
costs nothing. Only then is the image decoded, which catches truncated and damaged files.

Every decode holds its width*height of the process-wide pixel budget
(:mod:`kenning.media.budget`) while it runs. A caller that gives ``wait_s`` (an upload)
is refused with :class:`~kenning.errors.Backpressure` (429) after waiting that long for
room; pipeline stages wait as long as it takes. :func:`verify_image` only needs to know
that the bytes decode, so a JPEG is decoded at 1/8 scale there (libjpeg still reads every
coefficient, so truncation and damage are still caught); :func:`open_image` and
:func:`safe_open_image` give the full decode.

Limits are read on every call from a :class:`~kenning.media.limits.DecodeLimits`. PIL's
own process-wide decompression-bomb ceiling (``Image.MAX_IMAGE_PIXELS``) stays in place
as a second line of defence; it is only ever raised (under a lock, never lowered) so that
``max_image_pixels`` means what it says when configured above PIL's default.
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, ImageOps

from kenning.errors import Backpressure, CorruptMedia, TooLarge, UnsupportedMedia
from kenning.media.budget import decode_budget
from kenning.media.kinds import MediaKind
from kenning.media.limits import DecodeLimits, check_bytes
from kenning.media.sniff import sniff

__all__ = ["ImageInfo", "normalize_image", "open_image", "safe_open_image", "verify_image"]

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
class ImageInfo:
    """What :func:`verify_image` learnt: stored size (before EXIF orientation), format."""

    width: int
    height: int
    format: str | None
    """PIL format name (``JPEG``, ``PNG``...)."""


def verify_image(
    data: bytes, mime: str, limits: DecodeLimits, *, wait_s: float | None = None
) -> ImageInfo:
    """Prove that image bytes decode within the limits, as cheaply as possible.

    ``mime`` is what :func:`~kenning.media.sniff.sniff` said of ``data``. Sizes are
    refused from the header; the decode holds the pixel budget (waiting as for
    :func:`open_image`) and a JPEG is decoded at 1/8 scale. Raises
    :class:`~kenning.errors.TooLarge` (``image_too_large``),
    :class:`~kenning.errors.CorruptMedia` or :class:`~kenning.errors.Backpressure`.
    """
    im = _open_lazily(data, mime, limits)
    width, height, fmt = im.width, im.height, im.format
    if fmt == "JPEG":
        im.draft(im.mode, (1, 1))  # decode at the smallest DCT scale: only validity counts
    with _decode_slot(im, limits, wait_s=wait_s):
        _load(im, mime)
        im.close()  # give the pixels back before the budget
    return ImageInfo(width, height, fmt)


def open_image(data: bytes, limits: DecodeLimits, *, wait_s: float | None = None) -> Image.Image:
    """Decode image bytes under every guard; the result is loaded but not normalised.

    The returned image keeps its original mode, ``format`` and EXIF. Use
    :func:`safe_open_image` for pixels ready to process. The decode waits for room in
    the process-wide pixel budget: as long as it takes by default, at most ``wait_s``
    seconds otherwise (then :class:`~kenning.errors.Backpressure`).
    """
    check_bytes(data, limits.max_upload_bytes)
    sniffed = sniff(data)
    if sniffed.kind is not MediaKind.IMAGE:
        raise UnsupportedMedia(f"expected an image, got {sniffed.mime}")
    im = _open_lazily(data, sniffed.mime, limits)
    with _decode_slot(im, limits, wait_s=wait_s):
        _load(im, sniffed.mime)
    return im


def safe_open_image(
    data: bytes, limits: DecodeLimits, *, wait_s: float | None = None
) -> Image.Image:
    """Decode image bytes under every guard; EXIF orientation applied, mode RGB or RGBA.

    ``wait_s`` as for :func:`open_image` (request paths pass ``decode_wait_s``).
    """
    return normalize_image(open_image(data, limits, wait_s=wait_s))


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


def _open_lazily(data: bytes, mime: str, limits: DecodeLimits) -> Image.Image:
    """The image with its header read and its size checked; no pixels decoded yet."""
    _raise_pil_ceiling(limits.max_image_pixels)
    _require_strict_loading()
    try:
        # Restricting PIL to the sniffed format keeps other decoders out of reach.
        im = Image.open(io.BytesIO(data), formats=[_PIL_FORMATS[mime]])
    except Image.DecompressionBombError as exc:
        raise TooLarge(f"image is too large: {exc}", code="image_too_large") from exc
    except Exception as exc:
        raise CorruptMedia(f"cannot read {mime} header: {exc}") from exc
    _check_dimensions(im.width, im.height, limits)
    return im


def _load(im: Image.Image, mime: str) -> None:
    try:
        im.load()
    except Image.DecompressionBombError as exc:
        raise TooLarge(f"image is too large: {exc}", code="image_too_large") from exc
    except MemoryError as exc:
        raise TooLarge("image is too large to decode", code="image_too_large") from exc
    except Exception as exc:
        raise CorruptMedia(f"{mime} does not decode (truncated or damaged): {exc}") from exc


@contextmanager
def _decode_slot(im: Image.Image, limits: DecodeLimits, *, wait_s: float | None) -> Iterator[None]:
    """Hold ``im``'s pixels (as it will decode: after any draft) of the decode budget."""
    budget = decode_budget(limits)
    pixels = im.width * im.height
    if not budget.acquire(pixels, timeout_s=wait_s):
        raise Backpressure(
            f"image decoding is at capacity (waited {wait_s} s for room); retry later",
            retry_after=limits.retry_after_s,
        )
    try:
        yield
    finally:
        budget.release(pixels)


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype.kind == "u" and arr.dtype.itemsize == 2:
        return (arr.astype(np.uint32) >> 8).astype(np.uint8)
    values = arr.astype(np.float64)
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return np.zeros(arr.shape, dtype=np.uint8)
    return ((values - lo) * (255.0 / (hi - lo))).round().astype(np.uint8)


def _check_dimensions(width: int, height: int, limits: DecodeLimits) -> None:
    if width <= 0 or height <= 0:
        raise CorruptMedia(f"image declares impossible dimensions {width}x{height}")
    if width * height > limits.max_image_pixels or max(width, height) > limits.max_image_side:
        raise TooLarge(
            f"image is {width}x{height} pixels; the limits are {limits.max_image_pixels} "
            f"pixels and {limits.max_image_side} per side",
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
