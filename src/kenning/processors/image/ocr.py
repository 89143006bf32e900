"""image.ocr: text in an image, as reading-ordered blocks and one joined ``text`` artifact.

The joined text feeds the text stages (chunks, language, embeddings, keyword index)
exactly like the body of a text asset, with ``source: "ocr"``.
"""

from __future__ import annotations

from PIL import Image

from kenning.inference.ocr import (
    OcrBackend,
    OcrBlock,
    group_lines,
    make_ocr_backend,
    sort_reading_order,
)
from kenning.media.kinds import MediaKind
from kenning.pipeline.processor import BaseProcessor, SegmentOut, StageInput, StageOutput
from kenning.processors.image.shared import decoded
from kenning.settings import Settings

__all__ = ["OcrImage", "join_blocks", "read_image_text"]


class OcrImage(BaseProcessor):
    """Run the configured OCR backend on an image downscaled to ``ocr_max_side``."""

    name = "image.ocr"
    media = frozenset({MediaKind.IMAGE})
    requires = frozenset({"image.meta"})
    produces = frozenset({"text"})
    queue = "ocr"
    time_limit_s: float | None = 120.0
    max_batch: int | None = 8  # seconds per image: a batch stays well inside the time limit

    def __init__(self, settings: Settings | None = None, ocr: OcrBackend | None = None) -> None:
        self.settings = settings or Settings()
        self.ocr = ocr if ocr is not None else make_ocr_backend(self.settings)
        # The backend's name is cheap to read; its version may mean loading it, so the
        # full model version is recorded per output (StageOutput.model_version).
        self.version = f"1+{self.ocr.name}+{self.settings.ocr_max_side}px"

    def process_one(self, item: StageInput) -> StageOutput:
        image = decoded(item, self.settings)
        blocks = read_image_text(self.ocr, image, self.settings.ocr_max_side)
        segments = [
            SegmentOut(
                kind="ocr_block",
                seq=seq,
                text=block.text,
                data={"bbox": block.bbox, "confidence": block.confidence},
            )
            for seq, block in enumerate(blocks)
        ]
        confidence = sum(b.confidence for b in blocks) / len(blocks) if blocks else None
        return StageOutput(
            artifacts={"text": {"text": join_blocks(blocks), "source": "ocr"}},
            segments=segments,
            confidence=confidence,
            model_version=f"{self.ocr.name}-{self.ocr.version}",
        )


def read_image_text(ocr: OcrBackend, image: Image.Image, max_side: int) -> list[OcrBlock]:
    """OCR ``image`` shrunk to fit ``max_side``; boxes are mapped back to ``image`` pixels.

    Blocks come back in reading order whatever order the backend used.
    """
    scale = min(1.0, max_side / max(image.size))
    if scale < 1.0:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        small = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    else:
        small = image
    blocks = ocr.read(small)
    if scale < 1.0:
        for block in blocks:
            block.bbox = [
                min(round(v / scale), image.width if i % 2 == 0 else image.height)
                for i, v in enumerate(block.bbox)
            ]
    return sort_reading_order(blocks)


def join_blocks(blocks: list[OcrBlock]) -> str:
    """One string in reading order: blocks on a line joined by spaces, lines by newlines."""
    return "\n".join(" ".join(b.text for b in line) for line in group_lines(blocks))
