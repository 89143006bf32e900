"""What an upload really is, told from its leading bytes only (never from a file name).

Kenning ingests six raster image formats, UTF-8 text, audio (WAV, MP3, AAC, M4A, Ogg,
FLAC) and video (MP4/MOV, Matroska/WebM, AVI). Everything else is refused with
:class:`~kenning.errors.UnsupportedMedia`; when the bytes are a container we recognise
(ZIP, PDF, HEIC, ELF...) the message names it, so a client that sent ``report.docx``
renamed to ``report.jpg`` learns what was actually received.

For audio and video the bytes only name the container: whether an MP4, Matroska or Ogg
file is audio or video is decided by the streams the probe finds
(:mod:`kenning.media.av`), which also refuses what does not decode.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

from kenning.errors import EmptyContent, UnsupportedMedia
from kenning.media.kinds import MediaKind

__all__ = ["AV_MIMES", "Sniffed", "sniff"]


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
    (b"fLaC", "FLAC audio without a STREAMINFO block"),
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

# ISO base media (MP4 family) brands that are images, not audio or video.
_ISO_IMAGE_BRANDS: dict[bytes, str] = {
    b"heic": "HEIC image",
    b"heix": "HEIC image",
    b"mif1": "HEIF image",
    b"msf1": "HEIF image sequence",
    b"avif": "AVIF image",
    b"avis": "AVIF image sequence",
    b"jp2 ": "JPEG 2000 image",
    b"crx ": "Canon raw image",
}
# ISO base media brands ingested, with the MIME type of the container.
_ISO_AV_BRANDS: dict[bytes, str] = {
    b"qt  ": "video/quicktime",
    b"M4A ": "audio/mp4",
    b"M4B ": "audio/mp4",
    b"M4P ": "audio/mp4",
    b"F4A ": "audio/mp4",
    b"3gp4": "video/3gpp",
    b"3gp5": "video/3gpp",
    b"3gp6": "video/3gpp",
    b"3g2a": "video/3gpp2",
    **{brand: "video/mp4" for brand in (
        b"isom", b"iso2", b"iso3", b"iso4", b"iso5", b"iso6", b"mp41", b"mp42", b"mp71",
        b"avc1", b"M4V ", b"M4VH", b"M4VP", b"dash", b"mmp4", b"MSNV", b"XAVC", b"f4v ",
        b"NDAS", b"MP4 ")},
}

AV_MIMES: frozenset[str] = frozenset({
    "audio/wav", "audio/mpeg", "audio/aac", "audio/mp4", "audio/ogg", "audio/flac",
    "audio/webm", "audio/x-matroska", "video/mp4", "video/quicktime", "video/3gpp",
    "video/3gpp2", "video/x-matroska", "video/webm", "video/ogg", "video/x-msvideo",
})
"""Canonical MIME types of the audio and video containers Kenning ingests (the sniffed
ones and the audio forms the probe gives an MP4, Matroska or WebM file without video)."""

_RIFF_AV: dict[bytes, Sniffed] = {
    b"WAVE": Sniffed(MediaKind.AUDIO, "audio/wav"),
    b"AVI ": Sniffed(MediaKind.VIDEO, "video/x-msvideo"),
}
# MPEG audio frame header fields that are reserved (never in a real frame).
_MPEG_BAD_VERSION = 0b01
_MPEG_BAD_LAYER = 0b00

_BMP_DIB_HEADER_SIZES = frozenset({12, 16, 40, 52, 56, 64, 108, 124})
_TEXT_CONTROL_OK = frozenset("\t\n\r\f\v\x1b")
_TEXT_CONTROLS = re.compile(
    "[" + "".join(re.escape(chr(c)) for c in range(32) if chr(c) not in _TEXT_CONTROL_OK) + "]")
"""C0 control characters that do not occur in text (counted by the regex engine, not a
Python loop over every character)."""
_MAX_CONTROL_RATIO = 0.01


def sniff(data: bytes) -> Sniffed:
    """Classify ``data`` by magic bytes.

    Returns an image, audio, video or ``text/plain`` classification (audio and video by
    container: see the module docstring); raises
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

    av = _audio_video(head)
    if av is not None:
        return av
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
    if head[4:8] in (b"moov", b"mdat", b"wide", b"free", b"skip"):
        return Sniffed(MediaKind.VIDEO, "video/quicktime")  # QuickTime without ftyp
    frame = _mpeg_audio_frame(head)
    if frame is not None:
        return frame
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        raise UnsupportedMedia("unsupported media type: MPEG audio with an invalid frame "
                               "header", detected="mpeg-audio")
    raise UnsupportedMedia("unsupported media type: unrecognised binary data")


def _audio_video(head: bytes) -> Sniffed | None:
    """The audio or video container ``head`` starts with (strong signatures only)."""
    if head[:4] == b"RIFF" and head[8:12] in _RIFF_AV:
        return _RIFF_AV[head[8:12]]
    if head[:3] == b"ID3" and len(head) > 4 and 2 <= head[3] <= 4:
        return Sniffed(MediaKind.AUDIO, "audio/mpeg")
    if head.startswith(b"fLaC") and head[4:5] in (b"\x00", b"\x80") \
            and head[5:8] == b"\x00\x00\x22":
        return Sniffed(MediaKind.AUDIO, "audio/flac")  # STREAMINFO always comes first
    if head.startswith(b"OggS\x00"):
        # Vorbis, Opus or FLAC in Ogg are audio; the probe calls it video on a Theora stream.
        return Sniffed(MediaKind.AUDIO, "audio/ogg")
    if head.startswith(b"\x1aE\xdf\xa3"):
        # The EBML header names the DocType near the start.
        return Sniffed(MediaKind.VIDEO, "video/webm" if b"webm" in head else "video/x-matroska")
    if head[4:8] == b"ftyp" and head[8:12] in _ISO_AV_BRANDS:
        mime = _ISO_AV_BRANDS[head[8:12]]
        return Sniffed(MediaKind.AUDIO if mime.startswith("audio/") else MediaKind.VIDEO, mime)
    return None


def _mpeg_audio_frame(head: bytes) -> Sniffed | None:
    """An MPEG audio (MP3) or ADTS (AAC) frame header with no reserved field set."""
    if len(head) < 4 or head[0] != 0xFF:
        return None
    b1, b2 = head[1], head[2]
    if b1 & 0xF6 == 0xF0:  # 12-bit sync, layer 00: ADTS
        sampling = (b2 >> 2) & 0x0F
        return Sniffed(MediaKind.AUDIO, "audio/aac") if sampling < 13 else None
    if b1 & 0xE0 != 0xE0:
        return None
    version, layer = (b1 >> 3) & 0b11, (b1 >> 1) & 0b11
    bitrate, rate = b2 >> 4, (b2 >> 2) & 0b11
    if version == _MPEG_BAD_VERSION or layer == _MPEG_BAD_LAYER or bitrate in (0, 15) \
            or rate == 3:
        return None
    return Sniffed(MediaKind.AUDIO, "audio/mpeg")


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
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        name = brand.decode("latin-1").strip()
        return _ISO_IMAGE_BRANDS.get(brand, f"MP4-family file of unknown brand {name!r}")
    if head[:4] == b"RIFF":
        return "RIFF container"
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
