"""OCR runtimes: reading order, backend selection, and RapidOCR on a real scanned page."""

from __future__ import annotations

import socket
import sys
import threading
from typing import Any

import pytest
from PIL import Image

from kenning.errors import KenningError, MissingExtra
from kenning.inference.ocr import (
    OcrBackend,
    OcrBlock,
    RapidOcrBackend,
    TesseractBackend,
    group_lines,
    make_ocr_backend,
    sort_reading_order,
)
from kenning.settings import Settings
from tests.fixtures import media


@pytest.fixture(scope="module")
def page() -> Image.Image:
    """skimage's page.png: a real scanned book page (same cache as the image tests)."""
    path = media.image_path("page.png")
    im = Image.open(path)
    im.load()
    return im


def _block(text: str, x0: int, y0: int, x1: int, y1: int) -> OcrBlock:
    return OcrBlock(text, 0.9, [x0, y0, x1, y1])


def test_reading_order_groups_lines_then_left_to_right() -> None:
    blocks = [
        _block("right", 200, 12, 300, 32),
        _block("second", 0, 45, 120, 65),
        _block("left", 0, 10, 100, 30),  # slightly higher than "right": same line
        _block("middle", 110, 11, 190, 31),
    ]
    assert [b.text for b in sort_reading_order(blocks)] == ["left", "middle", "right", "second"]
    assert [[b.text for b in line] for line in group_lines(blocks)] == [
        ["left", "middle", "right"],
        ["second"],
    ]


def test_overlapping_lines_of_a_tight_scan_stay_separate() -> None:
    # page.png's lines overlap vertically by a few pixels (boxes are padded).
    blocks = [_block("two", 2, 62, 380, 87), _block("one", 2, 45, 379, 68)]
    assert [[b.text for b in line] for line in group_lines(blocks)] == [["one"], ["two"]]


def test_reading_order_of_nothing() -> None:
    assert sort_reading_order([]) == []


def test_factory_builds_rapidocr_without_loading_models() -> None:
    backend = make_ocr_backend(Settings(ocr_backend="rapidocr"))
    assert isinstance(backend, RapidOcrBackend)
    assert isinstance(backend, OcrBackend)
    assert backend.name == "rapidocr"
    assert "PP-OCR" in backend.version
    assert backend._engine is None  # lazy: nothing loaded until the first read


def test_factory_rejects_unknown_backend() -> None:
    with pytest.raises(KenningError) as err:
        make_ocr_backend(Settings(ocr_backend="abbyy"))
    assert err.value.code == "invalid_setting"


def test_tesseract_without_pytesseract_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pytesseract", None)  # import now raises ImportError
    with pytest.raises(MissingExtra) as err:
        make_ocr_backend(Settings(ocr_backend="tesseract"))
    assert err.value.code == "missing_dependency"
    assert "kenning[tesseract]" in err.value.message


@pytest.mark.slow
def test_rapidocr_reads_a_scanned_page_offline(
    page: Image.Image, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_network(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("OCR tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    backend = RapidOcrBackend(threads=1)
    blocks = backend.read(page)
    texts = [b.text for b in blocks]
    assert texts[0] == "Region-based segmentation"
    assert "Let us first determine markers of the coins and the" in texts
    assert "unambiguously as either object or background. Here," in texts
    assert any("histogram of grey values" in t for t in texts)
    assert [b.bbox[1] for b in blocks] == sorted(b.bbox[1] for b in blocks)
    assert blocks[0].confidence > 0.95


@pytest.fixture(scope="module")
def backend() -> RapidOcrBackend:
    """A RapidOCR backend shared by this module's tests (models load once)."""
    return RapidOcrBackend(threads=1)


@pytest.mark.slow
def test_rapidocr_handles_alpha_and_upside_down_lines(
    page: Image.Image, backend: RapidOcrBackend
) -> None:
    blocks = backend.read(page.convert("RGBA"))
    assert blocks[0].text == "Region-based segmentation"
    # The orientation classifier turns each upside-down line; page order is not restored.
    texts = [b.text for b in backend.read(page.rotate(180))]
    assert "unambiguously as either object or background. Here," in texts


@pytest.mark.slow
def test_rapidocr_loads_once_under_concurrent_first_use(
    page: Image.Image, monkeypatch: pytest.MonkeyPatch
) -> None:
    import rapidocr

    built: list[object] = []
    real = rapidocr.RapidOCR

    def counting(*args: Any, **kwargs: Any) -> object:
        engine = real(*args, **kwargs)
        built.append(engine)
        return engine

    monkeypatch.setattr(rapidocr, "RapidOCR", counting)
    backend = RapidOcrBackend(threads=1)
    crop = page.crop((0, 0, 384, 40))
    results: list[list[str]] = []

    def work() -> None:
        results.append([b.text for b in backend.read(crop)])

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(built) == 1
    assert results == [["Region-based segmentation"]] * 3


def _tesseract_ready() -> bool:
    try:
        TesseractBackend()
    except KenningError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(not _tesseract_ready(), reason="pytesseract or tesseract binary missing")
def test_tesseract_reads_a_scanned_page(page: Image.Image) -> None:
    blocks = TesseractBackend().read(page)
    assert "Region-based segmentation" in blocks[0].text
    assert all(0.0 <= b.confidence <= 1.0 for b in blocks)
