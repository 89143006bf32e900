"""image.decode: guarded decode of real photos; EXIF from a JPEG written with an EXIF block."""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest
from PIL import Image
from PIL.TiffImagePlugin import IFDRational

from kenning.errors import CorruptMedia, TooLarge
from kenning.pipeline.processor import StageInput
from kenning.processors.image.decode import DecodeImage, extract_exif
from kenning.settings import Settings


def _exif() -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = "Canon"
    exif[0x0110] = "Canon EOS 5D Mark IV"
    exif[0x0112] = 6  # rotate 90 CW to display
    exif.get_ifd(0x8769)[0x9003] = "2024:05:01 12:34:56"
    gps = exif.get_ifd(0x8825)
    gps[1] = "N"
    gps[2] = (IFDRational(52), IFDRational(22), IFDRational(1234, 100))
    gps[3] = "W"
    gps[4] = (IFDRational(4), IFDRational(53), IFDRational(3000, 100))
    return exif


def test_decodes_real_png(
    image_bytes: Callable[[str], bytes], make_input: Callable[..., StageInput]
) -> None:
    out = DecodeImage(Settings()).process_one(make_input(image_bytes("coffee")))
    meta = out.artifacts["image.meta"]
    assert meta == {"width": 600, "height": 400, "format": "PNG", "mode": "RGB", "exif": {}}
    assert out.asset_metadata == {"width": 600, "height": 400, "format": "PNG", "exif": {}}


def test_grey_photo_keeps_its_mode(
    image_bytes: Callable[[str], bytes], make_input: Callable[..., StageInput]
) -> None:
    meta = DecodeImage(Settings()).process_one(make_input(image_bytes("camera")))
    assert meta.artifacts["image.meta"]["mode"] == "L"
    assert (meta.artifacts["image.meta"]["width"], meta.artifacts["image.meta"]["height"]) == (
        512,
        512,
    )


def test_exif_subset_from_a_jpeg_with_an_exif_block(
    pil_image: Callable[[str], Image.Image],
    encode: Callable[..., bytes],
    make_input: Callable[..., StageInput],
) -> None:
    data = encode(pil_image("chelsea"), "JPEG", quality=90, exif=_exif())
    out = DecodeImage(Settings()).process_one(make_input(data, "image/jpeg"))
    meta = out.artifacts["image.meta"]
    assert meta["format"] == "JPEG"
    # Stored 451x300; orientation 6 displays it as 300x451.
    assert (meta["width"], meta["height"]) == (300, 451)
    exif = meta["exif"]
    assert exif["Make"] == "Canon"
    assert exif["Model"] == "Canon EOS 5D Mark IV"
    assert exif["DateTimeOriginal"] == "2024:05:01 12:34:56"
    assert exif["Orientation"] == 6
    assert exif["GPSLatitude"] == pytest.approx(52 + 22 / 60 + 12.34 / 3600)
    assert exif["GPSLongitude"] == pytest.approx(-(4 + 53 / 60 + 30 / 3600))
    assert out.asset_metadata["exif"] == exif


def test_malformed_exif_values_are_dropped(
    pil_image: Callable[[str], Image.Image], encode: Callable[..., bytes]
) -> None:
    exif = Image.Exif()
    exif[0x010F] = "\x00\x00"
    exif[0x0112] = 99
    gps = exif.get_ifd(0x8825)
    gps[1] = "N"
    gps[2] = (IFDRational(500), IFDRational(0), IFDRational(0))  # latitude 500 degrees
    gps[3] = "E"
    gps[4] = (IFDRational(4), IFDRational(0), IFDRational(0))
    im = Image.open(io.BytesIO(encode(pil_image("chelsea"), "JPEG", exif=exif)))
    assert im.getexif()[0x0112] == 99  # the bad values really are in the file
    assert extract_exif(im) == {}


def test_truncated_photo_is_corrupt(
    pil_image: Callable[[str], Image.Image],
    encode: Callable[..., bytes],
    make_input: Callable[..., StageInput],
) -> None:
    data = encode(pil_image("astronaut"), "JPEG", quality=90)
    with pytest.raises(CorruptMedia) as err:
        DecodeImage(Settings()).process_one(make_input(data[: len(data) // 2], "image/jpeg"))
    assert err.value.code == "corrupt_media"


def test_pixel_limit_applies_in_the_stage(
    image_bytes: Callable[[str], bytes], make_input: Callable[..., StageInput]
) -> None:
    with pytest.raises(TooLarge) as err:
        DecodeImage(Settings(max_image_pixels=100_000)).process_one(
            make_input(image_bytes("astronaut"))
        )
    assert err.value.code == "image_too_large"
