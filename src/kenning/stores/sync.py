"""Keeps the indexes in line with the metadata store (the source of truth).

The in-memory vector and hash indexes are rebuilt from it at start; the persistent
keyword index is pruned of documents whose segment rows are gone (a crash between an
asset delete's commit and its index clean-up).
"""

from __future__ import annotations

import numpy as np
from sqlalchemy import select

from kenning.stores.bundle import Stores, index_codes, index_vectors
from kenning.stores.metadata.tables import Embedding, Fingerprint, Segment


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


def prune_keyword_orphans(stores: Stores, batch: int = 5000) -> int:
    """Delete keyword documents whose segment row no longer exists; return how many.

    Documents are indexed only after their rows commit and rows are deleted before their
    documents, so a document without a row is always garbage: no grace period needed.
    """
    pruned, last = 0, 0
    while ids := stores.keyword.ids(last, batch):
        with stores.db.session(write=False) as s:
            alive = set(s.scalars(select(Segment.id).where(Segment.id.in_(ids))))
        dead = [i for i in ids if i not in alive]
        if dead:
            pruned += stores.keyword.delete(dead)
        last = ids[-1]
    return pruned
