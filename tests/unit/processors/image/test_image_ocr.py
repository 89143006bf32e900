"""image.ocr: real OCR of a scanned book page, plus the stage's plumbing with a stub reader."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from PIL import Image

from kenning.inference.ocr import OcrBlock, RapidOcrBackend
from kenning.pipeline.processor import StageInput
from kenning.processors.image import build_image_processors
from kenning.processors.image.ocr import OcrImage, join_blocks, read_image_text
from kenning.settings import Settings

# Words printed on skimage's page.png (checked by eye): a heading and a paragraph.
PAGE_PHRASES = (
    "Region-based segmentation",
    "Let us first determine markers of the coins and the",
    "background. These markers are pixels that we can label",
    "unambiguously as either object or background. Here,",
    "histogram of grey values",
)


class StubOcr:
    """Records what it was asked to read; answers fixed blocks (in scrambled order)."""

    name = "stub"
    version = "0"

    def __init__(self, blocks: list[OcrBlock]) -> None:
        self.blocks = blocks
        self.seen: list[tuple[int, int]] = []

    def read(self, image: Image.Image) -> list[OcrBlock]:
        self.seen.append(image.size)
        return [OcrBlock(b.text, b.confidence, list(b.bbox)) for b in self.blocks]


@pytest.mark.slow
def test_reads_the_printed_page(
    image_bytes: Callable[[str], bytes],
    make_input: Callable[..., StageInput],
    rapid_ocr: RapidOcrBackend,
) -> None:
    out = OcrImage(Settings(), rapid_ocr).process_one(make_input(image_bytes("page")))
    text = out.artifacts["text"]["text"]
    assert out.artifacts["text"]["source"] == "ocr"
    for phrase in PAGE_PHRASES:
        assert phrase in text
    # Reading order: the heading first, the paragraph top to bottom.
    positions = [text.index(p) for p in PAGE_PHRASES]
    assert positions == sorted(positions)
    assert [s.seq for s in out.segments] == list(range(len(out.segments)))
    assert all(s.kind == "ocr_block" for s in out.segments)
    tops = [s.data["bbox"][1] for s in out.segments]
    assert tops == sorted(tops)
    for seg in out.segments:
        x0, y0, x1, y1 = seg.data["bbox"]
        assert 0 <= x0 < x1 <= 384 and 0 <= y0 < y1 <= 191  # page.png is 384x191
        assert 0.0 <= seg.data["confidence"] <= 1.0
    confidences = [s.data["confidence"] for s in out.segments]
    assert out.confidence == pytest.approx(sum(confidences) / len(confidences))
    assert out.confidence is not None and out.confidence > 0.8
    assert out.model_version is not None and out.model_version.startswith("rapidocr-")


@pytest.mark.slow
def test_photo_without_text_gives_empty_text(
    image_bytes: Callable[[str], bytes],
    make_input: Callable[..., StageInput],
    rapid_ocr: RapidOcrBackend,
) -> None:
    out = OcrImage(Settings(), rapid_ocr).process_one(make_input(image_bytes("astronaut")))
    assert out.artifacts["text"] == {"text": "", "source": "ocr"}
    assert out.segments == []
    assert out.confidence is None


def test_downscales_and_maps_boxes_back(pil_image: Callable[[str], Image.Image]) -> None:
    coffee = pil_image("coffee")  # 600x400
    stub = StubOcr([OcrBlock("cup", 0.9, [100, 50, 200, 100])])
    blocks = read_image_text(stub, coffee, max_side=300)
    assert stub.seen == [(300, 200)]
    assert blocks[0].bbox == [200, 100, 400, 200]
    stub.seen.clear()
    read_image_text(stub, coffee, max_side=2000)
    assert stub.seen == [(600, 400)]  # never upscaled


def test_stage_output_with_stub_reader(
    image_bytes: Callable[[str], bytes], make_input: Callable[..., StageInput]
) -> None:
    stub = StubOcr(
        [
            OcrBlock("world", 0.8, [60, 10, 100, 30]),
            OcrBlock("second line", 0.6, [0, 40, 90, 60]),
            OcrBlock("hello", 1.0, [0, 12, 50, 28]),
        ]
    )
    proc = OcrImage(Settings(), stub)
    assert proc.version == "1+stub+2000px"
    assert (proc.queue, proc.time_limit_s) == ("ocr", 120.0)
    out = proc.process_one(make_input(image_bytes("chelsea")))
    assert out.artifacts["text"] == {"text": "hello world\nsecond line", "source": "ocr"}
    assert [s.text for s in out.segments] == ["hello", "world", "second line"]
    assert out.segments[0].data == {"bbox": [0, 12, 50, 28], "confidence": 1.0}
    assert out.confidence == pytest.approx(0.8)
    assert out.model_version == "stub-0"


def test_join_blocks_empty() -> None:
    assert join_blocks([]) == ""


def test_factory_declares_the_image_dag() -> None:
    procs = {p.name: p for p in build_image_processors(Settings(), ocr=StubOcr([]))}
    assert set(procs) == {"image.decode", "image.thumbnail", "image.pdq", "image.orb",
                          "image.ocr"}
    assert procs["image.decode"].requires == frozenset({"source"})
    assert procs["image.decode"].produces == frozenset({"image.meta"})
    for name in ("image.thumbnail", "image.pdq", "image.orb", "image.ocr"):
        assert procs[name].requires == frozenset({"image.meta"})
    assert procs["image.ocr"].produces == frozenset({"text"})
    assert all(p.media == frozenset({"image"}) for p in procs.values())
