"""Tenant-scoped lookups shared by the services.

An asset of another tenant is indistinguishable from one that does not exist: every
service that starts from an asset id goes through :func:`owned_asset`.
"""

from __future__ import annotations

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from kenning.errors import NotFound
from kenning.principal import Principal
from kenning.stores.metadata import Database
from kenning.stores.metadata.tables import Asset, Embedding, Fingerprint


def owned_asset(s: Session, who: Principal, asset_id: str) -> Asset:
    """The asset if it belongs to the caller's tenant; ``not_found`` otherwise."""
    asset = s.get(Asset, asset_id)
    if asset is None or asset.tenant_id != who.tenant_id:
        raise NotFound(f"no asset {asset_id}")
    return asset


def asset_text_vector(s: Session, asset_id: str, space: str) -> np.ndarray | None:
    """The asset-level (mean of chunks) text vector in ``space``, if computed yet."""
    raw = s.scalar(
        select(Embedding.vector).where(
            Embedding.asset_id == asset_id, Embedding.segment_id.is_(None),
            Embedding.space == space,
        )
    )
    return None if raw is None else np.frombuffer(raw, dtype=np.float32)


IN_CHUNK = 5000
"""Ids per SQL ``IN`` list."""


def fingerprint_rows(db: Database, tenant_id: str, ids: list[int],
                     algorithm: str | None = None) -> list[tuple[int, str, str]]:
    """``(fingerprint id, asset id, variant)`` of the tenant's fingerprints among ``ids``
    (hash-index hits), of ``algorithm`` when given: another tenant's never come back."""
    out: list[tuple[int, str, str]] = []
    with db.reading() as conn:
        for i in range(0, len(ids), IN_CHUNK):
            query = select(Fingerprint.id, Fingerprint.asset_id, Fingerprint.variant).where(
                Fingerprint.id.in_(ids[i:i + IN_CHUNK]), Fingerprint.tenant_id == tenant_id)
            if algorithm is not None:
                query = query.where(Fingerprint.algorithm == algorithm)
            out += [(int(f), str(a), str(v)) for f, a, v in conn.execute(query)]
    return out
