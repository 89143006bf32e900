"""Implicit-feedback models behind one interface: fit a readers x items matrix, then score
every item for some users, and say which of a user's items made an item score.

* :class:`EASE` (Steck 2019, "Embarrassingly Shallow Autoencoders for Sparse Data"): an
  item-item weight matrix in closed form, ``B = I - P / diag(P)`` with
  ``P = (X'X + lambda I)^-1`` on the binarised matrix, diagonal zero. No optimiser, no
  seed: one matrix inverse. The strongest of these on MovieLens-100k
  (bench/bench_recs_movielens.py). Memory and time grow with the square and cube of the
  item count, so it models the ``max_items`` most engaged items only (others score -inf).
* :class:`CoEngagement`: item-to-item cosine of co-engagement (readers who engaged with
  both, over the geometric mean of each one's readers), each item's ``neighbours`` best.
* :class:`Popularity`: how many readers engaged with each item, the same for everyone.
* ALS and BPR from the ``implicit`` library: :mod:`kenning.services.recommend.implicit_models`.

Scores are for ranking within one user's row: their scale differs by model. Items the user
already engaged with are not masked here (the sources exclude them). Every model runs on
one thread (``threadpoolctl``); BLAS thread pools spin on a shared core otherwise.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

__all__ = ["EASE", "CoEngagement", "ImplicitModel", "Popularity", "binary", "one_thread"]

FloatArray = npt.NDArray[np.floating]


@runtime_checkable
class ImplicitModel(Protocol):
    """A model of implicit feedback: which items a user would engage with next."""

    name: str

    def fit(self, interactions: sp.csr_matrix) -> None:
        """Learn from ``interactions`` (users x items; a value > 0 is engagement, larger
        is stronger where the model uses strength)."""
        ...

    def scores(self, rows: sp.csr_matrix, users: Sequence[int] | None = None) -> FloatArray:
        """Scores of every item (``len(rows) x n_items``) for the users whose engagement
        rows are ``rows``; ``users`` are their row numbers in the fitted matrix (-1 for
        one it never saw), which factor models use instead of folding the row in."""
        ...

    def because(self, row: sp.csr_matrix, item: int) -> int | None:
        """The item of the user's ``row`` (one row) that contributed most to ``item``'s
        score, or None when none did."""
        ...


@contextmanager
def one_thread() -> Iterator[None]:
    """BLAS and OpenMP pools capped at one thread (a no-op without threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with the text extra
        yield
        return
    with threadpool_limits(limits=1):
        yield


def binary(m: sp.csr_matrix) -> sp.csr_matrix:
    """1 where ``m`` is positive, as float64."""
    out = sp.csr_matrix(m, dtype=np.float64, copy=True)
    out.data = (out.data > 0).astype(np.float64)
    out.eliminate_zeros()
    return out


def _best_contributor(row: sp.csr_matrix, column: npt.NDArray[np.floating]) -> int | None:
    """The item of ``row`` with the largest positive weight in ``column`` (item -> item)."""
    items = row.indices
    if len(items) == 0:
        return None
    weights = column[items] * row.data
    best = int(np.argmax(weights))
    return int(items[best]) if weights[best] > 0 else None


class EASE:
    """EASE^R: closed-form item-item weights (see the module docstring)."""

    name = "ease"

    def __init__(self, l2: float = 300.0, max_items: int | None = 5000) -> None:
        if l2 <= 0:
            raise ValueError("l2 must be positive")
        self.l2 = l2
        self.max_items = max_items
        self.weights: npt.NDArray[np.float32] = np.zeros((0, 0), dtype=np.float32)
        self.kept: npt.NDArray[np.int64] = np.zeros(0, dtype=np.int64)
        self.n_items = 0

    def fit(self, interactions: sp.csr_matrix) -> None:
        x = binary(interactions)
        self.n_items = x.shape[1]
        kept = np.arange(self.n_items)
        if self.max_items is not None and self.n_items > self.max_items:
            popularity = np.asarray(x.sum(axis=0)).ravel()
            kept = np.sort(np.argsort(-popularity, kind="stable")[:self.max_items])
            x = x[:, kept]
        with one_thread():
            gram = (x.T @ x).toarray()
            gram[np.diag_indices_from(gram)] += self.l2
            p = np.linalg.inv(gram)
            b = p / -np.diag(p)
        b[np.diag_indices_from(b)] = 0.0
        self.weights = b.astype(np.float32)
        self.kept = kept.astype(np.int64)

    def scores(self, rows: sp.csr_matrix, users: Sequence[int] | None = None) -> FloatArray:
        x = binary(rows)[:, self.kept]
        with one_thread():
            part = np.asarray(x @ self.weights, dtype=np.float32)
        if len(self.kept) == self.n_items:
            return part
        out = np.full((rows.shape[0], self.n_items), -np.inf, dtype=np.float32)
        out[:, self.kept] = part
        return out

    def because(self, row: sp.csr_matrix, item: int) -> int | None:
        position = np.searchsorted(self.kept, item)
        if position >= len(self.kept) or self.kept[position] != item:
            return None
        x = binary(row)
        column = np.zeros(self.n_items, dtype=np.float64)
        column[self.kept] = self.weights[:, position]
        return _best_contributor(x, column)


class CoEngagement:
    """Item-to-item cosine of co-engagement, each item's ``neighbours`` best kept."""

    name = "co_engagement"

    def __init__(self, neighbours: int = 100) -> None:
        self.neighbours = neighbours
        self.similarity: sp.csr_matrix = sp.csr_matrix((0, 0))

    def fit(self, interactions: sp.csr_matrix) -> None:
        x = binary(interactions).tocsc()
        counts = np.asarray(x.sum(axis=0)).ravel()
        norm = np.sqrt(np.maximum(counts, 1.0))
        co = (x.T @ x).tocsr().astype(np.float64)
        co.setdiag(0.0)
        co.eliminate_zeros()
        co = sp.diags(1.0 / norm) @ co @ sp.diags(1.0 / norm)
        self.similarity = _top_per_row(sp.csr_matrix(co), self.neighbours)

    def scores(self, rows: sp.csr_matrix, users: Sequence[int] | None = None) -> FloatArray:
        with one_thread():
            out = binary(rows) @ self.similarity
        return np.asarray(out.toarray(), dtype=np.float32)

    def because(self, row: sp.csr_matrix, item: int) -> int | None:
        column = np.asarray(self.similarity[:, item].toarray()).ravel()
        return _best_contributor(binary(row), column)


def _top_per_row(m: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Each row's ``k`` largest entries (item i's nearest neighbours)."""
    rows, cols, vals = [], [], []
    for i in range(m.shape[0]):
        start, end = m.indptr[i], m.indptr[i + 1]
        if start == end:
            continue
        data, idx = m.data[start:end], m.indices[start:end]
        if end - start > k:
            top = np.argpartition(-data, k)[:k]
            data, idx = data[top], idx[top]
        rows.extend([i] * len(idx))
        cols.extend(idx.tolist())
        vals.extend(data.tolist())
    # Row i lists i's neighbours j; scores read "user's item j -> candidate i", so the
    # kept matrix is the transpose: S[j, i].
    return sp.csr_matrix((vals, (cols, rows)), shape=m.shape)


class Popularity:
    """Readers per item; every user gets the same scores."""

    name = "popularity"

    def __init__(self) -> None:
        self.counts: npt.NDArray[np.float32] = np.zeros(0, dtype=np.float32)

    def fit(self, interactions: sp.csr_matrix) -> None:
        self.counts = np.asarray(binary(interactions).sum(axis=0), dtype=np.float32).ravel()

    def scores(self, rows: sp.csr_matrix, users: Sequence[int] | None = None) -> FloatArray:
        return np.tile(self.counts, (rows.shape[0], 1))

    def because(self, row: sp.csr_matrix, item: int) -> int | None:
        return None
