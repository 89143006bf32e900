"""OCR runtimes behind one small protocol: RapidOCR (PP-OCR on onnxruntime) and Tesseract.

Backends return :class:`OcrBlock` lines in reading order: top to bottom, then left to
right within a line. Models never download: RapidOCR's PP-OCR ONNX files ship inside its
wheel and are passed to it by path; Tesseract is an optional system binary.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image

from kenning.errors import KenningError, MissingExtra
from kenning.settings import Settings

__all__ = [
    "OcrBackend",
    "OcrBlock",
    "RapidOcrBackend",
    "TesseractBackend",
    "group_lines",
    "make_ocr_backend",
    "sort_reading_order",
]


@dataclass
class OcrBlock:
    """One recognised run of text (usually a line) with its box in image pixels."""

    text: str
    confidence: float
    """Recognition confidence in [0, 1]."""
    bbox: list[int]
    """Axis-aligned box ``[x0, y0, x1, y1]`` in pixels of the image that was read."""


@runtime_checkable
class OcrBackend(Protocol):
    """An OCR runtime: identity for provenance, and ``read`` for one image."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    def read(self, image: Image.Image) -> list[OcrBlock]:
        """Recognise text in ``image``; blocks in reading order, ``[]`` when none."""
        ...


def make_ocr_backend(settings: Settings) -> OcrBackend:
    """Build the backend named by ``settings.ocr_backend`` (models load on first use)."""
    if settings.ocr_backend == "rapidocr":
        return RapidOcrBackend(threads=settings.model_threads)
    if settings.ocr_backend == "tesseract":
        return TesseractBackend(threads=settings.model_threads)
    raise KenningError(
        f"unknown ocr_backend {settings.ocr_backend!r}; use rapidocr or tesseract",
        code="invalid_setting",
    )


def group_lines(blocks: Iterable[OcrBlock]) -> list[list[OcrBlock]]:
    """Group blocks into text lines (top to bottom), each line sorted left to right.

    A block joins the current line when its vertical centre lies within half a line
    height of the line's centre, which tolerates slightly skewed scans.
    """
    lines: list[list[OcrBlock]] = []
    for block in sorted(blocks, key=lambda b: (_centre_y(b), b.bbox[0])):
        if lines:
            line = lines[-1]
            top = min(b.bbox[1] for b in line)
            bottom = max(b.bbox[3] for b in line)
            height = min(bottom - top, block.bbox[3] - block.bbox[1])
            if abs(_centre_y(block) - (top + bottom) / 2) <= max(height, 1) / 2:
                line.append(block)
                continue
        lines.append([block])
    return [sorted(line, key=lambda b: b.bbox[0]) for line in lines]


def sort_reading_order(blocks: Iterable[OcrBlock]) -> list[OcrBlock]:
    """Blocks flattened in reading order (see :func:`group_lines`)."""
    return [block for line in group_lines(blocks) for block in line]


def _centre_y(block: OcrBlock) -> float:
    return (block.bbox[1] + block.bbox[3]) / 2


class RapidOcrBackend:
    """PP-OCR (detection, orientation, recognition) through RapidOCR on onnxruntime.

    The engine is built on first use under a lock; calls are serialised because
    RapidOCR keeps per-call state on the engine. Scale out with worker processes.
    """

    name = "rapidocr"

    def __init__(self, threads: int = 1) -> None:
        spec = importlib.util.find_spec("rapidocr")
        if spec is None or spec.origin is None:
            raise MissingExtra("rapidocr", "image")
        self._models = _bundled_models(Path(spec.origin).parent / "models")
        try:
            package = dist_version("rapidocr")
        except PackageNotFoundError:  # pragma: no cover - vendored copies
            package = "unknown"
        self.version = f"{package}+{self._models['det'].stem}+{self._models['rec'].stem}"
        self._threads = max(1, threads)
        self._engine: Any = None
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()

    def load(self) -> None:
        """Build the engine and its ONNX sessions now (otherwise done by the first read)."""
        self._get_engine()

    def read(self, image: Image.Image) -> list[OcrBlock]:
        """Recognise text lines in ``image``; coordinates are pixels of ``image``."""
        engine = self._get_engine()
        with self._run_lock:
            result = engine(_to_bgr(image))
        boxes = getattr(result, "boxes", None)
        texts = getattr(result, "txts", None)
        scores = getattr(result, "scores", None)
        if boxes is None or texts is None or scores is None:
            return []
        blocks = [
            OcrBlock(text=str(text).strip(), confidence=float(score), bbox=_bbox(box))
            for box, text, score in zip(boxes, texts, scores, strict=True)
            if str(text).strip()
        ]
        return sort_reading_order(blocks)

    def _get_engine(self) -> Any:
        if self._engine is None:
            with self._load_lock:
                if self._engine is None:
                    from rapidocr import RapidOCR

                    engine = RapidOCR(params=self._params())
                    # Build the ONNX sessions now, inside the lock, not mid-request.
                    engine(np.full((64, 64, 3), 255, dtype=np.uint8))
                    self._engine = engine
        return self._engine

    def _params(self) -> dict[str, Any]:
        return {
            "Global.log_level": "error",
            "EngineConfig.onnxruntime.intra_op_num_threads": self._threads,
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
            # Explicit paths: RapidOCR would otherwise download anything it cannot find.
            "Det.model_path": str(self._models["det"]),
            "Cls.model_path": str(self._models["cls"]),
            "Rec.model_path": str(self._models["rec"]),
        }


