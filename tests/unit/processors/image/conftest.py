"""Real photos for image-processor tests: scikit-image's sample images.

They come from the scikit-image wheel through :mod:`tests.fixtures.media`, which
downloads it once into the shared cache.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from kenning.inference.ocr import RapidOcrBackend
from kenning.media.kinds import MediaKind
from kenning.pipeline.processor import StageInput
from tests.fixtures import media


def skimage_data_dir() -> Path:
    """Folder holding scikit-image's sample images (fetched once by the shared fixtures)."""
    return media.image_path("astronaut.png").parent


@pytest.fixture(scope="session")
def skimage_dir() -> Path:
    return skimage_data_dir()


@pytest.fixture(scope="session")
def image_bytes(skimage_dir: Path) -> Callable[[str], bytes]:
    """Original bytes of a sample image by stem, e.g. ``image_bytes("coffee")``."""

    def load(stem: str) -> bytes:
        return (skimage_dir / f"{stem}.png").read_bytes()

    return load


@pytest.fixture(scope="session")
def pil_image(image_bytes: Callable[[str], bytes]) -> Callable[[str], Image.Image]:
    """A loaded sample image by stem."""

    def load(stem: str) -> Image.Image:
        im = Image.open(io.BytesIO(image_bytes(stem)))
        im.load()
        return im

    return load


def _encode(image: Image.Image, fmt: str = "PNG", **params: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **params)
    return buf.getvalue()


def _stage_input(data: bytes, mime: str = "image/png") -> StageInput:
    return StageInput(
        asset_id="asset-1",
        tenant_id="tenant-1",
        kind=MediaKind.IMAGE,
        sha256="0" * 64,
        mime=mime,
        metadata={},
        artifacts={"image.meta": {}},
        blob=lambda: data,
    )


@pytest.fixture(scope="session")
def encode() -> Callable[..., bytes]:
    """``encode(image, "JPEG", quality=30)``: bytes of ``image`` encoded by Pillow."""
    return _encode


@pytest.fixture(scope="session")
def make_input() -> Callable[..., StageInput]:
    """``make_input(data, mime)``: a :class:`StageInput` for an image asset."""
    return _stage_input


@pytest.fixture(scope="session")
def rapid_ocr() -> RapidOcrBackend:
    """One RapidOCR backend for the session (its models load once, on first use)."""
    return RapidOcrBackend(threads=1)
