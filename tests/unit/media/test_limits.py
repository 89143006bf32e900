"""Limits as plain values: the byte check, and decoding with no settings object at all."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest

from kenning.errors import EmptyContent, TooLarge
from kenning.media.images import ImageInfo, verify_image
from kenning.media.limits import check_bytes
from tests.fixtures import media
from tests.fixtures.decoding import png


@dataclass(frozen=True)
class Limits:
    max_upload_bytes: int = 1_000_000
    max_image_pixels: int = 10_000
    max_image_side: int = 200
    decode_pixel_budget: int = 10_007
    retry_after_s: int = 3


def test_check_bytes_refuses_empty_and_oversized_bodies() -> None:
    check_bytes(b"x" * 10, 10)
    with pytest.raises(EmptyContent):
        check_bytes(b"", 10)
    with pytest.raises(TooLarge) as err:
        check_bytes(b"x" * 11, 10)
    assert (err.value.code, err.value.status) == ("file_too_large", 413)
    assert err.value.details == {"limit": 10, "actual": 11}


def test_verify_image_takes_any_object_with_the_limits() -> None:
    assert verify_image(png(64, 64), "image/png", Limits()) == ImageInfo(64, 64, "PNG")


def test_verify_image_refuses_from_the_header() -> None:
    with pytest.raises(TooLarge) as err:
        verify_image(media.png_bomb_header(150, 150), "image/png", Limits())  # no pixel data
    assert err.value.details == {"width": 150, "height": 150}
    with pytest.raises(TooLarge, match="per side"):
        verify_image(png(64, 64), "image/png", replace(Limits(), max_image_side=63))
