"""Rebuilds the in-memory indexes from the metadata store (the source of truth)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from sqlalchemy import select

from kenning.stores.bundle import Stores, hash_namespace, vector_namespace
from kenning.stores.metadata.tables import Embedding, Fingerprint


def rebuild_indexes(stores: Stores, batch: int = 5000) -> dict[str, int]:
    """Load every embedding and fingerprint row into the vector and hash indexes."""
    counts = {"vectors": 0, "hashes": 0}
    with stores.db.session(write=False) as s:
        last = 0
        while True:
            rows = s.execute(
                select(Embedding.id, Embedding.tenant_id, Embedding.space,
                       Embedding.segment_id, Embedding.vector)
                .where(Embedding.id > last).order_by(Embedding.id).limit(batch)
            ).all()
            if not rows:
                break
            groups: dict[str, tuple[list[int], list[np.ndarray]]] = defaultdict(
                lambda: ([], [])
            )
            for emb_id, tenant, space, segment_id, raw in rows:
                ns = vector_namespace(tenant, space, asset_level=segment_id is None)
                groups[ns][0].append(emb_id)
                groups[ns][1].append(np.frombuffer(raw, dtype=np.float32))
            for ns, (ids, vecs) in groups.items():
                stores.vectors.add(ns, ids, np.vstack(vecs))
            counts["vectors"] += len(rows)
            last = rows[-1][0]
        last = 0
        while True:
            fps = s.execute(
                select(Fingerprint.id, Fingerprint.tenant_id, Fingerprint.algorithm,
                       Fingerprint.bits)
                .where(Fingerprint.id > last).order_by(Fingerprint.id).limit(batch)
            ).all()
            if not fps:
                break
            code_groups: dict[str, tuple[list[int], list[bytes]]] = defaultdict(
                lambda: ([], [])
            )
            for fp_id, tenant, algorithm, bits in fps:
                ns = hash_namespace(tenant, algorithm)
                code_groups[ns][0].append(fp_id)
                code_groups[ns][1].append(bits)
            for ns, (ids, codes) in code_groups.items():
                stores.hashes.add(ns, ids, codes)
            counts["hashes"] += len(fps)
            last = fps[-1][0]
    return counts
