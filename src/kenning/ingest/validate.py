"""The admission guard for uploads: byte, text-length and pixel limits, then a decode.

Order matters. The byte limit is checked before anything looks inside the body; the type
is sniffed from magic bytes (:mod:`kenning.media.sniff`); an image is refused at once
when this install cannot process images (no ``image`` extra), then verified by
:func:`kenning.media.images.verify_image`: dimensions are refused from the header before
PIL allocates a pixel buffer, and the decode (of a JPEG at 1/8 scale: only validity
counts here) holds the process-wide pixel budget, waiting at most ``decode_wait_s``
before the upload is refused with :class:`~kenning.errors.Backpressure` (429).

Audio and video are probed by :func:`kenning.media.av.probe_media` in an isolated child
process bounded by ``media_probe_timeout_s`` and ``media_decode_memory_mb``: what the
header already tells is refused here (413 ``media_too_long``, ``resolution_too_large``,
``too_many_streams``; 422 ``corrupt_media`` when not even the header reads), and the
probe's streams decide whether the file is audio or video. The full decode is the
``av.probe`` stage's.

Text must have content: text made only of whitespace, controls, zero-width and other
format characters (U+200B, U+200D, U+2060, U+FEFF, soft hyphen...) is empty.

Our limits are checked on every call from :class:`~kenning.settings.Settings`.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from kenning.errors import EmptyContent, TooLarge
from kenning.media.av import probe_media
from kenning.media.images import verify_image
from kenning.media.kinds import MediaKind
from kenning.media.limits import check_bytes
from kenning.media.sniff import sniff
from kenning.processors.av.extra import require_av_support
from kenning.processors.image.extra import require_image_support
from kenning.settings import Settings

__all__ = ["Validated", "has_content", "validate_upload"]

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
    duration_s: float | None = None
    """What the header declares; audio and video only."""


def validate_upload(data: bytes, settings: Settings) -> Validated:
    """Check an upload against every ingest limit and decode it once.

    Raises :class:`EmptyContent`, :class:`TooLarge` (codes ``file_too_large``,
    ``text_too_long``, ``image_too_large``, ``media_too_long``, ``resolution_too_large``,
    ``too_many_streams``, ``decode_memory``), :class:`UnsupportedMedia` (also for an
    image or a video when its extra is not installed), :class:`CorruptMedia` (codes
    ``corrupt_media``, ``decode_timeout``, ``decode_failed``) or :class:`Backpressure`
    (the decode budget, or every decoding process, stayed busy).
    """
    check_bytes(data, settings.max_upload_bytes)
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
    if sniffed.kind in (MediaKind.AUDIO, MediaKind.VIDEO):
        require_av_support()
        probe = probe_media(data, sniffed.mime, settings, wait_s=settings.decode_wait_s)
        video = probe.video
        return Validated(
            probe.kind, probe.mime, len(data), width=video.width if video else None,
            height=video.height if video else None, format=probe.format,
            duration_s=probe.duration_s,
        )
    require_image_support(settings)
    info = verify_image(data, sniffed.mime, settings, wait_s=settings.decode_wait_s)
    return Validated(
        sniffed.kind, sniffed.mime, len(data),
        width=info.width, height=info.height, format=info.format,
    )


def has_content(text: str) -> bool:
    """True when ``text`` has at least one visible character.

    Decided by Unicode category: whitespace, controls, format characters (zero-width
    space, joiners, BOM, soft hyphen...) and lone combining marks are not content.
    """
    return any(
        unicodedata.category(ch) not in _INVISIBLE and ch not in _BLANK_GLYPHS for ch in text
    )
