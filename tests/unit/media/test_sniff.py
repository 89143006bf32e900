"""Sniffing by magic bytes: accepted images, text, audio and video containers; named
refusals for everything else."""

from __future__ import annotations

import gzip
import io
import random
import tarfile
import wave
import zipfile

import numpy as np
import pytest
from PIL import Image

from kenning.errors import EmptyContent, UnsupportedMedia
from kenning.media.kinds import MediaKind
from kenning.media.sniff import Sniffed, sniff


def _photo_like() -> Image.Image:
    rng = np.random.default_rng(7)
    x = np.linspace(0, 255, 64)
    arr = np.stack([np.add.outer(x, x) / 2, np.add.outer(x[::-1], x) / 2, np.tile(x, (64, 1))], -1)
    arr = np.clip(arr + rng.normal(0, 8, arr.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def _encode(fmt: str) -> bytes:
    buf = io.BytesIO()
    _photo_like().save(buf, format=fmt)
    return buf.getvalue()


def _zip(members: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    return buf.getvalue()


def _wav() -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x01" * 800)
    return buf.getvalue()


def _tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        data = b"hello"
        info = tarfile.TarInfo("hello.txt")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize(
    ("fmt", "mime"),
    [
        ("JPEG", "image/jpeg"),
        ("PNG", "image/png"),
        ("GIF", "image/gif"),
        ("WEBP", "image/webp"),
        ("BMP", "image/bmp"),
        ("TIFF", "image/tiff"),
    ],
)
def test_images_by_magic(fmt: str, mime: str) -> None:
    assert sniff(_encode(fmt)) == Sniffed(MediaKind.IMAGE, mime)


@pytest.mark.parametrize(
    "text",
    [
        "Hello, world.\n",
        "\ufeffWith a byte-order mark",
        "Grüße aus Köln — 東京 — Ελληνικά\r\n\ttabbed",
        "BMW announced a recall.",  # starts like a BMP, but is text
        "ID3 tags describe MP3 files.",
        "MZ is a prefix of Windows executables.",
    ],
)
def test_utf8_text(text: str) -> None:
    assert sniff(text.encode("utf-8")) == Sniffed(MediaKind.TEXT, "text/plain")


@pytest.mark.parametrize(
    ("data", "named"),
    [
        (_zip({"readme.txt": "hi"}), "ZIP archive"),
        (_zip({"[Content_Types].xml": "<x/>", "word/document.xml": "<w/>"}), "docx"),
        (_zip({"[Content_Types].xml": "<x/>", "xl/workbook.xml": "<w/>"}), "xlsx"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n", "PDF"),
        (gzip.compress(b"hello" * 100), "gzip"),
        (b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 56, "ELF"),
        (b"\x00\x00\x00\x1cftypheic\x00\x00\x00\x00mif1heic", "HEIC"),
        (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00mif1avif", "AVIF"),
        (b"\x00\x00\x00\x14ftypzzzz\x00\x00\x02\x00zzzz", "unknown brand 'zzzz'"),
        (b"FLV\x01\x05\x00\x00\x00\x09", "Flash video"),
        (b"MThd\x00\x00\x00\x06\x00\x01", "MIDI"),
        (b"RIFF\x00\x10\x00\x00CDXA", "RIFF container"),
        (_tar(), "tar"),
    ],
)
def test_known_unsupported_types_are_named(data: bytes, named: str) -> None:
    with pytest.raises(UnsupportedMedia) as err:
        sniff(data)
    assert named in err.value.message
    assert err.value.code == "unsupported_media_type"
    assert err.value.status == 415


def test_empty_body() -> None:
    with pytest.raises(EmptyContent) as err:
        sniff(b"")
    assert err.value.code == "empty_content"


@pytest.mark.parametrize(
    "data",
    [
        random.Random(3).randbytes(4096),
        "Café in Latin-1".encode("latin-1"),  # not valid UTF-8
        b"text with a NUL\x00 byte",
        b"\x01\x02\x03\x04 mostly control characters \x05\x06\x07",
        "UTF-16 text".encode("utf-16"),
    ],
)
def test_other_bytes_are_unsupported(data: bytes) -> None:
    with pytest.raises(UnsupportedMedia):
        sniff(data)


def test_utf16_is_named() -> None:
    with pytest.raises(UnsupportedMedia, match="UTF-16"):
        sniff("hello".encode("utf-16"))


@pytest.mark.parametrize(
    ("data", "kind", "mime"),
    [
        (_wav(), MediaKind.AUDIO, "audio/wav"),
        (b"RIFF\x00\x10\x00\x00AVI LIST", MediaKind.VIDEO, "video/x-msvideo"),
        (b"ID3\x04\x00\x00\x00\x00\x00\x21" + b"\x00" * 40, MediaKind.AUDIO, "audio/mpeg"),
        (b"\xff\xfb\x90\x64" + b"\x00" * 60, MediaKind.AUDIO, "audio/mpeg"),  # MPEG-1 L3
        (b"\xff\xf1\x50\x80" + b"\x00" * 60, MediaKind.AUDIO, "audio/aac"),  # ADTS
        (b"OggS\x00\x02" + b"\x00" * 40, MediaKind.AUDIO, "audio/ogg"),
        (b"fLaC\x00\x00\x00\x22" + b"\x00" * 40, MediaKind.AUDIO, "audio/flac"),
        (b"\x1aE\xdf\xa3\x9fB\x86\x81\x01B\x82\x88matroska", MediaKind.VIDEO,
         "video/x-matroska"),
        (b"\x1aE\xdf\xa3\x9fB\x86\x81\x01B\x82\x84webm", MediaKind.VIDEO, "video/webm"),
        (b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41", MediaKind.VIDEO,
         "video/mp4"),
        (b"\x00\x00\x00\x14ftypqt  \x00\x00\x02\x00qt  ", MediaKind.VIDEO, "video/quicktime"),
        (b"\x00\x00\x00\x1cftypM4A \x00\x00\x02\x00M4A mp42isom", MediaKind.AUDIO,
         "audio/mp4"),
        (b"\x00\x00\x00\x08wide\x00\x10\x00\x00mdat\xff\x00", MediaKind.VIDEO,
         "video/quicktime"),
    ],
)
def test_audio_and_video_containers_by_magic(data: bytes, kind: MediaKind, mime: str) -> None:
    assert sniff(data) == Sniffed(kind, mime)


@pytest.mark.parametrize("data", [
    b"\xff\xff\xff\xff" + b"\x00" * 60,  # reserved MPEG fields: not a frame
    b"\xff\xe2\x00\x00" + b"\x80" * 60,
])
def test_mpeg_sync_with_reserved_fields_is_refused(data: bytes) -> None:
    with pytest.raises(UnsupportedMedia, match="MPEG audio"):
        sniff(data)


def test_text_that_mentions_containers_stays_text() -> None:
    for text in ("OggS is the Ogg page magic.", "mdat", "ID3 tags", "1234free text"):
        assert sniff(text.encode()).kind is MediaKind.TEXT
    for data in (b"fLaC", b"fLaC streams start so."):  # no STREAMINFO: refused as before
        with pytest.raises(UnsupportedMedia, match="FLAC"):
            sniff(data)
