"""FaissVectorIndex: sq8 graph storage, and selective filters searched exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kenning.stores.vectors import FaissVectorIndex, VectorHit

DIM = 32
NS = "t/space"


def unit(rows: np.ndarray) -> np.ndarray:
    norms: np.ndarray = np.linalg.norm(rows, axis=-1, keepdims=True)
    return np.asarray(rows / norms, dtype=np.float32)


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return unit(np.random.default_rng(21).standard_normal((20_000, DIM)))


def brute_force(data: np.ndarray, ids: np.ndarray, query: np.ndarray, k: int) -> list[int]:
    scores = data[ids] @ unit(query)
    return [int(ids[i]) for i in np.lexsort((ids, -scores))[:k]]


def test_sq8_graph_holds_codes_and_scores_are_exact(data: np.ndarray) -> None:
    exact = FaissVectorIndex(None, exact_threshold=10**9)
    sq8 = FaissVectorIndex(None, exact_threshold=0, storage="sq8")
    for index in (exact, sq8):
        index.add(NS, list(range(3000)), data[:3000])
    sizes = sq8._spaces[NS].footprint()
    assert sizes["graph_vectors"] == 3000 * DIM  # one byte a dimension, not four
    queries = unit(np.random.default_rng(5).standard_normal((30, DIM)))
    overlap = []
    for query in queries:
        truth, got = exact.search(NS, query, 10), sq8.search(NS, query, 10)
        for hit in got:  # rescored on the float32 rows: the codes' error is gone
            assert hit.score == pytest.approx(float(data[hit.id] @ query), abs=1e-5)
        overlap.append(len({h.id for h in truth} & {h.id for h in got}) / 10)
    assert np.mean(overlap) >= 0.9


def test_sq8_round_trips_through_save_compaction_and_load(
    tmp_path: Path, data: np.ndarray
) -> None:
    index = FaissVectorIndex(tmp_path, exact_threshold=1000, compact_ratio=0.3,
                             storage="sq8")
    index.add(NS, list(range(3000)), data[:3000])
    index.remove(NS, [7, 8])
    index.save(mark=1)
    reloaded = FaissVectorIndex(tmp_path, exact_threshold=1000)  # storage from the files
    assert reloaded.stats(NS) == index.stats(NS)
    assert reloaded._spaces[NS].storage == "sq8"
    for row in (7, 100, 2999):
        assert reloaded.search(NS, data[row], 5) == index.search(NS, data[row], 5)
    assert 7 not in {h.id for h in reloaded.search(NS, data[7], 20)}

    reloaded.remove(NS, list(range(1000, 2000)))  # past compact_ratio: retrained, rebuilt
    stats = reloaded.stats(NS)
    assert stats is not None and (stats.live, stats.tombstones) == (1998, 0)
    assert stats.hnsw_built and reloaded._spaces[NS].storage == "sq8"
    reloaded.add(NS, [5000], data[5000:5001])
    reloaded.save(mark=2)
    again = FaissVectorIndex(tmp_path, exact_threshold=1000)
    assert again.count(NS) == 1999 and again.saved_mark() == 2
    assert len(list(tmp_path.glob("*.faiss"))) == 1
    assert [again.search(NS, data[row], 1)[0].id for row in (5000, 2500)] == [5000, 2500]
    assert again.search(NS, data[1500], 1)[0].id != 1500  # removed before the compaction


def test_snapshot_without_a_storage_field_loads_as_flat(tmp_path: Path, data: np.ndarray) -> None:
    """Snapshots written before the sq8 option name no storage: they are flat graphs."""
    index = FaissVectorIndex(tmp_path, exact_threshold=1000)
    index.add(NS, list(range(1500)), data[:1500])
    index.save(mark=3)
    (npz,) = tmp_path.glob("*.npz")
    with np.load(npz) as saved:
        fields = {key: saved[key] for key in saved.files if key != "storage"}
    np.savez(npz, **fields)  # type: ignore[arg-type]
    reloaded = FaissVectorIndex(tmp_path, exact_threshold=1000)
    assert reloaded.saved_mark() == 3 and reloaded._spaces[NS].storage == "flat"
    assert reloaded.search(NS, data[42], 3) == index.search(NS, data[42], 3)


def test_unknown_storage_is_refused() -> None:
    with pytest.raises(ValueError, match="storage"):
        FaissVectorIndex(None, storage="pq")  # type: ignore[arg-type]


@pytest.mark.parametrize("storage", ["flat", "sq8"])
def test_a_one_percent_filter_is_exactly_the_brute_force_top_k(
    data: np.ndarray, monkeypatch: pytest.MonkeyPatch, storage: str
) -> None:
    """200 allowed of 20,000 is above exact_threshold but under exact_ratio: searched
    exactly (never through the graph), so it is the brute-force answer, scores and all."""
    index = FaissVectorIndex(None, exact_threshold=100, storage=storage)  # type: ignore[arg-type]
    ids = np.arange(len(data))
    index.add(NS, ids.tolist(), data)
    rng = np.random.default_rng(8)
    allowed = np.sort(rng.choice(len(data), len(data) // 100, replace=False))
    allowed_set = set(allowed.tolist())

    def no_graph(*args: object) -> list[VectorHit]:
        raise AssertionError("a 1% filter went through the HNSW graph")

    monkeypatch.setattr(index, "_hnsw", no_graph)
    for query in unit(rng.standard_normal((25, DIM))):
        hits = index.search(NS, query, 10, allowed=allowed_set)
        assert [h.id for h in hits] == brute_force(data, allowed, query, 10)
        for hit in hits:
            assert hit.score == pytest.approx(float(data[hit.id] @ query), abs=1e-5)


def test_a_broad_filter_still_uses_the_graph(data: np.ndarray) -> None:
    index = FaissVectorIndex(None, exact_threshold=100)
    index.add(NS, list(range(len(data))), data)
    calls: list[int] = []
    original = index._hnsw

    def counted(*args: object) -> list[VectorHit]:
        calls.append(1)
        return original(*args)  # type: ignore[arg-type]

    index._hnsw = counted  # type: ignore[method-assign]
    allowed = set(range(0, len(data), 2))  # 50%: the graph with a selector is right here
    hits = index.search(NS, data[4], 10, allowed=allowed)
    assert calls == [1] and hits[0].id == 4 and {h.id for h in hits} <= allowed


def test_the_setting_chooses_the_storage(tmp_path: Path) -> None:
    from kenning.settings import Settings
    from kenning.stores.bundle import make_vector_index

    for storage in ("flat", "sq8"):
        settings = Settings(data_dir=tmp_path / storage, vector_storage=storage, _env_file=None)
        index = make_vector_index(settings)
        assert isinstance(index, FaissVectorIndex) and index.storage == storage
