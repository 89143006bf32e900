"""POST /v1/similar with an uploaded image, through the service on a real pipeline: a
bordered or captioned copy of a real photo meets its original (PDQ), so do crops and a
small rotation (local features); distinct photos and a flat image do not.

OCR reads nothing here (it plays no part in matching); everything else is the embedded
profile with the real image processors and the real hash index.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw, ImageFont, ImageOps

from kenning.container import Kenning
from kenning.ingest.service import IngestRequest
from kenning.principal import Principal
from kenning.processors.image.pdq import TRIMMED
from kenning.services.similarity import SimilarRequest
from kenning.settings import Settings
from tests.fixtures import media

PHOTOS = ("coffee", "chelsea", "astronaut", "rocket", "camera")
KEYPOINTS = 300  # settings.orb_keypoints' default, stated: the local-feature stage


class NoText:
    name, version = "none", "0"

    def read(self, image: Image.Image) -> list[Any]:
        return []


def _rgb(name: str) -> Image.Image:
    im = Image.open(io.BytesIO(media.image_bytes(name)))
    im.load()
    return im.convert("RGB")


def _jpeg(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _captioned(image: Image.Image) -> Image.Image:
    band = round(0.15 * image.height)
    out = Image.new("RGB", (image.width, image.height + band), "white")
    out.paste(image, (0, 0))
    font = ImageFont.load_default(size=int(band * 0.45))
    ImageDraw.Draw(out).text((image.width * 0.04, image.height + band * 0.25),
                             "Shared 10k times - is it real?", fill="black", font=font)
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Kenning, Principal,
                                                                     dict[str, str]]]:
    data_dir: Path = tmp_path_factory.mktemp("similar-images")
    kenning = Kenning(Settings(data_dir=data_dir, workers=1, log_json=False, _env_file=None,
                               orb_keypoints=KEYPOINTS))
    kenning.resources._ocr = NoText()
    tenant = kenning.tenants.create_tenant("t")
    who = Principal(tenant, kenning.tenants.create_key(tenant).key_id)
    kenning.start()
    try:
        ids = {name: kenning.ingest.ingest_bytes(
            who, media.image_bytes(name), IngestRequest(title=name)).asset_id
            for name in PHOTOS}
        kenning.join(timeout_s=600)
        yield kenning, who, ids
    finally:
        kenning.close()


def _similar(world: tuple[Kenning, Principal, dict[str, str]],
             data: bytes) -> tuple[list[str], dict[str, Any], list[Any]]:
    kenning, who, ids = world
    names = {v: k for k, v in ids.items()}
    response = kenning.similarity.similar(who, SimilarRequest(), upload=data)
    return [names[m.asset_id] for m in response.matches], response.query, response.matches


@pytest.mark.parametrize(("name", "colour"), [("coffee", "black"), ("chelsea", "white"),
                                              ("rocket", (40, 40, 160))])
def test_a_bordered_copy_matches_its_original(
    world: tuple[Kenning, Principal, dict[str, str]], name: str, colour: Any,
) -> None:
    image = _rgb(name)
    found, query, matches = _similar(
        world, _jpeg(ImageOps.expand(image, border=round(0.1 * min(image.size)), fill=colour)))
    assert found == [name]
    assert query["pdq_variants"] == ["original", TRIMMED]
    assert set(matches[0].evidence) == {"hamming_distance", "variant", "bits"}
    assert matches[0].evidence["hamming_distance"] <= 12
    assert matches[0].method == "pdq" and matches[0].score >= 1 - 12 / 256


@pytest.mark.parametrize("name", ["coffee", "astronaut", "chelsea"])
def test_a_captioned_copy_matches_its_original(
    world: tuple[Kenning, Principal, dict[str, str]], name: str,
) -> None:
    found, _, matches = _similar(world, _jpeg(_captioned(_rgb(name))))
    assert found == [name]
    assert matches[0].evidence["hamming_distance"] <= 12


def test_a_mirrored_captioned_copy_meets_the_mirror_variant(
    world: tuple[Kenning, Principal, dict[str, str]],
) -> None:
    found, _, matches = _similar(world, _jpeg(_captioned(ImageOps.mirror(_rgb("coffee")))))
    assert found == ["coffee"]
    assert matches[0].evidence["variant"] == "flip_y"


def test_a_plain_reencode_still_matches_with_its_usual_evidence(
    world: tuple[Kenning, Principal, dict[str, str]],
) -> None:
    found, query, matches = _similar(world, _jpeg(_rgb("coffee")))  # no flat margin
    assert found == ["coffee"]
    assert query["pdq_variants"] == ["original"]
    assert matches[0].evidence["variant"] == "original"


@pytest.mark.parametrize("name", ["brick", "moon", "hubble_deep_field", "text", "page",
                                  "coins", "motorcycle_left", "chessboard_GRAY"])
def test_distinct_real_images_match_nothing(
    world: tuple[Kenning, Principal, dict[str, str]], name: str,
) -> None:
    image = _rgb(name)
    assert _similar(world, _jpeg(image))[0] == []
    bordered = ImageOps.expand(image, border=round(0.1 * min(image.size)), fill="white")
    assert _similar(world, _jpeg(bordered))[0] == []
    assert _similar(world, _jpeg(_captioned(image)))[0] == []


def _crop(image: Image.Image, keep: float, *, corner: bool = False) -> Image.Image:
    """The central (or top-left) part of ``image`` keeping ``keep`` of its area."""
    w, h = image.size
    cw, ch = round(w * keep ** 0.5), round(h * keep ** 0.5)
    x0, y0 = (0, 0) if corner else ((w - cw) // 2, (h - ch) // 2)
    return image.crop((x0, y0, x0 + cw, y0 + ch))


def _rotated(image: Image.Image, degrees: float = 5) -> Image.Image:
    return image.rotate(degrees, resample=Image.Resampling.BICUBIC, expand=True)


EDITS = {
    "centre crop": lambda im: _crop(im, 0.8),
    "corner crop": lambda im: _crop(im, 0.7, corner=True),
    "rotate 5": _rotated,
}


@pytest.mark.parametrize("edit", list(EDITS))
@pytest.mark.parametrize("name", ["coffee", "astronaut", "rocket"])
def test_crops_and_small_rotations_match_by_local_features(
    world: tuple[Kenning, Principal, dict[str, str]], name: str, edit: str,
) -> None:
    """PDQ moves ~25 bits per 1% shift, so these are ~90 bits from the original
    (bench/bench_image_duplicates.py); ORB keypoints agreeing on one transform find it."""
    found, _, matches = _similar(world, _jpeg(EDITS[edit](_rgb(name))))
    assert found == [name]
    match = matches[0]
    assert match.method == "image_local_features"
    assert match.evidence["inliers"] >= 30  # the match line is 15 (orb_min_inliers)
    assert 0 < match.score <= 1
    assert match.score == pytest.approx(
        match.evidence["inliers"] / min(match.evidence["keypoints"]), abs=1e-6)
    assert set(match.evidence) == {"inliers", "matched", "hits", "keypoints", "scale",
                                   "rotation_deg", "transform"}
    if edit == "rotate 5":
        assert abs(abs(match.evidence["rotation_deg"]) - 5) < 1


def test_a_pdq_match_is_reported_once_as_pdq(
    world: tuple[Kenning, Principal, dict[str, str]],
) -> None:
    """A re-encode has keypoints too: PDQ's match stands, not a second one."""
    _, _, matches = _similar(world, _jpeg(_rgb("chelsea")))
    assert [m.method for m in matches] == ["pdq"]


