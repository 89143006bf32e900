"""Upload guards: byte/text/pixel limits before decoding, then a full decode."""

from __future__ import annotations

import io
import time
import zipfile

import numpy as np
import pytest
from PIL import Image, ImageFile

from kenning.errors import CorruptMedia, EmptyContent, TooLarge, UnsupportedMedia
from kenning.ingest.validate import Validated, open_image, safe_open_image, validate_upload
from kenning.pipeline.processor import MediaKind
from kenning.settings import Settings
from tests.fixtures import media


def _photo_like(width: int = 320, height: int = 200) -> Image.Image:
    rng = np.random.default_rng(11)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx * 255 / width, yy * 255 / height, (xx + yy) * 127 / (width + height)], -1)
    noisy = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(noisy, "RGB")


def _encode(im: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **params)
    return buf.getvalue()


@pytest.fixture
def settings() -> Settings:
    return Settings()


def test_valid_jpeg(settings: Settings) -> None:
    data = _encode(_photo_like(), "JPEG", quality=85)
    assert validate_upload(data, settings) == Validated(
        MediaKind.IMAGE, "image/jpeg", len(data), width=320, height=200, format="JPEG"
    )


def test_valid_text_counts_characters(settings: Settings) -> None:
    data = "\ufeffNachrichten aus Köln".encode()
    checked = validate_upload(data, settings)
    assert (checked.kind, checked.mime, checked.chars) == (MediaKind.TEXT, "text/plain", 20)


def test_truncated_jpeg_is_corrupt(settings: Settings) -> None:
    data = _encode(_photo_like(), "JPEG", quality=85)
    with pytest.raises(CorruptMedia) as err:
        validate_upload(data[: len(data) // 2], settings)
    assert err.value.code == "corrupt_media"


def test_truncated_jpeg_fails_even_if_someone_enabled_truncated_loading(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    data = _encode(_photo_like(), "JPEG", quality=85)
    with pytest.raises(CorruptMedia):
        validate_upload(data[: len(data) // 2], settings)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_png_with_damaged_pixel_data_is_corrupt(settings: Settings) -> None:
    data = media.png_bomb_header(64, 64)  # declares 64x64 but carries one filter byte
    with pytest.raises(CorruptMedia):
        validate_upload(data, settings)


def test_png_declaring_50000_squared_is_refused_before_decoding(settings: Settings) -> None:
    data = media.png_bomb_header(50_000, 50_000)
    assert len(data) < 100
    started = time.perf_counter()
    with pytest.raises(TooLarge) as err:
        validate_upload(data, settings)
    assert err.value.code == "image_too_large"
    assert err.value.status == 413
    assert time.perf_counter() - started < 1.0  # nothing was allocated or decoded


def test_pixel_guard_does_not_rely_on_pils_global(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # PIL's own guard switched off
    with pytest.raises(TooLarge) as err:
        validate_upload(media.png_bomb_header(50_000, 50_000), settings)
    assert err.value.code == "image_too_large"
    assert err.value.details == {"width": 50_000, "height": 50_000}


def test_our_limit_is_below_pils_default(settings: Settings) -> None:
    # 9,000 x 9,000 = 81 MP: over our 80 MP, under PIL's ~89 MP warning threshold.
    with pytest.raises(TooLarge) as err:
        validate_upload(media.png_bomb_header(9_000, 9_000), settings)
    assert "9000x9000" in err.value.message


def test_side_limit(settings: Settings) -> None:
    with pytest.raises(TooLarge, match="per side"):
        validate_upload(media.png_bomb_header(30_000, 10), settings)


def test_configured_limit_above_pils_default_is_honoured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after
    big = Settings(max_image_pixels=400_000_000, max_image_side=50_000)
    # 20,000 x 10,000 = 200 MP: PIL alone would raise DecompressionBombError.
    with pytest.raises(CorruptMedia):  # accepted by the size guard, then fails to decode
        validate_upload(media.png_bomb_header(20_000, 10_000), big)
    assert Image.MAX_IMAGE_PIXELS == 400_000_000


def test_jpg_that_is_really_a_zip(settings: Settings) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("photo.jpg", b"not really")
    with pytest.raises(UnsupportedMedia, match="ZIP"):
        validate_upload(buf.getvalue(), settings)


def test_empty_body(settings: Settings) -> None:
    with pytest.raises(EmptyContent):
        validate_upload(b"", settings)


def test_blank_text(settings: Settings) -> None:
    with pytest.raises(EmptyContent):
        validate_upload(b" \n\t ", settings)


def test_text_limit_is_in_characters_not_bytes() -> None:
    settings = Settings(max_text_chars=100)
    assert validate_upload(("é" * 100).encode(), settings).chars == 100  # 200 bytes
    with pytest.raises(TooLarge) as err:
        validate_upload(("é" * 101).encode(), settings)
    assert err.value.code == "text_too_long"
    assert err.value.details == {"limit": 100, "actual": 101}


def test_byte_limit_comes_first() -> None:
    settings = Settings(max_upload_bytes=1_000)
    with pytest.raises(TooLarge) as err:
        validate_upload(b"\x00" * 1_001, settings)  # not even sniffed
    assert err.value.code == "file_too_large"


def test_open_image_keeps_format_and_mode(settings: Settings) -> None:
    im = open_image(_encode(_photo_like().convert("L"), "PNG"), settings)
    assert (im.format, im.mode, im.size) == ("PNG", "L", (320, 200))


def test_safe_open_applies_exif_orientation(settings: Settings) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    im = safe_open_image(_encode(_photo_like(), "JPEG", exif=exif), settings)
    assert (im.mode, im.size) == ("RGB", (200, 320))


@pytest.mark.parametrize(
    ("make", "fmt", "mode"),
    [
        (lambda: _photo_like().convert("L"), "PNG", "RGB"),
        (lambda: _photo_like().convert("RGBA"), "PNG", "RGBA"),
        (lambda: _photo_like().convert("P"), "GIF", "RGB"),
        (lambda: _photo_like().convert("CMYK"), "TIFF", "RGB"),
        (lambda: _photo_like().convert("1"), "BMP", "RGB"),
    ],
)
def test_safe_open_normalises_modes(settings: Settings, make: object, fmt: str, mode: str) -> None:
    im = safe_open_image(_encode(make(), fmt), settings)  # type: ignore[operator]
    assert im.mode == mode
    assert im.size == (320, 200)


def test_safe_open_scales_16_bit_grey(settings: Settings) -> None:
    arr = (np.arange(320 * 200, dtype=np.uint32).reshape(200, 320) % 65536).astype(np.uint16)
    im = safe_open_image(_encode(Image.fromarray(arr), "PNG"), settings)
    assert im.mode == "RGB"
    out = np.asarray(im)
    assert out.max() == arr.max() >> 8 and out.min() == 0
    assert out[0, 300, 0] == arr[0, 300] >> 8


def test_safe_open_refuses_text(settings: Settings) -> None:
    with pytest.raises(UnsupportedMedia, match="expected an image"):
        safe_open_image(b"just words", settings)
