"""ALS and BPR matrix factorisation from the ``implicit`` library (the ``recs`` extra),
behind :class:`~kenning.services.recommend.models.ImplicitModel`.

The CPU implementations are used whatever the host (``implicit.cpu``), with
``num_threads=1`` and BLAS capped at one thread. ALS treats the matrix values as
confidence (scaled by ``alpha``); BPR samples positive and negative pairs and ignores
values. A user the model never saw is folded in: ALS solves their factors from their row
(``recalculate_user``); BPR has no fold-in, so such a user is the mean of the factors of
the items they engaged with (a common approximation, stated).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from kenning.errors import MissingExtra
from kenning.services.recommend.models import FloatArray, binary, one_thread

__all__ = ["ALS", "BPR"]


def _implicit(module: str) -> Any:
    try:
        if module == "als":
            from implicit.cpu import als
            return als
        from implicit.cpu import bpr
        return bpr
    except ImportError:
        raise MissingExtra("implicit", "recs") from None


def _user_rows(rows: sp.csr_matrix, users: Sequence[int] | None,
               n_fitted: int) -> list[int]:
    if users is None:
        return [-1] * rows.shape[0]
    if len(users) != rows.shape[0]:
        raise ValueError("give one user per row")
    return [u if 0 <= u < n_fitted else -1 for u in users]


class ALS:
    """Implicit ALS (Hu, Koren and Volinsky 2008) through ``implicit``."""

    name = "als"

    def __init__(self, factors: int = 32, regularization: float = 0.1, alpha: float = 1.0,
                 iterations: int = 15, seed: int = 42) -> None:
        self.params = {"factors": factors, "regularization": regularization, "alpha": alpha,
                       "iterations": iterations, "random_state": seed}
        self.model: Any = None

    def fit(self, interactions: sp.csr_matrix) -> None:
        als = _implicit("als")
        with one_thread():  # implicit warns when built under a multi-thread BLAS
            self.model = als.AlternatingLeastSquares(num_threads=1, **self.params)
            self.model.fit(sp.csr_matrix(interactions, dtype=np.float32), show_progress=False)

    def _factors(self, rows: sp.csr_matrix, users: Sequence[int] | None) -> FloatArray:
        known = _user_rows(rows, users, self.model.user_factors.shape[0])
        out = np.empty((rows.shape[0], self.model.factors), dtype=np.float32)
        fold = [i for i, u in enumerate(known) if u < 0]
        seen = [i for i, u in enumerate(known) if u >= 0]
        if seen:
            out[seen] = self.model.user_factors[[known[i] for i in seen]]
        if fold:
            with one_thread():
                out[fold] = self.model.recalculate_user(
                    np.arange(len(fold)), sp.csr_matrix(rows[fold], dtype=np.float32))
        return out

    def scores(self, rows: sp.csr_matrix, users: Sequence[int] | None = None) -> FloatArray:
        with one_thread():
            out: FloatArray = self._factors(rows, users) @ self.model.item_factors.T
        return out

    def because(self, row: sp.csr_matrix, item: int) -> int | None:
        if row.nnz == 0:
            return None
        with one_thread():
            _, contributions, _ = self.model.explain(
                0, sp.csr_matrix(row, dtype=np.float32), item, N=1)
        if not contributions or contributions[0][1] <= 0:
            return None
        return int(contributions[0][0])


class BPR:
    """Bayesian personalised ranking (Rendle et al. 2009) through ``implicit``."""

    name = "bpr"

    def __init__(self, factors: int = 64, learning_rate: float = 0.01,
                 regularization: float = 0.01, iterations: int = 100, seed: int = 42) -> None:
        self.params = {"factors": factors, "learning_rate": learning_rate,
                       "regularization": regularization, "iterations": iterations,
                       "random_state": seed}
        self.model: Any = None

    def fit(self, interactions: sp.csr_matrix) -> None:
        bpr = _implicit("bpr")
        with one_thread():
            self.model = bpr.BayesianPersonalizedRanking(num_threads=1, **self.params)
            self.model.fit(binary(interactions).astype(np.float32), show_progress=False)

    def scores(self, rows: sp.csr_matrix, users: Sequence[int] | None = None) -> FloatArray:
        user_factors = self.model.user_factors
        items = self.model.item_factors
        known = _user_rows(rows, users, user_factors.shape[0])
        out = np.empty((rows.shape[0], user_factors.shape[1]), dtype=np.float32)
        for i, u in enumerate(known):
            if u >= 0:
                out[i] = user_factors[u]
            else:
                engaged = rows[i].indices
                # The last column is the item bias; a user's is 1 (as implicit fits it).
                out[i] = items[engaged].mean(axis=0) if len(engaged) else 0.0
                out[i, -1] = 1.0
        with one_thread():
            result: FloatArray = out @ items.T
        return result

    def because(self, row: sp.csr_matrix, item: int) -> int | None:
        engaged = row.indices
        if len(engaged) == 0:
            return None
        items: npt.NDArray[np.float32] = self.model.item_factors[:, :-1]
        target = items[item]
        mine = items[engaged]
        cosine = mine @ target / (np.linalg.norm(mine, axis=1) * np.linalg.norm(target) + 1e-12)
        best = int(np.argmax(cosine))
        return int(engaged[best]) if cosine[best] > 0 else None
