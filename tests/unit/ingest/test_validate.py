"""Upload admission: byte/text/pixel limits before decoding, then a bounded decode."""

from __future__ import annotations

import io
import time
import zipfile
from typing import Any

import pytest
from PIL import Image, ImageFile

from kenning.errors import Backpressure, CorruptMedia, EmptyContent, TooLarge, UnsupportedMedia
from kenning.ingest.validate import Validated, validate_upload
from kenning.media import images
from kenning.media.budget import PixelBudget, decode_budget
from kenning.media.images import open_image
from kenning.media.kinds import MediaKind
from kenning.settings import Settings
from tests.fixtures import media
from tests.fixtures.decoding import Gate, encode, photo_like, png, run_threads


@pytest.fixture
def settings() -> Settings:
    return Settings()


def test_valid_jpeg(settings: Settings) -> None:
    data = encode(photo_like(), "JPEG", quality=85)
    assert validate_upload(data, settings) == Validated(
        MediaKind.IMAGE, "image/jpeg", len(data), width=320, height=200, format="JPEG"
    )


def test_valid_text_counts_characters(settings: Settings) -> None:
    data = "\ufeffNachrichten aus Köln".encode()
    checked = validate_upload(data, settings)
    assert (checked.kind, checked.mime, checked.chars) == (MediaKind.TEXT, "text/plain", 20)


def test_truncated_jpeg_is_corrupt(settings: Settings) -> None:
    data = encode(photo_like(), "JPEG", quality=85)
    with pytest.raises(CorruptMedia) as err:
        validate_upload(data[: len(data) // 2], settings)
    assert err.value.code == "corrupt_media"


def test_truncated_jpeg_fails_even_if_someone_enabled_truncated_loading(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    data = encode(photo_like(), "JPEG", quality=85)
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


# ------------------------------------------------------------------ invisible text


@pytest.mark.parametrize(
    "text",
    [
        "\u200b",  # zero-width space
        "\u200c\u200d",  # zero-width non-joiner, joiner
        "\u2060",  # word joiner
        "\ufeff\ufeff\ufeff",  # BOMs (the first one is also stripped as a signature)
        "\u00ad\u00ad",  # soft hyphens
        "\u200e\u200f\u202a\u202c",  # bidi marks and embeddings
        "\u180e",  # Mongolian vowel separator
        "\U000e0001\U000e0041",  # language tag characters
        "\u034f\ufe0f\u0301",  # grapheme joiner, variation selector, a lone accent
        "\u3164\u115f\u2800",  # Hangul fillers, blank Braille pattern
        "\u3000\u00a0\u2028\u2029",  # ideographic and no-break spaces, separators
        " \u200b\n\t\u2060 \r\n\u200b ",
    ],
)
def test_invisible_text_is_empty(settings: Settings, text: str) -> None:
    with pytest.raises(EmptyContent) as err:
        validate_upload(text.encode(), settings)
    assert err.value.code == "empty_content"
    assert err.value.status == 422


@pytest.mark.parametrize("text", ["a\u200b", "\u200b\U0001f600", "\u200d\u0665", "-", "\ue000"])
def test_one_visible_character_is_content(settings: Settings, text: str) -> None:
    assert validate_upload(text.encode(), settings).chars == len(text)


# ------------------------------------------------------------------ decode budget


def test_concurrent_decodes_stay_within_the_pixel_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Room for exactly two 64x64 images at a time (the budget is unique to this test).
    settings = Settings(decode_pixel_budget=2 * 64 * 64 + 11)
    gate = Gate(decode_budget(settings), callers=6)
    monkeypatch.setattr(images, "_load", gate.wrap(images._load))
    data = png()
    results = run_threads(6, lambda: validate_upload(data, settings), gate)
    assert all(isinstance(r, Validated) for r in results), results
    assert gate.peak == 2
    assert decode_budget(settings).used == 0


def test_an_upload_that_waits_too_long_for_the_budget_gets_backpressure() -> None:
    settings = Settings(decode_pixel_budget=64 * 64 + 17, decode_wait_s=0.05, retry_after_s=9)
    budget = decode_budget(settings)
    # Another decode holds the whole budget.
    with budget.hold(64 * 64), pytest.raises(Backpressure) as err:
        validate_upload(png(), settings)
    assert err.value.status == 429 and err.value.retry_after == 9
    assert budget.used == 0 and budget.waiting == 0
    assert validate_upload(png(), settings).width == 64  # room again


def test_jpeg_validation_decodes_at_reduced_scale(monkeypatch: pytest.MonkeyPatch) -> None:
    held: list[int] = []
    real_acquire = PixelBudget.acquire

    def acquire(self: PixelBudget, pixels: int, **kw: Any) -> bool:
        held.append(pixels)
        return real_acquire(self, pixels, **kw)

    monkeypatch.setattr(PixelBudget, "acquire", acquire)
    settings = Settings()
    data = encode(photo_like(1600, 1200), "JPEG", quality=85)
    checked = validate_upload(data, settings)
    assert (checked.width, checked.height) == (1600, 1200)  # the real size is reported
    assert open_image(data, settings).size == (1600, 1200)  # pixels for processors: full
    assert held == [200 * 150, 1600 * 1200]


def test_truncated_large_jpeg_is_corrupt_at_reduced_scale(settings: Settings) -> None:
    data = encode(photo_like(1600, 1200), "JPEG", quality=85)
    for cut in (len(data) // 2, len(data) - 200):
        with pytest.raises(CorruptMedia):
            validate_upload(data[:cut], settings)
