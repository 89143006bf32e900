"""The dense vector index protocol: cosine similarity within namespaces.

A namespace keeps tenants and embedding spaces apart; it is any string, conventionally
``"<tenant-id>/<embedding-space>"`` (e.g. ``"t-42/use-multilingual-v3"``). A search never
crosses namespaces. Ids are caller-chosen integers (e.g. segment or embedding row ids).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from kenning.stores.snapshots import Snapshotted


@dataclass(frozen=True)
class VectorHit:
    """One search result: ``score`` is cosine similarity in [-1, 1], higher is better."""

    id: int
    score: float


@runtime_checkable
class VectorIndex(Snapshotted, Protocol):
    """Approximate nearest-neighbour search over L2-normalised float32 vectors."""

    def add(self, namespace: str, ids: Sequence[int], vectors: np.ndarray) -> None:
        """Upsert ``vectors`` (shape ``(len(ids), dim)``): re-adding an id replaces it.

        Inputs need not be normalised; implementations normalise defensively. Raises
        ``ValueError`` on a shape or dimension mismatch.
        """
        ...

    def remove(self, namespace: str, ids: Sequence[int]) -> int:
        """Remove ``ids`` from the namespace; return how many were present."""
        ...

    def search(
        self,
        namespace: str,
        vector: np.ndarray,
        k: int,
        *,
        allowed: Collection[int] | None = None,
    ) -> list[VectorHit]:
        """Return up to ``k`` hits, sorted by score descending then id ascending.

        ``allowed``, when given, restricts results to those ids (a pre-filter, so the
        ``k`` best allowed ids are found, not the allowed subset of the global top ``k``).
        An unknown namespace yields ``[]``.
        """
        ...

    def count(self, namespace: str) -> int:
        """Number of live vectors in the namespace (0 if unknown)."""
        ...
