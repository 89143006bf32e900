"""The blob store protocol: immutable, content-addressed bytes.

A key is the lowercase sha256 hex digest of the content, so storing the same bytes twice
yields the same key and costs nothing. The embedded implementation is a local folder
(:class:`~kenning.stores.blobs.local.LocalBlobStore`); a scale-out one speaks S3.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

from kenning.errors import BadInput

_KEY_RE = re.compile(r"[0-9a-f]{64}")


class InvalidBlobKey(BadInput, ValueError):
    """A key that is not 64 lowercase hex characters (e.g. a path traversal attempt)."""

    code = "invalid_blob_key"


def is_key(name: str) -> bool:
    """Whether ``name`` is a well-formed blob key (64 lowercase hex characters)."""
    return _KEY_RE.fullmatch(name) is not None


def validate_key(key: str) -> str:
    """Return ``key`` unchanged if it is a well-formed sha256 hex digest, else raise.

    Raises:
        InvalidBlobKey: for anything but exactly 64 lowercase hex characters.
    """
    if not isinstance(key, str) or _KEY_RE.fullmatch(key) is None:
        raise InvalidBlobKey(f"invalid blob key: {key!r:.80}")
    return key


@runtime_checkable
class BlobStore(Protocol):
    """Content-addressed storage for raw media bytes.

    Every method that takes a key raises :class:`InvalidBlobKey` (a ``ValueError``) for a
    malformed key before touching storage, and ``KeyError`` when the key is well formed but
    absent (``exists`` and ``delete`` answer ``False`` instead).
    """

    def put(self, data: bytes) -> str:
        """Store ``data`` atomically and durably; return its sha256 hex key (idempotent).

        Putting bytes that are already stored refreshes their age (see :meth:`scan`), so
        a collector's grace period counts from the last put.
        """
        ...

    def put_many(self, datas: Sequence[bytes]) -> list[str]:
        """Store every item of ``datas``; return their keys in the same order.

        The same contract as :meth:`put` for each item (atomic, idempotent, a re-put
        refreshes the age), and every item is durable before the keys are returned; a
        crash part way leaves some items stored whole and none partial. An implementation
        groups the expensive part (folder fsyncs, request round trips) per call, which is
        why bulk ingest writes a batch's blobs with one call.
        """
        ...

    def put_file(self, path: Path) -> str:
        """Stream the file at ``path`` into the store; same key as ``put(path.read_bytes())``."""
        ...

    def scan(self, older_than: float) -> Iterator[str]:
        """Keys whose last put is older than ``older_than`` (POSIX seconds), in any order."""
        ...

    def sweep_temp(self, older_than: float) -> int:
        """Remove partial writes abandoned before ``older_than`` (a crash); return how many."""
        ...

    def get(self, key: str) -> bytes:
        """Return the bytes stored under ``key``; raise ``KeyError`` if absent."""
        ...

    def open(self, key: str) -> BinaryIO:
        """Open the blob for streaming reads (caller closes); raise ``KeyError`` if absent."""
        ...

    def exists(self, key: str) -> bool:
        """Whether a blob is stored under ``key``."""
        ...

    def delete(self, key: str) -> bool:
        """Remove the blob; ``True`` if it existed."""
        ...

    def size(self, key: str) -> int:
        """Size of the blob in bytes; raise ``KeyError`` if absent."""
        ...
