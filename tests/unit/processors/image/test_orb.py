"""image.orb on real photos: what it indexes and stores, and how verification tells a
crop or a rotation of a photo from a different photo."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from PIL import Image

from kenning.pipeline.processor import StageInput
from kenning.processors.image import build_image_processors
from kenning.processors.image.orb import (
    ALGORITHM,
    BLOB_ROLE,
    ImageOrb,
    LocalFeatures,
    describe,
    verify,
)
from kenning.settings import Settings

KEYPOINTS, MIN_INLIERS = 300, 15  # settings.orb_keypoints, settings.orb_min_inliers (defaults)


def _rgb(pil_image: Callable[[str], Image.Image], name: str) -> Image.Image:
    return pil_image(name).convert("RGB")


def _crop(image: Image.Image, keep: float, *, corner: bool = False) -> Image.Image:
    w, h = image.size
    cw, ch = round(w * keep ** 0.5), round(h * keep ** 0.5)
    x0, y0 = (0, 0) if corner else ((w - cw) // 2, (h - ch) // 2)
    return image.crop((x0, y0, x0 + cw, y0 + ch))


def test_the_processor_indexes_the_strongest_spread_keypoints_and_stores_all(
    image_bytes: Callable[[str], bytes], make_input: Callable[..., StageInput],
) -> None:
    proc = ImageOrb(Settings(orb_keypoints=KEYPOINTS))
    out = proc.process([make_input(image_bytes("coffee"))])[0]
    stored = LocalFeatures.from_bytes(out.blobs[BLOB_ROLE])
    assert 200 <= len(stored) <= KEYPOINTS
    assert stored.size == (512, 341)  # coffee is 600x400: the work copy is 512 wide
    assert out.artifacts["image.orb"] == {"keypoints": len(stored), "indexed": 64,
                                          "width": 512, "height": 341}
    assert len(out.fingerprints) == 64
    assert all(f.algorithm == ALGORITHM and len(f.bits) == 32 and f.quality is None
               for f in out.fingerprints)
    codes = {f.bits for f in out.fingerprints}
    assert codes <= {d.tobytes() for d in stored.descriptors}
    xs = [float(f.variant.split(",")[0]) for f in out.fingerprints]
    ys = [float(f.variant.split(",")[1]) for f in out.fingerprints]
    assert all(0 <= v <= 1 for v in xs + ys)
    # Spread over the grid: every quarter of the width holds some indexed keypoints.
    assert {min(int(x * 4), 3) for x in xs} == {0, 1, 2, 3}


def test_the_blob_round_trips(pil_image: Callable[[str], Image.Image]) -> None:
    features = describe(_rgb(pil_image, "astronaut"), KEYPOINTS)
    again = LocalFeatures.from_bytes(features.to_bytes())
    assert again.size == features.size
    assert np.array_equal(again.descriptors, features.descriptors)
    assert np.array_equal(again.points, features.points)


def test_crops_and_a_small_rotation_verify_against_their_original(
    pil_image: Callable[[str], Image.Image],
) -> None:
    coffee = _rgb(pil_image, "coffee")
    original = describe(coffee, KEYPOINTS)
    for copy in (_crop(coffee, 0.8), _crop(coffee, 0.7, corner=True),
                 coffee.rotate(5, resample=Image.Resampling.BICUBIC, expand=True)):
        v = verify(describe(copy, KEYPOINTS), original)
        assert v is not None and v.inliers >= 3 * MIN_INLIERS
    rotated = verify(describe(coffee.rotate(5, resample=Image.Resampling.BICUBIC,
                                            expand=True), KEYPOINTS), original)
    assert rotated is not None and abs(abs(rotated.rotation_deg) - 5) < 1


def test_different_photos_do_not_verify(pil_image: Callable[[str], Image.Image]) -> None:
    names = ["coffee", "chelsea", "astronaut", "coins", "camera", "brick", "moon", "page",
             "chessboard_GRAY", "motorcycle_left"]
    features = {n: describe(_rgb(pil_image, n), KEYPOINTS) for n in names}
    for a in names:
        for b in names:
            if a != b:
                v = verify(features[a], features[b])
                assert v is None or v.inliers < MIN_INLIERS, (a, b, v)


def test_a_flat_image_has_no_keypoints_and_no_fingerprints(
    make_input: Callable[..., StageInput], encode: Callable[..., bytes],
) -> None:
    flat = Image.new("RGB", (640, 480), (120, 140, 160))
    out = ImageOrb(Settings(orb_keypoints=KEYPOINTS)).process([make_input(encode(flat))])[0]
    assert out.fingerprints == [] and out.blobs == {}
    assert out.artifacts["image.orb"]["keypoints"] == 0
    empty = describe(flat, KEYPOINTS)
    assert len(empty) == 0 and empty.strongest(64) == []
    assert verify(empty, describe(flat, KEYPOINTS)) is None


class _NoText:
    name, version = "none", "0"

    def read(self, image: Image.Image) -> list[Any]:
        return []


def test_the_stage_is_registered_only_when_keypoints_are_asked_for() -> None:
    def names(settings: Settings) -> list[str]:
        return [p.name for p in build_image_processors(settings, ocr=_NoText())]

    assert "image.orb" not in names(Settings(orb_keypoints=0))  # 0 turns it off
    assert names(Settings()) == names(Settings(orb_keypoints=KEYPOINTS)) == [
        "image.decode", "image.thumbnail", "image.pdq", "image.orb", "image.ocr"]
    orb = next(p for p in build_image_processors(Settings(orb_keypoints=KEYPOINTS),
                                                 ocr=_NoText())
               if p.name == "image.orb")
    assert orb.version == "1+300/64"
    assert orb.requires == frozenset({"image.meta"}) and orb.queue == "image"


@pytest.mark.parametrize("size", [(1, 1), (10, 10), (63, 63), (300, 40)])
def test_an_image_too_small_for_a_patch_has_no_keypoints(
    make_input: Callable[..., StageInput], encode: Callable[..., bytes],
    size: tuple[int, int],
) -> None:
    """OpenCV's pyramid asserts on images smaller than an ORB patch (a fuzzed 1x1 PNG
    answered 500 through /v1/similar): such images simply have no local features."""
    image = Image.effect_noise(size, 64).convert("RGB")
    assert len(describe(image, KEYPOINTS)) == 0
    out = ImageOrb(Settings(orb_keypoints=KEYPOINTS)).process([make_input(encode(image))])[0]
    assert out.fingerprints == [] and out.blobs == {}
