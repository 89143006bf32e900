"""image.pdq: Meta's PDQ perceptual hash, with the 8 dihedral variants for mirrors/rotations.

Hashes are 32 bytes, most significant bit first, so ``bits.hex()`` is the standard
64-character PDQ hex string. Near-duplicates are at small Hamming distance; the
similarity service counts ``<= settings.pdq_threshold`` (31 of 256) as a match.

An image with flat margins (a solid border, a caption strip, a flat sky along an edge)
also gets a ``trimmed`` variant: the PDQ of the image with those margins cut off
(:mod:`kenning.processors.image.trim`). A query hashes its own trimmed form too
(:func:`pdq_query_hashes`), so a bordered or captioned copy meets its original on
either side. PDQ moves ~25 bits per 1% shift of the frame, so crops and small
rotations stay out of its reach (bench/bench_image_duplicates.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from kenning.errors import MissingExtra
from kenning.media.kinds import MediaKind
from kenning.pipeline.processor import BaseProcessor, FingerprintOut, StageInput, StageOutput
from kenning.processors.image.shared import decoded
from kenning.processors.image.trim import trim_margins
from kenning.settings import Settings

__all__ = [
    "TRIMMED",
    "VARIANTS",
    "HashPdq",
    "hamming",
    "pdq_dihedral",
    "pdq_hash",
    "pdq_query_hashes",
]

VARIANTS = (
    "original",
    "rot90",
    "rot180",
    "rot270",
    "flip_x",
    "flip_y",
    "flip_plus1",
    "flip_minus1",
)
"""Names of the dihedral transforms, in the order PDQ computes them."""

TRIMMED = "trimmed"
"""Variant name of the hash of an image with its flat margins cut off."""

# PDQ's reference hasher downsamples to 512x512 first: the Jarosz filters it runs
# next are slow on big images and the hash only looks at 64x64 anyway.
_DOWNSAMPLE = 512


def pdq_hash(image: Image.Image) -> tuple[bytes, int]:
    """The 32-byte PDQ hash of ``image`` and its quality (0-100; below ~50 is unreliable)."""
    vector, quality = _pdqhash().compute(_luma_input(image))
    return _pack(vector), int(quality)


def pdq_dihedral(image: Image.Image) -> tuple[dict[str, bytes], int]:
    """Hashes of ``image`` under all 8 rotations/flips (keyed by :data:`VARIANTS`)."""
    vectors, quality = _pdqhash().compute_dihedral(_luma_input(image))
    return {name: _pack(v) for name, v in zip(VARIANTS, vectors, strict=True)}, int(quality)


def pdq_query_hashes(image: Image.Image) -> list[tuple[str, bytes, int]]:
    """What a query image is searched with: ``(variant, hash, quality)`` of the image as
    given (``original``) and, when it has flat margins, of its trimmed form."""
    code, quality = pdq_hash(image)
    out = [("original", code, quality)]
    trimmed = trim_margins(image)
    if trimmed is not None:
        out.append((TRIMMED, *pdq_hash(trimmed)))
    return out


def hamming(a: bytes, b: bytes) -> int:
    """Number of differing bits between two equal-length hashes."""
    if len(a) != len(b):
        raise ValueError(f"hash lengths differ: {len(a)} and {len(b)} bytes")
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).bit_count()


def _pdqhash() -> Any:
    # Imported on first use: the package must import in a text-only install, where
    # image processors are not registered (see kenning.processors.image.extra).
    try:
        import pdqhash
    except ImportError as exc:
        raise MissingExtra("pdqhash", "image") from exc
    return pdqhash


def _luma_input(image: Image.Image) -> np.ndarray:
    rgb = image.convert("RGB")
    if rgb.width > _DOWNSAMPLE or rgb.height > _DOWNSAMPLE:
        rgb = rgb.resize((_DOWNSAMPLE, _DOWNSAMPLE), Image.Resampling.BILINEAR)
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))


def _pack(vector: np.ndarray) -> bytes:
    return np.packbits(np.asarray(vector, dtype=np.uint8)).tobytes()


class HashPdq(BaseProcessor):
    """Fingerprint an image with PDQ: the original hash plus its dihedral variants, and
    the hash of its trimmed form when it has flat margins."""

    name = "image.pdq"
    version = "2"  # 2: the trimmed variant
    media = frozenset({MediaKind.IMAGE})
    requires = frozenset({"image.meta"})
    produces = frozenset({"image.pdq"})
    queue = "image"

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()

    def process_one(self, item: StageInput) -> StageOutput:
        image = decoded(item, self.settings)
        hashes, quality = pdq_dihedral(image)
        fingerprints = [
            FingerprintOut(algorithm="pdq", bits=bits, quality=float(quality), variant=name)
            for name, bits in hashes.items()
        ]
        trimmed = trim_margins(image)
        if trimmed is not None:
            bits, trimmed_quality = pdq_hash(trimmed)
            fingerprints.append(FingerprintOut(algorithm="pdq", bits=bits,
                                               quality=float(trimmed_quality), variant=TRIMMED))
        return StageOutput(
            artifacts={"image.pdq": {"hash": hashes["original"].hex(), "quality": quality}},
            fingerprints=fingerprints,
            confidence=quality / 100.0,
        )
