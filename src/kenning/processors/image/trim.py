"""Canonical framing for near-duplicate hashing: flat margins (borders, caption strips) cut off.

PDQ sees the whole frame, so a copy with a solid border or a caption strip added
above or below the picture is a different image to it (measured on 30 real photos:
90-130 bits from the original, where a JPEG re-encode is 0-6 bits away). Cutting flat
margins off both the stored image and the query brings them back together, provided
the cut lands within about 1% of the side: PDQ moves ~25 bits per 1% shift.

A margin is a run of lines (rows or columns) from an edge that

* starts with a *flat* line: at least 95% of its pixels within ``_TOLERANCE`` of the
  line's median colour (the margin's colour), and
* continues while lines are *mostly* that colour (at least 25%: a caption's text rows
  qualify);

the cut goes after the last flat line of the run, so text rows are cut off with the
band while a photo row that happens to be bright is kept. A run deeper than a quarter
of the side is the picture's own (a dark sky), not a margin. Lines are judged by their
middle 60%, so a border on one side does not make the rows next to it look flat.
All four sides are cut at once, in two rounds (a border around a captioned copy goes
first, then the caption), and never below half of the width or height. The same rule
applied to the original and to its copy gives the same frame, so a photo that itself
starts with a flat sky is cut the same way in both.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

__all__ = ["content_box", "trim_margins"]

_TOLERANCE = 32  # per channel, 0-255: JPEG ringing next to a sharp edge stays inside it
_FLAT = 0.95  # share of a line's pixels near the margin colour for a flat line
_MOSTLY = 0.25  # ... for a line of a margin with text on it
_MAX_MARGIN = 0.25  # a flat run deeper than this share of the side is the picture's own
_MIN_KEEP = 0.5  # never cut an image below this share of its width or height
_ROUNDS = 2  # a border, then a caption strip inside it
_WORK_SIDE = 512  # margins are found on a copy no larger than this (the box scales back)

Box = tuple[int, int, int, int]


def content_box(image: Image.Image) -> Box:
    """``(left, top, right, bottom)`` of ``image`` without its flat margins.

    The whole image, ``(0, 0, width, height)``, when it has none.
    """
    width, height = image.size
    rgb = image.convert("RGB")
    factor = -(-max(width, height) // _WORK_SIDE)  # a box filter: fast, and exact enough
    if factor > 1:
        rgb = rgb.reduce(factor)
    pixels = np.asarray(rgb, dtype=np.int16)
    left, top, right, bottom = _trim(pixels)
    if factor == 1:
        return left, top, right, bottom
    sx, sy = width / pixels.shape[1], height / pixels.shape[0]
    return (round(left * sx), round(top * sy), round(right * sx), round(bottom * sy))


def trim_margins(image: Image.Image) -> Image.Image | None:
    """``image`` with its flat margins cut off, or None when it has none."""
    box = content_box(image)
    if box == (0, 0, *image.size):
        return None
    return image.crop(box)


def _trim(pixels: np.ndarray) -> Box:
    height, width = pixels.shape[:2]
    top, bottom, left, right = 0, height, 0, width
    for _ in range(_ROUNDS):
        region = pixels[top:bottom, left:right]
        # Each side as lines from the outside in: rows for top/bottom, columns for sides.
        columns = region.transpose(1, 0, 2)
        cut_top, cut_bottom = _margin(region), _margin(region[::-1])
        cut_left, cut_right = _margin(columns), _margin(columns[::-1])
        if not (cut_top or cut_bottom or cut_left or cut_right):
            break
        if bottom - top - cut_top - cut_bottom >= height * _MIN_KEEP:
            top, bottom = top + cut_top, bottom - cut_bottom
        if right - left - cut_left - cut_right >= width * _MIN_KEEP:
            left, right = left + cut_left, right - cut_right
    return left, top, right, bottom


def _margin(lines: np.ndarray) -> int:
    """How many lines of ``lines`` (lines x pixels x 3, outermost first) form a margin."""
    deepest = int(len(lines) * _MAX_MARGIN)
    lines = lines[: deepest + 2]
    # Judge each line by its middle 60%: a margin on a neighbouring side (up to 20% of
    # the line) would otherwise make a picture's row look flatter than it is.
    ends = lines.shape[1] // 5
    lines = lines[:, ends : lines.shape[1] - ends]
    colour = np.median(lines[0], axis=0)
    if _near(lines[:1], colour)[0] < _FLAT:
        return 0  # most sides of most images: one line looked at
    near = _near(lines, colour)
    run = int(np.argmin(near >= _MOSTLY)) if not np.all(near >= _MOSTLY) else len(near)
    flat = np.flatnonzero(near[:run] >= _FLAT)
    cut = int(flat[-1]) + 1
    return 0 if cut > deepest else cut


def _near(lines: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """Share of each line's pixels within ``_TOLERANCE`` of ``colour`` on every channel."""
    result: np.ndarray = np.all(np.abs(lines - colour) <= _TOLERANCE, axis=-1).mean(axis=1)
    return result
