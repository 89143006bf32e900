"""Embedded vector index: faiss HNSW per namespace, tombstones, exact search for filters.

Each namespace keeps its raw vectors in numpy (position -> vector), an id per position and
a live mask. HNSW graphs cannot delete, so a removal or an upsert tombstones the old
position; searches exclude tombstones with a faiss ``IDSelectorBitmap`` and the namespace
is rebuilt (compacted) once tombstones exceed ``compact_ratio`` of its positions.

Small namespaces and selective ``allowed`` filters are searched exactly (one matrix-vector
product): that is both faster and correct there, whereas HNSW with a very selective
filter walks a graph whose neighbours are mostly excluded and loses recall. The HNSW graph
is only built once a namespace reaches ``exact_threshold`` live vectors.

With a ``root`` folder the index is a snapshot on disk: :meth:`FaissVectorIndex.save`
writes each changed namespace and then the index-log mark the snapshot includes
(:mod:`~kenning.stores.vectors.faiss_namespace` has the files). The snapshot is read on
first use, not at construction, so a process that never searches (a pipeline worker)
never pays for it; its graphs are mapped, not read, and copied into memory in the
background.

Graph parameters: ``M`` 32, ``efConstruction`` 100, ``efSearch`` 64. faiss's default
``efConstruction`` of 40 builds a graph that misses neighbours on clustered data at scale,
and no ``efSearch`` makes up for it: ``bench/bench_vectors_scale.py`` (384-d, 3,000
clusters spread in 32-d subspaces) measured recall@10 0.76 at a million vectors with 40
(0.92 at ``efSearch`` 512, so growing ``efSearch`` with the namespace would cost QPS and
still miss 0.95), against 0.986 with 100 at ``efSearch`` 64 (0.9986 at 128), 3,252
queries/s one at a time, 0.86 of raw faiss on the same graph parameters in the same run.
The price is the build: 410 s per million vectors on 2 loaded cores (raw faiss: 402 s),
against 175 s with 40 in an earlier run; memory does not change (links are bounded by
``M``). With 40 our graph, built in adds of 20,000, was 0.02-0.03 below raw faiss's single
add; with 100 the gap is 0.002, so adds are not batched further. ``efSearch`` 128 buys
0.013 recall for 37% of the QPS (2,056/s).

Memory budget, per vector of dimension ``d`` with graph degree ``M`` (``hnsw_m``):

- ``storage="flat"`` (default): ``4d`` bytes of float32 rows in numpy (the exact paths,
  compaction and snapshots read them) plus ``4d`` again inside the graph, its links
  (``2M`` level-0 neighbours of 4 bytes, plus the upper levels: ~8.5 ``M`` bytes), 9
  bytes of id and live flag and ~150-200 bytes of the id -> position dict: about
  ``8d + 8.5M + 200`` bytes. At 384-d, ``M`` 32: 1,536 + 1,536 + 272 + ~200 bytes, and
  ``bench/bench_vectors_scale.py`` measured 3,377 MiB of RSS growth per million vectors
  (computed 3,610 MiB, which counts the row array's growth headroom, untouched pages).
  Raw faiss ``IndexHNSWFlat`` holds 1,724 MiB per million on the same data: the float32
  rows are held twice, the price of exact paths that never depend on the graph (a
  snapshot just loaded views the graph's rows instead, until the background copy).
- ``storage="sq8"``: the graph keeps one byte per dimension (``IndexHNSWSQ``, 8-bit
  scalar quantiser), about ``5d + 8.5M + 200`` bytes: measured 2,243 MiB of RSS growth
  per million at 384-d (computed 2,512 MiB). Hits are rescored on the float32 rows, so
  scores are exact; recall@10 was 0.01-0.015 below flat in the benchmark with
  ``efConstruction`` 40, and level with it with 100 (0.987 at a million, efSearch 64,
  QPS 0.93 of raw faiss; built in 211 s, the codes being cheaper to compare).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kenning.stores._files import discard_snapshot, read_mark, write_mark
from kenning.stores.vectors.faiss_namespace import (
    STORAGES,
    Namespace,
    Storage,
    faiss,
    load_namespaces,
    write_namespace,
)
from kenning.stores.vectors.protocol import VectorHit

log = logging.getLogger(__name__)

EXACT_CHUNK = 1024
"""Rows an exact search gathers at once (1.5 MB at 384-d: stays in cache)."""

EF_CONSTRUCTION = 100
"""Default ``efConstruction`` (faiss's own default, 40, loses recall on clustered data at
scale; the module docstring has the measurements)."""

SQ8_RERANK = 2
"""With sq8 storage the graph returns this many times ``k`` candidates, rescored exactly
on the float32 rows (the codes' scores are off by ~1e-2, enough to swap close hits)."""


@dataclass(frozen=True)
class NamespaceStats:
    """Implementation detail exposed for operations and tests."""

    live: int
    tombstones: int
    dim: int
    hnsw_built: bool


class FaissVectorIndex:
    """A :class:`~kenning.stores.vectors.protocol.VectorIndex` on faiss, in memory.

    Args:
        root: folder of the snapshot (:meth:`save`, read on first use); ``None`` keeps
            the index purely in memory.
        dim: when given, every namespace must have this dimension; otherwise each
            namespace takes the dimension of its first :meth:`add`.
        exact_threshold: namespaces with fewer live vectors, and ``allowed`` filters
            with fewer ids, are searched by brute force.
        exact_ratio: an ``allowed`` filter matching less than this share of a namespace's
            live vectors is searched by brute force too, whatever its size: HNSW with a
            selective filter walks mostly excluded neighbours and loses recall, while
            the exact scan over the matching rows costs ``len(allowed)`` dot products.
        hnsw_m: HNSW graph degree (``M``).
        ef_construction: HNSW beam width while inserting (``efConstruction``); see the
            module docstring for the measured recall and build-time trade-off.
        ef_search: HNSW beam width at query time (raised to ``k`` when smaller).
        compact_ratio: rebuild a namespace when tombstones exceed this share of positions.
        storage: how graphs store vectors: ``"flat"`` (float32, ``IndexHNSWFlat``) or
            ``"sq8"`` (8-bit scalar quantiser, ``IndexHNSWSQ``, results rescored
            exactly). Applies to namespaces created by this process; a loaded snapshot
            keeps the storage it was saved with.
    """

    def __init__(
        self,
        root: Path | None,
        *,
        dim: int | None = None,
        exact_threshold: int = 2048,
        exact_ratio: float = 0.05,
        hnsw_m: int = 32,
        ef_construction: int = EF_CONSTRUCTION,
        ef_search: int = 64,
        compact_ratio: float = 0.2,
        storage: Storage = "flat",
    ) -> None:
        if storage not in STORAGES:
            raise ValueError(f"vector storage must be one of {STORAGES}, got {storage!r}")
        self.root = Path(root) if root is not None else None
        self.dim = dim
        self.exact_threshold = exact_threshold
        self.exact_ratio = exact_ratio
        self.storage: Storage = storage
        self.hnsw_m = hnsw_m
        self.ef_construction = ef_construction
        self.ef_search = ef_search
        self.compact_ratio = compact_ratio
        self._lock = threading.RLock()
        self._loaded: dict[str, Namespace] | None = {} if self.root is None else None
        self._mark: int | None = None
        self._warming: threading.Thread | None = None
        self._params: dict[int, Any] = {}  # efSearch -> SearchParametersHNSW (reused)
        if self.root is not None:
            self.root.mkdir(parents=True, exist_ok=True)

    @property
    def _spaces(self) -> dict[str, Namespace]:
        with self._lock:
            if self._loaded is None:
                self._load()
            assert self._loaded is not None
            return self._loaded

    def add(self, namespace: str, ids: Sequence[int], vectors: np.ndarray) -> None:
        """Upsert vectors; a repeated id (also within one call) keeps the last vector."""
        ids_arr = np.asarray(ids, dtype=np.int64).reshape(-1)
        matrix = _normalise(vectors)
        if matrix.shape[0] != len(ids_arr):
            raise ValueError(f"{len(ids_arr)} ids for {matrix.shape[0]} vectors")
        if len(ids_arr) == 0:
            return
        with self._lock:
            space = self._space(namespace, matrix.shape[1], create=True)
            assert space is not None
            space.append(ids_arr, matrix)
            self._maybe_compact(space)
            if len(space.pos) >= self.exact_threshold:
                space.sync_index(self.hnsw_m, self.ef_construction)

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
        self,
        namespace: str,
        vector: np.ndarray,
        k: int,
        *,
        allowed: Collection[int] | None = None,
    ) -> list[VectorHit]:
        """Top ``k`` by cosine similarity; exact for small sets, HNSW otherwise."""
        query = _query(vector)
        with self._lock:
            space = self._space(namespace, query.shape[1], create=False)
            if space is None or k <= 0:
                return []
            if allowed is not None:
                # map() keeps the lookups in C: 10k allowed ids cost ~1 ms, not ~8 ms.
                found = [p for p in map(space.pos.get, allowed) if p is not None]
                positions = np.array(found, dtype=np.int64)
                if len(positions) == 0:
                    return []
                cutoff = max(self.exact_threshold, self.exact_ratio * len(space.pos))
                if len(positions) < cutoff:
                    return _exact(space, np.sort(positions), query[0], k)
                return self._hnsw(space, query, k, positions)
            if len(space.pos) < self.exact_threshold:
                return _exact(space, np.flatnonzero(space.live[: space.n]), query[0], k)
            return self._hnsw(space, query, k, None)

    def count(self, namespace: str) -> int:
        """Live vectors in ``namespace``."""
        with self._lock:
            space = self._spaces.get(namespace)
            return 0 if space is None else len(space.pos)

    def namespaces(self) -> list[str]:
        """Known namespaces, sorted."""
        with self._lock:
            return sorted(self._spaces)

    def stats(self, namespace: str) -> NamespaceStats | None:
        """Live/tombstone counts of a namespace, ``None`` if unknown."""
        with self._lock:
            space = self._spaces.get(namespace)
            if space is None:
                return None
            built = space.index is not None
            return NamespaceStats(len(space.pos), space.tombstones, space.dim, built)

    def save(self, mark: int | None = None) -> None:
        """Write every changed namespace atomically, then ``mark`` (when given)."""
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
                self._load()
            return self._mark

    def settle(self, timeout_s: float | None = None) -> None:
        """Wait for the background copy of a loaded snapshot into memory (operations,
        tests and benchmarks: searches and adds never need to wait for it)."""
        if self._warming is not None:
            self._warming.join(timeout_s)

    def clear(self) -> None:
        """Forget every namespace and discard the snapshot on disk (before a rebuild)."""
        with self._lock:
            self._loaded, self._mark = {}, None
            if self.root is not None:
                discard_snapshot(self.root)

    def _space(self, namespace: str, dim: int, *, create: bool) -> Namespace | None:
        if self.dim is not None and dim != self.dim:
            raise ValueError(f"expected dimension {self.dim}, got {dim}")
        space = self._spaces.get(namespace)
        if space is None:
            if create:
                space = self._spaces[namespace] = Namespace(dim, self.storage)
            return space
        if dim != space.dim:
            raise ValueError(f"namespace {namespace!r} has dimension {space.dim}, got {dim}")
        return space

    def _maybe_compact(self, space: Namespace) -> None:
        if space.tombstones and space.tombstones > self.compact_ratio * space.n:
            space.compact()
            if len(space.pos) >= self.exact_threshold:
                space.sync_index(self.hnsw_m, self.ef_construction)

    def _hnsw(
        self, space: Namespace, query: np.ndarray, k: int, positions: np.ndarray | None
    ) -> list[VectorHit]:
        index = space.sync_index(self.hnsw_m, self.ef_construction)
        if positions is not None:
            mask = np.zeros(space.n, dtype=bool)
            mask[positions] = True
        elif space.tombstones:
            mask = space.live[: space.n]
        else:
            mask = None
        fetch = min(k if space.storage == "flat" else SQ8_RERANK * k, space.n)
        ef = max(self.ef_search, fetch)
        if mask is None:
            # The hot path at scale: no selector, cached parameters, and faiss's C entry
            # point (its Python wrapper re-checks and re-wraps the arrays every call).
            params = self._params.get(ef)
            if params is None:
                params = self._params[ef] = faiss.SearchParametersHNSW(efSearch=ef)
            scores = np.empty((1, fetch), dtype=np.float32)
            labels = np.empty((1, fetch), dtype=np.int64)
            index.search_c(1, faiss.swig_ptr(query), fetch, faiss.swig_ptr(scores),
                           faiss.swig_ptr(labels), params)
        else:
            # faiss holds raw pointers: ``bits`` and ``selector`` must outlive the search.
            bits = np.packbits(mask, bitorder="little")
            selector = faiss.IDSelectorBitmap(len(bits), faiss.swig_ptr(bits))
            params = faiss.SearchParametersHNSW(sel=selector, efSearch=ef)
            scores, labels = index.search(query, fetch, params=params)
            del selector, bits
        keep = labels[0] >= 0
        found = labels[0][keep]
        if space.storage == "flat":  # faiss's scores are exact: only ties need ordering
            pairs = zip(space.ids[found].tolist(), scores[0][keep].tolist(), strict=True)
            return [VectorHit(i, s) for i, s in sorted(pairs, key=_best_first)]
        return _exact(space, found, query[0], k)

    def _write(self, namespace: str, space: Namespace) -> None:
        assert self.root is not None
        write_namespace(self.root, namespace, space)

    def _load(self) -> None:
        """Read the snapshot (mapping its graphs), then copy the mapped namespaces into
        memory on a background thread: the first add after a start would otherwise read
        a graph (gigabytes at a million vectors) while it holds the lock searches need."""
        assert self.root is not None
        spaces = load_namespaces(self.root)
        self._loaded, self._mark = spaces or {}, None if spaces is None else read_mark(self.root)
        if any(space.mapped for space in self._loaded.values()):
            self._warming = threading.Thread(target=self._warm, args=(self._loaded,),
                                             name="vector-index-warm", daemon=True)
            self._warming.start()

    def _warm(self, spaces: dict[str, Namespace]) -> None:
        for name, space in list(spaces.items()):
            try:
                warm = space.warm_copy()
            except (OSError, RuntimeError) as exc:  # its first add copies it instead
                log.info("vector namespace stays mapped", extra={"error": repr(exc)})
                continue
            if warm is None:
                continue
            with self._lock:
                if self._loaded is spaces and spaces.get(name) is space:
                    space.adopt(warm)


