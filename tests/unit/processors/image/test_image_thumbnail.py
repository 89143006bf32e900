"""image.thumbnail: JPEG previews of the configured size, never upscaled."""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest
from PIL import Image

from kenning.pipeline.processor import StageInput
from kenning.processors.image.thumbnail import ThumbnailImage, make_thumbnail
from kenning.settings import Settings


def _open(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


@pytest.mark.parametrize(
    ("stem", "expected"),
    [("astronaut", (256, 256)), ("coffee", (256, 171)), ("chelsea", (256, 170))],
)
def test_thumbnail_longest_side_is_thumbnail_px(
    image_bytes: Callable[[str], bytes],
    make_input: Callable[..., StageInput],
    stem: str,
    expected: tuple[int, int],
) -> None:
    out = ThumbnailImage(Settings(thumbnail_px=256)).process_one(make_input(image_bytes(stem)))
    thumb = _open(out.blobs["thumbnail"])
    assert thumb.format == "JPEG"
    assert thumb.mode == "RGB"
    assert thumb.size == expected
    assert out.artifacts["image.thumbnail"] == {
        "width": expected[0],
        "height": expected[1],
        "mime": "image/jpeg",
        "bytes": len(out.blobs["thumbnail"]),
    }


def test_grey_photo_and_custom_size(
    image_bytes: Callable[[str], bytes], make_input: Callable[..., StageInput]
) -> None:
    proc = ThumbnailImage(Settings(thumbnail_px=64))
    assert proc.version == "1+64px"
    out = proc.process_one(make_input(image_bytes("camera")))
    assert _open(out.blobs["thumbnail"]).size == (64, 64)


def test_small_images_are_not_upscaled(pil_image: Callable[[str], Image.Image]) -> None:
    small = pil_image("chelsea").resize((120, 80))
    data, size = make_thumbnail(small, 256)
    assert size == (120, 80)
    assert _open(data).size == (120, 80)


def test_transparent_areas_become_white(pil_image: Callable[[str], Image.Image]) -> None:
    rgba = pil_image("coffee").convert("RGBA")
    rgba.putalpha(0)  # fully transparent
    data, _ = make_thumbnail(rgba, 32)
    thumb = _open(data)
    assert thumb.mode == "RGB"
    r, g, b = thumb.getpixel((10, 10))  # type: ignore[misc]
    assert min(r, g, b) >= 250


def test_thumbnail_follows_exif_orientation(
    pil_image: Callable[[str], Image.Image],
    encode: Callable[..., bytes],
    make_input: Callable[..., StageInput],
) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, displayed portrait
    data = encode(pil_image("coffee"), "JPEG", quality=90, exif=exif)
    out = ThumbnailImage(Settings(thumbnail_px=120)).process_one(make_input(data, "image/jpeg"))
    assert _open(out.blobs["thumbnail"]).size == (80, 120)
