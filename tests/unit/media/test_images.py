"""Safe image decoding: format and mode kept or normalised, EXIF orientation applied."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from kenning.errors import UnsupportedMedia
from kenning.media.images import open_image, safe_open_image
from kenning.settings import Settings
from tests.fixtures.decoding import encode, photo_like


@pytest.fixture
def settings() -> Settings:
    return Settings()


def test_open_image_keeps_format_and_mode(settings: Settings) -> None:
    im = open_image(encode(photo_like().convert("L"), "PNG"), settings)
    assert (im.format, im.mode, im.size) == ("PNG", "L", (320, 200))


def test_safe_open_applies_exif_orientation(settings: Settings) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    im = safe_open_image(encode(photo_like(), "JPEG", exif=exif), settings)
    assert (im.mode, im.size) == ("RGB", (200, 320))


@pytest.mark.parametrize(
    ("make", "fmt", "mode"),
    [
        (lambda: photo_like().convert("L"), "PNG", "RGB"),
        (lambda: photo_like().convert("RGBA"), "PNG", "RGBA"),
        (lambda: photo_like().convert("P"), "GIF", "RGB"),
        (lambda: photo_like().convert("CMYK"), "TIFF", "RGB"),
        (lambda: photo_like().convert("1"), "BMP", "RGB"),
    ],
)
def test_safe_open_normalises_modes(settings: Settings, make: object, fmt: str, mode: str) -> None:
    im = safe_open_image(encode(make(), fmt), settings)  # type: ignore[operator]
    assert im.mode == mode
    assert im.size == (320, 200)


def test_safe_open_scales_16_bit_grey(settings: Settings) -> None:
    arr = (np.arange(320 * 200, dtype=np.uint32).reshape(200, 320) % 65536).astype(np.uint16)
    im = safe_open_image(encode(Image.fromarray(arr), "PNG"), settings)
    assert im.mode == "RGB"
    out = np.asarray(im)
    assert out.max() == arr.max() >> 8 and out.min() == 0
    assert out[0, 300, 0] == arr[0, 300] >> 8


def test_safe_open_refuses_text(settings: Settings) -> None:
    with pytest.raises(UnsupportedMedia, match="expected an image"):
        safe_open_image(b"just words", settings)
