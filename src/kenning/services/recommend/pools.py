"""Precomputed candidate pools: one reader's candidates of every source, kept between
requests, compactly, and what every pool shares (story vectors and titles).

A :class:`Pool` is what serving needs of one reader besides the clock: the request it was
made for (reader, history, tenant snapshot), the candidates (packed: plain tuples in
slotted objects, about a third of the memory of the models the sources build; unpacked
per request, in about a millisecond for a hundred) and the near-duplicate clusters of the
candidates and of the reader's stories, with the reader's event mark it was made under.
:class:`PoolCache` keeps pools least-recently-served first out. :class:`StoryCache` keeps
story vectors (for MMR) and titles (for explanations) once per process for every pool:
a story's vector and title do not change once it is processed.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from kenning.services.recommend.context import Request
from kenning.services.recommend.reasons import Reason, SourceCandidate

__all__ = ["Packed", "Pool", "PoolCache", "StoryCache", "pack"]

Vector = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Packed:
    """A :class:`SourceCandidate` as plain tuples."""

    asset_id: str
    score: float
    scores: tuple[tuple[str, float], ...]
    reasons: tuple[tuple[str, str, tuple[tuple[str, Any], ...]], ...]
    author: str | None
    language: str | None
    published_at: datetime | None

    def unpack(self) -> SourceCandidate:
        return SourceCandidate.model_construct(
            asset_id=self.asset_id, score=self.score, scores=dict(self.scores),
            reasons=[Reason.model_construct(source=s, kind=k, evidence=dict(e))
                     for s, k, e in self.reasons],
            author=self.author, language=self.language, published_at=self.published_at)


def pack(c: SourceCandidate) -> Packed:
    return Packed(c.asset_id, c.score, tuple(c.scores.items()),
                  tuple((r.source, r.kind, tuple(r.evidence.items())) for r in c.reasons),
                  c.author, c.language, c.published_at)


@dataclass(frozen=True)
class Pool:
    """One reader's precomputed candidates and what serving them needs."""

    request: Request
    packed: tuple[Packed, ...]
    clusters: dict[str, str]
    """Asset -> near-duplicate cluster, for the candidates and the reader's stories."""
    mark: tuple[Any, ...]
    """The reader's event mark it was made under (see ``serving.reader_mark``)."""
    made: float
    """``time.monotonic()`` when it was made."""

    def candidates(self) -> list[SourceCandidate]:
        return [p.unpack() for p in self.packed]


class PoolCache:
    """Pools by key, at most ``size`` (least recently served dropped first)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._pools: OrderedDict[tuple[Any, ...], Pool] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...], mark: tuple[Any, ...], ttl_s: float) -> Pool | None:
        """The pool under ``key`` if made under ``mark`` less than ``ttl_s`` ago."""
        with self._lock:
            pool = self._pools.get(key)
            if pool is None or pool.mark != mark or time.monotonic() - pool.made >= ttl_s:
                return None
            self._pools.move_to_end(key)
            return pool

    def put(self, key: tuple[Any, ...], pool: Pool) -> None:
        with self._lock:
            self._pools[key] = pool
            self._pools.move_to_end(key)
            while len(self._pools) > self.size:
                self._pools.popitem(last=False)

    def forget(self, tenant_id: str | None = None) -> None:
        """Drop the pools of one tenant (the key's first part), or all."""
        with self._lock:
            for key in [k for k in self._pools if tenant_id is None or k[0] == tenant_id]:
                del self._pools[key]

    def __len__(self) -> int:
        return len(self._pools)


class StoryCache:
    """Vectors and titles of stories by (tenant, asset id), loaded on a miss, emptied when
    it holds ``size`` stories."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.vectors: dict[tuple[str, str], Vector] = {}
        self.titles: dict[tuple[str, str], str | None] = {}
        self._lock = threading.Lock()

    def ensure(self, tenant_id: str, ids: Collection[str],
               load_vectors: Callable[[set[str]], dict[str, Vector]],
               load_titles: Callable[[set[str]], dict[str, str | None]]) -> None:
        """Load what ``ids`` miss (vectors of stories that have none stay missing)."""
        with self._lock:
            no_title = {a for a in ids if (tenant_id, a) not in self.titles}
            no_vector = {a for a in ids if (tenant_id, a) not in self.vectors}
        titles = load_titles(no_title) if no_title else {}
        vectors = load_vectors(no_vector) if no_vector else {}
        with self._lock:
            if len(self.titles) + len(titles) > self.size:
                self.titles.clear()
                self.vectors.clear()
            self.titles.update(((tenant_id, a), t) for a, t in titles.items())
            self.vectors.update(((tenant_id, a), v) for a, v in vectors.items())

    def vector(self, tenant_id: str, asset_id: str) -> Vector | None:
        return self.vectors.get((tenant_id, asset_id))

    def title_map(self, tenant_id: str, ids: Sequence[str]) -> dict[str, str | None]:
        with self._lock:
            return {a: self.titles.get((tenant_id, a)) for a in ids}

    def forget(self, tenant_id: str | None = None) -> None:
        with self._lock:
            for key in [k for k in self.vectors if tenant_id is None or k[0] == tenant_id]:
                del self.vectors[key]
            for key in [k for k in self.titles if tenant_id is None or k[0] == tenant_id]:
                del self.titles[key]
