"""Real demo media and evaluation text, fetched from packages into a local cache.

Nothing here is committed to the repository. The data ships inside ordinary packages
and is fetched on first use with the package managers' own clients:

* ``gensim`` wheel (:data:`GENSIM_VERSION`): ``gensim/test/test_data/lee_background.cor``,
  the 300 ABC (Australian Broadcasting Corporation) news articles of the Lee et al.
  (2005) background corpus, one article per line.
* ``scikit-image`` wheel (:data:`SKIMAGE_VERSION`): ``skimage/data/``, real photographs,
  scans and test images (astronaut, camera, coffee, chelsea, rocket, coins, page, ...).
* Debian ``r-cran-tm`` (optional): ``tm/texts/{acq,crude}/reut-*.xml``, 70 articles of
  the Reuters-21578 collection. Needs ``apt-get``; when it fails the Reuters part is
  skipped with a logged reason.

Wheels are downloaded for a fixed target (CPython 3.11, manylinux x86_64) whatever the
host, because only data files are read from them; nothing is installed or imported.

Cache layout under :func:`cache_dir`::

    wheels/<name>-<version>/<file>.whl
    extracted/<name>-<version>/<prefix-slug>/<member paths as inside the wheel>
    debs/<package>/<file>.deb
    extracted/deb-<deb file stem>/<filesystem tree of the package>
    locks/<key>.lock

Every cache entry is built in a temporary folder next to its final place and published
with one atomic rename, under an exclusive file lock, so concurrent processes (parallel
test workers) download and extract each thing once and never see half a folder.

Command line: ``python -m kenning.demo.corpus DEST [--articles N]`` writes a demo folder
and prints a JSON summary.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath

if sys.platform != "win32":
    import fcntl

__all__ = [
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

logger = logging.getLogger(__name__)

#: Pinned gensim wheel that carries the Lee corpora (27.8 MB, cp311 manylinux x86_64).
GENSIM_VERSION = "4.4.0"
#: Pinned scikit-image wheel that carries ``skimage/data`` (13.7 MB, cp311 manylinux x86_64).
SKIMAGE_VERSION = "0.26.0"
#: Member of the gensim wheel with the 300 ABC news articles, one per line.
LEE_BACKGROUND_MEMBER = "gensim/test/test_data/lee_background.cor"
#: Folder of the scikit-image wheel with the sample images.
SKIMAGE_DATA_PREFIX = "skimage/data/"
#: Debian package with the Reuters-21578 sample.
REUTERS_DEB = "r-cran-tm"

LEE_SOURCE = "gensim lee_background.cor (ABC news)"
REUTERS_SOURCE = "Reuters-21578 (Debian r-cran-tm)"

#: File name suffixes of ``skimage/data`` members that are images (the rest is code/arrays).
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".tif", ".tiff", ".bmp", ".webp"})
#: Images of the pinned scikit-image wheel that Pillow cannot open: ``multipage_rgb.tif``
#: is a 2x3-plane TIFF written by tifffile (``shape=(2,3,10,10)``, planar RGB).
PILLOW_UNREADABLE_IMAGES = frozenset({"multipage_rgb.tif"})

# The data files are the same in every build of a wheel, so always fetch the same one.
_WHEEL_TARGET: tuple[str, ...] = (
    "--python-version", "3.11",
    "--implementation", "cp",
    "--abi", "cp311",
    "--platform", "manylinux_2_28_x86_64",
    "--platform", "manylinux_2_24_x86_64",
    "--platform", "manylinux_2_17_x86_64",
    "--platform", "manylinux2014_x86_64",
)  # fmt: skip
_PIP_TIMEOUT_S = 900
_APT_TIMEOUT_S = 300
_TITLE_MAX_CHARS = 80

_NAME_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")
_VERSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+!_-]*")


class CorpusError(RuntimeError):
    """A package or data file could not be fetched, extracted or read."""


@dataclass(frozen=True, slots=True)
class NewsArticle:
    """One real news article.

    Attributes:
        id: Stable identifier, e.g. ``lee-bg-0001`` (line number in the Lee file) or
            ``reuters-00242`` (Reuters NEWID).
        title: Headline; for the Lee corpus (which has none) the first sentence trimmed
            to about 80 characters.
        text: Full article text (the Lee text includes its first sentence).
        source: Where the article comes from, for provenance in demos and reports.
        topics: Topic labels where the source has them (Reuters: ``acq``, ``crude``, ...).
        published: ISO-8601 timestamp where the source has one (Reuters only).
    """

    id: str
    title: str
    text: str
    source: str
    topics: tuple[str, ...] = ()
    published: str | None = None


@dataclass(frozen=True, slots=True)
class DemoFolder:
    """What :func:`write_demo_folder` wrote.

    Attributes:
        root: The destination folder.
        news: Paths of the ABC news articles (``root/news/<id>.txt``).
        images: Paths of the sample images (``root/images/<name>``).
        reuters: Paths of the Reuters articles (``root/reuters/<id>.txt``), possibly empty.
        notes: Human-readable remarks, e.g. why Reuters was skipped.
    """

    root: Path
    news: tuple[Path, ...] = ()
    images: tuple[Path, ...] = ()
    reuters: tuple[Path, ...] = ()
    notes: tuple[str, ...] = field(default=())

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
        return self.news_count + self.image_count + self.reuters_count

    def summary(self) -> dict[str, object]:
        """JSON-ready summary (counts, folders and sources)."""
        return {
            "dest": str(self.root),
            "news": self.news_count,
            "images": self.image_count,
            "reuters": self.reuters_count,
            "total": self.total,
            "folders": {
                "news": str(self.root / "news"),
                "images": str(self.root / "images"),
                "reuters": str(self.root / "reuters"),
            },
            "sources": {
                "news": f"{LEE_SOURCE}, gensim=={GENSIM_VERSION} wheel",
                "images": f"skimage/data, scikit-image=={SKIMAGE_VERSION} wheel",
                "reuters": REUTERS_SOURCE,
            },
            "notes": list(self.notes),
        }


# --------------------------------------------------------------------------- cache


def cache_dir() -> Path:
    """Root of the download cache: ``$KENNING_CACHE_DIR`` or ``~/.cache/kenning``.

    The folder is not created here; the fetch functions create what they need.
    """
    configured = os.environ.get("KENNING_CACHE_DIR", "").strip()
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "kenning"


@contextlib.contextmanager
def _locked(key: str) -> Iterator[None]:
    """Hold an exclusive lock named ``key`` across processes and threads.

    Uses ``flock`` on ``cache_dir()/locks/<key>.lock``; every caller opens the file
    itself, so threads of one process exclude each other too. On platforms without
    ``fcntl`` only the atomic renames protect the cache (work may then be done twice,
    but nobody sees a partial entry).
    """
    locks = cache_dir() / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    path = locks / f"{key}.lock"
    with open(path, "a+b") as handle:
        if sys.platform != "win32":
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if sys.platform != "win32":
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _publish(tmp: Path, final: Path) -> Path:
    """Atomically move the finished folder ``tmp`` to ``final`` (first one wins)."""
    try:
        tmp.rename(final)
    except OSError:
        if not final.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _new_tmp_dir(parent: Path) -> Path:
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=".tmp-", dir=parent))


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _slug(text: str) -> str:
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", text.strip("/"))[:60] or "all"
    digest = hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]
    return f"{readable}-{digest}"


def _check_spec(package: str, version: str) -> None:
    if not _NAME_RE.fullmatch(package):
        raise ValueError(f"invalid package name: {package!r}")
    if not _VERSION_RE.fullmatch(version):
        raise ValueError(f"invalid version: {version!r}")


def _safe_parts(member: str) -> tuple[str, ...]:
    """Path parts of an archive member, refusing absolute paths and ``..``."""
    path = PurePosixPath(member)
    if path.is_absolute() or any(part in ("..", "") for part in path.parts) or "\\" in member:
        raise CorpusError(f"unsafe archive member name: {member!r}")
    return path.parts


def _tail(text: str, limit: int = 2000) -> str:
    text = text.strip()
    return text if len(text) <= limit else "..." + text[-limit:]


# --------------------------------------------------------------------------- wheels


def _pip_download(package: str, version: str, dest: Path) -> None:
    """Run ``pip download`` for one pinned wheel into ``dest`` (no dependencies)."""
    cmd = [
        sys.executable, "-m", "pip", "download",
        "--no-deps", "--only-binary=:all:", "--disable-pip-version-check", "--no-input",
        *_WHEEL_TARGET,
        f"{package}=={version}",
        "-d", str(dest),
    ]  # fmt: skip
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CorpusError(f"pip download {package}=={version} failed: {exc}") from exc
    if proc.returncode != 0:
        raise CorpusError(
            f"pip download {package}=={version} exited {proc.returncode}: "
            f"{_tail(proc.stderr or proc.stdout)}"
        )


def _wheel_path(package: str, version: str) -> Path:
    """Path of the cached wheel, downloading it on first use."""
    _check_spec(package, version)
    key = f"{_canonical(package)}-{version}"
    folder = cache_dir() / "wheels" / key

    def cached() -> Path | None:
        wheels = sorted(folder.glob("*.whl")) if folder.is_dir() else []
        return wheels[0] if wheels else None

    found = cached()
    if found is not None:
        return found
    with _locked(f"wheel-{key}"):
        found = cached()
        if found is not None:
            return found
        tmp = _new_tmp_dir(folder.parent)
        try:
            started = time.monotonic()
            logger.info("downloading %s==%s wheel into %s", package, version, folder)
            _pip_download(package, version, tmp)
            wheels = sorted(tmp.glob("*.whl"))
            if len(wheels) != 1:
                names = sorted(p.name for p in tmp.iterdir())
                raise CorpusError(f"expected one wheel for {package}=={version}, got {names}")
            with zipfile.ZipFile(wheels[0]) as zf:
                bad = zf.testzip()
            if bad is not None:
                raise CorpusError(f"corrupt member {bad!r} in {wheels[0].name}")
            for extra in tmp.iterdir():
                if extra != wheels[0]:
                    extra.unlink()
            logger.info(
                "downloaded %s (%.1f MB) in %.1f s",
                wheels[0].name,
                wheels[0].stat().st_size / 1e6,
                time.monotonic() - started,
            )
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _publish(tmp, folder)
    found = cached()
    if found is None:  # pragma: no cover - only if someone deletes it under us
        raise CorpusError(f"wheel for {package}=={version} vanished from {folder}")
    return found


def fetch_wheel_members(package: str, version: str, members_prefix: str) -> Path:
    """Download a pinned wheel once and extract the members under a prefix.

    The wheel is fetched with ``pip download --no-deps --only-binary=:all:`` for the
    CPython 3.11 manylinux x86_64 target into ``cache_dir()/wheels`` and kept there.
    Members whose archive name starts with ``members_prefix`` (a folder such as
    ``"skimage/data/"`` or one file such as ``"gensim/test/test_data/lee.cor"``) are
    extracted, keeping their paths inside the wheel, into a folder of their own.

    Idempotent and safe to call from several processes or threads at once.

    Args:
        package: Distribution name on PyPI, e.g. ``"scikit-image"``.
        version: Exact version, e.g. ``"0.26.0"``.
        members_prefix: Prefix of the archive member names to extract.

    Returns:
        The extraction folder: member ``a/b/c.txt`` is at ``<folder>/a/b/c.txt``.

    Raises:
        ValueError: For a malformed package name, version or prefix.
        CorpusError: When pip fails, or no member matches the prefix.
    """
    if not members_prefix or members_prefix.startswith("/") or ".." in members_prefix.split("/"):
        raise ValueError(f"invalid members_prefix: {members_prefix!r}")
    _check_spec(package, version)
    key = f"{_canonical(package)}-{version}"
    dest = cache_dir() / "extracted" / key / _slug(members_prefix)
    if dest.is_dir():
        return dest
    with _locked(f"extract-{key}-{_slug(members_prefix)}"):
        if dest.is_dir():
            return dest
        wheel = _wheel_path(package, version)
        tmp = _new_tmp_dir(dest.parent)
        try:
            with zipfile.ZipFile(wheel) as zf:
                members = [
                    info
                    for info in zf.infolist()
                    if info.filename.startswith(members_prefix) and not info.is_dir()
                ]
                if not members:
                    raise CorpusError(f"no member of {wheel.name} starts with {members_prefix!r}")
                for info in members:
                    target = tmp.joinpath(*_safe_parts(info.filename))
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(info) as src, open(target, "wb") as out:
                        shutil.copyfileobj(src, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return _publish(tmp, dest)


# --------------------------------------------------------------------------- Lee / ABC news

_ABBREVIATIONS = frozenset(
    {
        "mr", "mrs", "ms", "dr", "st", "jr", "sr", "gen", "col", "lt", "sgt", "capt",
        "prof", "rev", "mt", "no", "inc", "co", "corp", "ltd", "vs", "sen", "gov", "rep",
        "maj", "brig", "cpl", "hon", "jan", "feb", "mar", "apr", "aug", "sep", "sept",
        "oct", "nov", "dec", "approx", "dept", "est", "fig",
    }
)  # fmt: skip
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*(?=\s+[\"'(\[]?[A-Z0-9]|\s*$)")
_LAST_WORD = re.compile(r"([A-Za-z.]+)$")


def _first_sentence(text: str) -> str:
    """First sentence of ``text``, not fooled by ``Mr.``, ``U.S.`` or initials."""
    for match in _SENTENCE_END.finditer(text):
        word_match = _LAST_WORD.search(text[: match.start()])
        word = word_match.group(1).lower() if word_match else ""
        if (
            word in _ABBREVIATIONS
            or (len(word) == 1 and word.isalpha())
            or re.fullmatch(r"(?:[a-z]\.)+[a-z]", word)
        ):
            continue
        return text[: match.end()].strip()
    return text.strip()


def _headline(text: str, max_chars: int = _TITLE_MAX_CHARS) -> str:
    """The first sentence, cut at a word boundary to at most ``max_chars`` characters."""
    sentence = " ".join(_first_sentence(text).split())
    if len(sentence) <= max_chars:
        return sentence
    cut = sentence[: max_chars - 1]
    space = cut.rfind(" ")
    if space > max_chars // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:-") + "\u2026"


@functools.lru_cache(maxsize=4)
def _load_lee(path: str) -> tuple[NewsArticle, ...]:
    raw = Path(path).read_text(encoding="utf-8", errors="replace")
    articles: list[NewsArticle] = []
    for number, line in enumerate(raw.splitlines(), start=1):
        text = " ".join(line.split())
        if not text:
            continue
        articles.append(
            NewsArticle(
                id=f"lee-bg-{number:04d}", title=_headline(text), text=text, source=LEE_SOURCE
            )
        )
    return tuple(articles)


def news_articles(limit: int | None = None) -> list[NewsArticle]:
    """The 300 real ABC news articles of gensim's ``lee_background.cor``.

    One article per line of the file; ids are ``lee-bg-NNNN`` by line number, the title
    is the article's first sentence trimmed to about 80 characters. Downloads the gensim
    wheel (about 28 MB) into the cache on first use.

    Args:
        limit: Return only the first ``limit`` articles (``None``: all 300).

    Raises:
        ValueError: When ``limit`` is negative.
        CorpusError: When the wheel cannot be fetched.
    """
    if limit is not None and limit < 0:
        raise ValueError("limit must be >= 0")
    root = fetch_wheel_members("gensim", GENSIM_VERSION, LEE_BACKGROUND_MEMBER)
    articles = _load_lee(str(root / LEE_BACKGROUND_MEMBER))
    return list(articles if limit is None else articles[:limit])


# --------------------------------------------------------------------------- images


def sample_images(*, include_unreadable: bool = False) -> dict[str, Path]:
    """The real images of scikit-image's ``skimage/data`` folder, by file name.

    Keys are file names such as ``"astronaut.png"`` or ``"rocket.jpg"`` (sorted); only
    image files are listed (no ``.npy``, ``.npz``, ``.txt``, ``.xml`` or code). Downloads
    the scikit-image wheel (about 14 MB) into the cache on first use.

    Args:
        include_unreadable: Also list the files that Pillow cannot open
            (:data:`PILLOW_UNREADABLE_IMAGES`); by default every listed image decodes.

    Raises:
        CorpusError: When the wheel cannot be fetched.
    """
    root = fetch_wheel_members("scikit-image", SKIMAGE_VERSION, SKIMAGE_DATA_PREFIX)
    folder = root / SKIMAGE_DATA_PREFIX
    return {
        path.name: path
        for path in sorted(folder.iterdir())
        if path.is_file()
        and path.suffix.lower() in IMAGE_SUFFIXES
        and (include_unreadable or path.name not in PILLOW_UNREADABLE_IMAGES)
    }


# --------------------------------------------------------------------------- Reuters


def _apt_download(package: str, dest: Path) -> None:
    try:
        proc = subprocess.run(
            ["apt-get", "download", package],
            cwd=dest,
            capture_output=True,
            text=True,
            timeout=_APT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CorpusError(f"apt-get download {package} failed: {exc}") from exc
    if proc.returncode != 0:
        raise CorpusError(
            f"apt-get download {package} exited {proc.returncode}: "
            f"{_tail(proc.stderr or proc.stdout, 500)}"
        )


def _deb_path(package: str) -> Path:
    """Path of the cached ``.deb`` of ``package``, downloading it on first use."""
    if not _NAME_RE.fullmatch(package):
        raise ValueError(f"invalid package name: {package!r}")
    folder = cache_dir() / "debs" / package

    def cached() -> Path | None:
        debs = sorted(folder.glob("*.deb")) if folder.is_dir() else []
        return debs[-1] if debs else None

    found = cached()
    if found is not None:
        return found
    with _locked(f"deb-{package}"):
        found = cached()
        if found is not None:
            return found
        tmp = _new_tmp_dir(folder.parent)
        try:
            started = time.monotonic()
            _apt_download(package, tmp)
            debs = sorted(tmp.glob("*.deb"))
            if len(debs) != 1:
                raise CorpusError(f"apt-get download {package} produced {len(debs)} .deb files")
            logger.info(
                "downloaded %s (%.1f MB) in %.1f s",
                debs[0].name,
                debs[0].stat().st_size / 1e6,
                time.monotonic() - started,
            )
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _publish(tmp, folder)
    found = cached()
    if found is None:  # pragma: no cover
        raise CorpusError(f".deb of {package} vanished from {folder}")
    return found


def _deb_data_tar(deb: Path) -> bytes:
    """The ``data.tar.*`` member of a ``.deb`` (an ``ar`` archive), read with the stdlib."""
    blob = deb.read_bytes()
    if not blob.startswith(b"!<arch>\n"):
        raise CorpusError(f"{deb.name} is not a Debian package")
    pos = 8
    while pos + 60 <= len(blob):
        header = blob[pos : pos + 60]
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        try:
            size = int(header[48:58].decode("ascii").strip())
        except ValueError as exc:
            raise CorpusError(f"malformed ar header in {deb.name}") from exc
        if name.startswith("data.tar"):
            return blob[pos + 60 : pos + 60 + size]
        pos += 60 + size + (size % 2)
    raise CorpusError(f"no data.tar member in {deb.name}")


def _extract_deb_python(deb: Path, dest: Path) -> None:
    """Extract a ``.deb`` without dpkg (gzip, bzip2 and xz payloads; not zstd)."""
    try:
        with tarfile.open(fileobj=io.BytesIO(_deb_data_tar(deb)), mode="r:*") as tf:
            safe: list[tarfile.TarInfo] = []
            for member in tf.getmembers():
                try:
                    filtered = tarfile.data_filter(member, str(dest))
                except tarfile.FilterError:
                    continue
                if filtered is not None:
                    safe.append(filtered)
            tf.extractall(dest, members=safe, filter="data")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise CorpusError(f"cannot extract {deb.name}: {exc}") from exc


def _deb_tree(deb: Path) -> Path:
    """Folder with the extracted filesystem tree of a cached ``.deb``."""
    dest = cache_dir() / "extracted" / f"deb-{deb.stem}"
    if dest.is_dir():
        return dest
    with _locked(f"extract-deb-{deb.stem}"):
        if dest.is_dir():
            return dest
        tmp = _new_tmp_dir(dest.parent)
        try:
            dpkg_deb = shutil.which("dpkg-deb")
            if dpkg_deb is not None:
                proc = subprocess.run(
                    [dpkg_deb, "-x", str(deb), str(tmp)],
                    capture_output=True,
                    text=True,
                    timeout=_APT_TIMEOUT_S,
                    check=False,
                )
                if proc.returncode != 0:
                    raise CorpusError(f"dpkg-deb -x {deb.name} failed: {_tail(proc.stderr, 500)}")
            else:
                _extract_deb_python(deb, tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return _publish(tmp, dest)


def _clean(text: str) -> str:
    return re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", "", text)


def _reuters_body(dateline: str, body: str) -> str:
    """Unwrap the wire text into paragraphs and drop the ``REUTER`` sign-off."""
    text = _clean(body).strip()
    text = re.sub(r"\s*\bREUTER\b\s*$", "", text, flags=re.IGNORECASE)
    paragraphs = [" ".join(part.split()) for part in re.split(r"\n\s{2,}", text)]
    paragraphs = [p for p in paragraphs if p]
    dateline = " ".join(_clean(dateline).split())
    if dateline and paragraphs:
        paragraphs[0] = f"{dateline} {paragraphs[0]}"
    return "\n\n".join(paragraphs)


def _reuters_date(raw: str) -> str | None:
    raw = raw.strip()
    for fmt in ("%d-%b-%Y %H:%M:%S.%f", "%d-%b-%Y %H:%M:%S"):
        try:
            return datetime.strptime(raw, fmt).isoformat()
        except ValueError:
            continue
    return None


@functools.lru_cache(maxsize=4)
def _load_reuters(root: str) -> tuple[NewsArticle, ...]:
    files = sorted(Path(root).rglob("texts/*/reut-*.xml"), key=lambda p: (p.parent.name, p.name))
    articles: list[NewsArticle] = []
    seen: set[str] = set()
    for path in files:
        try:
            doc = ET.parse(path).getroot()
        except ET.ParseError as exc:
            logger.warning("skipping unreadable Reuters file %s: %s", path.name, exc)
            continue
        title = " ".join(_clean(doc.findtext("TEXT/TITLE") or "").split())
        text = _reuters_body(doc.findtext("TEXT/DATELINE") or "", doc.findtext("TEXT/BODY") or "")
        if not title or not text:
            continue
        newid = doc.get("NEWID", "")
        article_id = f"reuters-{int(newid):05d}" if newid.isdigit() else f"reuters-{path.stem}"
        if article_id in seen:
            article_id = f"{article_id}-{path.parent.name}"
        seen.add(article_id)
        topics = tuple(d.text.strip() for d in doc.findall("TOPICS/D") if d.text and d.text.strip())
        articles.append(
            NewsArticle(
                id=article_id,
                title=title,
                text=text,
                source=REUTERS_SOURCE,
                topics=topics or (path.parent.name,),
                published=_reuters_date(doc.findtext("DATE") or ""),
            )
        )
    return tuple(articles)


def _reuters_or_reason() -> tuple[list[NewsArticle], str | None]:
    try:
        tree = _deb_tree(_deb_path(REUTERS_DEB))
    except CorpusError as exc:
        reason = f"Reuters-21578 sample unavailable ({exc})"
        logger.warning("%s", reason)
        return [], reason
    articles = list(_load_reuters(str(tree)))
    if not articles:
        reason = f"no reut-*.xml files found in the {REUTERS_DEB} package at {tree}"
        logger.warning("%s", reason)
        return [], reason
    return articles, None


def reuters_articles(limit: int | None = None) -> list[NewsArticle]:
    """The 70 Reuters-21578 articles (50 ``acq``, 20 ``crude``) of Debian ``r-cran-tm``.

    Optional data: fetched with ``apt-get download`` and unpacked with ``dpkg-deb -x``
    (or the standard library when dpkg is missing). When that fails, the reason is
    logged and an empty list is returned; nothing else depends on it.

    Args:
        limit: Return only the first ``limit`` articles (``None``: all).
    """
    if limit is not None and limit < 0:
        raise ValueError("limit must be >= 0")
    articles, _ = _reuters_or_reason()
    return articles if limit is None else articles[:limit]


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
    dest: Path, *, articles: int = 300, images: bool = True, reuters: bool = True
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

    Raises:
        ValueError: When ``articles`` is negative.
        CorpusError: When the gensim or scikit-image wheel cannot be fetched.
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
        found, reason = _reuters_or_reason()
        if reason:
            notes.append(reason)
        if found:
            reuters_dir = dest / "reuters"
            reuters_dir.mkdir(parents=True, exist_ok=True)
            for article in found:
                path = reuters_dir / f"{article.id}.txt"
                _write_if_changed(path, _article_file(article))
                reuters_paths.append(path)

    return DemoFolder(
        root=dest,
        news=tuple(news_paths),
        images=tuple(image_paths),
        reuters=tuple(reuters_paths),
        notes=tuple(notes),
    )


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
