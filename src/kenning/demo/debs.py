"""Debian packages as data archives: ``apt-get download`` once, unpack into the cache.

A ``.deb`` is kept under ``cache_dir()/debs/<package>`` and its filesystem tree under
``cache_dir()/extracted/deb-<stem>`` (see :mod:`kenning.demo.cache`). Unpacking uses
``dpkg-deb -x`` where it exists and the standard library otherwise.
"""

from __future__ import annotations

import functools
import io
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

from kenning.demo.cache import (
    CorpusError,
    build_once,
    cache_dir,
    check_name,
    fetch_file,
    log_download,
    run_tool,
    tail,
)

__all__ = ["package_tree"]

_APT_TIMEOUT_S = 300


def _apt_download(package: str, dest: Path) -> None:
    run_tool(
        ["apt-get", "download", package],
        f"apt-get download {package}",
        timeout=_APT_TIMEOUT_S,
        cwd=dest,
        limit=500,
    )


def _download_deb(package: str, tmp: Path) -> None:
    started = time.monotonic()
    _apt_download(package, tmp)
    debs = sorted(tmp.glob("*.deb"))
    if len(debs) != 1:
        raise CorpusError(f"apt-get download {package} produced {len(debs)} .deb files")
    log_download(debs[0], started)


def _deb_path(package: str) -> Path:
    """Path of the cached ``.deb`` of ``package``, downloading it on first use."""
    check_name(package)
    folder = cache_dir() / "debs" / package
    download = functools.partial(_download_deb, package)
    return fetch_file(
        folder, "*.deb", f"deb-{package}", download, what=f".deb of {package}", pick=-1
    )


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


def _extract_deb(deb: Path, tmp: Path) -> None:
    dpkg_deb = shutil.which("dpkg-deb")
    if dpkg_deb is None:
        _extract_deb_python(deb, tmp)
        return
    proc = subprocess.run(
        [dpkg_deb, "-x", str(deb), str(tmp)],
        capture_output=True,
        text=True,
        timeout=_APT_TIMEOUT_S,
        check=False,
    )
    if proc.returncode != 0:
        raise CorpusError(f"dpkg-deb -x {deb.name} failed: {tail(proc.stderr, 500)}")


def _deb_tree(deb: Path) -> Path:
    """Folder with the extracted filesystem tree of a cached ``.deb``."""
    dest = cache_dir() / "extracted" / f"deb-{deb.stem}"
    return build_once(dest, f"extract-deb-{deb.stem}", functools.partial(_extract_deb, deb))


def package_tree(package: str) -> Path:
    """The filesystem tree of Debian ``package``, downloaded and unpacked on first use.

    Raises:
        ValueError: For a malformed package name.
        CorpusError: When ``apt-get download`` or the unpacking fails.
    """
    return _deb_tree(_deb_path(package))
