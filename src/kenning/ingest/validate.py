"""Hostile-input guards for uploads: byte, text-length and pixel limits, then a decode.

Order matters. The byte limit is checked before anything looks inside the body; the type
is sniffed from magic bytes; image dimensions are read from the header (``Image.open``
is lazy) and refused *before* PIL allocates a pixel buffer, so a 50,000 x 50,000 PNG of
a few hundred bytes costs nothing. Only then is the image decoded, which catches
truncated and damaged files.

Decoding is what costs memory (3-4 bytes per pixel: 80 megapixels are ~300 MB, from a
PNG of a few hundred KB), so every decode first takes its width*height from one
process-wide :class:`PixelBudget` (``decode_pixel_budget``) and gives it back when done;
decodes that do not fit wait. An upload that waits longer than ``decode_wait_s`` is
refused with :class:`~kenning.errors.Backpressure` (429); pipeline stages wait as long as
it takes. Validation only needs to know that the bytes decode, so a JPEG is decoded at
1/8 scale there (libjpeg still reads every coefficient, so truncation and damage are
still caught); callers that need pixels get the full decode.

Text must have content: text made only of whitespace, controls, zero-width and other
format characters (U+200B, U+200D, U+2060, U+FEFF, soft hyphen...) is empty.

Our limits are checked on every call from :class:`~kenning.settings.Settings`. PIL's own
process-wide decompression-bomb ceiling (``Image.MAX_IMAGE_PIXELS``) stays in place as a
second line of defence; it is only ever raised (under a lock, never lowered) so that
``max_image_pixels`` means what it says when configured above PIL's default.
"""

from __future__ import annotations

import io
import logging
import threading
import time
import unicodedata
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, ImageOps

from kenning.errors import Backpressure, CorruptMedia, EmptyContent, TooLarge, UnsupportedMedia
from kenning.ingest.sniff import sniff
from kenning.pipeline.processor import MediaKind
from kenning.settings import Settings

__all__ = [
    "PixelBudget",
    "Validated",
    "decode_budget",
    "has_content",
    "normalize_image",
    "open_image",
    "safe_open_image",
    "validate_upload",
]

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
# Never content on their own: controls, format characters (zero-width space and joiners,
# word joiner, BOM, soft hyphen, bidi marks...), separators, surrogates, unassigned code
# points, and combining marks with nothing to combine with.
_INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Cn", "Zs", "Zl", "Zp", "Mn", "Me"})
# Letters and symbols by category that render as nothing: the Hangul fillers (Unicode
# lists them as default-ignorable) and the blank Braille pattern.
_BLANK_GLYPHS = frozenset("\u115f\u1160\u3164\uffa0\u2800")


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
        if not has_content(text):
            raise EmptyContent("the text is blank (only spaces or invisible characters)")
        if len(text) > settings.max_text_chars:
            raise TooLarge(
                f"text has {len(text)} characters; the limit is {settings.max_text_chars}",
                code="text_too_long",
                limit=settings.max_text_chars,
                actual=len(text),
            )
        return Validated(sniffed.kind, sniffed.mime, len(data), chars=len(text))
    im = _open_lazily(data, sniffed.mime, settings)
    width, height, fmt = im.width, im.height, im.format
    if fmt == "JPEG":
        im.draft(im.mode, (1, 1))  # decode at the smallest DCT scale: only validity counts
    with _decode_slot(im, settings, wait_s=settings.decode_wait_s):
        _load(im, sniffed.mime)
        im.close()  # give the pixels back before the budget
    return Validated(sniffed.kind, sniffed.mime, len(data), width=width, height=height, format=fmt)


def has_content(text: str) -> bool:
    """True when ``text`` has at least one visible character.

    Decided by Unicode category: whitespace, controls, format characters (zero-width
    space, joiners, BOM, soft hyphen...) and lone combining marks are not content.
    """
    return any(
        unicodedata.category(ch) not in _INVISIBLE and ch not in _BLANK_GLYPHS for ch in text
    )


