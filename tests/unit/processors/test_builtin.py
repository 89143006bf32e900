"""Kenning's own processor builders (the ``kenning.processors`` entry points)."""

from __future__ import annotations

import logging

import pytest

from kenning.inference.resources import Resources
from kenning.processors import builtin
from kenning.settings import Settings


def test_image_processors_are_all_built() -> None:
    names = [p.name for p in builtin.image_processors(Resources(Settings()))]
    assert names == ["image.decode", "image.thumbnail", "image.pdq", "image.orb", "image.ocr"]


def test_without_the_image_extra_none_are_built_and_one_line_says_why(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    why = "pdqhash is not installed: pip install 'kenning[image]'"
    monkeypatch.setattr("kenning.processors.image.extra.missing_image_extra", lambda _: why)
    with caplog.at_level(logging.WARNING, logger="kenning.processors.builtin"):
        assert builtin.image_processors(Resources(Settings())) == []
    assert [r.getMessage() for r in caplog.records] == [
        f"image processors not registered, images will be refused: {why}"
    ]
