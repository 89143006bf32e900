"""A tenant's engagement log as arrays: who engaged with what, how strongly and when.

The collaborative models learn from :meth:`Interactions.matrix` (readers x stories,
summed engagement weights capped at :data:`~kenning.services.recommend.history.MAX_STRENGTH`),
the trending sources from :meth:`Interactions.decayed` (each event's weight halved every
half-life since it happened), the social source from :meth:`Interactions.of_reader`.
Only engagement events count (open, read, like, share; see
:mod:`kenning.services.recommend.history`), and only on stories still in the catalogue.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from sqlalchemy import select
from sqlalchemy.orm import Session

from kenning.services.recommend.history import ENGAGEMENT_TYPES, MAX_STRENGTH, event_weight
from kenning.stores.metadata.tables import Event

__all__ = ["Interactions", "decay", "load_interactions"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def decay(age_s: FloatArray | float, half_life_s: float) -> FloatArray:
    """``0.5 ** (age / half_life)``; an age below 0 (an event after ``now``) weighs 0."""
    age = np.asarray(age_s, dtype=np.float64)
    out: FloatArray = np.where(age < 0, 0.0, np.exp2(-np.maximum(age, 0.0) / half_life_s))
    return out


@dataclass(frozen=True)
class Interactions:
    """Engagement events of one tenant: parallel arrays, one entry per event."""

    readers: tuple[str, ...]
    items: tuple[str, ...]
    reader_idx: IntArray
    item_idx: IntArray
    weight: FloatArray
    at: FloatArray
    """Seconds since the epoch."""

    @property
    def reader_index(self) -> dict[str, int]:
        return {r: i for i, r in enumerate(self.readers)}

    @property
    def item_index(self) -> dict[str, int]:
        return {a: i for i, a in enumerate(self.items)}

    def matrix(self, until: datetime | None = None) -> sp.csr_matrix:
        """Readers x items, engagement summed per pair and capped (events up to
        ``until``, default all)."""
        keep = (np.ones(len(self.weight), dtype=bool) if until is None
                else self.at <= until.timestamp())
        m = sp.csr_matrix((self.weight[keep], (self.reader_idx[keep], self.item_idx[keep])),
                          shape=(len(self.readers), len(self.items)), dtype=np.float64)
        m.sum_duplicates()
        np.minimum(m.data, MAX_STRENGTH, out=m.data)
        return m

    def decayed(self, now: datetime, half_life_s: float,
                mask: npt.NDArray[np.bool_] | None = None) -> FloatArray:
        """Per item: the sum of its events' weights, each halved every ``half_life_s``
        since it happened (events after ``now`` count 0)."""
        w = self.weight * decay(now.timestamp() - self.at, half_life_s)
        if mask is not None:
            w = np.where(mask, w, 0.0)
        out: FloatArray = np.asarray(
            np.bincount(self.item_idx, weights=w, minlength=len(self.items)), dtype=np.float64)
        return out

    def of_reader(self, reader: str) -> npt.NDArray[np.bool_]:
        """A mask over events: those of ``reader`` (all False for a stranger)."""
        index = self.reader_index.get(reader)
        if index is None:
            return np.zeros(len(self.weight), dtype=bool)
        mask: npt.NDArray[np.bool_] = np.asarray(self.reader_idx == index, dtype=bool)
        return mask

    def counts(self, now: datetime, window_s: float) -> IntArray:
        """Per item: engagement events in the ``window_s`` before ``now``."""
        t = now.timestamp()
        keep = (self.at <= t) & (self.at > t - window_s)
        out: IntArray = np.bincount(self.item_idx[keep], minlength=len(self.items))
        return out


def load_interactions(s: Session, tenant_id: str, stories: set[str] | None = None,
                      since: datetime | None = None) -> Interactions:
    """The tenant's engagement events (since ``since``), on ``stories`` when given."""
    query = (select(Event.reader_id, Event.asset_id, Event.type, Event.at, Event.data)
             .where(Event.tenant_id == tenant_id, Event.type.in_(ENGAGEMENT_TYPES),
                    Event.asset_id.is_not(None)))
    if since is not None:
        query = query.where(Event.at >= since)
    readers: dict[str, int] = {}
    items: dict[str, int] = {}
    r_idx, i_idx, weights, times = [], [], [], []
    for reader, asset_id, kind, at, data in s.execute(query.order_by(Event.id)):
        if stories is not None and asset_id not in stories:
            continue
        weight = event_weight(kind, data)
        if weight <= 0:
            continue
        r_idx.append(readers.setdefault(reader, len(readers)))
        i_idx.append(items.setdefault(asset_id, len(items)))
        weights.append(weight)
        times.append(at.timestamp())
    return Interactions(tuple(readers), tuple(items), np.asarray(r_idx, dtype=np.int64),
                        np.asarray(i_idx, dtype=np.int64), np.asarray(weights, dtype=np.float64),
                        np.asarray(times, dtype=np.float64))
