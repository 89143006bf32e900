"""Rebuilds the in-memory indexes from the metadata store (the source of truth)."""

from __future__ import annotations

import numpy as np
from sqlalchemy import select

from kenning.stores.bundle import Stores, index_codes, index_vectors
from kenning.stores.metadata.tables import Embedding, Fingerprint


def rebuild_indexes(stores: Stores, batch: int = 5000) -> dict[str, int]:
    """Load every embedding and fingerprint row into the vector and hash indexes."""
    counts = {"vectors": 0, "hashes": 0}
    with stores.db.session(write=False) as s:
        last = 0
        while rows := s.execute(
            select(Embedding.id, Embedding.tenant_id, Embedding.space,
                   Embedding.segment_id, Embedding.vector)
            .where(Embedding.id > last).order_by(Embedding.id).limit(batch)
        ).all():
            index_vectors(stores, (
                (emb_id, tenant, space, segment_id is None, np.frombuffer(raw, np.float32))
                for emb_id, tenant, space, segment_id, raw in rows
            ))
            counts["vectors"] += len(rows)
            last = rows[-1][0]
        last = 0
        while fps := s.execute(
            select(Fingerprint.id, Fingerprint.tenant_id, Fingerprint.algorithm,
                   Fingerprint.bits)
            .where(Fingerprint.id > last).order_by(Fingerprint.id).limit(batch)
        ).all():
            index_codes(stores, ((i, t, a, b) for i, t, a, b in fps))
            counts["hashes"] += len(fps)
            last = fps[-1][0]
    return counts
