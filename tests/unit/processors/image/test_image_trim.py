"""Flat margins (a solid border, a caption strip) are cut off real photos exactly enough
for PDQ: the trimmed copy lands within 1% of the original frame."""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest
from PIL import Image, ImageDraw, ImageFont, ImageOps

from kenning.pipeline.processor import StageInput
from kenning.processors.image.pdq import TRIMMED, VARIANTS, HashPdq, hamming, pdq_hash
from kenning.processors.image.trim import content_box, trim_margins
from kenning.settings import Settings

MATCH = 31  # settings.pdq_threshold


def captioned(image: Image.Image, *, top: bool, text: str = "Photo of the day #42") -> Image.Image:
    """``image`` with a white band of 15% of its height holding black text."""
    band = round(0.15 * image.height)
    out = Image.new("RGB", (image.width, image.height + band), "white")
    out.paste(image.convert("RGB"), (0, band if top else 0))
    font = ImageFont.load_default(size=int(band * 0.45))
    y = (0 if top else image.height) + band * 0.25
    ImageDraw.Draw(out).text((image.width * 0.04, y), text, fill="black", font=font)
    return out


def recoded(image: Image.Image) -> Image.Image:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=90)
    out = Image.open(io.BytesIO(buf.getvalue()))
    out.load()
    return out


def test_a_photo_without_flat_margins_is_kept_whole(
    pil_image: Callable[[str], Image.Image],
) -> None:
    coffee = pil_image("coffee")
    assert content_box(coffee) == (0, 0, *coffee.size)
    assert trim_margins(coffee) is None


@pytest.mark.parametrize("colour", ["black", "white", (200, 30, 30)])
def test_a_solid_border_is_cut_to_the_original_frame(
    pil_image: Callable[[str], Image.Image], colour: str | tuple[int, int, int],
) -> None:
    coffee = pil_image("coffee").convert("RGB")
    width = round(0.1 * min(coffee.size))  # 40 px
    bordered = recoded(ImageOps.expand(coffee, border=width, fill=colour))
    left, top, right, bottom = content_box(bordered)
    for found, expected in ((left, width), (top, width), (right, width + coffee.width),
                            (bottom, width + coffee.height)):
        assert abs(found - expected) <= 4  # within 1% of the side
    trimmed = trim_margins(bordered)
    assert trimmed is not None
    assert hamming(pdq_hash(trimmed)[0], pdq_hash(coffee)[0]) <= 12  # measured: 0-2


@pytest.mark.parametrize("top", [True, False])
def test_a_caption_strip_with_text_is_cut_off(
    pil_image: Callable[[str], Image.Image], top: bool,
) -> None:
    chelsea = pil_image("chelsea").convert("RGB")
    copy = recoded(captioned(chelsea, top=top))
    assert pdq_hash(copy)[0] != pdq_hash(chelsea)[0]
    assert hamming(pdq_hash(copy)[0], pdq_hash(chelsea)[0]) > 80  # PDQ alone: no match
    trimmed = trim_margins(copy)
    assert trimmed is not None
    assert abs(trimmed.height - chelsea.height) <= 3
    assert hamming(pdq_hash(trimmed)[0], pdq_hash(chelsea)[0]) <= MATCH


def test_a_mostly_white_scan_keeps_at_least_half_its_frame(
    pil_image: Callable[[str], Image.Image],
) -> None:
    page = pil_image("page")
    left, top, right, bottom = content_box(page)
    assert right - left >= page.width / 2 and bottom - top >= page.height / 2


def test_processor_adds_a_trimmed_variant_for_a_bordered_image(
    pil_image: Callable[[str], Image.Image],
    encode: Callable[..., bytes],
    make_input: Callable[..., StageInput],
) -> None:
    coffee = pil_image("coffee").convert("RGB")
    data = encode(ImageOps.expand(coffee, border=40, fill="black"), "PNG")
    out = HashPdq(Settings()).process([make_input(data)])[0]
    assert [f.variant for f in out.fingerprints] == [*VARIANTS, TRIMMED]
    trimmed = out.fingerprints[-1]
    assert trimmed.quality == 100.0
    assert hamming(trimmed.bits, pdq_hash(coffee)[0]) <= 4
    # the artifact and the dihedral variants still describe the image as given
    assert out.artifacts["image.pdq"]["hash"] == out.fingerprints[0].bits.hex()
