"""Multi-index hashing: every answer equals numpy brute force, whichever path serves it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kenning.stores.hashes import FaissBinaryHashIndex
from kenning.stores.hashes import faiss_binary as module
from kenning.stores.hashes.mih import SubstringTables, hamming, tail_limit

NS = "t/pdq"
RADII = [0, 1, 15, 16, 31, 32, 47, 48, 63, 64, 100, 256]


@pytest.fixture(autouse=True)
def tables_whenever_they_cover_the_radius(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small namespaces and crowded buckets would scan; these tests want the tables."""
    monkeypatch.setattr(module, "MIN_TABLE_ROWS", 1)
    monkeypatch.setattr(module, "_SCAN_SHARE", 1)


def random_codes(n: int, seed: int = 0, nbytes: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, nbytes), dtype=np.uint8)


def flipped(code: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    out = code.copy()
    for bit in rng.choice(8 * len(code), count, replace=False):
        out[bit // 8] ^= 1 << (bit % 8)
    return out


def near_copies(query: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` codes 0..2*n bits from ``query``: many inside every radius of interest."""
    rng = np.random.default_rng(seed)
    return np.stack([flipped(query, min(d, 8 * len(query)), rng) for d in range(0, 2 * n, 2)])


def brute_force(live: dict[int, np.ndarray], query: np.ndarray,
                radius: int) -> list[tuple[int, int]]:
    ids, codes = np.array(list(live)), np.stack(list(live.values()))
    distances = np.bitwise_count(np.bitwise_xor(codes, query)).sum(axis=1)
    return sorted((int(distances[i]), int(ids[i])) for i in np.flatnonzero(distances <= radius))


def assert_exact(index: FaissBinaryHashIndex, live: dict[int, np.ndarray],
                 queries: np.ndarray, radii: list[int] = RADII) -> None:
    for query in queries:
        for radius in radii:
            hits = index.search(NS, query.tobytes(), max_distance=radius, k=100_000)
            assert [(h.distance, h.id) for h in hits] == brute_force(live, query, radius), radius


def filled(codes: np.ndarray) -> tuple[FaissBinaryHashIndex, dict[int, np.ndarray]]:
    index = FaissBinaryHashIndex(None)
    index.add(NS, list(range(len(codes))), [c.tobytes() for c in codes])
    return index, dict(enumerate(codes))


def test_random_codes_with_neighbours_planted_at_every_radius() -> None:
    queries = random_codes(4, seed=1)
    codes = np.concatenate([random_codes(3000), *(near_copies(q, 40, i)
                                                  for i, q in enumerate(queries))])
    index, live = filled(codes)
    assert_exact(index, live, queries)
    space = index._spaces[NS]
    assert space.tables is not None and space.tables.indexed == len(codes)


def test_clustered_codes_that_crowd_a_few_buckets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Codes that agree on most substrings: past the budget (1/32 of the codes by default)
    the crowded buckets give way to a flat scan; the tables' own answer is exact too."""
    monkeypatch.setattr(module, "_SCAN_SHARE", 32)
    base = random_codes(1, seed=2)[0]
    rng = np.random.default_rng(3)
    codes = np.stack([flipped(base, int(d), rng) for d in rng.integers(0, 60, 2000)])
    codes[:, 2:] = base[2:]  # only the first two bytes vary: one substring table differs
    index, live = filled(np.concatenate([codes, random_codes(500, seed=4)]))
    queries = [base, codes[7], flipped(base, 20, rng)]
    assert_exact(index, live, queries)
    space = index._spaces[NS]
    assert space.tables is not None
    assert space.tables.search(space.rows, space.n, base, 31, budget=space.n // 32) is None
    for query in queries:
        for radius in (0, 16, 31, 47):
            found = space.tables.search(space.rows, space.n, query, radius, budget=10**9)
            assert found is not None
            assert sorted(zip(found[1].tolist(), found[0].tolist(), strict=True)) == (
                brute_force(live, query, radius))  # ids are positions here


def test_removals_upserts_and_readds() -> None:
    query = random_codes(1, seed=5)[0]
    codes = np.concatenate([random_codes(2000, seed=6), near_copies(query, 30, 7)])
    index, live = filled(codes)
    index.search(NS, query.tobytes(), max_distance=31)  # builds the tables
    gone = list(range(2000, 2030, 3))
    index.remove(NS, gone)
    for id_ in gone:
        del live[id_]
    moved = {2001: codes[5], 2004: flipped(query, 9, np.random.default_rng(8))}
    index.add(NS, list(moved), [c.tobytes() for c in moved.values()])  # upserts: new rows
    live.update(moved)
    index.add(NS, gone[:2], [codes[g].tobytes() for g in gone[:2]])  # removed, then back
    live.update({g: codes[g] for g in gone[:2]})
    assert_exact(index, live, [query, codes[5]])
    assert index.count(NS) == len(live)


def test_new_codes_are_found_before_and_after_the_tail_is_merged() -> None:
    codes = random_codes(3000, seed=9)
    index, live = filled(codes)
    index.search(NS, codes[0].tobytes(), max_distance=31)
    tables = index._spaces[NS].tables
    assert tables is not None and tables.indexed == 3000
    rng = np.random.default_rng(10)
    query = random_codes(1, seed=11)[0]
    for step in range(tail_limit(3000) + 100):
        code = flipped(query, step % 32, rng)
        index.add(NS, [10_000 + step], [code.tobytes()])
        live[10_000 + step] = code
        if step in (0, 1, 500, tail_limit(3000) - 1, tail_limit(3000)):
            assert_exact(index, live, [query], radii=[5, 31])
    assert_exact(index, live, [query], radii=[0, 31, 47])
    assert tables.indexed > 3000  # a search merged the tail


def test_compaction_rebuilds_the_tables() -> None:
    query = random_codes(1, seed=12)[0]
    codes = np.concatenate([random_codes(1000, seed=13), near_copies(query, 30, 14)])
    index, live = filled(codes)
    index.search(NS, query.tobytes(), max_distance=31)
    dead = list(range(0, 1030, 2))
    index.remove(NS, dead)  # past compact_ratio: positions renumbered
    assert index.tombstones(NS) == 0
    for id_ in dead:
        del live[id_]
    assert_exact(index, live, [query])


def test_snapshot_reload_rebuilds_the_tables(tmp_path: Path) -> None:
    query = random_codes(1, seed=15)[0]
    codes = np.concatenate([random_codes(2000, seed=16), near_copies(query, 30, 17)])
    index = FaissBinaryHashIndex(tmp_path)
    index.add(NS, list(range(len(codes))), [c.tobytes() for c in codes])
    index.search(NS, query.tobytes(), max_distance=31)
    index.remove(NS, [2002, 2005])
    index.save()
    live = {i: c for i, c in enumerate(codes) if i not in (2002, 2005)}
    reopened = FaissBinaryHashIndex(tmp_path)
    assert_exact(reopened, live, [query, codes[2010]])


@pytest.mark.parametrize("nbytes", [8, 9, 1])
def test_other_code_lengths(nbytes: int) -> None:
    """64-bit codes use 4 tables; an odd last byte is left out of every table (the
    pigeonhole still holds over the bits covered); 8-bit codes have no table at all."""
    query = random_codes(1, seed=18, nbytes=nbytes)[0]
    codes = np.concatenate([random_codes(1500, seed=19, nbytes=nbytes),
                            near_copies(query, 4 * nbytes, 20)])
    index, live = filled(codes)
    assert_exact(index, live, [query, codes[3]], radii=[0, 1, 3, 4, 7, 8, 11, 12, 20])


def test_merging_in_steps_equals_merging_at_once() -> None:
    codes = random_codes(5000, seed=21)
    once, steps = SubstringTables(32), SubstringTables(32)
    once.merge(codes, 5000)
    for upto in (1, 700, 701, 3000, 5000):
        steps.merge(codes, upto)
    assert np.array_equal(once.offsets, steps.offsets)
    assert np.array_equal(once.positions, steps.positions)  # ascending in every bucket


def test_hamming_counts_differing_bits() -> None:
    codes = random_codes(50, seed=22, nbytes=12)
    query = codes[0]
    expected = [sum(bin(a ^ b).count("1") for a, b in zip(c, query, strict=True))
                for c in codes.tolist()]
    assert hamming(codes, query).tolist() == expected
