"""What the pgvector index adds to the vector contract: its graphs, its sharing between
processes, and namespaces that are hostile SQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import numpy as np
import pytest

from kenning.stores.vectors.pgvector_index import PgVectorIndex
from tests.fixtures.pgvector import pgvector_server, pgvector_url

__all__ = ["pgvector_server", "pgvector_url"]

DIM = 32


@pytest.fixture
def table() -> str:
    return f"v_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def index(pgvector_url: str, table: str) -> Iterator[PgVectorIndex]:
    index = PgVectorIndex(pgvector_url, table=table, exact_threshold=200)
    yield index
    index.close()


def unit(n: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_a_namespace_gets_its_own_graph_at_the_threshold_and_searches_use_it(
    index: PgVectorIndex, table: str
) -> None:
    data = unit(300, 1)
    index.add("t1/space", list(range(150)), data[:150])
    index.add("t2/space", list(range(50)), data[:50])
    assert "_g_" not in index.explain("t1/space", data[0], 5)  # below the threshold: exact
    index.add("t1/space", list(range(150, 300)), data[150:])
    plan = index.explain("t1/space", data[0], 5)
    assert f"Index Scan using {table}_g_" in plan and "Sort" not in plan
    assert index.search("t1/space", data[200], 5)[0].id == 200
    broad = index.explain("t1/space", data[0], 5, allowed=set(range(250)))
    assert f"Index Scan using {table}_g_" in broad
    # A selective filter is answered exactly, through no graph.
    assert "_g_" not in index.explain("t1/space", data[0], 3, allowed={7, 8})
    assert index.search("t1/space", data[7], 3, allowed={7, 8})[0].id == 7
    # The small namespace has no graph and never sees the large one's vectors.
    assert "_g_" not in index.explain("t2/space", data[0], 5)
    assert {h.id for h in index.search("t2/space", data[200], 100)} <= set(range(50))


def test_processes_share_one_index_and_its_mark_never_moves_back(
    index: PgVectorIndex, pgvector_url: str, table: str
) -> None:
    other = PgVectorIndex(pgvector_url, table=table, exact_threshold=200)
    try:
        data = unit(10, 2)
        index.add("t/space", list(range(10)), data)
        assert [h.id for h in other.search("t/space", data[3], 1)] == [3]
        assert other.remove("t/space", [3]) == 1
        assert index.count("t/space") == 9
        other.save(mark=40)
        index.save(mark=25)  # a follower behind the other one: the mark stays
        assert index.saved_mark() == other.saved_mark() == 40
    finally:
        other.close()


@pytest.mark.parametrize("namespace", ["t'); DROP TABLE x; --/space", "t\\'/sp ace", "ü/空間"])
def test_hostile_namespaces_are_only_data(
    index: PgVectorIndex, table: str, namespace: str
) -> None:
    data = unit(250, 3)
    index.add(namespace, list(range(250)), data)  # builds the namespace's graph
    assert index.count(namespace) == 250
    assert index.search(namespace, data[9], 1)[0].id == 9
    assert index.search(namespace, data[9], 1, allowed=set(range(240)))[0].id == 9
    assert index.count("t/space") == 0
    assert f"Index Scan using {table}_g_" in index.explain(namespace, data[9], 1)


def test_a_nul_in_a_namespace_is_refused(index: PgVectorIndex) -> None:
    with pytest.raises(ValueError):
        index.add("t\x00/space", list(range(250)), unit(250, 4))


def test_a_dimension_mismatch_is_refused_before_the_query(index: PgVectorIndex) -> None:
    index.add("t/space", list(range(250)), unit(250, 5))
    with pytest.raises(ValueError):
        index.search("t/space", np.ones(DIM + 1, dtype=np.float32), 3)