def _query(vector: np.ndarray) -> np.ndarray:
    """One query as a normalised ``(1, dim)`` row: :func:`_normalise` without its
    per-call array passes (a search pays for every microsecond here)."""
    query = np.array(vector, dtype=np.float32, ndmin=2, copy=True)
    if query.ndim != 2 or query.shape[0] != 1:
        raise ValueError("search takes a single vector")
    squared = float(np.dot(query[0], query[0]))
    if not math.isfinite(squared):  # NaN/inf inside, or an overflow: the careful path
        return _normalise(query)
    if squared > 0:
        query *= np.float32(1.0 / math.sqrt(squared))
    return query


def _normalise(vectors: np.ndarray) -> np.ndarray:
    matrix = np.array(vectors, dtype=np.float32, ndmin=2, copy=True)
    if matrix.ndim != 2:
        raise ValueError(f"expected a 2-D array of vectors, got shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise ValueError("vectors contain NaN or infinity")
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    matrix /= norms
    return np.ascontiguousarray(matrix)


def _exact(space: Namespace, positions: np.ndarray, query: np.ndarray, k: int) -> list[VectorHit]:
    if len(positions) <= EXACT_CHUNK:
        scores = space.rows[positions] @ query
    else:  # gather and multiply a cache-sized block at a time: one pass over memory
        scores = np.empty(len(positions), dtype=np.float32)
        for start in range(0, len(positions), EXACT_CHUNK):
            block = positions[start : start + EXACT_CHUNK]
            scores[start : start + len(block)] = space.rows[block] @ query
    return _ranked(space.ids[positions], scores, k)


def _best_first(hit: tuple[int, float]) -> tuple[float, int]:
    return -hit[1], hit[0]


def _ranked(ids: np.ndarray, scores: np.ndarray, k: int) -> list[VectorHit]:
    """Best ``k`` by score desc, ties by id asc (deterministic across both search paths)."""
    if len(scores) > k:
        kth = np.partition(scores, len(scores) - k)[len(scores) - k]
        keep = scores >= kth
        ids, scores = ids[keep], scores[keep]
    order = np.lexsort((ids, -scores))[:k]
    return [VectorHit(i, s) for i, s in zip(ids[order].tolist(), scores[order].tolist(),
                                            strict=True)]
