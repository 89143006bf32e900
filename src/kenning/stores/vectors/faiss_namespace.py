"""One namespace of the embedded vector index, and its snapshot files.

A namespace keeps its raw vectors in numpy (position -> vector), an id per position, a
live mask and, once it is large enough, a faiss HNSW graph over positions
``[0, index.ntotal)``.

Snapshot files (under the index's root): ``<digest>.npz`` with the ids, the live mask
and the vectors past the graph; ``<digest>.<token>.faiss`` with the graph and the
vectors it covers, written only when the graph changed (each change gets a new token, and
the ``.npz`` names its graph file, so a crash never pairs an ``.npz`` with the wrong
graph). The index-log mark goes in ``log_mark.json`` after them (``kenning.stores._files``).

Storage ``"flat"`` (default) keeps float32 vectors in the graph, so the ``.faiss`` file
holds the rows it covers and the ``.npz`` only the rest. Storage ``"sq8"`` builds
``IndexHNSWSQ`` (8-bit scalar quantiser, trained on the rows present when the graph is
first built or rebuilt): the graph holds 1-byte codes, which cannot give the float32 rows
back, so the ``.npz`` keeps every row and the exact paths use those.

Loading maps the graph file instead of reading it (faiss ``IO_FLAG_MMAP_IFC``): the
vectors stay in the page cache, shared with the file, and ``rows`` is a read-only view of
them. A start-up reads little more than the graph's links; searches page vectors in as
they touch them. faiss cannot add to a mapped index (it aborts the process), so a
background copy (:meth:`Namespace.warm_copy`, :meth:`Namespace.adopt`) brings the
namespace into memory soon after the start, and an add that comes first does that copy
itself (:meth:`Namespace.sync_index`).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from kenning.stores._files import atomic_savez, atomic_write, namespace_file, saved_namespaces
from kenning.stores._positions import TombstonedRows

try:
    import faiss as _faiss
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    from kenning.errors import MissingExtra

    raise MissingExtra("faiss", "index") from exc

# faiss's bundled stubs lack SearchParametersHNSW and the numpy-taking overloads.
faiss: Any = _faiss

__all__ = ["Namespace", "Storage", "WarmCopy", "faiss", "graph_bytes", "load_namespaces",
           "write_namespace"]

log = logging.getLogger(__name__)

FORMAT = 2  # 2: the graph (with its vectors) in a .faiss file beside the .npz

Storage = Literal["flat", "sq8"]
"""How the HNSW graph stores vectors: float32 (``flat``) or 8-bit scalar codes (``sq8``)."""

STORAGES: tuple[Storage, ...] = ("flat", "sq8")


@dataclass(frozen=True)
class WarmCopy:
    """A mapped namespace copied into memory, ready to be adopted if nothing changed."""

    path: Path
    rows: np.ndarray  # the view it was copied from (identity checked on adoption)
    n: int
    index: Any
    grown: np.ndarray
    owner: Any  # the mapped index: keeps the viewed mapping alive during the copy


class Namespace(TombstonedRows):
    """Tombstoned positions of vectors, plus an optional HNSW graph over the first ones."""

    def __init__(self, dim: int, storage: Storage = "flat") -> None:
        super().__init__(dim, np.float32)
        self.dim = dim
        self.storage: Storage = storage
        self.index: Any = None  # faiss.IndexHNSWFlat/SQ over positions [0, index.ntotal)
        self.graph_file: str | None = None
        """The saved ``.faiss`` file that holds ``index`` as it is now (None: unsaved)."""
        self.mapped: Path | None = None
        """The file ``index`` keeps its vectors mapped from: read it into memory before
        adding (``faiss.clone_index`` keeps the mapping, so it would not do)."""
        self.rows_owner: Any = None
        """The mapped index whose storage ``rows`` is a view of (keeps the mapping alive)."""

    def append(self, ids: np.ndarray, rows: np.ndarray) -> None:
        super().append(ids, rows)
        if self.rows.flags.writeable:  # grown into its own array: the mapping may go
            self.rows_owner = None

    def restore(self, ids: np.ndarray, vectors: np.ndarray, live: np.ndarray) -> None:
        """Reinstate a saved layout, tombstones included, so a saved graph still fits.

        Takes ownership of ``vectors`` (no copy: at a million vectors that is 2 GB).
        """
        self.rows, self.ids, self.live = vectors, ids.copy(), live.copy()
        self.n = len(ids)
        keep = np.flatnonzero(live)
        self.pos = dict(zip(ids[keep].tolist(), keep.tolist(), strict=True))

    def compact(self) -> None:
        ids, vectors = self.live_rows()
        self.n, self.pos, self.index, self.graph_file = 0, {}, None, None
        self.mapped = None
        self.append(ids, vectors)

    def sync_index(self, hnsw_m: int, ef_construction: int) -> Any:
        """The graph, first extended over positions added since (built when missing).

        ``ef_construction`` applies to the positions added now, also to a graph loaded
        from a snapshot built with another value (faiss keeps it in the file)."""
        if self.index is None:
            self.index = self._new_graph(hnsw_m)
        done = int(self.index.ntotal)
        if done < self.n:
            if self.mapped is not None:  # faiss aborts adding to a mapped storage
                self.index, self.mapped = _in_memory(self.index, self.mapped), None
            self.index.hnsw.efConstruction = ef_construction
            self.index.add(np.ascontiguousarray(self.rows[done : self.n]))
            self.dirty = True
            self.graph_file = None
        return self.index

    def _new_graph(self, hnsw_m: int) -> Any:
        if self.storage == "flat":
            return faiss.IndexHNSWFlat(self.dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index = faiss.IndexHNSWSQ(self.dim, faiss.ScalarQuantizer.QT_8bit, hnsw_m,
                                  faiss.METRIC_INNER_PRODUCT)
        # Per-dimension ranges from the rows present now (a sample past 100k: the ranges
        # of unit vectors settle long before); later rows outside them are clipped, and
        # a compaction retrains.
        rows = self.rows[: self.n]
        step = max(1, self.n // 100_000)
        index.train(np.ascontiguousarray(rows[::step]))
        return index

    def footprint(self) -> dict[str, int]:
        """Bytes held: float32 rows (capacity), ids and live flags, and the graph's
        vectors and links (:func:`graph_bytes`). The ``pos`` dict is not counted."""
        sizes = {"rows": int(self.rows.nbytes),
                 "ids_live": int(self.ids.nbytes + self.live.nbytes)}
        if self.index is not None:
            sizes.update(graph_bytes(self.index))
        return sizes

    def warm_copy(self) -> WarmCopy | None:
        """The slow half of leaving the mapping, safe without the index's lock: the graph
        read into memory and the rows copied out, both with room for an eighth more (so
        the adds that follow a start copy nothing). ``None`` when not mapped."""
        path, owner, rows, n = self.mapped, self.rows_owner, self.rows, self.n
        if path is None:
            return None
        index = faiss.read_index(str(path))
        _reserve(index, 8)
        grown = np.empty((n + max(n // 8, 1024), self.dim), dtype=np.float32)
        grown[:n] = rows[:n]  # positions below n never change in place
        return WarmCopy(path, rows, n, index, grown, owner)

    def adopt(self, warm: WarmCopy) -> bool:
        """Swap ``warm`` in (under the index's lock) unless the namespace moved on."""
        if self.mapped != warm.path or self.rows is not warm.rows or self.n != warm.n:
            return False
        self.reserve(warm.grown)
        self.index, self.mapped, self.rows_owner = warm.index, None, None
        return True


def write_namespace(root: Path, namespace: str, space: Namespace) -> None:
    """Save ``space``: the graph (when it changed) to a new ``.faiss`` file, then the
    ``.npz`` naming it, then older graph files go. A crash at any point leaves an ``.npz``
    whose graph file exists. A flat graph holds its own copy of the vectors it covers, so
    the ``.npz`` keeps only the ones past it; an sq8 graph holds codes, so it keeps all."""
    npz = namespace_file(root, namespace)
    in_graph = 0 if space.index is None else int(space.index.ntotal)
    first = in_graph if space.storage == "flat" else 0
    if space.index is not None and space.graph_file is None:
        name = f"{npz.stem}.{uuid.uuid4().hex[:12]}.faiss"
        atomic_write(root / name, lambda tmp: faiss.write_index(space.index, tmp))
        space.graph_file = name
    atomic_savez(npz, {
        "format": np.asarray(FORMAT),
        "namespace": np.asarray(namespace),
        "dim": np.asarray(space.dim),
        "ids": space.ids[: space.n],
        "live": space.live[: space.n],
        "vectors": space.rows[first : space.n],
        "storage": np.asarray(space.storage),
        "graph": np.asarray(space.graph_file or ""),
        "in_graph": np.asarray(in_graph),
    })
    for old in root.glob(f"{npz.stem}.*.faiss"):
        if old.name != space.graph_file:
            old.unlink()


def load_namespaces(root: Path) -> dict[str, Namespace] | None:
    """Every namespace saved under ``root``; ``None`` when the snapshot is unusable.

    ``None`` (no snapshot) makes the index follower rebuild from the database, which is
    the source of truth: a damaged or outdated snapshot costs time, never correctness.
    """
    spaces: dict[str, Namespace] = {}
    try:
        for data in saved_namespaces(root, FORMAT):
            spaces[str(data["namespace"])] = _restore(root, data)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        log.warning("vector index snapshot unusable, starting empty",
                    extra={"root": str(root), "error": repr(exc)})
        return None
    return spaces


def _restore(root: Path, data: Any) -> Namespace:
    storage = str(data["storage"]) if "storage" in data else "flat"  # older: flat only
    if storage not in STORAGES:
        raise ValueError(f"unknown vector storage {storage!r}")
    space = Namespace(int(data["dim"]), "sq8" if storage == "sq8" else "flat")
    ids, live, tail = data["ids"], data["live"], data["vectors"]
    in_graph, graph = int(data["in_graph"]), str(data["graph"])
    rows = tail
    if graph and in_graph:
        index = faiss.read_index(str(root / graph), faiss.IO_FLAG_MMAP_IFC)
        if int(index.ntotal) != in_graph or int(index.d) != space.dim:
            raise ValueError(f"{graph}: holds {index.ntotal} vectors, expected {in_graph}")
        space.index, space.graph_file, space.mapped = index, graph, root / graph
    if graph and in_graph and space.storage == "flat":
        # The graph's flat storage holds the vectors of positions [0, in_graph): view
        # them in place, read-only (a write would hit the mapped file).
        stored = np.asarray(faiss.rev_swig_ptr(
            faiss.downcast_index(space.index.storage).get_xb(), in_graph * space.dim,
        )).reshape(in_graph, space.dim)
        stored.flags.writeable = False
        if len(tail):
            rows = np.concatenate([stored, tail])
        else:
            rows, space.rows_owner = stored, space.index
    if len(rows) != len(ids):
        raise ValueError(f"{len(rows)} saved vectors for {len(ids)} ids")
    space.restore(ids, rows, live)
    space.dirty = False
    return space


def graph_bytes(index: Any) -> dict[str, int]:
    """Bytes of an HNSW graph: its stored vectors (float32 rows or codes) and its links
    (neighbour lists, per-vector offsets and levels), from the arrays' sizes."""
    storage = faiss.downcast_index(index.storage)
    hnsw = index.hnsw
    links = (int(hnsw.neighbors.size()) * 4 + int(hnsw.offsets.size()) * 8
             + int(hnsw.levels.size()) * 4 + int(hnsw.assign_probas.size()) * 8
             + int(hnsw.cum_nneighbor_per_level.size()) * 4)
    return {"graph_vectors": int(storage.codes.size()), "graph_links": links}


def _reserve(index: Any, fraction: int) -> None:
    """Give the graph's arrays room for ``1/fraction`` more vectors now.

    A read index has its arrays sized exactly, so the first add after a start would
    reallocate (copy) the whole vector storage, gigabytes at a million vectors, while
    holding the lock that searches wait on. faiss exposes no ``reserve``; growing and
    shrinking back does it, since shrinking a ``std::vector`` keeps its capacity.
    """
    storage = faiss.downcast_index(index.storage)
    for array in (storage.codes, index.hnsw.neighbors, index.hnsw.offsets,
                  index.hnsw.levels):
        size = int(array.size())
        array.resize(size + size // fraction + 1024)
        array.resize(size)


def _in_memory(index: Any, path: Path) -> Any:
    """An in-memory copy of a mapped index: its file read again (still there: a save
    replaces the graph file only after the graph changed, which needs this copy first),
    else a serialised copy (twice the memory for a moment)."""
    try:
        return faiss.read_index(str(path))
    except RuntimeError:
        return faiss.deserialize_index(faiss.serialize_index(index))
