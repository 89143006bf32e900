"""The image extra: missing modules are named with the extra to install; images are refused."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Callable, Iterator, Sequence
from types import ModuleType

import pytest

from kenning.errors import UnsupportedMedia
from kenning.processors.image.extra import missing_image_extra, require_image_support
from kenning.settings import Settings


class Refuse(importlib.abc.MetaPathFinder):
    """A finder that makes ``names`` (and their submodules) impossible to import."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = frozenset(names)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


@pytest.fixture
def without(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """Call with module names to make them unimportable for the test."""

    def refuse(*names: str) -> None:
        for name in [m for m in sys.modules if m.partition(".")[0] in names]:
            monkeypatch.delitem(sys.modules, name)
        monkeypatch.setattr(sys, "meta_path", [Refuse(names), *sys.meta_path])
        missing_image_extra.cache_clear()

    missing_image_extra.cache_clear()
    yield refuse
    missing_image_extra.cache_clear()


def test_everything_installed_here() -> None:
    assert missing_image_extra("rapidocr") is None
    require_image_support(Settings())  # no exception: images are welcome


@pytest.mark.parametrize("module", ["pdqhash", "rapidocr", "onnxruntime"])
def test_a_missing_module_is_named_with_the_extra(
    without: Callable[..., None], module: str
) -> None:
    without(module)
    assert missing_image_extra("rapidocr") == (
        f"{module} is not installed: pip install 'kenning[image]'"
    )


def test_the_ocr_runtime_is_only_needed_by_its_backend(without: Callable[..., None]) -> None:
    without("rapidocr", "onnxruntime")
    assert missing_image_extra("tesseract") is None
    assert missing_image_extra("rapidocr") is not None


def test_an_image_is_refused_with_415_naming_the_extra(without: Callable[..., None]) -> None:
    without("pdqhash")
    with pytest.raises(UnsupportedMedia) as err:
        require_image_support(Settings())
    assert (err.value.status, err.value.code) == (415, "unsupported_media_type")
    assert "pip install 'kenning[image]'" in err.value.message
    assert err.value.details == {"extra": "image"}
