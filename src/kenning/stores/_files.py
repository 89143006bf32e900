"""Files of the embedded faiss indexes: one ``.npz`` per namespace, written atomically.

A namespace is saved as ``<root>/<digest>.npz`` (the digest of its name, so any name is
a safe file name); the file holds its own ``namespace`` and a ``format`` number that
:func:`saved_namespaces` checks on load. Files a namespace needs beside it (a faiss
graph) are named ``<digest>.<token>.<suffix>`` and referenced from the ``.npz``.

``<root>/log_mark.json`` holds the index-log mark of the snapshot: every change up to it
is in the files. It is written after the namespace files and removed first when the
snapshot is discarded, so a mark is never ahead of the files it describes.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import numpy as np

__all__ = [
    "atomic_savez",
    "atomic_write",
    "discard_snapshot",
    "namespace_file",
    "read_mark",
    "saved_namespaces",
    "write_mark",
]

MARK_FILE = "log_mark.json"


def namespace_file(root: Path, namespace: str) -> Path:
    """The ``.npz`` file of ``namespace`` under ``root``."""
    return root / (hashlib.sha256(namespace.encode()).hexdigest()[:40] + ".npz")


def atomic_write(path: Path, write: Callable[[str], object]) -> None:
    """Have ``write(temporary path)`` create a file, then make it ``path`` atomically.

    The temporary file is in the same folder and fsynced before it replaces ``path`` in
    one rename; the folder is fsynced so the rename survives a crash. Readers see the
    old file or the new one, never a mix.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_savez(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write an ``.npz`` so that readers see the old file or the new one, never a mix."""
    atomic_write(path, lambda tmp: np.savez(tmp, **arrays))  # type: ignore[arg-type]


def write_mark(root: Path, mark: int) -> None:
    """Record that the files under ``root`` hold every index-log entry up to ``mark``."""

    def write(tmp: str) -> None:
        Path(tmp).write_text(json.dumps({"mark": int(mark)}))

    atomic_write(root / MARK_FILE, write)


def read_mark(root: Path) -> int | None:
    """The mark written by :func:`write_mark`, ``None`` when there is none."""
    try:
        return int(json.loads((root / MARK_FILE).read_text())["mark"])
    except FileNotFoundError:
        return None


def discard_snapshot(root: Path) -> None:
    """Delete the mark, then every index file under ``root`` (before a rebuild).

    The mark goes first and durably: a crash half-way leaves files without a mark, which
    the next start treats as no snapshot at all.
    """
    mark = root / MARK_FILE
    if mark.exists():
        mark.unlink()
        _fsync_dir(root)
    for path in root.iterdir():
        if path.is_file() and path.suffix in {".npz", ".faiss"}:
            path.unlink()


def saved_namespaces(root: Path, version: int) -> Iterator[Mapping[str, np.ndarray]]:
    """The saved ``.npz`` files under ``root``, sorted by name, each open while in use.

    Raises:
        ValueError: When a file's ``format`` is not ``version``.
    """
    for path in sorted(root.glob("*.npz")):
        with np.load(path, allow_pickle=False) as data:
            if int(data["format"]) != version:
                raise ValueError(f"{path}: unsupported format {int(data['format'])}")
            yield data


def _fsync_dir(folder: Path) -> None:
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
