"""What an upload really is, told from its leading bytes only (never from a file name).

Kenning ingests six raster image formats and UTF-8 text. Everything else is refused with
:class:`~kenning.errors.UnsupportedMedia`; when the bytes are a container we recognise
(ZIP, PDF, MP4, ELF...) the message names it, so a client that sent ``report.docx``
renamed to ``report.jpg`` learns what was actually received.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

from kenning.errors import EmptyContent, UnsupportedMedia
from kenning.media.kinds import MediaKind

__all__ = ["Sniffed", "sniff"]


@dataclass(frozen=True)
class Sniffed:
    """The detected kind of an upload and its canonical MIME type."""

    kind: MediaKind
    mime: str


# Leading-byte signatures of the accepted image formats.
_IMAGE_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
)

# Leading-byte signatures of formats we recognise but do not ingest.
_UNSUPPORTED_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"%PDF-", "PDF document"),
    (b"\x1f\x8b", "gzip archive"),
    (b"\xfd7zXZ\x00", "xz archive"),
    (b"7z\xbc\xaf\x27\x1c", "7-Zip archive"),
    (b"Rar!\x1a\x07", "RAR archive"),
    (b"\x28\xb5\x2f\xfd", "zstd archive"),
    (b"\x7fELF", "ELF executable"),
    (b"\xca\xfe\xba\xbe", "Mach-O or Java class binary"),
    (b"\xcf\xfa\xed\xfe", "Mach-O executable"),
    (b"\xce\xfa\xed\xfe", "Mach-O executable"),
    (b"\x00asm", "WebAssembly module"),
    (b"OggS", "Ogg audio/video"),
    (b"fLaC", "FLAC audio"),
    (b"\x1aE\xdf\xa3", "Matroska/WebM video"),
    (b"FLV\x01", "Flash video"),
    (b"MThd\x00\x00\x00\x06", "MIDI audio"),
    (b"SQLite format 3\x00", "SQLite database"),
    (b"8BPS\x00", "Photoshop document"),
    (b"\x00\x00\x01\x00", "Windows icon"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000 image"),
    (b"\xff\x4f\xff\x51", "JPEG 2000 codestream"),
    (b"\xff\x0a", "JPEG XL image"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL image"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "legacy Microsoft Office document"),
    (b"{\\rtf", "RTF document"),
)

_ISO_BRANDS: dict[bytes, str] = {
    b"heic": "HEIC image",
    b"heix": "HEIC image",
    b"mif1": "HEIF image",
    b"msf1": "HEIF image sequence",
    b"avif": "AVIF image",
    b"avis": "AVIF image sequence",
    b"qt  ": "QuickTime (MOV) video",
    b"M4A ": "MPEG-4 audio (M4A)",
    b"3gp4": "3GP video",
    b"3gp5": "3GP video",
}

_RIFF_TYPES: dict[bytes, str] = {
    b"AVI ": "AVI video",
    b"WAVE": "WAV audio",
}

_BMP_DIB_HEADER_SIZES = frozenset({12, 16, 40, 52, 56, 64, 108, 124})
_TEXT_CONTROL_OK = frozenset("\t\n\r\f\v\x1b")
_TEXT_CONTROLS = re.compile(
    "[" + "".join(re.escape(chr(c)) for c in range(32) if chr(c) not in _TEXT_CONTROL_OK) + "]")
"""C0 control characters that do not occur in text (counted by the regex engine, not a
Python loop over every character)."""
_MAX_CONTROL_RATIO = 0.01


def sniff(data: bytes) -> Sniffed:
    """Classify ``data`` by magic bytes.

    Returns an image or ``text/plain`` classification; raises
    :class:`~kenning.errors.EmptyContent` for an empty body and
    :class:`~kenning.errors.UnsupportedMedia` (naming the detected type where known)
    for everything else.
    """
    if not data:
        raise EmptyContent("the upload is empty")
    head = data[:64]
    for magic, mime in _IMAGE_MAGIC:
        if head.startswith(magic):
            return Sniffed(MediaKind.IMAGE, mime)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return Sniffed(MediaKind.IMAGE, "image/webp")
    if _is_bmp(head):
        return Sniffed(MediaKind.IMAGE, "image/bmp")

    known = _known_unsupported(data)
    if known is not None:
        raise UnsupportedMedia(f"unsupported media type: {known}", detected=known)
    if _is_utf8_text(data):
        return Sniffed(MediaKind.TEXT, "text/plain")
    # Weak signatures are only trusted once the bytes have failed to be text.
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise UnsupportedMedia(
            "unsupported media type: UTF-16 text (send UTF-8)", detected="utf-16"
        )
    if head[:2] == b"MZ":
        raise UnsupportedMedia("unsupported media type: Windows executable", detected="exe")
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        raise UnsupportedMedia("unsupported media type: MPEG audio", detected="mpeg-audio")
    raise UnsupportedMedia("unsupported media type: unrecognised binary data")


def _is_bmp(head: bytes) -> bool:
    # "BM" alone is two ASCII letters; also require a plausible DIB header size.
    if not head.startswith(b"BM") or len(head) < 18:
        return False
    return int.from_bytes(head[14:18], "little") in _BMP_DIB_HEADER_SIZES


def _known_unsupported(data: bytes) -> str | None:
    head = data[:64]
    for magic, label in _UNSUPPORTED_MAGIC:
        if head.startswith(magic):
            return label
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")):
        return _zip_label(data)
    if head[:3] == b"BZh" and head[4:10] == b"1AY&SY":
        return "bzip2 archive"
    if head[:3] == b"ID3" and len(head) > 4 and 2 <= head[3] <= 4:
        return "MP3 audio"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        return _ISO_BRANDS.get(brand, f"MP4 video (brand {brand.decode('latin-1').strip()})")
    if head[4:8] in (b"moov", b"mdat", b"wide", b"free"):
        return "QuickTime (MOV) video"
    if head[:4] == b"RIFF":
        return _RIFF_TYPES.get(head[8:12], "RIFF container")
    if len(data) > 262 and data[257:262] == b"ustar":
        return "tar archive"
    return None


def _zip_label(data: bytes) -> str:
    # Office Open XML and OpenDocument files are ZIPs; their member names say which.
    probe = data[:4096]
    if b"word/" in probe:
        return "ZIP archive (Word document, docx)"
    if b"xl/" in probe:
        return "ZIP archive (Excel workbook, xlsx)"
    if b"ppt/" in probe:
        return "ZIP archive (PowerPoint deck, pptx)"
    if b"mimetypeapplication/vnd.oasis.opendocument" in probe:
        return "ZIP archive (OpenDocument)"
    if b"mimetypeapplication/epub+zip" in probe:
        return "ZIP archive (EPUB)"
    if b"META-INF/" in probe:
        return "ZIP archive (Java archive)"
    return "ZIP archive"


def _is_utf8_text(data: bytes) -> bool:
    if b"\x00" in data:
        return False
    try:
        text = data.decode("utf-8-sig", errors="strict")
    except UnicodeDecodeError:
        return False
    sample = text[:65_536]
    controls = len(_TEXT_CONTROLS.findall(sample))
    return controls <= _MAX_CONTROL_RATIO * max(len(sample), 1)
