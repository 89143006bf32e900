"""Real photos for image-processor tests: scikit-image's sample images.

The scikit-image wheel is fetched once with ``pip download --no-deps`` into
``~/.cache/kenning-test-data`` (override with ``$KENNING_TEST_DATA``) and only its
``skimage/data/*`` members are unpacked; later runs reuse the cache.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from kenning.inference.ocr import RapidOcrBackend
from kenning.pipeline.processor import MediaKind, StageInput

SKIMAGE = "scikit-image==0.26.0"
CACHE = Path(os.environ.get("KENNING_TEST_DATA", Path.home() / ".cache" / "kenning-test-data"))
NEEDED = ("astronaut.png", "coffee.png", "chelsea.png", "camera.png", "page.png", "text.png")


def skimage_data_dir() -> Path:
    """Folder holding ``skimage/data/*`` from the pinned wheel, downloading it if needed."""
    target = CACHE / "skimage-0.26.0"
    data = target / "skimage" / "data"
    if all((data / name).is_file() for name in NEEDED):
        return data
    CACHE.mkdir(parents=True, exist_ok=True)
    wheels = sorted(CACHE.glob("scikit_image-0.26.0-*.whl"))
    if not wheels:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                SKIMAGE,
                "-d",
                str(CACHE),
            ],
            check=True,
            capture_output=True,
            timeout=600,
        )
        wheels = sorted(CACHE.glob("scikit_image-0.26.0-*.whl"))
    tmp = tempfile.mkdtemp(dir=CACHE)
    with zipfile.ZipFile(wheels[0]) as zf:
        zf.extractall(tmp, [n for n in zf.namelist() if n.startswith("skimage/data/")])
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)  # a half-unpacked folder is never seen under its final name
    return data


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
