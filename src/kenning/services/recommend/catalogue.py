"""The stories a tenant can recommend: its processed assets, with the author, language,
topics and publication time the sources need, and their asset-level text vectors.

A story is an asset of the tenant whose processing finished (status ``ready`` or
``partial``: a story whose OCR failed still reads). Its author is the metadata field
``events_author_key`` (as events record it), its topics the metadata field
``recs_topics_key`` (a string or a list of strings), its publication time the asset's
creation.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from kenning.stores.metadata.tables import Asset, Embedding

__all__ = ["RECOMMENDABLE", "Catalogue", "Story", "load_catalogue", "story_vectors"]

RECOMMENDABLE = ("ready", "partial")


@dataclass(frozen=True)
class Story:
    asset_id: str
    author: str | None
    language: str | None
    topics: frozenset[str]
    published_at: datetime


@dataclass(frozen=True)
class Catalogue:
    """The tenant's stories by asset id, newest first in ``newest``."""

    stories: dict[str, Story]
    newest: tuple[str, ...]

    def get(self, asset_id: str) -> Story | None:
        return self.stories.get(asset_id)

    def __contains__(self, asset_id: object) -> bool:
        return asset_id in self.stories

    def __len__(self) -> int:
        return len(self.stories)


def _author(meta: dict[str, Any], key: str) -> str | None:
    value = meta.get(key)
    return value if isinstance(value, str) and 0 < len(value) <= 128 else None


def _topics(meta: dict[str, Any], key: str) -> frozenset[str]:
    value = meta.get(key)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return frozenset()
    return frozenset(t.strip().lower() for t in value if isinstance(t, str) and t.strip())


def load_catalogue(s: Session, tenant_id: str, *, author_key: str,
                   topics_key: str) -> Catalogue:
    rows = s.execute(
        select(Asset.id, Asset.language, Asset.meta, Asset.created_at)
        .where(Asset.tenant_id == tenant_id, Asset.status.in_(RECOMMENDABLE))
        .order_by(Asset.created_at.desc(), Asset.id)).tuples().all()
    stories = {}
    for asset_id, language, meta, created in rows:
        meta = meta if isinstance(meta, dict) else {}
        stories[asset_id] = Story(asset_id, _author(meta, author_key),
                                  (language or None), _topics(meta, topics_key), created)
    return Catalogue(stories, tuple(stories))


def story_vectors(s: Session, tenant_id: str, space: str,
                  asset_ids: Collection[str]) -> dict[str, np.ndarray]:
    """Asset-level text vectors (the mean of the chunks') in ``space``, by asset id;
    stories without one yet are left out."""
    if not asset_ids:
        return {}
    # The tenant is checked on the rows, not in the WHERE: SQLite, without statistics,
    # would walk the tenant's whole index (every embedding of the tenant) instead of
    # the asset ids' (0.3 s a call at 100k stories).
    rows = s.execute(select(Embedding.asset_id, Embedding.tenant_id, Embedding.vector).where(
        Embedding.asset_id.in_(list(asset_ids)), Embedding.segment_id.is_(None),
        Embedding.space == space))
    return {asset_id: np.frombuffer(raw, dtype=np.float32)
            for asset_id, tenant, raw in rows if tenant == tenant_id}