def _bundled_models(folder: Path) -> dict[str, Path]:
    models: dict[str, Path] = {}
    for task in ("det", "cls", "rec"):
        found = sorted(folder.glob(f"*_{task}_*.onnx"))
        if not found:
            raise KenningError(
                f"RapidOCR {task} model not found in {folder}; Kenning never downloads "
                "models: reinstall rapidocr from a wheel that bundles them",
                code="model_unavailable",
            )
        models[task] = found[-1]
    return models


def _to_bgr(image: Image.Image) -> np.ndarray:
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        image = canvas
    rgb = np.asarray(image.convert("RGB"))
    return np.ascontiguousarray(rgb[:, :, ::-1])


def _bbox(points: Any) -> list[int]:
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    x0, y0 = np.floor(pts.min(axis=0))
    x1, y1 = np.ceil(pts.max(axis=0))
    return [max(int(x0), 0), max(int(y0), 0), int(x1), int(y1)]


class TesseractBackend:
    """Tesseract through pytesseract (``pip install 'kenning[tesseract]'`` + the binary)."""

    name = "tesseract"

    def __init__(self, lang: str = "eng", threads: int = 1) -> None:
        try:
            import pytesseract
        except ImportError as exc:
            raise MissingExtra("pytesseract", "tesseract") from exc
        self._pt: Any = pytesseract
        self._lang = lang
        # Tesseract's OpenMP pool reads this from the environment of each subprocess.
        os.environ.setdefault("OMP_THREAD_LIMIT", str(max(1, threads)))
        try:
            self.version = str(pytesseract.get_tesseract_version())
        except pytesseract.TesseractNotFoundError as exc:
            raise KenningError(
                "the tesseract binary is not installed (apt-get install tesseract-ocr)",
                code="missing_dependency",
            ) from exc

    def read(self, image: Image.Image) -> list[OcrBlock]:
        """Recognise text lines in ``image``; word results are merged per line."""
        data = self._pt.image_to_data(
            image.convert("RGB"), lang=self._lang, output_type=self._pt.Output.DICT
        )
        lines: dict[tuple[int, int, int], list[int]] = {}
        for i, word in enumerate(data["text"]):
            if str(word).strip() and float(data["conf"][i]) >= 0:
                key = (data["block_num"][i], data["par_num"][i], data["line_num"][i])
                lines.setdefault(key, []).append(i)
        blocks = []
        for idx in lines.values():
            x0 = min(int(data["left"][i]) for i in idx)
            y0 = min(int(data["top"][i]) for i in idx)
            x1 = max(int(data["left"][i]) + int(data["width"][i]) for i in idx)
            y1 = max(int(data["top"][i]) + int(data["height"][i]) for i in idx)
            text = " ".join(str(data["text"][i]).strip() for i in idx)
            confidence = sum(float(data["conf"][i]) for i in idx) / len(idx) / 100.0
            blocks.append(OcrBlock(text=text, confidence=confidence, bbox=[x0, y0, x1, y1]))
        return sort_reading_order(blocks)
