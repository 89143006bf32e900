"""Tombstoned positions: the per-namespace layout shared by the embedded faiss indexes.

A namespace keeps positions ``0..n-1``, each with a row (a vector or a binary code), an
id and a live flag, in arrays that grow geometrically. An upsert appends and tombstones
the id's previous position; a removal only tombstones. ``pos`` maps every live id to
its position, and faiss indexes built over the rows address them by position.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import DTypeLike

__all__ = ["TombstonedRows"]


class TombstonedRows:
    """Positions ``0..n-1``: row, id and live flag; ``dirty`` until saved.

    Args:
        width: Length of each row (vector dimension, or bytes per code).
        dtype: Element type of the rows.
    """

    def __init__(self, width: int, dtype: DTypeLike) -> None:
        self.width = width
        self.dtype = np.dtype(dtype)
        self.dirty = True
        self.clear()

    def clear(self) -> None:
        """Forget every position (arrays back to empty)."""
        self.n = 0
        self.rows = np.empty((0, self.width), dtype=self.dtype)
        self.ids = np.empty(0, dtype=np.int64)
        self.live = np.empty(0, dtype=bool)
        self.pos: dict[int, int] = {}

    @property
    def tombstones(self) -> int:
        """Dead positions awaiting compaction."""
        return self.n - len(self.pos)

    def append(self, ids: np.ndarray, rows: np.ndarray) -> None:
        """Add rows at the end; a repeated id (also within ``ids``) keeps its last row."""
        end = self.n + len(ids)
        if end > len(self.ids):  # amortised growth: one add per ingested item is common
            cap = max(end, 2 * len(self.ids), 64)
            self.rows, self.ids, self.live = (
                _grow(a, cap) for a in (self.rows, self.ids, self.live)
            )
        self.rows[self.n : end] = rows
        self.ids[self.n : end] = ids
        self.live[self.n : end] = True
        for offset, id_ in enumerate(ids.tolist()):
            old = self.pos.get(id_)
            if old is not None:
                self.live[old] = False
            self.pos[id_] = self.n + offset
        self.n = end
        self.dirty = True

    def kill(self, ids: Sequence[int]) -> int:
        """Tombstone ``ids``; return how many were live."""
        removed = 0
        for id_ in ids:
            old = self.pos.pop(int(id_), None)
            if old is not None:
                self.live[old] = False
                removed += 1
        self.dirty = self.dirty or removed > 0
        return removed

    def reserve(self, rows: np.ndarray) -> None:
        """Take ``rows`` (the first ``n`` rows, then room to grow) as the row array and
        give ids and live flags the same room, so appends fill it before any copy."""
        capacity = len(rows)
        self.ids = _grow(self.ids[: self.n], capacity)
        self.live = _grow(self.live[: self.n], capacity)
        self.rows = rows

    def live_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the live ids and rows, in position order (what compaction keeps)."""
        keep = np.flatnonzero(self.live[: self.n])
        return self.ids[keep], self.rows[keep]


def _grow(array: np.ndarray, capacity: int) -> np.ndarray:
    grown = np.zeros((capacity, *array.shape[1:]), dtype=array.dtype)
    grown[: len(array)] = array
    return grown