def open_image(data: bytes, settings: Settings, *, wait_s: float | None = None) -> Image.Image:
    """Decode image bytes under every guard; the result is loaded but not normalised.

    The returned image keeps its original mode, ``format`` and EXIF. Use
    :func:`safe_open_image` for pixels ready to process. The decode waits for room in
    the process-wide :class:`PixelBudget`: as long as it takes by default, at most
    ``wait_s`` seconds otherwise (then :class:`~kenning.errors.Backpressure`).
    """
    _check_bytes(data, settings)
    sniffed = sniff(data)
    if sniffed.kind is not MediaKind.IMAGE:
        raise UnsupportedMedia(f"expected an image, got {sniffed.mime}")
    im = _open_lazily(data, sniffed.mime, settings)
    with _decode_slot(im, settings, wait_s=wait_s):
        _load(im, sniffed.mime)
    return im


def _open_lazily(data: bytes, mime: str, settings: Settings) -> Image.Image:
    """The image with its header read and its size checked; no pixels decoded yet."""
    _raise_pil_ceiling(settings.max_image_pixels)
    _require_strict_loading()
    try:
        # Restricting PIL to the sniffed format keeps other decoders out of reach.
        im = Image.open(io.BytesIO(data), formats=[_PIL_FORMATS[mime]])
    except Image.DecompressionBombError as exc:
        raise TooLarge(f"image is too large: {exc}", code="image_too_large") from exc
    except Exception as exc:
        raise CorruptMedia(f"cannot read {mime} header: {exc}") from exc
    _check_dimensions(im.width, im.height, settings)
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
def _decode_slot(im: Image.Image, settings: Settings, *, wait_s: float | None) -> Iterator[None]:
    """Hold ``im``'s pixels (as it will decode: after any draft) of the decode budget."""
    budget = decode_budget(settings)
    pixels = im.width * im.height
    if not budget.acquire(pixels, timeout_s=wait_s):
        raise Backpressure(
            f"image decoding is at capacity (waited {wait_s} s for room); retry later",
            retry_after=settings.retry_after_s,
        )
    try:
        yield
    finally:
        budget.release(pixels)


def safe_open_image(
    data: bytes, settings: Settings, *, wait_s: float | None = None
) -> Image.Image:
    """Decode image bytes under every guard; EXIF orientation applied, mode RGB or RGBA.

    ``wait_s`` as for :func:`open_image` (request paths pass ``decode_wait_s``).
    """
    return normalize_image(open_image(data, settings, wait_s=wait_s))


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


class PixelBudget:
    """A counting semaphore over pixels, served first come, first served.

    A decode holds its width*height while it runs; one that does not fit waits. One image
    larger than the whole budget may still decode, but only alone. Waiters are served in
    arrival order, so a large image is not starved by a stream of small ones.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = max(int(capacity), 1)
        self._used = 0
        self._waiting: deque[object] = deque()
        self._cond = threading.Condition()

    @property
    def used(self) -> int:
        """Pixels held right now."""
        return self._used

    @property
    def waiting(self) -> int:
        """Callers waiting for room right now."""
        return len(self._waiting)

    @contextmanager
    def hold(self, pixels: int, *, timeout_s: float | None = None) -> Iterator[None]:
        """Hold ``pixels`` for the block; raises :class:`TimeoutError` past ``timeout_s``."""
        if not self.acquire(pixels, timeout_s=timeout_s):
            raise TimeoutError(f"no room for {pixels} pixels within {timeout_s} s")
        try:
            yield
        finally:
            self.release(pixels)

    def acquire(self, pixels: int, *, timeout_s: float | None = None) -> bool:
        """Take ``pixels``, waiting up to ``timeout_s`` (None: forever); False on timeout."""
        ticket = object()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            self._waiting.append(ticket)
            try:
                while not (self._waiting[0] is ticket and self._fits(pixels)):
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    self._cond.wait(remaining)
                self._used += pixels
                return True
            finally:
                self._waiting.remove(ticket)
                self._cond.notify_all()  # the next in line may fit now

    def release(self, pixels: int) -> None:
        with self._cond:
            self._used -= pixels
            self._cond.notify_all()

    def _fits(self, pixels: int) -> bool:
        return self._used == 0 or self._used + pixels <= self.capacity


_budgets: dict[int, PixelBudget] = {}
_budgets_lock = threading.Lock()


def decode_budget(settings: Settings) -> PixelBudget:
    """The process-wide budget for ``settings.decode_pixel_budget`` (one per size)."""
    capacity = settings.decode_pixel_budget
    with _budgets_lock:
        budget = _budgets.get(capacity)
        if budget is None:
            budget = _budgets[capacity] = PixelBudget(capacity)
        return budget


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