def test_a_flat_image_matches_nothing(world: tuple[Kenning, Principal, dict[str, str]]) -> None:
    """Few or no keypoints: nothing to index or verify, and no crash either way."""
    kenning, who, _ = world
    flat = Image.new("RGB", (640, 480), (120, 140, 160))
    assert _similar(world, _jpeg(flat))[0] == []
    stored = kenning.ingest.ingest_bytes(who, _jpeg(flat), IngestRequest(title="flat")).asset_id
    kenning.join(timeout_s=600)
    try:
        assert kenning.similarity.similar(who, SimilarRequest(asset_id=stored)).matches == []
        assert kenning.similarity.duplicates(who, stored) == []
    finally:
        kenning.assets.delete(who, stored)


@pytest.mark.parametrize("edit", ["corner crop", "rotate 5"])
def test_a_stored_crop_or_rotation_finds_its_original_both_ways(
    world: tuple[Kenning, Principal, dict[str, str]], edit: str,
) -> None:
    """Asset queries search with the stored image's keypoint blob: the copy finds the
    original, the original finds the copy, and so does the matcher's duplicates()."""
    kenning, who, ids = world
    copy = kenning.ingest.ingest_bytes(who, _jpeg(EDITS[edit](_rgb("rocket"))),
                                       IngestRequest(title=edit)).asset_id
    kenning.join(timeout_s=600)
    try:
        from_copy = kenning.similarity.similar(who, SimilarRequest(asset_id=copy)).matches
        assert [(m.asset_id, m.method) for m in from_copy] == [
            (ids["rocket"], "image_local_features")]
        from_original = kenning.similarity.similar(
            who, SimilarRequest(asset_id=ids["rocket"])).matches
        assert [m.asset_id for m in from_original] == [copy]
        assert [m.asset_id for m in kenning.similarity.duplicates(who, copy)] == [
            ids["rocket"]]
    finally:
        kenning.assets.delete(who, copy)


def test_a_stored_captioned_copy_finds_its_original_both_ways(
    world: tuple[Kenning, Principal, dict[str, str]],
) -> None:
    """Asset queries (and the matcher's duplicates()) search with the stored asset's
    trimmed hash too: the copy finds the original, as the original finds the copy."""
    kenning, who, ids = world
    copy = kenning.ingest.ingest_bytes(who, _jpeg(_captioned(_rgb("astronaut"))),
                                       IngestRequest(title="captioned")).asset_id
    kenning.join(timeout_s=600)
    try:
        from_copy = kenning.similarity.similar(who, SimilarRequest(asset_id=copy)).matches
        assert [m.asset_id for m in from_copy] == [ids["astronaut"]]
        from_original = kenning.similarity.similar(
            who, SimilarRequest(asset_id=ids["astronaut"])).matches
        assert copy in {m.asset_id for m in from_original}
        assert [m.asset_id for m in kenning.similarity.duplicates(who, copy)] == [
            ids["astronaut"]]
    finally:
        kenning.assets.delete(who, copy)
