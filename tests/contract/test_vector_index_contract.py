"""Contract for every VectorIndex: add a factory to FACTORIES to run it against a new one.

A factory takes a folder private to the test and returns an index; calling it again with
the same folder after ``save()`` must reopen the saved state (the pgvector factory maps
the folder to a table prefix in one database).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from kenning.stores.vectors import FaissVectorIndex, VectorIndex
from kenning.stores.vectors.pgvector_index import PgVectorIndex
from tests.fixtures.pgvector import pgvector_server, pgvector_url

__all__ = ["pgvector_server", "pgvector_url"]  # fixtures the pgvector factory uses

VectorIndexFactory = Callable[[Path], VectorIndex]

FACTORIES = ["faiss", "faiss-sq8", "pgvector"]

DIM = 48
NS = "tenant-a/use-multilingual-v3"


@pytest.fixture(params=FACTORIES)
def factory(request: pytest.FixtureRequest) -> Iterator[VectorIndexFactory]:
    if request.param == "faiss":
        yield lambda root: FaissVectorIndex(root / "vectors")
        return
    if request.param == "faiss-sq8":  # 8-bit codes in the graph, rescored on float32 rows
        yield lambda root: FaissVectorIndex(root / "vectors", storage="sq8")
        return
    url = request.getfixturevalue("pgvector_url")
    opened: list[PgVectorIndex] = []

    def pgvector(root: Path) -> VectorIndex:
        # The test's folder names its tables: reopening the folder reopens them.
        opened.append(PgVectorIndex(url, table=f"v_{hashlib.sha1(bytes(root)).hexdigest()[:12]}"))
        return opened[-1]

    yield pgvector
    for index in opened:
        index.close()


@pytest.fixture
def index(factory: VectorIndexFactory, tmp_path: Path) -> VectorIndex:
    return factory(tmp_path)


def unit(rows: np.ndarray) -> np.ndarray:
    norms: np.ndarray = np.linalg.norm(rows, axis=-1, keepdims=True)
    return np.asarray(rows / norms, dtype=np.float32)


@pytest.fixture(scope="module")
def corpus() -> np.ndarray:
    """3,000 random unit vectors: large enough for the approximate (HNSW) path."""
    return unit(np.random.default_rng(7).standard_normal((3000, DIM)))


def brute_force(data: np.ndarray, ids: np.ndarray, query: np.ndarray, k: int) -> list[int]:
    scores = data @ unit(query)
    return [int(ids[i]) for i in np.argsort(-scores, kind="stable")[:k]]


def test_search_returns_cosine_scores_sorted(index: VectorIndex) -> None:
    vectors = unit(np.random.default_rng(1).standard_normal((20, DIM)))
    index.add(NS, list(range(100, 120)), vectors * 3.0)  # unnormalised input is fine
    hits = index.search(NS, vectors[4], 5)
    assert hits[0].id == 104
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    expected = vectors @ vectors[4]
    for hit in hits:
        assert hit.score == pytest.approx(float(expected[hit.id - 100]), abs=1e-5)
    assert index.count(NS) == 20


def test_k_larger_than_namespace(index: VectorIndex) -> None:
    index.add(NS, [1, 2, 3], np.eye(3, DIM, dtype=np.float32))
    assert [h.id for h in index.search(NS, np.eye(1, DIM, dtype=np.float32)[0], 10)] == [1, 2, 3]
    assert index.search(NS, np.ones(DIM, dtype=np.float32), 0) == []


def test_ties_are_broken_by_id(index: VectorIndex) -> None:
    same = np.tile(np.eye(1, DIM, dtype=np.float32), (3, 1))
    index.add(NS, [9, 3, 5], same)
    assert [h.id for h in index.search(NS, same[0], 3)] == [3, 5, 9]


def test_add_upserts(index: VectorIndex) -> None:
    basis = np.eye(4, DIM, dtype=np.float32)
    index.add(NS, [1, 2], basis[:2])
    index.add(NS, [1], basis[2:3])
    assert index.count(NS) == 2
    hits = index.search(NS, basis[2], 2)
    assert hits[0].id == 1 and hits[0].score == pytest.approx(1.0, abs=1e-5)
    old = index.search(NS, basis[0], 2)
    assert all(h.score == pytest.approx(0.0, abs=1e-5) for h in old)
    index.add(NS, [7, 7], basis[[0, 3]])  # a repeated id within one call: last wins
    assert index.count(NS) == 3
    assert index.search(NS, basis[3], 1)[0].id == 7


def test_remove_hides(index: VectorIndex) -> None:
    vectors = unit(np.random.default_rng(2).standard_normal((50, DIM)))
    index.add(NS, list(range(50)), vectors)
    assert index.remove(NS, [3, 4, 999]) == 2
    assert index.remove(NS, [3]) == 0
    assert index.count(NS) == 48
    found = {h.id for h in index.search(NS, vectors[3], 50)}
    assert found == set(range(50)) - {3, 4}
    assert index.remove("unknown/ns", [1]) == 0


def test_namespaces_are_isolated(index: VectorIndex) -> None:
    vector = np.eye(1, DIM, dtype=np.float32)
    index.add("tenant-a/space", [1], vector)
    index.add("tenant-b/space", [2], vector)
    assert [h.id for h in index.search("tenant-a/space", vector[0], 10)] == [1]
    assert [h.id for h in index.search("tenant-b/space", vector[0], 10)] == [2]
    assert index.search("tenant-c/space", vector[0], 10) == []
    assert index.count("tenant-c/space") == 0
    index.remove("tenant-b/space", [1])  # id 1 lives in tenant-a only
    assert index.count("tenant-a/space") == 1


def test_namespaces_may_differ_in_dimension(index: VectorIndex) -> None:
    index.add("t/small", [1], np.ones((1, 8), dtype=np.float32))
    index.add("t/large", [1], np.ones((1, DIM), dtype=np.float32))
    assert index.search("t/small", np.ones(8, dtype=np.float32), 1)[0].id == 1
    with pytest.raises(ValueError):
        index.add("t/small", [2], np.ones((1, DIM), dtype=np.float32))
    with pytest.raises(ValueError):
        index.add("t/small", [2, 3], np.ones((1, 8), dtype=np.float32))


def test_recall_against_brute_force(index: VectorIndex, corpus: np.ndarray) -> None:
    ids = np.arange(10_000, 10_000 + len(corpus))
    index.add(NS, ids.tolist(), corpus)
    rng = np.random.default_rng(11)
    queries = rng.standard_normal((40, DIM)).astype(np.float32)
    recall = np.mean(
        [
            len({h.id for h in index.search(NS, q, 10)} & set(brute_force(corpus, ids, q, 10))) / 10
            for q in queries
        ]
    )
    assert recall >= 0.9
    # Near-duplicates of stored vectors: top-1 must be the original.
    for row in rng.choice(len(corpus), 20, replace=False):
        noisy = corpus[row] + 0.05 * rng.standard_normal(DIM).astype(np.float32)
        assert index.search(NS, noisy, 1)[0].id == ids[row]


@pytest.mark.parametrize("n_allowed", [30, 2500])
def test_allowed_filter(index: VectorIndex, corpus: np.ndarray, n_allowed: int) -> None:
    """Both a selective filter and a broad one return the best allowed ids."""
    ids = np.arange(len(corpus))
    index.add(NS, ids.tolist(), corpus)
    rng = np.random.default_rng(n_allowed)
    allowed = rng.choice(len(corpus), n_allowed, replace=False)
    allowed_set = set(allowed.tolist())
    recalls = []
    for query in rng.standard_normal((10, DIM)).astype(np.float32):
        hits = index.search(NS, query, 10, allowed=allowed_set)
        assert len(hits) == 10
        assert {h.id for h in hits} <= allowed_set
        truth = brute_force(corpus[allowed], allowed, query, 10)
        recalls.append(len({h.id for h in hits} & set(truth)) / 10)
        assert hits[0].id == truth[0]
    assert np.mean(recalls) >= 0.9
    assert index.search(NS, corpus[0], 10, allowed=[]) == []
    assert index.search(NS, corpus[0], 10, allowed=[10**9]) == []


def test_removed_ids_never_come_back_through_a_filter(index: VectorIndex) -> None:
    basis = np.eye(3, DIM, dtype=np.float32)
    index.add(NS, [1, 2, 3], basis)
    index.remove(NS, [2])
    assert [h.id for h in index.search(NS, basis[1], 5, allowed={2, 3})] == [3]


def test_save_and_reopen(factory: VectorIndexFactory, tmp_path: Path, corpus: np.ndarray) -> None:
    index = factory(tmp_path)
    ids = list(range(len(corpus)))
    index.add(NS, ids, corpus)
    index.add("tenant-b/space", [5], corpus[:1])
    index.remove(NS, [0, 1])
    index.add(NS, [2], corpus[3:4])  # upsert: id 2 now points at row 3's vector
    queries = corpus[[3, 10, 500]]
    before = [index.search(NS, q, 5) for q in queries]
    index.save()

    reopened = factory(tmp_path)
    assert reopened.count(NS) == len(corpus) - 2
    assert reopened.count("tenant-b/space") == 1
    after = [reopened.search(NS, q, 5) for q in queries]
    assert [[h.id for h in hits] for hits in after] == [[h.id for h in hits] for hits in before]
    assert {h.id for h in after[0][:2]} == {2, 3}
    assert reopened.search(NS, corpus[0], 1, allowed={0, 1}) == []


def test_a_saved_mark_reopens_with_the_state_it_describes(
    factory: VectorIndexFactory, tmp_path: Path, corpus: np.ndarray
) -> None:
    """The index-log mark is saved with the data and read back by a later process."""
    index = factory(tmp_path)
    assert index.saved_mark() is None
    index.add(NS, list(range(len(corpus))), corpus)
    index.save(mark=41)
    index.remove(NS, [0])
    index.save()  # data newer than the mark: allowed, the mark only ever lags
    reopened = factory(tmp_path)
    assert reopened.saved_mark() == 41
    assert reopened.count(NS) == len(corpus) - 1
    assert [h.id for h in reopened.search(NS, corpus[7], 1)] == [7]


def test_clear_forgets_everything_saved_too(
    factory: VectorIndexFactory, tmp_path: Path, corpus: np.ndarray
) -> None:
    index = factory(tmp_path)
    index.add(NS, [1, 2], corpus[:2])
    index.save(mark=3)
    index.clear()
    assert index.count(NS) == 0 and index.saved_mark() is None
    reopened = factory(tmp_path)
    assert reopened.count(NS) == 0 and reopened.saved_mark() is None
    reopened.add(NS, [1], corpus[:1])
    assert reopened.count(NS) == 1
