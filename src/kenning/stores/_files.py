"""Files of the embedded faiss indexes: one ``.npz`` per namespace, written atomically.

A namespace is saved as ``<root>/<digest>.npz`` (the digest of its name, so any name is
a safe file name); the file holds its own ``namespace`` and a ``format`` number that
:func:`saved_namespaces` checks on load.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

__all__ = ["atomic_savez", "namespace_file", "saved_namespaces"]


def namespace_file(root: Path, namespace: str) -> Path:
    """The ``.npz`` file of ``namespace`` under ``root``."""
    return root / (hashlib.sha256(namespace.encode()).hexdigest()[:40] + ".npz")


def atomic_savez(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write an ``.npz`` so that readers see the old file or the new one, never a mix.

    The data goes to a temporary file in the same folder, is fsynced, replaces ``path``
    in one rename, and the folder is fsynced so the rename survives a crash.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)  # type: ignore[arg-type]
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


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
