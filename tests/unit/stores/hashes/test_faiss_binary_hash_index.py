"""FaissBinaryHashIndex specifics: tombstones, compaction, files on disk, exactness."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kenning.stores.hashes import FaissBinaryHashIndex

NS = "t/pdq"


def codes(n: int, seed: int = 0, nbytes: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, nbytes), dtype=np.uint8)


def test_range_search_matches_numpy_brute_force() -> None:
    data = codes(2000)
    # cluster some codes near the query so the radius catches a few dozen
    query = data[0].copy()
    for i in range(1, 60):
        data[i] = query
        flips = np.random.default_rng(i).choice(256, i % 40, replace=False)
        for bit in flips:
            data[i, bit // 8] ^= 1 << (bit % 8)
    index = FaissBinaryHashIndex(None)
    index.add(NS, list(range(2000)), [row.tobytes() for row in data])
    distances = np.bitwise_count(np.bitwise_xor(data, query)).sum(axis=1)
    for radius in (0, 5, 20, 31):
        expected = sorted((int(d), i) for i, d in enumerate(distances) if d <= radius)
        hits = index.search(NS, query.tobytes(), max_distance=radius, k=10_000)
        assert [(h.distance, h.id) for h in hits] == expected


def test_tombstones_then_compaction() -> None:
    index = FaissBinaryHashIndex(None, compact_ratio=0.2)
    data = codes(100)
    index.add(NS, list(range(100)), [row.tobytes() for row in data])
    index.remove(NS, list(range(20)))
    assert index.tombstones(NS) == 20  # 20 of 100 is not above the ratio
    index.add(NS, [50], [data[0].tobytes()])  # an upsert tombstones the old position
    assert index.tombstones(NS) == 0  # 21 of 101 is: rebuilt from live codes
    assert index.count(NS) == 80
    hits = index.search(NS, data[0].tobytes(), max_distance=0)
    assert [h.id for h in hits] == [50]
    assert index.search(NS, data[50].tobytes(), max_distance=0) == []


def test_one_file_per_namespace_and_nothing_temporary(tmp_path: Path) -> None:
    index = FaissBinaryHashIndex(tmp_path)
    index.add("a/pdq", [1], [codes(1)[0].tobytes()])
    index.add("b/pdq", [1], [codes(1)[0].tobytes()])
    index.save()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2 and all(f.endswith(".npz") for f in files)
    inodes = {p: p.stat().st_ino for p in tmp_path.iterdir()}
    index.add("a/pdq", [2], [codes(1, seed=1)[0].tobytes()])
    index.save()  # only the changed namespace is rewritten (a new file replaces it)
    assert sum(p.stat().st_ino != ino for p, ino in inodes.items()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == files
    assert FaissBinaryHashIndex(tmp_path).count("a/pdq") == 2


def test_memory_only_index_saves_nothing(tmp_path: Path) -> None:
    index = FaissBinaryHashIndex(None)
    index.add(NS, [1], [codes(1)[0].tobytes()])
    index.save()
    assert index.count(NS) == 1
