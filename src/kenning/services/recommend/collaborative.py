"""The collaborative source: what readers who engaged like this reader went on to engage
with, from an implicit-feedback model fitted on the tenant's engagement matrix.

One source per model (:mod:`kenning.services.recommend.models`): EASE by default and
item-to-item co-engagement beside it; ALS or BPR (``implicit``) by configuration. A
model is fitted once per tenant snapshot (under its lock) and scores the reader's
current row, built from their history (so engagement newer than the snapshot counts, and
a reader the model never saw is folded in). Reasons: ``collaborative:<model>`` with
``because_of``, the reader's story that contributed most (absent when none did).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

from kenning.services.recommend.context import Request, TenantSnapshot
from kenning.services.recommend.models import ImplicitModel
from kenning.services.recommend.reasons import SourceCandidate

__all__ = ["CollaborativeSource"]


class CollaborativeSource:
    name = "collaborative"

    def __init__(self, make_model: Callable[[], ImplicitModel]) -> None:
        self.make_model = make_model
        self.model_name = make_model().name

    def model(self, snapshot: TenantSnapshot) -> ImplicitModel | None:
        """The snapshot's fitted model (fitted now on first use); None without data."""
        if len(snapshot.interactions.items) == 0:
            return None
        with snapshot.lock:
            model = snapshot.fitted.get(self.model_name)
            if model is None:
                model = self.make_model()
                model.fit(snapshot.interactions.matrix())
                snapshot.fitted[self.model_name] = model
        return model

    def propose(self, request: Request) -> list[SourceCandidate]:
        model = self.model(request.snapshot)
        if model is None:
            return []
        interactions = request.snapshot.interactions
        index = interactions.item_index
        engaged = [(index[a], e.weight) for a, e in request.history.engaged.items()
                   if a in index]
        if not engaged:
            return []
        cols = [c for c, _ in engaged]
        row = sp.csr_matrix((np.array([w for _, w in engaged], dtype=np.float64),
                             (np.zeros(len(cols), dtype=np.int64), np.array(cols))),
                            shape=(1, len(interactions.items)))
        user = interactions.reader_index.get(request.reader.reader_id, -1)
        scores = np.asarray(model.scores(row, [user]), dtype=np.float64)[0]
        order = np.argsort(-scores, kind="stable")
        out: list[SourceCandidate] = []
        for item in order:
            if len(out) >= request.limit or not scores[item] > 0:
                break
            asset_id = interactions.items[item]
            if not request.allowed(asset_id):
                continue
            because = model.because(row, int(item))
            evidence = {} if because is None else {"because_of": interactions.items[because]}
            out.append(request.candidate(asset_id, round(float(scores[item]), 6),
                                         "collaborative", self.model_name, **evidence))
        return out
