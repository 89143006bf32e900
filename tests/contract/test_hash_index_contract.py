"""Contract for every HashIndex: add a factory to FACTORIES to run it against a new one.

A factory takes a folder private to the test and returns an index; calling it again with
the same folder after ``save()`` must reopen the saved state.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from kenning.stores.hashes import FaissBinaryHashIndex, HashHit, HashIndex

HashIndexFactory = Callable[[Path], HashIndex]

FACTORIES = [
    pytest.param(lambda root: FaissBinaryHashIndex(root / "hashes"), id="faiss-binary"),
]

NS = "tenant-a/pdq"
BITS = 256


@pytest.fixture(params=FACTORIES)
def factory(request: pytest.FixtureRequest) -> HashIndexFactory:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def index(factory: HashIndexFactory, tmp_path: Path) -> HashIndex:
    return factory(tmp_path)


def random_code(seed: int, nbytes: int = BITS // 8) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, nbytes, dtype=np.uint8).tobytes()


def flip(code: bytes, bits: list[int]) -> bytes:
    out = bytearray(code)
    for bit in bits:
        out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


@pytest.mark.parametrize("n_flipped", [0, 1, 7, 31, 128, 256])
def test_distance_is_the_number_of_flipped_bits(index: HashIndex, n_flipped: int) -> None:
    base = random_code(1)
    bits = np.random.default_rng(n_flipped).choice(BITS, n_flipped, replace=False).tolist()
    index.add(NS, [42], [flip(base, bits)])
    assert index.search(NS, base, max_distance=BITS) == [HashHit(42, n_flipped)]


def test_max_distance_is_inclusive_and_respected(index: HashIndex) -> None:
    base = random_code(2)
    # id d is exactly d bits away from base
    index.add(NS, list(range(41)), [flip(base, list(range(d))) for d in range(41)])
    hits = index.search(NS, base, max_distance=10)
    assert hits == [HashHit(d, d) for d in range(11)]
    assert index.search(NS, base, max_distance=0) == [HashHit(0, 0)]
    assert [h.id for h in index.search(NS, base, max_distance=40, k=3)] == [0, 1, 2]
    assert index.search(NS, flip(base, list(range(100, 160))), max_distance=10) == []


def test_ids_sharing_a_code_are_all_returned_sorted(index: HashIndex) -> None:
    code = random_code(3)
    index.add(NS, [30, 10, 20], [code, code, code])
    index.add(NS, [5], [flip(code, [0])])
    assert index.search(NS, code, max_distance=4) == [
        HashHit(10, 0),
        HashHit(20, 0),
        HashHit(30, 0),
        HashHit(5, 1),
    ]
    assert index.count(NS) == 4


def test_add_upserts(index: HashIndex) -> None:
    old, new = random_code(4), random_code(5)
    index.add(NS, [1], [old])
    index.add(NS, [1], [new])
    assert index.count(NS) == 1
    assert index.search(NS, old, max_distance=20) == []
    assert index.search(NS, new, max_distance=0) == [HashHit(1, 0)]


def test_remove(index: HashIndex) -> None:
    codes = [random_code(100 + i) for i in range(10)]
    index.add(NS, list(range(10)), codes)
    assert index.remove(NS, [2, 3, 77]) == 2
    assert index.remove(NS, [2]) == 0
    assert index.count(NS) == 8
    assert index.search(NS, codes[2], max_distance=0) == []
    assert index.search(NS, codes[4], max_distance=0) == [HashHit(4, 0)]
    assert index.remove("unknown/ns", [1]) == 0


def test_namespaces_are_isolated(index: HashIndex) -> None:
    code = random_code(6)
    index.add("tenant-a/pdq", [1], [code])
    index.add("tenant-b/pdq", [2], [code])
    assert index.search("tenant-a/pdq", code, max_distance=0) == [HashHit(1, 0)]
    assert index.search("tenant-b/pdq", code, max_distance=0) == [HashHit(2, 0)]
    assert index.search("tenant-c/pdq", code, max_distance=256) == []
    assert index.count("tenant-c/pdq") == 0


def test_code_lengths(index: HashIndex) -> None:
    index.add("t/audio-fp", [1], [random_code(7, nbytes=8)])  # 64-bit codes elsewhere
    index.add(NS, [1], [random_code(7)])
    with pytest.raises(ValueError):
        index.add(NS, [2], [random_code(8, nbytes=8)])
    with pytest.raises(ValueError):
        index.add("t/new", [1, 2], [random_code(9), random_code(9, nbytes=8)])
    with pytest.raises(ValueError):
        index.add(NS, [1, 2], [random_code(9)])
    with pytest.raises(ValueError):
        index.search(NS, random_code(9, nbytes=8), max_distance=3)


def test_save_and_reopen(factory: HashIndexFactory, tmp_path: Path) -> None:
    index = factory(tmp_path)
    codes = [random_code(200 + i) for i in range(300)]
    index.add(NS, list(range(300)), codes)
    index.add("tenant-b/pdq", [1], [codes[0]])
    index.remove(NS, [0])
    index.add(NS, [1], [codes[2]])  # id 1 now shares id 2's code
    index.save()

    reopened = factory(tmp_path)
    assert reopened.count(NS) == 299
    assert reopened.count("tenant-b/pdq") == 1
    assert reopened.search(NS, codes[0], max_distance=0) == []
    assert reopened.search(NS, codes[2], max_distance=0) == [HashHit(1, 0), HashHit(2, 0)]
    near = flip(codes[150], [3, 9, 200])
    assert reopened.search(NS, near, max_distance=5) == [HashHit(150, 3)]


def test_a_saved_mark_reopens_with_the_state_it_describes(
    factory: HashIndexFactory, tmp_path: Path
) -> None:
    """The index-log mark is saved with the data and read back by a later process."""
    index = factory(tmp_path)
    assert index.saved_mark() is None
    index.add(NS, [1, 2], [random_code(1), random_code(2)])
    index.save(mark=17)
    reopened = factory(tmp_path)
    assert reopened.saved_mark() == 17 and reopened.count(NS) == 2


def test_clear_forgets_everything_saved_too(factory: HashIndexFactory, tmp_path: Path) -> None:
    index = factory(tmp_path)
    index.add(NS, [1], [random_code(1)])
    index.save(mark=2)
    index.clear()
    assert index.count(NS) == 0 and index.saved_mark() is None
    reopened = factory(tmp_path)
    assert reopened.count(NS) == 0 and reopened.saved_mark() is None


def test_exact_in_a_large_namespace_through_adds_and_removals(index: HashIndex) -> None:
    """Enough codes for an index's sublinear structures (PDQ-scale radii 31 and beyond):
    every answer equals brute force, new codes match at once, removed ones are gone."""
    rng = np.random.default_rng(11)
    codes = rng.integers(0, 256, (40_000, BITS // 8), dtype=np.uint8)
    query = codes[0].copy()
    for i, distance in enumerate(range(1, 70, 2), start=1):  # neighbours at 1..69 bits
        codes[i] = np.frombuffer(flip(query.tobytes(), list(range(distance))), np.uint8)
    index.add(NS, list(range(len(codes))), [c.tobytes() for c in codes])
    distances = np.bitwise_count(np.bitwise_xor(codes, query)).sum(axis=1)

    def expected(radius: int, dead: set[int]) -> list[HashHit]:
        near = [(int(distances[i]), int(i)) for i in np.flatnonzero(distances <= radius)]
        return [HashHit(i, d) for d, i in sorted(near) if i not in dead][:100]

    for radius in (0, 16, 31, 32, 47, 64, 256):
        assert index.search(NS, query.tobytes(), max_distance=radius, k=100) == (
            expected(radius, set()))
    assert index.remove(NS, [3, 5]) == 2
    index.add(NS, [40_000], [flip(query.tobytes(), [7, 8])])
    assert index.search(NS, query.tobytes(), max_distance=31, k=100) == sorted(
        [*expected(31, {3, 5}), HashHit(40_000, 2)], key=lambda h: (h.distance, h.id))
