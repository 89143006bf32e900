"""Sniffing by magic bytes: accepted images and text, named refusals for everything else."""

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
        (b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41", "MP4"),
        (b"\x00\x00\x00\x14ftypqt  \x00\x00\x02\x00qt  ", "QuickTime"),
        (b"\x00\x00\x00\x1cftypheic\x00\x00\x00\x00mif1heic", "HEIC"),
        (b"RIFF\x00\x10\x00\x00AVI LIST", "AVI"),
        (_wav(), "WAV"),
        (b"ID3\x04\x00\x00\x00\x00\x00\x21" + b"\x00" * 40, "MP3"),
        (b"OggS\x00\x02" + b"\x00" * 40, "Ogg"),
        (b"\x1aE\xdf\xa3\x9fB\x86\x81\x01", "Matroska"),
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
