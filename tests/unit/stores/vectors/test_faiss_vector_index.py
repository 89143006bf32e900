"""FaissVectorIndex specifics: exact vs HNSW paths, tombstones, compaction, files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kenning.stores.vectors import FaissVectorIndex
from kenning.stores.vectors.faiss_namespace import Storage

DIM = 32
NS = "t/space"


def unit(rows: np.ndarray) -> np.ndarray:
    norms: np.ndarray = np.linalg.norm(rows, axis=-1, keepdims=True)
    return np.asarray(rows / norms, dtype=np.float32)


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return unit(np.random.default_rng(3).standard_normal((2500, DIM)))


def test_exact_and_hnsw_paths_agree(data: np.ndarray) -> None:
    exact = FaissVectorIndex(None, exact_threshold=10**9)
    approx = FaissVectorIndex(None, exact_threshold=0)
    for index in (exact, approx):
        index.add(NS, list(range(len(data))), data)
    stats_exact, stats_approx = exact.stats(NS), approx.stats(NS)
    assert stats_exact is not None and not stats_exact.hnsw_built
    assert stats_approx is not None and stats_approx.hnsw_built
    queries = np.random.default_rng(4).standard_normal((30, DIM)).astype(np.float32)
    overlap = []
    for query in queries:
        truth, got = exact.search(NS, query, 10), approx.search(NS, query, 10)
        assert got[0].id == truth[0].id
        assert got[0].score == pytest.approx(truth[0].score, abs=1e-5)
        overlap.append(len({h.id for h in truth} & {h.id for h in got}) / 10)
    assert np.mean(overlap) >= 0.9


def test_hnsw_path_filters_tombstones_and_allowed(data: np.ndarray) -> None:
    index = FaissVectorIndex(None, exact_threshold=0, compact_ratio=0.9)
    index.add(NS, list(range(len(data))), data)
    index.remove(NS, [0, 1, 2])
    stats = index.stats(NS)
    assert stats is not None and stats.tombstones == 3
    assert {h.id for h in index.search(NS, data[0], 20)}.isdisjoint({0, 1, 2})
    allowed = set(range(0, len(data), 2))
    hits = index.search(NS, data[4], 10, allowed=allowed)
    assert hits[0].id == 4 and {h.id for h in hits} <= allowed - {0, 2}


def test_compaction_after_enough_tombstones(data: np.ndarray) -> None:
    index = FaissVectorIndex(None, exact_threshold=100, compact_ratio=0.2)
    index.add(NS, list(range(500)), data[:500])
    index.remove(NS, list(range(100)))
    stats = index.stats(NS)
    assert stats is not None and (stats.live, stats.tombstones) == (400, 100)
    index.remove(NS, [100])  # 101 of 500 exceeds the ratio: rebuilt
    stats = index.stats(NS)
    assert stats is not None and (stats.live, stats.tombstones) == (399, 0)
    assert stats.hnsw_built  # 399 live is above the exact threshold: graph rebuilt eagerly
    assert index.search(NS, data[200], 1)[0].id == 200
    assert index.search(NS, data[100], 3)[0].id != 100


def test_upserts_tombstone_the_old_position(data: np.ndarray) -> None:
    index = FaissVectorIndex(None, compact_ratio=0.5)
    index.add(NS, [1, 2, 3], data[:3])
    index.add(NS, [1], data[3:4])
    stats = index.stats(NS)
    assert stats is not None and (stats.live, stats.tombstones) == (3, 1)


def test_reload_keeps_graph_and_tombstones(tmp_path: Path, data: np.ndarray) -> None:
    index = FaissVectorIndex(tmp_path, exact_threshold=1000)
    index.add(NS, list(range(len(data))), data)
    index.remove(NS, [7])
    index.save()
    assert len(list(tmp_path.glob("*.npz"))) == 1
    assert not list(tmp_path.glob(".tmp-*"))
    reloaded = FaissVectorIndex(tmp_path, exact_threshold=1000)
    assert reloaded.stats(NS) == index.stats(NS)
    assert reloaded.namespaces() == [NS]
    for row in (7, 8, 2000):
        assert reloaded.search(NS, data[row], 5) == index.search(NS, data[row], 5)


def test_save_without_root_is_a_no_op(data: np.ndarray) -> None:
    index = FaissVectorIndex(None)
    index.add(NS, [1], data[:1])
    index.save()
    assert index.count(NS) == 1


def test_fixed_dimension_and_bad_input() -> None:
    index = FaissVectorIndex(None, dim=DIM)
    with pytest.raises(ValueError):
        index.add(NS, [1], np.ones((1, DIM + 1), dtype=np.float32))
    with pytest.raises(ValueError):
        index.add(NS, [1], np.full((1, DIM), np.nan, dtype=np.float32))
    with pytest.raises(ValueError):
        index.search(NS, np.ones((2, DIM), dtype=np.float32), 1)
    index.add(NS, [1, 2], np.vstack([np.zeros(DIM), np.ones(DIM)]))  # zero vector: score 0
    hits = index.search(NS, np.ones(DIM, dtype=np.float32), 2)
    assert [(h.id, round(h.score, 5)) for h in hits] == [(2, 1.0), (1, 0.0)]
    assert index.search("other", np.ones(DIM, dtype=np.float32), 2) == []


def test_the_graph_is_saved_once_and_loaded_not_rebuilt(tmp_path: Path, data: np.ndarray) -> None:
    index = FaissVectorIndex(tmp_path, exact_threshold=1000)
    index.add(NS, list(range(2000)), data[:2000])
    index.save(mark=5)
    (graph,) = tmp_path.glob("*.faiss")
    written = graph.stat().st_mtime_ns
    index.remove(NS, [3])  # a tombstone only: the graph does not change
    index.save(mark=6)
    assert [p.stat().st_mtime_ns for p in tmp_path.glob("*.faiss")] == [written]
    index.add(NS, [2000], data[2000:2001])  # the graph grows: a new file replaces it
    index.save(mark=7)
    (grown,) = tmp_path.glob("*.faiss")
    assert grown.name != graph.name
    reloaded = FaissVectorIndex(tmp_path, exact_threshold=1000)
    stats = reloaded.stats(NS)
    assert stats is not None and stats.hnsw_built and stats.live == 2000
    assert reloaded.saved_mark() == 7
    for row in (5, 2000):
        assert reloaded.search(NS, data[row], 3) == index.search(NS, data[row], 3)


def test_a_damaged_snapshot_reads_as_none_so_the_follower_rebuilds(
    tmp_path: Path, data: np.ndarray
) -> None:
    index = FaissVectorIndex(tmp_path, exact_threshold=1000)
    index.add(NS, list(range(1500)), data[:1500])
    index.save(mark=9)
    for graph in tmp_path.glob("*.faiss"):
        graph.write_bytes(b"not a faiss index")
    reopened = FaissVectorIndex(tmp_path)  # reads nothing until first used
    assert reopened.saved_mark() is None
    assert reopened.count(NS) == 0


@pytest.mark.parametrize("storage", ["flat", "sq8"])
@pytest.mark.parametrize("warm", [True, False], ids=["copied-in-background", "first-add"])
def test_a_loaded_graph_is_mapped_and_copied_before_it_changes(
    tmp_path: Path, data: np.ndarray, monkeypatch: pytest.MonkeyPatch, warm: bool,
    storage: Storage,
) -> None:
    """faiss aborts the process when adding to a mapped index: a background copy, or
    else the first add, brings it into memory first."""
    index = FaissVectorIndex(tmp_path, exact_threshold=1000, compact_ratio=0.3,
                             storage=storage)
    index.add(NS, list(range(2000)), data[:2000])
    index.save(mark=1)
    if not warm:
        monkeypatch.setattr(FaissVectorIndex, "_warm", lambda self, spaces: None)
    reloaded = FaissVectorIndex(tmp_path, exact_threshold=1000, compact_ratio=0.3)
    assert reloaded.search(NS, data[10], 1)[0].id == 10  # searched in place, or copied
    reloaded.settle(timeout_s=30)
    assert (reloaded._spaces[NS].mapped is None) == warm  # in memory before any add
    assert reloaded._spaces[NS].storage == storage  # the snapshot's, not the default
    reloaded.add(NS, list(range(2000, 2400)), data[2000:2400])
    reloaded.add(NS, [5], data[2450:2451])  # an upsert tombstones the mapped row
    assert [h.id for h in reloaded.search(NS, data[2450], 1)] == [5]
    assert [h.id for h in reloaded.search(NS, data[2300], 1)] == [2300]
    reloaded.remove(NS, list(range(100, 900)))  # past compact_ratio: rebuilt in memory
    stats = reloaded.stats(NS)
    assert stats is not None and stats.tombstones == 0 and stats.live == 1600
    reloaded.save(mark=2)
    again = FaissVectorIndex(tmp_path, exact_threshold=1000)
    assert again.count(NS) == 1600 and again.saved_mark() == 2
    assert len(list(tmp_path.glob("*.faiss"))) == 1
    assert [h.id for h in again.search(NS, data[2300], 1)] == [2300]
    assert again._spaces[NS].storage == storage  # kept through compaction and a save


def test_ef_construction_reaches_the_graph_also_a_loaded_one(
    tmp_path: Path, data: np.ndarray
) -> None:
    assert FaissVectorIndex(None).ef_construction == 100  # faiss's 40 loses recall at scale
    index = FaissVectorIndex(tmp_path, exact_threshold=1000, ef_construction=48)
    index.add(NS, list(range(2000)), data[:2000])
    assert index._spaces[NS].index.hnsw.efConstruction == 48
    index.save(mark=1)
    reloaded = FaissVectorIndex(tmp_path, exact_threshold=1000, ef_construction=72)
    reloaded.add(NS, [2000], data[2000:2001])  # extended with this process's value
    assert reloaded._spaces[NS].index.hnsw.efConstruction == 72
    assert reloaded.search(NS, data[2000], 1)[0].id == 2000
