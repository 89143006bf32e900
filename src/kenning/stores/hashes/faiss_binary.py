"""Embedded hash index: exact Hamming range search, per namespace, in memory.

A namespace of at least :data:`MIN_TABLE_ROWS` codes answers from multi-index hashing
tables (:mod:`kenning.stores.hashes.mih`): at PDQ's match radius of 31 bits a query reads
about 0.4% of random codes instead of all of them. A smaller namespace, a radius the
tables cannot serve (``max_distance // (bytes / 2)`` above 2, i.e. beyond 47 bits for
PDQ-256) and a query whose buckets hold too many candidates (larger radii, clustered
codes) scan every code with a faiss ``IndexBinaryFlat`` instead; every path is exact.
Removals and upserts tombstone a position, filtered after the range search; a namespace
is compacted (rebuilt from its live codes) once tombstones exceed ``compact_ratio``.
The tables are not saved: they are rebuilt from the codes by the first search after a
load or a compaction (about 0.5 s for 1M PDQ codes, 6 s for 10M: bench/bench_hashes.py).

With a ``root`` folder, :meth:`FaissBinaryHashIndex.save` writes each changed namespace
and then the index-log mark the snapshot includes; the snapshot is read on first use.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kenning.stores._files import (
    atomic_savez,
    discard_snapshot,
    namespace_file,
    read_mark,
    saved_namespaces,
    write_mark,
)
from kenning.stores._positions import TombstonedRows
from kenning.stores.hashes.mih import SubstringTables
from kenning.stores.hashes.protocol import HashHit

try:
    import faiss as _faiss
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    from kenning.errors import MissingExtra

    raise MissingExtra("faiss", "index") from exc

faiss: Any = _faiss  # the bundled stubs lack the numpy-taking overloads
log = logging.getLogger(__name__)
_FORMAT = 1
MIN_TABLE_ROWS = 32768
"""Below this many positions a flat scan (about 2 ns a code on one core) is as fast as the
tables at radius 31 (about 50 us a query, mostly fixed numpy overhead)."""
_SCAN_SHARE = 32
"""The tables give way to a flat scan once they would verify more than 1/32 of the codes:
a gathered, verified candidate costs about 30 times a code scanned in place."""


class _Namespace(TombstonedRows):
    """Tombstoned positions of codes; ``index`` (flat) and ``tables`` (multi-index hashing,
    built on the first search that can use them) address the same positions."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes
        super().__init__(nbytes, np.uint8)

    def clear(self) -> None:
        super().clear()
        self.index = faiss.IndexBinaryFlat(8 * self.nbytes)
        self.tables: SubstringTables | None = None

    def within(self, query: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
        """Positions within ``radius`` bits of ``query`` (dead ones too) and distances."""
        if self.n >= MIN_TABLE_ROWS:
            if self.tables is None:
                self.tables = SubstringTables(self.nbytes)
            if self.tables.covers(radius):
                found = self.tables.search(
                    self.rows, self.n, query, radius, budget=self.n // _SCAN_SHARE
                )
                if found is not None:
                    return found
        # faiss binary range search keeps distances strictly below the radius.
        _, distances, positions = self.index.range_search(query.reshape(1, -1), radius + 1)
        return positions, distances

    def append(self, ids: np.ndarray, codes: np.ndarray) -> None:
        super().append(ids, codes)
        self.index.add(np.ascontiguousarray(codes))

    def compact(self) -> None:
        ids, codes = self.live_rows()
        self.clear()
        self.append(ids, codes)


class FaissBinaryHashIndex:
    """A :class:`~kenning.stores.hashes.protocol.HashIndex` on faiss binary indexes.

    Args:
        root: folder of the snapshot (:meth:`save`, read on first use); ``None`` keeps
            the index purely in memory.
        compact_ratio: rebuild a namespace when tombstones exceed this share of positions.
    """

    def __init__(self, root: Path | None, *, compact_ratio: float = 0.2) -> None:
        self.root = Path(root) if root is not None else None
        self.compact_ratio = compact_ratio
        self._lock = threading.RLock()
        self._loaded: dict[str, _Namespace] | None = {} if self.root is None else None
        self._mark: int | None = None
        if self.root is not None:
            self.root.mkdir(parents=True, exist_ok=True)

    @property
    def _spaces(self) -> dict[str, _Namespace]:
        with self._lock:
            if self._loaded is None:
                self._loaded, self._mark = self._load()
            return self._loaded

    def add(self, namespace: str, ids: Sequence[int], codes: Sequence[bytes]) -> None:
        """Upsert codes; a repeated id (also within one call) keeps the last code."""
        if len(ids) != len(codes):
            raise ValueError(f"{len(ids)} ids for {len(codes)} codes")
        if not codes:
            return
        lengths = {len(c) for c in codes}
        if len(lengths) != 1 or 0 in lengths:
            raise ValueError(f"codes must be non-empty and of one length, got {sorted(lengths)}")
        nbytes = lengths.pop()
        matrix = np.frombuffer(b"".join(codes), dtype=np.uint8).reshape(len(codes), nbytes)
        with self._lock:
            space = self._space(namespace, nbytes, create=True)
            assert space is not None
            space.append(np.asarray(ids, dtype=np.int64), matrix)
            self._maybe_compact(space)

    def remove(self, namespace: str, ids: Sequence[int]) -> int:
        """Tombstone ``ids``; return how many were live."""
        with self._lock:
            space = self._spaces.get(namespace)
            if space is None:
                return 0
            removed = space.kill(ids)
            self._maybe_compact(space)
            return removed

    def search(
        self, namespace: str, code: bytes, *, max_distance: int, k: int = 50
    ) -> list[HashHit]:
        """Ids within ``max_distance`` bits of ``code``, closest first, ties by id."""
        with self._lock:
            space = self._space(namespace, len(code), create=False)
            if space is None or k <= 0 or max_distance < 0 or not space.pos:
                return []
            query = np.frombuffer(code, dtype=np.uint8)
            positions, distances = space.within(query, max_distance)
            keep = space.live[positions]
            ids, distances = space.ids[positions[keep]], distances[keep]
        order = np.lexsort((ids, distances))[:k]
        return [HashHit(int(ids[i]), int(distances[i])) for i in order]

    def count(self, namespace: str) -> int:
        """Live codes in ``namespace``."""
        with self._lock:
            space = self._spaces.get(namespace)
            return 0 if space is None else len(space.pos)

    def tombstones(self, namespace: str) -> int:
        """Dead positions awaiting compaction (operations and tests)."""
        with self._lock:
            space = self._spaces.get(namespace)
            return 0 if space is None else space.tombstones

    def save(self, mark: int | None = None) -> None:
        """Write every changed namespace to ``root/<digest>.npz`` atomically, then ``mark``
        (when given)."""
        if self.root is None:
            return
        with self._lock:
            for name, space in self._spaces.items():
                if space.dirty:
                    self._write(name, space)
                    space.dirty = False
            if mark is not None:
                write_mark(self.root, mark)
                self._mark = mark

    def saved_mark(self) -> int | None:
        """The index-log mark of the snapshot on disk; ``None`` without one."""
        with self._lock:
            if self._loaded is None:  # the mark is read with the snapshot, on first use
                self._loaded, self._mark = self._load()
            return self._mark

    def clear(self) -> None:
        """Forget every namespace and discard the snapshot on disk (before a rebuild)."""
        with self._lock:
            self._loaded, self._mark = {}, None
            if self.root is not None:
                discard_snapshot(self.root)

    def _space(self, namespace: str, nbytes: int, *, create: bool) -> _Namespace | None:
        space = self._spaces.get(namespace)
        if space is None:
            if create:
                space = self._spaces[namespace] = _Namespace(nbytes)
            return space
        if nbytes != space.nbytes:
            raise ValueError(
                f"namespace {namespace!r} holds {space.nbytes}-byte codes, got {nbytes}"
            )
        return space

    def _maybe_compact(self, space: _Namespace) -> None:
        if space.tombstones and space.tombstones > self.compact_ratio * space.n:
            space.compact()

    def _write(self, namespace: str, space: _Namespace) -> None:
        arrays = {
            "format": np.asarray(_FORMAT),
            "namespace": np.asarray(namespace),
            "nbytes": np.asarray(space.nbytes),
            "codes": space.rows[: space.n],
            "ids": space.ids[: space.n],
            "live": space.live[: space.n],
        }
        assert self.root is not None
        atomic_savez(namespace_file(self.root, namespace), arrays)

    def _load(self) -> tuple[dict[str, _Namespace], int | None]:
        """The snapshot's namespaces and mark; nothing (and no mark) if it is unusable,
        which makes the index follower rebuild from the database."""
        assert self.root is not None
        spaces: dict[str, _Namespace] = {}
        try:
            for data in saved_namespaces(self.root, _FORMAT):
                live = data["live"]
                space = _Namespace(int(data["nbytes"]))
                # The flat index is just the codes: reload the live ones, compacted.
                space.append(data["ids"][live], data["codes"][live])
                space.dirty = False
                spaces[str(data["namespace"])] = space
        except (OSError, ValueError, KeyError) as exc:
            log.warning("hash index snapshot unusable, starting empty",
                        extra={"root": str(self.root), "error": repr(exc)})
            return {}, None
        return spaces, read_mark(self.root)
