"""Embedded hash index: one faiss ``IndexBinaryFlat`` per namespace, exact range search.

A flat binary index compares the query with every code using popcount (about 1M PDQ-256
codes per few tens of milliseconds), which is exact and fast enough for one machine.
Removals and upserts tombstone a position, filtered after the range search; a namespace
is compacted (rebuilt from its live codes) once tombstones exceed ``compact_ratio``.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kenning.stores.hashes.protocol import HashHit

try:
    import faiss as _faiss
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    from kenning.errors import MissingExtra

    raise MissingExtra("faiss", "index") from exc

faiss: Any = _faiss  # the bundled stubs lack the numpy-taking overloads
_FORMAT = 1


class _Namespace:
    """Positions ``0..n-1``: code, id, live flag; ``index`` holds the same codes."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes
        self.dirty = True
        self._reset()

    def _reset(self) -> None:
        self.n = 0
        self.codes = np.empty((0, self.nbytes), dtype=np.uint8)
        self.ids = np.empty(0, dtype=np.int64)
        self.live = np.empty(0, dtype=bool)
        self.pos: dict[int, int] = {}
        self.index = faiss.IndexBinaryFlat(8 * self.nbytes)

    @property
    def tombstones(self) -> int:
        return self.n - len(self.pos)

    def append(self, ids: np.ndarray, codes: np.ndarray) -> None:
        end = self.n + len(ids)
        if end > len(self.ids):  # amortised growth: one add per ingested image is common
            cap = max(end, 2 * len(self.ids), 64)
            self.codes, self.ids, self.live = (
                _grow(a, cap) for a in (self.codes, self.ids, self.live)
            )
        self.codes[self.n : end] = codes
        self.ids[self.n : end] = ids
        self.live[self.n : end] = True
        for offset, id_ in enumerate(ids.tolist()):
            old = self.pos.get(id_)
            if old is not None:
                self.live[old] = False
            self.pos[id_] = self.n + offset
        self.n = end
        self.index.add(np.ascontiguousarray(codes))
        self.dirty = True

    def kill(self, ids: Sequence[int]) -> int:
        removed = 0
        for id_ in ids:
            old = self.pos.pop(int(id_), None)
            if old is not None:
                self.live[old] = False
                removed += 1
        self.dirty = self.dirty or removed > 0
        return removed

    def compact(self) -> None:
        keep = np.flatnonzero(self.live[: self.n])
        ids, codes = self.ids[keep], self.codes[keep]
        self._reset()
        self.append(ids, codes)


def _grow(array: np.ndarray, capacity: int) -> np.ndarray:
    grown = np.zeros((capacity, *array.shape[1:]), dtype=array.dtype)
    grown[: len(array)] = array
    return grown


class FaissBinaryHashIndex:
    """A :class:`~kenning.stores.hashes.protocol.HashIndex` on faiss binary indexes.

    Args:
        root: folder for :meth:`save` and for loading at construction; ``None`` keeps the
            index purely in memory.
        compact_ratio: rebuild a namespace when tombstones exceed this share of positions.
    """

    def __init__(self, root: Path | None, *, compact_ratio: float = 0.2) -> None:
        self.root = Path(root) if root is not None else None
        self.compact_ratio = compact_ratio
        self._lock = threading.RLock()
        self._spaces: dict[str, _Namespace] = {}
        if self.root is not None:
            self.root.mkdir(parents=True, exist_ok=True)
            self._load()

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
            query = np.frombuffer(code, dtype=np.uint8).reshape(1, -1)
            # faiss binary range search keeps distances strictly below the radius.
            _, distances, positions = space.index.range_search(query, max_distance + 1)
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

    def save(self) -> None:
        """Write every changed namespace to ``root/<digest>.npz`` atomically."""
        if self.root is None:
            return
        with self._lock:
            for name, space in self._spaces.items():
                if space.dirty:
                    self._write(name, space)
                    space.dirty = False

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

    def _path(self, namespace: str) -> Path:
        assert self.root is not None
        return self.root / (hashlib.sha256(namespace.encode()).hexdigest()[:40] + ".npz")

    def _write(self, namespace: str, space: _Namespace) -> None:
        arrays = {
            "format": np.asarray(_FORMAT),
            "namespace": np.asarray(namespace),
            "nbytes": np.asarray(space.nbytes),
            "codes": space.codes[: space.n],
            "ids": space.ids[: space.n],
            "live": space.live[: space.n],
        }
        _atomic_savez(self._path(namespace), arrays)

    def _load(self) -> None:
        assert self.root is not None
        for path in sorted(self.root.glob("*.npz")):
            with np.load(path, allow_pickle=False) as data:
                if int(data["format"]) != _FORMAT:
                    raise ValueError(f"{path}: unsupported format {int(data['format'])}")
                live = data["live"]
                space = _Namespace(int(data["nbytes"]))
                # The flat index is just the codes: reload the live ones, compacted.
                space.append(data["ids"][live], data["codes"][live])
                space.dirty = False
                self._spaces[str(data["namespace"])] = space


def _atomic_savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write an ``.npz`` so that readers see the old file or the new one, never a mix."""
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
