"""Upload guards: byte/text/pixel limits before decoding, then a full decode."""

from __future__ import annotations

import io
import threading
import time
import zipfile
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageFile

from kenning.errors import Backpressure, CorruptMedia, EmptyContent, TooLarge, UnsupportedMedia
from kenning.ingest import validate
from kenning.ingest.validate import (
    PixelBudget,
    Validated,
    decode_budget,
    open_image,
    safe_open_image,
    validate_upload,
)
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


def _png(width: int = 64, height: int = 64) -> bytes:
    return _encode(_photo_like(width, height), "PNG")


class Gate:
    """Counts decoders inside ``_load``; each waits until every caller has either
    entered, queued on the budget or finished, so the peak is exact, not timing luck."""

    def __init__(self, budget: PixelBudget, callers: int) -> None:
        self.budget, self.callers = budget, callers
        self.inside = self.done = self.peak = 0
        self.cond = threading.Condition()

    def wrap(self, real: Callable[[Image.Image, str], None]) -> Callable[..., None]:
        def load(im: Image.Image, mime: str) -> None:
            with self.cond:
                self.inside += 1
                self.peak = max(self.peak, self.inside)
                self.cond.notify_all()
                assert self.cond.wait_for(
                    lambda: self.inside + self.budget.waiting + self.done >= self.callers,
                    timeout=10,
                )
                self.cond.notify_all()
            try:
                real(im, mime)
            finally:
                with self.cond:
                    self.inside -= 1
                    self.done += 1
                    self.cond.notify_all()

        return load

    def poke(self) -> None:
        """Wake gate waiters after a budget change they cannot see."""
        with self.cond:
            self.cond.notify_all()


def _until(condition: Callable[[], bool], what: str, timeout_s: float = 10) -> None:
    """Poll ``condition`` (a safety net for broken code, not a timing assertion)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.005)


def _run_threads(n: int, fn: Callable[[], object], gate: Gate) -> list[object]:
    results: list[object] = [None] * n
    start = threading.Barrier(n)

    def work(i: int) -> None:
        start.wait()
        try:
            results[i] = fn()
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while any(t.is_alive() for t in threads):
        assert time.monotonic() < deadline, "decoders never finished"
        gate.poke()  # budget waiters are counted by the gate; keep it re-checking
        for t in threads:
            t.join(timeout=0.01)
    return results


def test_concurrent_decodes_stay_within_the_pixel_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Room for exactly two 64x64 images at a time (the budget is unique to this test).
    settings = Settings(decode_pixel_budget=2 * 64 * 64 + 11)
    gate = Gate(decode_budget(settings), callers=6)
    monkeypatch.setattr(validate, "_load", gate.wrap(validate._load))
    data = _png()
    results = _run_threads(6, lambda: validate_upload(data, settings), gate)
    assert all(isinstance(r, Validated) for r in results), results
    assert gate.peak == 2
    assert decode_budget(settings).used == 0


def test_an_image_larger_than_the_budget_decodes_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(decode_pixel_budget=64 * 64 - 13)  # not even one image fits
    gate = Gate(decode_budget(settings), callers=4)
    monkeypatch.setattr(validate, "_load", gate.wrap(validate._load))
    data = _png()
    results = _run_threads(4, lambda: open_image(data, settings), gate)
    assert [r.size for r in results if isinstance(r, Image.Image)] == [(64, 64)] * 4
    assert gate.peak == 1


def test_an_upload_that_waits_too_long_for_the_budget_gets_backpressure() -> None:
    settings = Settings(decode_pixel_budget=64 * 64 + 17, decode_wait_s=0.05, retry_after_s=9)
    budget = decode_budget(settings)
    # Another decode holds the whole budget.
    with budget.hold(64 * 64), pytest.raises(Backpressure) as err:
        validate_upload(_png(), settings)
    assert err.value.status == 429 and err.value.retry_after == 9
    assert budget.used == 0 and budget.waiting == 0
    assert validate_upload(_png(), settings).width == 64  # room again


def test_a_pipeline_decode_waits_for_room_instead_of_failing() -> None:
    settings = Settings(decode_pixel_budget=64 * 64 + 19, decode_wait_s=0.0)
    budget = decode_budget(settings)
    got: list[Image.Image] = []
    budget.acquire(64 * 64)
    worker = threading.Thread(target=lambda: got.append(open_image(_png(), settings)))
    worker.start()
    _until(lambda: budget.waiting == 1 or not worker.is_alive(), "the decode queued")
    assert budget.waiting == 1 and got == []  # queued, not refused
    budget.release(64 * 64)
    worker.join(timeout=30)
    assert [im.size for im in got] == [(64, 64)]


def test_budget_serves_waiters_in_arrival_order() -> None:
    budget = PixelBudget(100)
    order: list[str] = []
    budget.acquire(60)

    def take(name: str, pixels: int) -> None:
        with budget.hold(pixels):
            order.append(name)

    big = threading.Thread(target=take, args=("big", 100))
    big.start()
    _until(lambda: budget.waiting == 1, "the big one queued")
    small = threading.Thread(target=take, args=("small", 10))  # would fit now, but is second
    small.start()
    _until(lambda: budget.waiting == 2, "the small one queued")
    assert order == []
    budget.release(60)
    big.join(timeout=10)
    small.join(timeout=10)
    assert order == ["big", "small"]


def test_jpeg_validation_decodes_at_reduced_scale(monkeypatch: pytest.MonkeyPatch) -> None:
    held: list[int] = []
    real_acquire = PixelBudget.acquire

    def acquire(self: PixelBudget, pixels: int, **kw: Any) -> bool:
        held.append(pixels)
        return real_acquire(self, pixels, **kw)

    monkeypatch.setattr(PixelBudget, "acquire", acquire)
    settings = Settings()
    data = _encode(_photo_like(1600, 1200), "JPEG", quality=85)
    checked = validate_upload(data, settings)
    assert (checked.width, checked.height) == (1600, 1200)  # the real size is reported
    assert open_image(data, settings).size == (1600, 1200)  # pixels for processors: full
    assert held == [200 * 150, 1600 * 1200]


def test_truncated_large_jpeg_is_corrupt_at_reduced_scale(settings: Settings) -> None:
    data = _encode(_photo_like(1600, 1200), "JPEG", quality=85)
    for cut in (len(data) // 2, len(data) - 200):
        with pytest.raises(CorruptMedia):
            validate_upload(data[:cut], settings)
