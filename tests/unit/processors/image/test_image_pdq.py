"""image.pdq on real photos: re-encodes and mirrors match, unrelated photos do not."""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest
from PIL import Image, ImageOps

from kenning.pipeline.processor import StageInput
from kenning.processors.image.pdq import VARIANTS, HashPdq, hamming, pdq_dihedral, pdq_hash
from kenning.settings import Settings

MATCH = 31  # settings.pdq_threshold


def _decoded(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im.convert("RGB")


def test_hash_is_32_bytes_with_full_quality_on_a_photo(
    pil_image: Callable[[str], Image.Image],
) -> None:
    bits, quality = pdq_hash(pil_image("coffee"))
    assert len(bits) == 32
    assert quality == 100
    assert pdq_hash(pil_image("coffee"))[0] == bits  # deterministic


def test_jpeg_q30_reencode_is_a_near_duplicate(
    pil_image: Callable[[str], Image.Image], encode: Callable[..., bytes]
) -> None:
    coffee = pil_image("coffee")
    recoded = _decoded(encode(coffee.convert("RGB"), "JPEG", quality=30))
    distance = hamming(pdq_hash(coffee)[0], pdq_hash(recoded)[0])
    assert distance <= MATCH
    assert distance <= 8  # measured: 4


def test_half_size_copy_is_a_near_duplicate(pil_image: Callable[[str], Image.Image]) -> None:
    coffee = pil_image("coffee")
    half = coffee.resize((coffee.width // 2, coffee.height // 2), Image.Resampling.LANCZOS)
    assert hamming(pdq_hash(coffee)[0], pdq_hash(half)[0]) <= MATCH


def test_mirror_is_matched_by_a_dihedral_variant_only(
    pil_image: Callable[[str], Image.Image],
) -> None:
    coffee = pil_image("coffee")
    variants, _ = pdq_dihedral(coffee)
    mirrored, _ = pdq_hash(ImageOps.mirror(coffee))
    distances = {name: hamming(bits, mirrored) for name, bits in variants.items()}
    assert distances["original"] > 80  # plain PDQ does not see a mirror as a copy
    best = min(distances, key=distances.__getitem__)
    assert best == "flip_y"  # PDQ's flip about the vertical axis
    assert distances[best] <= MATCH


def test_rotated_copy_is_matched_by_the_rot90_variant(
    pil_image: Callable[[str], Image.Image],
) -> None:
    coffee = pil_image("coffee")
    variants, _ = pdq_dihedral(coffee)
    rotated, _ = pdq_hash(coffee.rotate(90, expand=True))  # counter-clockwise
    assert hamming(variants["rot90"], rotated) <= MATCH
    assert hamming(variants["original"], rotated) > 80


@pytest.mark.parametrize("other", ["astronaut", "chelsea", "camera", "page"])
def test_unrelated_photos_are_far_apart(
    pil_image: Callable[[str], Image.Image], other: str
) -> None:
    coffee_variants, _ = pdq_dihedral(pil_image("coffee"))
    bits, _ = pdq_hash(pil_image(other))
    assert hamming(coffee_variants["original"], bits) >= 80
    assert min(hamming(v, bits) for v in coffee_variants.values()) >= 80


def test_dihedral_original_equals_plain_hash(pil_image: Callable[[str], Image.Image]) -> None:
    variants, quality = pdq_dihedral(pil_image("chelsea"))
    assert list(variants) == list(VARIANTS)
    assert variants["original"] == pdq_hash(pil_image("chelsea"))[0]
    assert quality == pdq_hash(pil_image("chelsea"))[1]


def test_hamming() -> None:
    assert hamming(b"\x00" * 32, b"\x00" * 32) == 0
    assert hamming(b"\xff" * 32, b"\x00" * 32) == 256
    assert hamming(b"\x0f\x01", b"\x00\x00") == 5
    with pytest.raises(ValueError, match="lengths differ"):
        hamming(b"\x00", b"\x00\x00")


def test_processor_emits_eight_fingerprints_and_hex_artifact(
    image_bytes: Callable[[str], bytes],
    make_input: Callable[..., StageInput],
    pil_image: Callable[[str], Image.Image],
) -> None:
    proc = HashPdq(Settings())
    out = proc.process([make_input(image_bytes("coffee"))])[0]
    assert [f.variant for f in out.fingerprints] == list(VARIANTS)
    assert all(f.algorithm == "pdq" and len(f.bits) == 32 for f in out.fingerprints)
    assert all(f.quality == 100.0 for f in out.fingerprints)
    expected, _ = pdq_hash(pil_image("coffee"))
    assert out.artifacts["image.pdq"] == {"hash": expected.hex(), "quality": 100}
    assert len(out.artifacts["image.pdq"]["hash"]) == 64


def test_large_image_hash_matches_its_small_copy(pil_image: Callable[[str], Image.Image]) -> None:
    coffee = pil_image("coffee")
    big = coffee.resize((coffee.width * 5, coffee.height * 5), Image.Resampling.BICUBIC)
    assert hamming(pdq_hash(coffee)[0], pdq_hash(big)[0]) <= 8
