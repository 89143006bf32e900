"""The implicit-feedback models behind one interface: exact values on a small engagement
matrix, fold-in of unseen readers, and on real MovieLens-100k ratings (the recbole
wheel's copy) EASE well above popularity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from kenning.demo.wheels import fetch_wheel_members
from kenning.services.recommend.implicit_models import ALS, BPR
from kenning.services.recommend.models import (
    EASE,
    CoEngagement,
    ImplicitModel,
    Popularity,
)

# Readers 0-3 engaged with stories 0, 1, 2; reader 4 with 3 and 4; reader 5 with 0, 1.
ROWS = [[0, 1, 2], [0, 1, 2], [0, 1, 2], [0, 1, 2], [3, 4], [0, 1]]


def engagement() -> sp.csr_matrix:
    r = [u for u, items in enumerate(ROWS) for _ in items]
    c = [i for items in ROWS for i in items]
    return sp.csr_matrix((np.ones(len(c)), (r, c)), shape=(len(ROWS), 5))


def test_every_model_is_the_interface() -> None:
    for model in (EASE(), CoEngagement(), Popularity(), ALS(), BPR()):
        assert isinstance(model, ImplicitModel)


def test_ease_is_the_closed_form_and_names_its_cause() -> None:
    x = engagement()
    model = EASE(l2=1.0)
    model.fit(x)
    g = (x.T @ x).toarray() + np.eye(5)
    p = np.linalg.inv(g)
    expected = -p / np.diag(p)
    np.fill_diagonal(expected, 0.0)
    np.testing.assert_allclose(model.weights, expected, rtol=1e-5, atol=1e-6)
    assert np.all(np.diag(model.weights) == 0)
    scores = model.scores(x[[5]], [5])[0]
    # Story 2 goes with 0 and 1; 3 and 4 with neither.
    assert scores[2] > 0.5 and abs(scores[3]) < 1e-6 and abs(scores[4]) < 1e-6
    assert model.because(x[[5]], 2) in (0, 1)
    assert model.because(x[[5]], 3) is None


def test_ease_keeps_the_most_engaged_items_when_capped() -> None:
    x = engagement()
    model = EASE(l2=1.0, max_items=3)
    model.fit(x)
    assert model.kept.tolist() == [0, 1, 2]
    scores = model.scores(x[[4]])[0]
    assert np.isneginf(scores[3]) and np.isneginf(scores[4])
    assert model.because(x[[5]], 4) is None


def test_co_engagement_is_the_cosine_of_co_readers() -> None:
    x = engagement()
    model = CoEngagement()
    model.fit(x)
    # Stories 0 and 2: 4 shared readers of 5 and 4: 4 / sqrt(5 * 4).
    assert model.similarity[0, 2] == pytest.approx(4 / np.sqrt(20))
    assert model.similarity[3, 4] == pytest.approx(1.0)
    scores = model.scores(x[[5]])[0]
    assert scores[2] == pytest.approx(2 * 4 / np.sqrt(20))
    assert scores[3] == 0 and scores[4] == 0
    assert model.because(x[[5]], 2) == 0  # ties: the first


def test_co_engagement_keeps_each_items_nearest_neighbours() -> None:
    x = engagement()
    model = CoEngagement(neighbours=1)
    model.fit(x)
    # Each column (candidate) keeps its one nearest co-engaged story.
    assert [int((model.similarity[:, i] > 0).sum()) for i in range(5)] == [1, 1, 1, 1, 1]


def test_popularity_is_readers_per_item() -> None:
    model = Popularity()
    model.fit(engagement())
    assert model.scores(engagement()[[0, 5]]).tolist() == [[5, 5, 4, 1, 1]] * 2


def test_als_ranks_the_co_engaged_story_and_folds_in_a_stranger() -> None:
    x = engagement()
    model = ALS(factors=4, regularization=0.01, iterations=30)
    model.fit(x)
    known = model.scores(x[[5]], [5])[0]
    assert known[2] > max(known[3], known[4])
    stranger = model.scores(x[[5]], [-1])[0]  # the same row, folded in
    assert stranger[2] > max(stranger[3], stranger[4])
    assert model.because(x[[5]], 2) in (0, 1)


def test_bpr_scores_known_and_unseen_readers() -> None:
    x = engagement()
    model = BPR(factors=8, iterations=200, learning_rate=0.05)
    model.fit(x)
    scores = model.scores(x[[0, 5]], [0, -1])
    assert scores.shape == (2, 5)
    items = model.model.item_factors
    folded = items[[0, 1]].mean(axis=0)
    folded[-1] = 1.0
    np.testing.assert_allclose(scores[1], items @ folded, rtol=1e-5)
    assert model.because(x[[5]], 2) in (0, 1)


# --- real ratings -------------------------------------------------------------------------
def movielens() -> sp.csr_matrix:
    prefix = "recbole/dataset_example/ml-100k/"
    path = Path(fetch_wheel_members("recbole", "1.2.1", prefix)) / prefix / "ml-100k.inter"
    rows = [line.split("\t") for line in path.read_text().splitlines()[1:]]
    _, users = np.unique([int(r[0]) for r in rows], return_inverse=True)
    _, items = np.unique([int(r[1]) for r in rows], return_inverse=True)
    return sp.csr_matrix((np.ones(len(rows)), (users, items)))


def ndcg_at_10(model: ImplicitModel, train: sp.csr_matrix, test: sp.csr_matrix) -> float:
    users = np.flatnonzero(np.diff(test.indptr) > 0)
    model.fit(train)
    scores = np.array(model.scores(train[users], users.tolist()), dtype=np.float64)
    scores[train[users].nonzero()] = -np.inf
    discount = 1 / np.log2(np.arange(2, 12))
    out = []
    for row, u in zip(np.argsort(-scores, axis=1)[:, :10], users, strict=True):
        relevant = set(test[u].indices.tolist())
        hits = np.array([i in relevant for i in row])
        out.append(hits @ discount / discount[:min(10, len(relevant))].sum())
    return float(np.mean(out))


def test_ease_beats_popularity_on_movielens() -> None:
    x = movielens()
    rng = np.random.default_rng(42)
    train_mask = rng.random(x.nnz) < 0.75
    coo = x.tocoo()
    train = sp.csr_matrix((coo.data[train_mask], (coo.row[train_mask], coo.col[train_mask])),
                          shape=x.shape)
    test = sp.csr_matrix((coo.data[~train_mask], (coo.row[~train_mask], coo.col[~train_mask])),
                         shape=x.shape)
    popular = ndcg_at_10(Popularity(), train, test)
    ease = ndcg_at_10(EASE(l2=300.0), train, test)
    co = ndcg_at_10(CoEngagement(), train, test)
    assert 0.15 < popular < 0.35
    assert ease > 0.42 and ease > 1.5 * popular
    assert co > popular
