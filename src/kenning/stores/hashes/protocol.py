"""The hash index protocol: binary fingerprints compared by Hamming distance.

Used for perceptual hashes (PDQ-256 for images and keyframes, audio and video
fingerprints). Codes are raw bytes; every code in one namespace has the same length.
Several ids may share one code (e.g. the dihedral variants of an image are stored as
separate ids), and a search returns each of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from kenning.stores.snapshots import Snapshotted


@dataclass(frozen=True)
class HashHit:
    """One match: ``distance`` is the number of differing bits (lower is closer)."""

    id: int
    distance: int


@runtime_checkable
class HashIndex(Snapshotted, Protocol):
    """Range search over fixed-length binary codes within namespaces."""

    def add(self, namespace: str, ids: Sequence[int], codes: Sequence[bytes]) -> None:
        """Upsert ``codes``: re-adding an id replaces its code.

        Raises ``ValueError`` if lengths differ from each other or from the namespace's
        existing codes, or if ``ids`` and ``codes`` differ in length.
        """
        ...

    def remove(self, namespace: str, ids: Sequence[int]) -> int:
        """Remove ``ids``; return how many were present."""
        ...

    def search(
        self, namespace: str, code: bytes, *, max_distance: int, k: int = 50
    ) -> list[HashHit]:
        """Up to ``k`` ids with Hamming distance ``<= max_distance``, by distance then id.

        An unknown namespace yields ``[]``; a code of the wrong length raises ``ValueError``.
        """
        ...

    def count(self, namespace: str) -> int:
        """Number of live codes in the namespace (0 if unknown)."""
        ...
